"""The deploy scripts against fake kubectl / nvidia-smi / k3s / helm / curl on PATH.

Every fake records its arguments; the tests assert which commands run, in which order, with
which overlay for the detected hardware, and what happens when a step fails.
"""
import base64
import json

import pytest

from conftest import assert_in_order, index_of

RTX5090 = "NVIDIA GeForce RTX 5090, 32607, 580.65.06\n"
RTX4080 = "NVIDIA GeForce RTX 4080, 16376, 580.65.06\n"
GTX1650 = "NVIDIA GeForce GTX 1650, 4096, 535.104.05\n"
ROLLOUT_ORDER = ["voice-livekit", "voice-stt", "voice-llm", "voice-embed", "voice-tts", "voice-agent", "voice-frontend"]
MODEL_SERVICES = ["stt", "llm", "embed", "tts", "agent"]


def with_gpu(env, smi=RTX5090):
    env.fake("nvidia-smi")
    env.rule("nvidia-smi", "--query-gpu", smi)


def kv(output):
    return dict(line.split("=", 1) for line in output.splitlines() if "=" in line and line.split("=", 1)[0].isupper())


# ---------------------------------------------------------------- detect-hardware.sh

@pytest.mark.parametrize("smi,overlay", [(RTX5090, "gpu"), (RTX4080, "hybrid"), (GTX1650, "cpu")])
def test_detect_picks_overlay_from_gpu_memory(env, smi, overlay):
    with_gpu(env, smi)
    p = env.run("deploy/install/detect-hardware.sh", check=True)
    values = kv(p.stdout)
    assert values["OVERLAY"] == overlay
    assert values["GPU_COUNT"] == "1"
    assert values["GPU_MEMORY_MIB"] == smi.split(",")[1].strip()
    assert "+ nvidia-smi --query-gpu=name,memory.total,driver_version" in p.stderr


def test_detect_without_nvidia_smi_is_cpu(env):
    p = env.run("deploy/install/detect-hardware.sh", check=True)
    assert kv(p.stdout)["OVERLAY"] == "cpu"
    assert "nvidia-smi not found" in p.stdout + p.stderr
    assert env.calls("nvidia-smi") == []


def test_detect_broken_driver_falls_back_to_cpu_with_a_warning(env):
    env.fake("nvidia-smi")
    env.rule("nvidia-smi", "", "", rc=9, stderr="NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver")
    p = env.run("deploy/install/detect-hardware.sh", check=True)
    assert kv(p.stdout)["OVERLAY"] == "cpu"
    assert "WARNING: nvidia-smi failed" in p.stderr


def test_detect_takes_the_largest_of_several_gpus(env):
    with_gpu(env, GTX1650 + RTX5090)
    p = env.run("deploy/install/detect-hardware.sh", check=True)
    values = kv(p.stdout)
    assert values["GPU_COUNT"] == "2" and values["OVERLAY"] == "gpu"


def test_detect_rejects_unknown_arguments(env):
    p = env.run("deploy/install/detect-hardware.sh", "--bogus", check=False)
    assert p.returncode != 0 and "unknown argument: --bogus" in p.stderr


# ---------------------------------------------------------------- deploy-gpu.sh

def cluster_with_gpu(env, gpus="12"):
    env.rule("kubectl", r"allocatable\.nvidia", gpus)
    env.rule("kubectl", "get secret voice-ai-tls", "", rc=1, stderr="NotFound")


def test_deploy_on_gpu_hardware_uses_gpu_overlay_in_order(env):
    with_gpu(env)
    cluster_with_gpu(env)
    p = env.run("deploy/scripts/deploy-gpu.sh", "--skip-verify", check=True)
    calls = env.calls()
    assert_in_order(
        calls,
        "nvidia-smi --query-gpu",
        "kubectl cluster-info",
        "kubectl get nodes -o jsonpath={.items[*].status.allocatable.nvidia\\.com/gpu}",
        "kubectl kustomize",
        "kubectl apply -f",                       # namespace first
        "openssl req -x509",
        "kubectl -n voice-ai create secret tls voice-ai-tls",
        "kubectl -n voice-ai delete job voice-models-fetch --ignore-not-found",
        "kubectl apply -f",                       # everything
        "kubectl -n voice-ai wait --for=condition=complete job/voice-models-fetch",
        *[f"rollout status deployment/{d}" for d in ROLLOUT_ORDER],
    )
    assert any(c.endswith("deploy/overlays/gpu") for c in env.calls("kubectl") if "kustomize" in c)
    assert "base/namespace.yaml" in calls[index_of(calls, "kubectl apply -f")]
    assert "voice-ai deployed (gpu)" in p.stderr


def test_deploy_without_gpu_uses_cpu_overlay_and_skips_gpu_check(env):
    env.rule("kubectl", "get secret voice-ai-tls", "")
    env.run("deploy/scripts/deploy-gpu.sh", "--skip-verify", check=True)
    kubectl = env.calls("kubectl")
    assert any(c.endswith("deploy/overlays/cpu") for c in kubectl if "kustomize" in c)
    assert not any("allocatable" in c for c in kubectl)
    # The TLS Secret exists: kept, no certificate made.
    assert env.calls("openssl") == [] and not any("create secret" in c for c in kubectl)


def test_deploy_hybrid_on_request(env):
    with_gpu(env, RTX5090)
    cluster_with_gpu(env)
    env.run("deploy/scripts/deploy-gpu.sh", "--overlay", "hybrid", "--skip-verify", check=True)
    assert any(c.endswith("deploy/overlays/hybrid") for c in env.calls("kubectl") if "kustomize" in c)
    assert env.calls("nvidia-smi") == []  # an explicit overlay needs no detection


def test_deploy_gpu_overlay_refused_when_no_node_has_gpus(env):
    cluster_with_gpu(env, gpus="")
    p = env.run("deploy/scripts/deploy-gpu.sh", "--overlay", "gpu", check=False)
    assert p.returncode != 0
    assert "no node advertises it" in p.stderr and "--overlay cpu" in p.stderr
    assert not any(" apply " in c for c in env.calls("kubectl"))


def test_deploy_rollout_that_never_becomes_ready(env):
    with_gpu(env)
    cluster_with_gpu(env)
    env.rule("kubectl", "rollout status deployment/voice-llm", "", rc=1,
             stderr='error: timed out waiting for the condition')
    p = env.run("deploy/scripts/deploy-gpu.sh", "--timeout", "5s", check=False)
    assert p.returncode != 0
    assert "voice-llm did not become ready within 5s" in p.stderr
    assert "rollout undo deployment/voice-llm" in p.stderr
    calls = env.calls("kubectl")
    i = index_of(calls, "rollout status deployment/voice-llm --timeout=5s")
    # Diagnostics after the failure, nothing rolled or verified after it.
    assert_in_order(calls[i:], "describe deployment voice-llm", "get pods -l app.kubernetes.io/name=voice-llm",
                    "logs deployment/voice-llm", "get events")
    assert not any("voice-embed" in c or "port-forward" in c for c in calls[i:])


def test_deploy_model_fetch_failure_stops_before_rollouts(env):
    cluster_with_gpu(env)
    env.rule("kubectl", "wait --for=condition=complete job/voice-models-fetch", "", rc=1)
    p = env.run("deploy/scripts/deploy-gpu.sh", "--overlay", "cpu", check=False)
    assert p.returncode != 0 and "model fetch did not complete" in p.stderr
    calls = env.calls("kubectl")
    assert any("logs job/voice-models-fetch" in c for c in calls)
    assert not any("rollout status" in c for c in calls)


def test_deploy_dry_run_prints_everything_and_touches_nothing(env):
    with_gpu(env)
    p = env.run("deploy/scripts/deploy-gpu.sh", "--dry-run", check=True)
    # Only local, read-only commands ran: detection and rendering.
    assert [c.split()[1] for c in env.calls("kubectl")] == ["kustomize"]
    assert env.calls("openssl") == [] and env.calls("curl") == []
    for expected in ["+ kubectl cluster-info", "+ kubectl apply -f", "+ openssl req -x509",
                     "+ kubectl -n voice-ai create secret tls voice-ai-tls",
                     *[f"+ kubectl -n voice-ai rollout status deployment/{d}" for d in ROLLOUT_ORDER],
                     "+ kubectl -n voice-ai port-forward svc/voice-stt 18001:8001", "dry run:"]:
        assert expected in p.stderr + p.stdout, expected
    assert "PASS" not in p.stdout


def test_deploy_full_overlay_waits_for_pgvector_and_logging(env):
    cluster_with_gpu(env)
    env.run("deploy/scripts/deploy-gpu.sh", "--overlay", "full", "--skip-verify", check=True)
    assert_in_order(env.calls("kubectl"), "rollout status statefulset/voice-pgvector",
                    "-n voice-ai-logging rollout status deployment/loki",
                    "rollout status deployment/voice-livekit", "rollout status deployment/voice-agent")


def test_deploy_rejects_bad_arguments(env):
    p = env.run("deploy/scripts/deploy-gpu.sh", "--overlay", "turbo", check=False)
    assert p.returncode != 0 and "unknown overlay 'turbo'" in p.stderr
    p = env.run("deploy/scripts/deploy-gpu.sh", "--tls-cert", "x.crt", check=False)
    assert p.returncode != 0 and "--tls-cert and --tls-key go together" in p.stderr


# ---------------------------------------------------------------- verify-deployment.sh

def healthy_services(env, devices):
    env.rule("kubectl", "get namespace voice-ai", "restricted")
    env.rule("kubectl", "availableReplicas", "1")
    env.rule("kubectl", "port-forward", "", sleep=30)
    for i, svc in enumerate(MODEL_SERVICES):
        port = 18001 + i
        ready = {"status": "ready", "service": f"voice-{svc}", "device": devices[svc], "degraded": False}
        env.rule("curl", f"127.0.0.1:{port}/readyz", json.dumps(ready, separators=(",", ":")))
        env.rule("curl", f"127.0.0.1:{port}/metrics", f"# TYPE voice_{svc}_ready gauge\nvoice_{svc}_ready 1\n")


def test_verify_passes_when_every_service_is_on_its_device(env):
    healthy_services(env, {"stt": "cuda:0", "llm": "cpu", "embed": "cuda:0", "tts": "cuda:0", "agent": "cuda:0"})
    p = env.run("deploy/scripts/verify-deployment.sh", "--overlay", "hybrid", check=True)
    assert "FAIL" not in p.stdout
    assert "voice-llm ready on cpu" in p.stdout and "voice-stt ready on cuda:0" in p.stdout
    assert p.stdout.strip().endswith("passed, 0 failed")
    for svc in MODEL_SERVICES:
        assert f"voice-{svc} /metrics reports voice_{svc}_ready 1" in p.stdout


def test_verify_reports_cpu_fallback_on_gpu_overlay(env):
    healthy_services(env, {"stt": "cpu", "llm": "cuda:0", "embed": "cuda:0", "tts": "cuda:0", "agent": "cuda:0"})
    p = env.run("deploy/scripts/verify-deployment.sh", "--overlay", "gpu", check=False)
    assert p.returncode == 1
    assert "FAIL voice-stt runs on 'cpu' but the gpu overlay puts it on the GPU: CPU fallback" in p.stdout


def test_verify_reads_overlay_from_cluster_and_flags_missing_policy(env):
    healthy_services(env, {s: "cpu" for s in MODEL_SERVICES})
    env.rule("kubectl", "get configmap voice-ai-mode", "cpu")
    env.rule("kubectl", "get networkpolicy default-deny-all", "", rc=1)
    p = env.run("deploy/scripts/verify-deployment.sh", check=False)
    assert p.returncode == 1
    assert "verifying overlay cpu" in p.stderr
    assert "FAIL NetworkPolicy default-deny-all missing" in p.stdout


# ---------------------------------------------------------------- switch-to-cpu.sh

def test_switch_to_cpu_applies_cpu_overlay_then_waits_and_verifies(env):
    healthy_services(env, {s: "cpu" for s in MODEL_SERVICES})
    env.run("deploy/scripts/switch-to-cpu.sh", check=True)
    calls = env.calls("kubectl")
    assert any(c.endswith("deploy/overlays/cpu") for c in calls if "kustomize" in c)
    assert_in_order(calls, "kubectl cluster-info", "kubectl kustomize", "kubectl apply -f",
                    *[f"rollout status deployment/voice-{s}" for s in MODEL_SERVICES], "port-forward svc/voice-stt")
    apply = calls[index_of(calls, "kubectl apply -f")]
    assert "app.kubernetes.io/name!=voice-models-fetch" in apply


def test_switch_to_cpu_fails_clearly_when_pods_do_not_fit(env):
    env.rule("kubectl", "rollout status deployment/voice-llm", "", rc=1)
    p = env.run("deploy/scripts/switch-to-cpu.sh", check=False)
    assert p.returncode != 0 and "voice-llm did not become ready on the CPU" in p.stderr


def test_switch_to_cpu_dry_run(env):
    p = env.run("deploy/scripts/switch-to-cpu.sh", "--dry-run", check=True)
    assert [c.split()[1] for c in env.calls("kubectl")] == ["kustomize"]
    assert "+ kubectl apply -f" in p.stderr


def test_switch_to_cpu_without_deployment(env):
    env.rule("kubectl", "get namespace voice-ai", "", rc=1)
    p = env.run("deploy/scripts/switch-to-cpu.sh", check=False)
    assert p.returncode != 0 and "namespace voice-ai not found" in p.stderr


# ---------------------------------------------------------------- install-k3s-gpu.sh

def test_install_with_gpu_order(env):
    with_gpu(env)
    env.rule("curl", "get.k3s.io", '#!/bin/sh\necho "k3s-installer $*" >> "$FAKE_LOG.installer"\n')
    env.rule("kubectl", r"allocatable\.nvidia", "12")
    env.run("deploy/install/install-k3s-gpu.sh", check=True)
    calls = env.calls()
    assert_in_order(
        calls,
        "nvidia-smi --query-gpu",
        "curl -sfL https://get.k3s.io -o",
        "kubectl wait --for=condition=Ready node --all",
        "kubectl apply -k",
        "helm repo add nvidia",
        "helm upgrade --install gpu-operator nvidia/gpu-operator --namespace gpu-operator",
        "kubectl get nodes -o jsonpath={.items[*].status.allocatable.nvidia\\.com/gpu}",
        "helm upgrade --install kube-prometheus-stack",
        "helm upgrade --install prometheus-adapter",
    )
    assert calls[index_of(calls, "kubectl apply -k")].endswith("deploy/platform/gpu-operator")
    installer = (env.tmp / "calls.jsonl.installer").read_text()
    assert "k3s-installer --write-kubeconfig-mode 0600" in installer
    gpu_op = calls[index_of(calls, "helm upgrade --install gpu-operator")]
    assert "--version v" in gpu_op and "gpu-operator-values.yaml" in gpu_op


def test_install_without_gpu_skips_gpu_operator(env):
    env.rule("curl", "get.k3s.io", "#!/bin/sh\nexit 0\n")
    env.run("deploy/install/install-k3s-gpu.sh", "--skip-monitoring", check=True)
    assert not any("gpu-operator" in c for c in env.calls())
    assert env.calls("helm") == []


def test_install_keeps_existing_k3s(env):
    env.fake("k3s")
    env.rule("k3s", "--version", "k3s version v1.33.5+k3s1\n")
    env.run("deploy/install/install-k3s-gpu.sh", "--cpu-only", "--skip-monitoring", check=True)
    assert env.calls("curl") == []


def test_install_fails_when_node_never_ready(env):
    env.rule("curl", "get.k3s.io", "#!/bin/sh\nexit 0\n")
    env.rule("kubectl", "wait --for=condition=Ready node", "", rc=1)
    p = env.run("deploy/install/install-k3s-gpu.sh", check=False)
    assert p.returncode != 0 and "did not become Ready" in p.stderr
    assert env.calls("helm") == []


def test_install_needs_root(env):
    env.rule("id", "-u", "1000\n")
    p = env.run("deploy/install/install-k3s-gpu.sh", check=False)
    assert p.returncode != 0 and "run as root" in p.stderr
    p = env.run("deploy/install/install-k3s-gpu.sh", "--dry-run", check=True)
    assert "+ curl -sfL https://get.k3s.io" in p.stderr and env.calls("curl") == []


def test_install_needs_helm(env):
    env.remove_fake("helm")
    p = env.run("deploy/install/install-k3s-gpu.sh", check=False)
    assert p.returncode != 0 and "'helm' not found" in p.stderr


# ---------------------------------------------------------------- test-complete-deployment.sh

def test_complete_deployment_disruption_failure_is_reported(env):
    healthy_services(env, {s: "cpu" for s in MODEL_SERVICES})
    env.rule("curl", "/healthz", '{"status":"ok"}')
    env.rule("curl", "/v1/models", '{"object":"list","data":[]}')
    env.rule("curl", "https://voice.local/", "HTTP/2 200\nstrict-transport-security: max-age=31536000\nx-content-type-options: nosniff\n")
    env.rule("kubectl", "get pods -o", "voice-stt-1 true true\n")
    env.rule("kubectl", "wait --for=condition=Available deployment/voice-stt", "", rc=1)
    p = env.run("deploy/scripts/test-complete-deployment.sh", "--overlay", "cpu", "--disruption", "--timeout", "3s", check=False)
    assert p.returncode == 1
    assert "PASS https://voice.local/ answers with the security headers" in p.stdout
    assert "FAIL voice-stt did not recover within 3s" in p.stdout
    assert_in_order(env.calls("kubectl"), "delete pod -l app.kubernetes.io/name=voice-stt",
                    "wait --for=condition=Available deployment/voice-stt", "describe deployment voice-stt")



def test_complete_deployment_sends_the_agents_api_key_without_showing_it(env):
    healthy_services(env, {s: "cpu" for s in MODEL_SERVICES})
    env.rule("curl", "/healthz", '{"status":"ok"}')
    env.rule("curl", "/v1/models", '{"object":"list","data":[]}')
    # The Secret's name carries kustomize's hash: found through the agent's api-keys volume.
    env.rule("kubectl", "get deployment voice-agent -o jsonpath=.*api-keys", "voice-api-keys-abc1234567")
    key = "s3cret-test-key-0123"
    env.rule("kubectl", "get secret voice-api-keys-abc1234567", base64.b64encode(f"{key}\n".encode()).decode())
    p = env.run("deploy/scripts/test-complete-deployment.sh", "--overlay", "cpu", check=False)
    models = [c for c in env.calls("curl") if "/v1/models" in c]
    assert len(models) == 4 and all(" -H @" in c for c in models), models
    assert "PASS voice-stt GET /v1/models" in p.stdout
    assert key not in p.output and not any(key in c for c in env.calls())
    assert "no API key found" not in p.stderr


def test_complete_deployment_without_api_key_warns_and_goes_on(env):
    healthy_services(env, {s: "cpu" for s in MODEL_SERVICES})
    env.rule("curl", "/healthz", '{"status":"ok"}')
    env.rule("curl", "/v1/models", '{"object":"list","data":[]}')
    p = env.run("deploy/scripts/test-complete-deployment.sh", "--overlay", "cpu", check=False)
    assert "no API key found" in p.stderr
    assert not any(" -H @" in c for c in env.calls("curl"))
    assert "PASS voice-llm GET /v1/models" in p.stdout


# ---------------------------------------------------------------- build-images.sh

def test_build_images_dry_run(env):
    p = env.run("deploy/docker/build-images.sh", "--dry-run", "--import-k3s", check=False)
    # k3s is required for --import-k3s
    assert p.returncode != 0 and "'k3s' not found" in p.stderr
    p = env.run("deploy/docker/build-images.sh", "--dry-run", check=True)
    out = p.stderr
    assert "-t voice-ai/voice-stt:0.1.0 " in out
    assert "FEATURES=voice-stt/cuda" in out and "-t voice-ai/voice-stt:0.1.0-cuda" in out
    assert "-t voice-ai/voice-models:0.1.0 " in out and "voice-models:0.1.0-cuda" not in out
    assert env.calls("docker") == []
