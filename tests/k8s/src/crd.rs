//! The CRDs the manifests use, modelled with the fields this project sets. Unknown fields are
//! reported by `serde_ignored` (see [`crate::strict`]), so a typo or a field these models lack
//! fails the test: extend the model when the manifests need a new field.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde::Deserialize;
use serde_json::Value;

// ------------------------------------------------------------------ monitoring.coreos.com/v1

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceMonitor {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: ServiceMonitorSpec,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceMonitorSpec {
    pub selector: LabelSelector,
    pub namespace_selector: Option<NamespaceSelector>,
    pub endpoints: Vec<Endpoint>,
    pub job_label: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceSelector {
    pub match_names: Option<Vec<String>>,
    pub any: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    pub port: String,
    pub path: Option<String>,
    pub interval: Option<String>,
    pub scrape_timeout: Option<String>,
    pub honor_labels: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusRule {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: PrometheusRuleSpec,
}

#[derive(Debug, Deserialize)]
pub struct PrometheusRuleSpec {
    pub groups: Vec<RuleGroup>,
}

#[derive(Debug, Deserialize)]
pub struct RuleGroup {
    pub name: String,
    pub interval: Option<String>,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
pub struct Rule {
    pub alert: Option<String>,
    pub record: Option<String>,
    pub expr: String,
    #[serde(rename = "for")]
    pub for_: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
    pub annotations: Option<BTreeMap<String, String>>,
}

// ------------------------------------------------------------------ traefik.io/v1alpha1

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngressRoute {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: IngressRouteSpec,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngressRouteSpec {
    pub entry_points: Vec<String>,
    pub routes: Vec<Route>,
    pub tls: Option<Tls>,
}

#[derive(Debug, Deserialize)]
pub struct Route {
    pub kind: String,
    #[serde(rename = "match")]
    pub match_: String,
    pub priority: Option<i64>,
    pub middlewares: Option<Vec<Reference>>,
    pub services: Vec<ServiceReference>,
}

#[derive(Debug, Deserialize)]
pub struct Reference {
    pub name: String,
    pub namespace: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ServiceReference {
    pub name: String,
    /// A number or a port name.
    pub port: Value,
    pub namespace: Option<String>,
    pub kind: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tls {
    pub secret_name: Option<String>,
    pub options: Option<Reference>,
}

/// Middleware, TLSOption: metadata checked strictly, spec left to kubernetes-models.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpaqueSpec {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: Value,
}
