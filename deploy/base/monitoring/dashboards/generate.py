#!/usr/bin/env python3
"""Writes the Grafana dashboards (JSON) that deploy/base/monitoring ships in ConfigMaps.

One dashboard per model service (from the voice_<svc>_* metrics every service binary exports),
the voice-loop latency breakdown (voice-agent), and the GPU (DCGM exporter). Edit this file,
not the JSON:  python3 deploy/base/monitoring/dashboards/generate.py
deploy/validate.sh runs it with --check (fails if the committed JSON is stale).
"""
import json
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
DS = {"type": "prometheus", "uid": "${datasource}"}

SERVICES = {
    "stt": "Speech-to-text (voice-stt)",
    "llm": "LLM (voice-llm)",
    "embed": "Embeddings (voice-embed)",
    "tts": "Text-to-speech (voice-tts)",
    "agent": "Agent (voice-agent)",
}


def panel(title, exprs, unit="short", kind="timeseries", w=12, h=8, desc=""):
    targets = [
        {"datasource": DS, "expr": e, "legendFormat": legend, "refId": chr(ord("A") + i)}
        for i, (e, legend) in enumerate(exprs)
    ]
    p = {
        "type": kind,
        "title": title,
        "datasource": DS,
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {},
        "gridPos": {"w": w, "h": h},
    }
    if desc:
        p["description"] = desc
    return p


def layout(panels):
    x = y = 0
    row_h = 0
    for i, p in enumerate(panels, start=1):
        g = p["gridPos"]
        if x + g["w"] > 24:
            x, y = 0, y + row_h
            row_h = 0
        g["x"], g["y"] = x, y
        x += g["w"]
        row_h = max(row_h, g["h"])
        p["id"] = i
    return panels


def dashboard(uid, title, tags, panels):
    return {
        "uid": uid,
        "title": title,
        "tags": ["voice-ai"] + tags,
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                }
            ]
        },
        "annotations": {"list": []},
        "panels": layout(panels),
    }


def service_dashboard(svc, title):
    m = f"voice_{svc}"
    sel = 'namespace="voice-ai"'
    api = f'{sel}, route!~"/healthz|/readyz|/metrics"'
    panels = [
        panel("Ready replicas", [(f"sum({m}_ready{{{sel}}})", "ready")], kind="stat", w=6, h=4),
        # voice-llm has no CPU retry after a device error (its degraded gauge never moves).
        panel("Degraded (CPU retry after a device error)", [(f"max({m}_degraded{{{sel}}})", "degraded")], kind="stat", w=6, h=4)
        if svc != "llm" else
        panel("Device errors (requests fail; no CPU retry)", [(f"sum(increase({m}_device_errors_total{{{sel}}}[1h]))", "errors, 1 h")], kind="stat", w=6, h=4),
        panel("Device", [(f"sum by (device, requested) ({m}_device_info{{{sel}}})", "{{device}} (asked {{requested}})")], kind="stat", w=6, h=4,
              desc="device=cpu while requested=cuda means the service runs on its CPU fallback."),
        panel("Model load time", [(f"max by (model, device) ({m}_model_load_seconds{{{sel}}})", "{{model}} on {{device}}")], unit="s", kind="stat", w=6, h=4),
        panel("HTTP requests by route and status", [(f"sum by (route, status) (rate({m}_http_requests_total{{{api}}}[5m]))", "{{route}} {{status}}")], unit="reqps"),
        panel("HTTP latency (p50 / p95 / p99)", [
            (f"histogram_quantile({q}, sum by (le) (rate({m}_http_request_duration_seconds_bucket{{{api}}}[5m])))", f"p{int(q * 100)}")
            for q in (0.5, 0.95, 0.99)], unit="s"),
        panel("gRPC requests by method and code", [(f"sum by (method, code) (rate({m}_grpc_requests_total{{{sel}}}[5m]))", "{{method}} {{code}}")], unit="reqps"),
        panel("gRPC latency p95", [(f"histogram_quantile(0.95, sum by (le, method) (rate({m}_grpc_request_duration_seconds_bucket{{{sel}}}[5m])))", "{{method}}")], unit="s"),
        panel("Queue depth and in-flight requests", [
            (f"sum by (pod) ({m}_queue_depth{{{sel}}})", "queued {{pod}}"),
            (f"sum by (pod) ({m}_in_flight_requests{{{sel}}})", "in flight {{pod}}")],
            desc="The HPA scales on the queue depth (prometheus-adapter); 32 (--max-queue) means 429s."),
        panel("Rejected requests by reason", [(f"sum by (reason) (rate({m}_rejected_requests_total{{{sel}}}[5m]))", "{{reason}}")], unit="reqps"),
        panel("Device errors and CPU fallback requests", [
            (f"sum by (device, phase) (rate({m}_device_errors_total{{{sel}}}[5m]))", "errors {{device}} {{phase}}"),
            (f"sum(rate({m}_cpu_fallback_requests_total{{{sel}}}[5m]))", "CPU fallback requests")][:1 if svc == "llm" else 2], unit="reqps"),
        panel("CPU and memory (container)", [
            (f'sum by (pod) (rate(container_cpu_usage_seconds_total{{namespace="voice-ai", container="voice-{svc}"}}[5m]))', "cpu {{pod}}")],
            unit="short"),
        panel("Memory working set", [
            (f'sum by (pod) (container_memory_working_set_bytes{{namespace="voice-ai", container="voice-{svc}"}})', "{{pod}}")], unit="bytes"),
    ]
    if svc == "stt":
        panels += [
            panel("Real-time factor (processing time / audio time)", [(f"histogram_quantile(0.5, sum by (le) (rate(voice_stt_realtime_factor_bucket{{{sel}}}[5m])))", "median")], unit="short"),
            panel("Audio transcribed and active streams", [
                (f"sum(rate(voice_stt_audio_seconds_total{{{sel}}}[5m]))", "audio s/s"),
                (f"sum(voice_stt_streams_active{{{sel}}})", "streams")]),
        ]
    if svc == "tts":
        panels += [
            panel("Time to first audio", [
                (f"histogram_quantile({q}, sum by (le) (rate(voice_tts_time_to_first_audio_seconds_bucket{{{sel}}}[5m])))", f"p{int(q * 100)}")
                for q in (0.5, 0.95)], unit="s"),
            panel("Real-time factor (synthesis time / audio time)", [(f"histogram_quantile(0.5, sum by (le) (rate(voice_tts_realtime_factor_bucket{{{sel}}}[5m])))", "median")], unit="short"),
            panel("Characters and audio produced", [
                (f"sum(rate(voice_tts_characters_total{{{sel}}}[5m]))", "characters/s"),
                (f"sum(rate(voice_tts_audio_seconds_total{{{sel}}}[5m]))", "audio s/s")]),
        ]
    return dashboard(f"voice-ai-{svc}", f"voice-ai / {title}", [svc], panels)


def voice_loop_dashboard():
    sel = 'namespace="voice-ai"'
    stages = "sum by (le, stage) (rate(voice_agent_stage_seconds_bucket{%s}[5m]))" % sel
    panels = [
        panel("Voice-to-voice latency (end of user speech -> first audio back)", [
            (f"histogram_quantile({q}, sum by (le) (rate(voice_agent_voice_to_voice_seconds_bucket{{{sel}}}[5m])))", f"p{int(q * 100)}")
            for q in (0.5, 0.95, 0.99)], unit="s", w=24),
        panel("p95 per stage (VAD end-of-turn, STT final, RAG, LLM first token, TTS first audio)", [
            (f"histogram_quantile(0.95, {stages})", "{{stage}}")], unit="s", kind="barchart", w=12,
            desc="voice_agent_stage_seconds{stage}: the agent's breakdown of one turn."),
        panel("Median per stage over time", [(f"histogram_quantile(0.5, {stages})", "{{stage}}")], unit="s", w=12),
        panel("Service p95 seen from each service", [
            (f"histogram_quantile(0.95, sum by (le) (rate(voice_{s}_http_request_duration_seconds_bucket{{{sel}}}[5m])))", s)
            for s in ("stt", "llm", "embed", "tts")], unit="s", w=12),
        panel("Queue depth per service", [(f"sum(voice_{s}_queue_depth{{{sel}}})", s) for s in SERVICES], w=12),
        panel("Services on CPU fallback", [
            (f'sum(voice_{s}_device_info{{{sel}, device="cpu", requested=~"cuda.*"}})', s) for s in SERVICES], kind="stat", w=24, h=4),
    ]
    return dashboard("voice-ai-voice-loop", "voice-ai / Voice loop latency", ["latency"], panels)


def gpu_dashboard():
    panels = [
        panel("GPU utilisation", [("avg by (gpu, Hostname) (DCGM_FI_DEV_GPU_UTIL)", "GPU {{gpu}} {{Hostname}}")], unit="percent"),
        panel("GPU memory used / total (service budgets sum to 22 GB of 32)", [
            ("sum by (gpu) (DCGM_FI_DEV_FB_USED) * 1024 * 1024", "used GPU {{gpu}}"),
            ("sum by (gpu) (DCGM_FI_DEV_FB_USED + DCGM_FI_DEV_FB_FREE) * 1024 * 1024", "total GPU {{gpu}}"),
            ("vector(22 * 1000 * 1000 * 1000)", "sum of --gpu-memory-budget")], unit="bytes"),
        panel("GPU memory by pod (DCGM pod attribution)", [
            ('sum by (exported_pod) (DCGM_FI_DEV_FB_USED{exported_namespace="voice-ai"}) * 1024 * 1024', "{{exported_pod}}")], unit="bytes",
            desc="With time-slicing every pod shares one GPU; DCGM attributes the device to the pods using it."),
        panel("SM clock and memory temperature", [
            ("avg by (gpu) (DCGM_FI_DEV_SM_CLOCK)", "SM MHz {{gpu}}"),
            ("avg by (gpu) (DCGM_FI_DEV_MEMORY_TEMP)", "mem C {{gpu}}")]),
        panel("Power", [("sum by (gpu) (DCGM_FI_DEV_POWER_USAGE)", "GPU {{gpu}}")], unit="watt"),
        panel("Temperature", [("max by (gpu) (DCGM_FI_DEV_GPU_TEMP)", "GPU {{gpu}}")], unit="celsius"),
        panel("Tensor / graphics engine active", [
            ("avg by (gpu) (DCGM_FI_PROF_GR_ENGINE_ACTIVE)", "graphics engine {{gpu}}"),
            ("avg by (gpu) (DCGM_FI_PROF_PIPE_TENSOR_ACTIVE)", "tensor {{gpu}}")], unit="percentunit"),
        panel("XID errors (driver faults)", [("max by (gpu) (DCGM_FI_DEV_XID_ERRORS)", "GPU {{gpu}}")], kind="stat"),
    ]
    return dashboard("voice-ai-gpu", "voice-ai / GPU (DCGM)", ["gpu"], panels)


def all_dashboards():
    out = {f"voice-{svc}.json": service_dashboard(svc, t) for svc, t in SERVICES.items()}
    out["voice-loop.json"] = voice_loop_dashboard()
    out["gpu-dcgm.json"] = gpu_dashboard()
    return out


def main():
    check = "--check" in sys.argv[1:]
    stale = []
    for name, d in all_dashboards().items():
        text = json.dumps(d, indent=2, sort_keys=True) + "\n"
        path = HERE / name
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print("stale dashboards (run deploy/base/monitoring/dashboards/generate.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
