//! The checks catch what they claim to: hand-written broken manifests (no kubectl needed).

use voice_deploy_tests::*;

const GOOD: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: voice-ai
  labels:
    pod-security.kubernetes.io/enforce: restricted
    pod-security.kubernetes.io/audit: restricted
    pod-security.kubernetes.io/warn: restricted
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny-all, namespace: voice-ai}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: web, namespace: voice-ai}
automountServiceAccountToken: false
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: voice-ai}
spec:
  selector:
    matchLabels: {app.kubernetes.io/name: web}
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxUnavailable: 0, maxSurge: 1}
  template:
    metadata:
      labels: {app.kubernetes.io/name: web}
    spec:
      serviceAccountName: web
      automountServiceAccountToken: false
      securityContext:
        runAsNonRoot: true
        seccompProfile: {type: RuntimeDefault}
      containers:
        - name: web
          image: example/web:1
          ports:
            - {name: http, containerPort: 8080}
          resources:
            requests: {cpu: 100m, memory: 64Mi}
            limits: {cpu: 200m, memory: 128Mi}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {drop: [ALL]}
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: voice-ai
  labels: {app.kubernetes.io/name: web}
spec:
  selector: {app.kubernetes.io/name: web}
  ports:
    - {name: http, port: 80, targetPort: http}
---
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata: {name: web, namespace: voice-ai}
spec:
  selector:
    matchLabels: {app.kubernetes.io/name: web}
  endpoints:
    - port: http
"#;

fn docs(text: &str) -> Vec<Doc> {
    parse_docs(text)
}

fn broken(from: &str, to: &str) -> Vec<Doc> {
    assert!(GOOD.contains(from), "fixture lacks {from:?}");
    docs(&GOOD.replacen(from, to, 1))
}

fn assert_finds(problems: Vec<String>, needle: &str) {
    assert!(problems.iter().any(|p| p.contains(needle)), "expected a problem containing {needle:?}, got {problems:?}");
}

#[test]
fn the_good_fixture_passes_every_check() {
    let d = docs(GOOD);
    for (what, problems) in [
        ("strict", check_strict(&d)),
        ("names", check_names(&d)),
        ("ports", check_ports(&d)),
        ("selectors", check_selectors(&d)),
        ("security", check_security(&d)),
        ("default deny", check_default_deny(&d)),
        ("service monitors", check_service_monitors(&d)),
        ("gpu", check_gpu(&d)),
        ("references", check_references(&d)),
    ] {
        assert!(problems.is_empty(), "{what}: {problems:?}");
    }
}

#[test]
fn unknown_field_fails_with_its_path() {
    let p = check_strict(&broken("          image: example/web:1", "          image: example/web:1\n          imagePullPolicyy: Always"));
    assert_finds(p, "spec.template.spec.containers.0.imagePullPolicyy");
}

#[test]
fn wrong_type_fails_with_its_path() {
    let p = check_strict(&broken("  strategy:\n", "  replicas: two\n  strategy:\n"));
    assert_finds(p, "spec.replicas");
}

#[test]
fn removed_api_version_fails() {
    let p = check_strict(&broken("apiVersion: apps/v1\nkind: Deployment", "apiVersion: extensions/v1beta1\nkind: Deployment"));
    assert_finds(p, "Deployment extensions/v1beta1");
}

#[test]
fn unknown_field_in_a_crd_fails() {
    let p = check_strict(&broken("    - port: http\n", "    - port: http\n      intervall: 15s\n"));
    assert_finds(p, "intervall");
}

#[test]
fn selector_not_matching_template_is_caught() {
    let d = broken("    matchLabels: {app.kubernetes.io/name: web}\n  strategy", "    matchLabels: {app.kubernetes.io/name: webb}\n  strategy");
    assert_finds(check_selectors(&d), "spec.selector does not match");
}

#[test]
fn service_selecting_nothing_is_caught() {
    let d = broken("  selector: {app.kubernetes.io/name: web}\n  ports", "  selector: {app.kubernetes.io/name: wbe}\n  ports");
    assert_finds(check_selectors(&d), "matches no pod template");
}

#[test]
fn service_monitor_port_missing_on_service_is_caught() {
    let d = broken("    - port: http\n", "    - port: metrics\n");
    assert_finds(check_service_monitors(&d), "endpoint port \"metrics\" does not exist");
}

#[test]
fn bad_names_and_ports_are_caught() {
    assert_finds(
        check_names(&broken(
            "metadata: {name: web, namespace: voice-ai}\nspec:\n  selector:\n    matchLabels",
            "metadata: {name: Web_1, namespace: voice-ai}\nspec:\n  selector:\n    matchLabels",
        )),
        "DNS-1123",
    );
    assert_finds(check_ports(&broken("containerPort: 8080", "containerPort: 80800")), "containerPort out of 1-65535");
    assert_finds(check_names(&broken("{name: http, containerPort", "{name: http-port-too-long-x, containerPort")), "IANA");
}

#[test]
fn security_rules_are_enforced() {
    assert_finds(check_security(&broken("capabilities: {drop: [ALL]}", "capabilities: {drop: [NET_RAW]}")), "drop must contain ALL");
    assert_finds(check_security(&broken("readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false")), "readOnlyRootFilesystem");
    assert_finds(check_security(&broken("        runAsNonRoot: true\n", "        runAsUser: 0\n")), "runAsNonRoot");
    assert_finds(check_security(&broken("      automountServiceAccountToken: false\n", "")), "automountServiceAccountToken");
    assert_finds(check_security(&broken("allowPrivilegeEscalation: false", "allowPrivilegeEscalation: true")), "allowPrivilegeEscalation");
    assert_finds(check_security(&broken("            limits: {cpu: 200m, memory: 128Mi}\n", "")), "resources.limits.cpu missing");
}

#[test]
fn missing_default_deny_is_caught() {
    assert_finds(check_default_deny(&broken("  policyTypes: [Ingress, Egress]", "  policyTypes: [Ingress]")), "no default-deny");
}

#[test]
fn gpu_request_different_from_limit_is_caught() {
    let d = broken("            limits: {cpu: 200m, memory: 128Mi}", "            limits: {cpu: 200m, memory: 128Mi, nvidia.com/gpu: \"2\"}");
    let p = check_gpu(&d);
    assert_finds(p.clone(), "request None != limit Some(\"2\")");
    assert_finds(p.clone(), "runtimeClassName nvidia");
    assert_finds(p, "--device cuda");
}

#[test]
fn hpa_min_above_max_is_caught() {
    let hpa = r#"
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: web, namespace: voice-ai}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  minReplicas: 3
  maxReplicas: 2
  metrics:
    - type: Pods
      pods:
        metric: {name: web_queue}
        target: {type: AverageValue, averageValue: "4"}
"#;
    let d = docs(&format!("{GOOD}{hpa}"));
    let p = check_hpas(&d);
    assert_finds(p.clone(), "minReplicas (3) <= maxReplicas (2)");
    assert_finds(p, "not served by the prometheus-adapter rule");
}

#[test]
fn quantities_parse() {
    assert_eq!(cpu_millis("2000m"), Some(2000));
    assert_eq!(cpu_millis("2"), Some(2000));
    assert_eq!(cpu_millis("0.5"), Some(500));
    assert_eq!(bytes("4Gi"), Some(4 << 30));
    assert_eq!(bytes("512Mi"), Some(512 << 20));
    assert_eq!(bytes("1G"), Some(1_000_000_000));
    assert_eq!(budget_gb("12GB"), Some(12.0));
    assert!(adapter_serves("voice_stt_queue_depth"));
    assert!(!adapter_serves("voice_stt_in_flight_requests"));
    assert!(is_dns1123_label("voice-stt") && !is_dns1123_label("-x") && !is_dns1123_label("A"));
    assert!(is_port_name("grpc") && !is_port_name("8001") && !is_port_name("a--b"));
}

// ------------------------------------------------------------------------------ API keys

const KEY: &str = "dev-only-test-key";

/// voice-api-keys and the five Deployments, as check_api_keys wants them.
fn keyed() -> String {
    let mut out = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: voice-api-keys-abcde12345, namespace: voice-ai}}\n\
         stringData:\n  keys: \"# comment\\n{KEY}\\nother-client-key\\n\"\n  agent-key: \"{KEY}\\n\"\n"
    );
    for svc in ["stt", "llm", "embed", "tts", "agent"] {
        let (var, item) = if svc == "agent" {
            ("VOICE_AGENT_BACKEND_API_KEY_FILE".to_string(), "agent-key")
        } else {
            (format!("VOICE_{}_API_KEY_FILE", svc.to_uppercase()), "keys")
        };
        let extra = if svc == "agent" {
            "\n            - {name: VOICE_AGENT_RATE_LIMIT, value: \"2\"}\n            - {name: VOICE_AGENT_TRUST_FORWARDED_FOR, value: \"true\"}"
        } else {
            ""
        };
        out.push_str(&format!(
            r#"---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: voice-{svc}, namespace: voice-ai}}
spec:
  selector:
    matchLabels: {{app.kubernetes.io/name: voice-{svc}}}
  template:
    metadata:
      labels: {{app.kubernetes.io/name: voice-{svc}}}
    spec:
      containers:
        - name: voice-{svc}
          image: voice-ai/voice-{svc}:1
          env:
            - {{name: {var}, value: /etc/voice-ai/api-keys/{item}}}{extra}
          volumeMounts:
            - {{name: api-keys, mountPath: /etc/voice-ai/api-keys, readOnly: true}}
      volumes:
        - name: api-keys
          secret:
            secretName: voice-api-keys-abcde12345
            items:
              - {{key: {item}, path: {item}}}
"#
        ));
    }
    out
}

fn keyed_broken(from: &str, to: &str) -> Vec<Doc> {
    let good = keyed();
    assert!(good.contains(from), "fixture lacks {from:?}");
    docs(&good.replacen(from, to, 1))
}

#[test]
fn api_key_fixture_passes() {
    let d = docs(&keyed());
    assert!(check_strict(&d).is_empty(), "{:?}", check_strict(&d));
    assert!(check_api_keys(&d).is_empty(), "{:?}", check_api_keys(&d));
    assert!(is_generated_name("voice-api-keys-abcde12345", API_KEYS_SECRET) && is_generated_name("voice-api-keys", API_KEYS_SECRET));
    assert!(!is_generated_name("voice-api-keys-old", API_KEYS_SECRET));
}

#[test]
fn api_key_problems_are_caught() {
    // A key in a plain value, by name or by content.
    assert_finds(
        check_api_keys(&keyed_broken(
            "            - {name: VOICE_STT_API_KEY_FILE",
            "            - {name: VOICE_STT_API_KEY, value: x}\n            - {name: VOICE_STT_API_KEY_FILE",
        )),
        "env VOICE_STT_API_KEY has a plain value",
    );
    assert_finds(
        check_api_keys(&keyed_broken(
            "            - {name: VOICE_LLM_API_KEY_FILE",
            &format!("            - {{name: TOKEN, value: \"Bearer {KEY}\"}}\n            - {{name: VOICE_LLM_API_KEY_FILE"),
        )),
        "env TOKEN carries an API key",
    );
    // The file is not the Secret's.
    assert_finds(check_api_keys(&keyed_broken("value: /etc/voice-ai/api-keys/keys}", "value: /tmp/keys}")), "is not a file of a Secret volume");
    assert_finds(check_api_keys(&keyed_broken("readOnly: true}", "readOnly: false}")), "must be readOnly");
    // The agent takes no key of its own, and sends one the services accept.
    assert_finds(
        check_api_keys(&keyed_broken(
            "{name: VOICE_AGENT_RATE_LIMIT",
            "{name: VOICE_AGENT_API_KEY_FILE, value: /etc/voice-ai/api-keys/keys}\n            - {name: VOICE_AGENT_RATE_LIMIT",
        )),
        "VOICE_AGENT_API_KEY_FILE set",
    );
    assert_finds(check_api_keys(&keyed_broken("agent-key: \"dev-only-test-key", "agent-key: \"unknown-key")), "not a line of `keys`");
    assert_finds(
        check_api_keys(&keyed_broken("{name: VOICE_AGENT_RATE_LIMIT, value: \"2\"}", "{name: VOICE_AGENT_RATE_LIMIT, value: \"0\"}")),
        "RATE_LIMIT must be > 0",
    );
    // A pod mounts every entry (the services would see agent-key, the agent the whole list).
    assert_finds(
        check_api_keys(&keyed_broken(
            "            secretName: voice-api-keys-abcde12345\n            items:\n              - {key: keys, path: keys}\n",
            "            secretName: voice-api-keys-abcde12345\n",
        )),
        "must hold only `keys`",
    );
    // No Secret at all.
    assert_finds(check_api_keys(&keyed_broken("name: voice-api-keys-abcde12345, namespace", "name: other, namespace")), "not rendered");
}
