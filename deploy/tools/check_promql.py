#!/usr/bin/env python3
"""PromQL checks for the rendered manifests (run by deploy/validate.sh in the pinned venv).

Parses (promql-parser, the Rust PromQL parser's Python binding) every expression in the
PrometheusRules, every target of the Grafana dashboards shipped in ConfigMaps, and the
prometheus-adapter rule; checks every alert has a severity and a summary; and checks that every
voice_<svc>_* metric named exists: the runtime's common metrics (crates/runtime/src/metrics.rs,
README "Metrics"), voice-stt's own, and the few the not-yet-written services must add (listed in
CONTRACT below and in docs/kubernetes-architecture.md).

Usage: check_promql.py ADAPTER_VALUES.yaml RENDERED.yaml...
"""
import json
import re
import sys

import promql_parser
import yaml

SERVICES = ("stt", "llm", "embed", "tts", "agent")
# Every service binary (voice-runtime metrics.rs).
COMMON = {
    "http_requests_total", "http_request_duration_seconds", "grpc_requests_total",
    "grpc_request_duration_seconds", "in_flight_requests", "queue_depth", "rejected_requests_total",
    "model_load_seconds", "device_info", "degraded", "device_errors_total",
    "cpu_fallback_requests_total", "ready",
}
OWN = {
    "stt": {"audio_seconds_total", "transcription_seconds", "realtime_factor", "streams_active",
            "streaming_partials_total", "streaming_finals_total"},
    # services/tts/src/engine.rs TtsMetrics
    "tts": {"time_to_first_audio_seconds", "realtime_factor", "characters_total", "characters_per_second",
            "audio_seconds_total", "cancelled_total"},
}
# Not exported yet: the contract for the services still to land (alerts stay silent until then).
CONTRACT = {
    "agent": {"voice_to_voice_seconds", "stage_seconds", "turns_total", "interruptions_total", "barge_in_flush_seconds",
              "backend_errors_total", "conversations", "room_reconnects_total", "playout_gap_seconds"},
}
CONTRACT_ALL = {"gpu_memory_used_bytes", "gpu_memory_budget_bytes"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
METRIC_RE = re.compile(r"\bvoice_([a-z]+)_([a-z0-9_]+)")


def known(svc, name):
    allowed = COMMON | OWN.get(svc, set()) | CONTRACT.get(svc, set()) | CONTRACT_ALL
    if name in allowed:
        return True
    return any(name.endswith(s) and name[: -len(s)] in allowed for s in HISTOGRAM_SUFFIXES)


errors = []


def check_expr(where, expr):
    try:
        promql_parser.parse(expr)
    except Exception as e:  # the binding raises ValueError with the parser's message
        errors.append(f"{where}: PromQL does not parse: {e}: {expr}")
    for svc, name in METRIC_RE.findall(expr):
        if svc not in SERVICES or not known(svc, name):
            errors.append(f"{where}: unknown metric voice_{svc}_{name}")


def main(argv):
    adapter, *rendered = argv
    exprs = 0
    values = yaml.safe_load(open(adapter))
    for i, rule in enumerate(values["rules"]["custom"]):
        check_expr(f"{adapter} rule {i} seriesQuery", rule["seriesQuery"])
        q = (rule["metricsQuery"].replace("<<.Series>>", "voice_stt_queue_depth")
             .replace("<<.LabelMatchers>>", 'namespace="voice-ai",pod=~"voice-stt-.*"')
             .replace("<<.GroupBy>>", "pod"))
        check_expr(f"{adapter} rule {i} metricsQuery", q)
        exprs += 2
    for path in rendered:
        for doc in yaml.safe_load_all(open(path)):
            if not doc:
                continue
            kind, name = doc.get("kind"), doc.get("metadata", {}).get("name")
            if kind == "PrometheusRule":
                for g in doc["spec"]["groups"]:
                    for r in g["rules"]:
                        where = f"{path}: PrometheusRule {name} {g['name']} {r.get('alert') or r.get('record')}"
                        check_expr(where, str(r["expr"]))
                        exprs += 1
                        if "alert" in r:
                            if r.get("labels", {}).get("severity") not in ("info", "warning", "critical"):
                                errors.append(f"{where}: severity label must be info, warning or critical")
                            if not r.get("annotations", {}).get("summary"):
                                errors.append(f"{where}: no summary annotation")
            elif kind == "ConfigMap" and doc.get("metadata", {}).get("labels", {}).get("grafana_dashboard") == "1":
                for key, text in doc.get("data", {}).items():
                    dash = json.loads(text)
                    if not dash.get("uid") or not dash.get("title"):
                        errors.append(f"{path}: dashboard {key} needs uid and title")
                    for p in dash.get("panels", []):
                        for t in p.get("targets", []):
                            check_expr(f"{path}: dashboard {key} panel '{p.get('title')}'", t["expr"])
                            exprs += 1
    for e in errors:
        print("FAIL " + e, file=sys.stderr)
    print(f"promql: {exprs} expressions parsed, {len(errors)} problems")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
