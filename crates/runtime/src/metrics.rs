//! Prometheus metrics every service exposes on `/metrics`, named `voice_<service>_...`.
//!
//! Services register their own metrics (time to first token, real-time factor, ...) into the same
//! registry through [`Metrics::registry`] and the `new_*` helpers, so one scrape shows everything.

use std::sync::Arc;

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets from 5 ms to 2 minutes: fits both a token and a long transcription.
pub const LATENCY_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];

#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").field("namespace", &self.inner.namespace).finish()
    }
}

pub struct Inner {
    namespace: String,
    pub registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub grpc_requests: IntCounterVec,
    pub grpc_duration: HistogramVec,
    pub in_flight: IntGauge,
    pub queue_depth: IntGauge,
    pub rejected: IntCounterVec,
    pub model_load_seconds: GaugeVec,
    pub device_info: IntGaugeVec,
    pub degraded: IntGauge,
    pub device_errors: IntCounterVec,
    pub cpu_retries: IntCounter,
    pub ready: IntGauge,
}

impl std::ops::Deref for Metrics {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.inner
    }
}

impl Metrics {
    /// `service` is the short name (`stt`); metrics are named `voice_stt_*`.
    pub fn new(service: &str) -> prometheus::Result<Self> {
        let namespace = format!("voice_{service}");
        let registry = Registry::new();
        let ns = namespace.clone();
        let opts = |name: &str, help: &str| Opts::new(name, help).namespace(ns.clone());
        let hopts = |name: &str, help: &str| HistogramOpts::new(name, help).namespace(ns.clone()).buckets(LATENCY_BUCKETS.to_vec());
        let http_requests =
            IntCounterVec::new(opts("http_requests_total", "HTTP requests by route, method and status code"), &["route", "method", "status"])?;
        let http_duration = HistogramVec::new(hopts("http_request_duration_seconds", "HTTP request latency by route"), &["route"])?;
        let grpc_requests = IntCounterVec::new(opts("grpc_requests_total", "gRPC calls by method and status code"), &["method", "code"])?;
        let grpc_duration = HistogramVec::new(hopts("grpc_request_duration_seconds", "gRPC call latency by method"), &["method"])?;
        let in_flight = IntGauge::with_opts(opts("in_flight_requests", "Requests being served now (HTTP and gRPC)"))?;
        let queue_depth = IntGauge::with_opts(opts("queue_depth", "Requests waiting for a model slot"))?;
        let rejected = IntCounterVec::new(opts("rejected_requests_total", "Requests refused by backpressure or limits, by reason"), &["reason"])?;
        let model_load_seconds = GaugeVec::new(opts("model_load_seconds", "Time it took to load the model"), &["model", "device"])?;
        let device_info = IntGaugeVec::new(opts("device_info", "1 for the device the model runs on now"), &["device", "requested"])?;
        let degraded = IntGauge::with_opts(opts("degraded", "1 after a GPU failure made the service fall back to the CPU"))?;
        let device_errors =
            IntCounterVec::new(opts("device_errors_total", "GPU errors seen, by device and phase (load, request)"), &["device", "phase"])?;
        let cpu_retries = IntCounter::with_opts(opts("cpu_fallback_requests_total", "Requests served by the CPU copy after a GPU failure"))?;
        let ready = IntGauge::with_opts(opts("ready", "1 when the model is loaded and the service accepts work"))?;

        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_duration.clone()))?;
        registry.register(Box::new(grpc_requests.clone()))?;
        registry.register(Box::new(grpc_duration.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(queue_depth.clone()))?;
        registry.register(Box::new(rejected.clone()))?;
        registry.register(Box::new(model_load_seconds.clone()))?;
        registry.register(Box::new(device_info.clone()))?;
        registry.register(Box::new(degraded.clone()))?;
        registry.register(Box::new(device_errors.clone()))?;
        registry.register(Box::new(cpu_retries.clone()))?;
        registry.register(Box::new(ready.clone()))?;

        Ok(Self {
            inner: Arc::new(Inner {
                namespace,
                registry,
                http_requests,
                http_duration,
                grpc_requests,
                grpc_duration,
                in_flight,
                queue_depth,
                rejected,
                model_load_seconds,
                device_info,
                degraded,
                device_errors,
                cpu_retries,
                ready,
            }),
        })
    }

    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    pub fn new_histogram(&self, name: &str, help: &str, buckets: &[f64]) -> prometheus::Result<Histogram> {
        let h = Histogram::with_opts(HistogramOpts::new(name, help).namespace(self.namespace()).buckets(buckets.to_vec()))?;
        self.registry.register(Box::new(h.clone()))?;
        Ok(h)
    }

    pub fn new_histogram_vec(&self, name: &str, help: &str, labels: &[&str], buckets: &[f64]) -> prometheus::Result<HistogramVec> {
        let h = HistogramVec::new(HistogramOpts::new(name, help).namespace(self.namespace()).buckets(buckets.to_vec()), labels)?;
        self.registry.register(Box::new(h.clone()))?;
        Ok(h)
    }

    pub fn new_counter(&self, name: &str, help: &str) -> prometheus::Result<IntCounter> {
        let c = IntCounter::with_opts(Opts::new(name, help).namespace(self.namespace()))?;
        self.registry.register(Box::new(c.clone()))?;
        Ok(c)
    }

    pub fn new_counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntCounterVec> {
        let c = IntCounterVec::new(Opts::new(name, help).namespace(self.namespace()), labels)?;
        self.registry.register(Box::new(c.clone()))?;
        Ok(c)
    }

    pub fn new_gauge(&self, name: &str, help: &str) -> prometheus::Result<Gauge> {
        let g = Gauge::with_opts(Opts::new(name, help).namespace(self.namespace()))?;
        self.registry.register(Box::new(g.clone()))?;
        Ok(g)
    }

    /// The Prometheus text exposition of every registered metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
