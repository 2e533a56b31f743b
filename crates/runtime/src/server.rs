//! The one server bootstrap: HTTP (axum) on `--port` and gRPC (tonic) on `--grpc-port`, with
//! `/healthz`, `/readyz`, `/metrics`, request metrics, body-size and time limits, and graceful
//! shutdown on SIGTERM/SIGINT that stops accepting, drains in-flight requests, then exits.
//!
//! Two ports rather than one multiplexed port: each protocol keeps its own limits and timeouts,
//! and Kubernetes probes, NetworkPolicies and ServiceMonitors can name the HTTP port alone.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use axum::{
    extract::{DefaultBodyLimit, MatchedPath, Request, State},
    http::{header, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use futures::future::BoxFuture;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    auth::ApiKeys,
    cli::{ServiceArgs, ServiceSpec},
    device::{DeviceSpec, DeviceState},
    error::ApiError,
    metrics::Metrics,
    queue::WorkQueue,
    ratelimit::RateLimiter,
    telemetry,
    transport::{self, ConnectionPolicy},
};

/// Lifecycle of a service as `/readyz` reports it.
#[derive(Debug)]
pub struct Readiness {
    ready: AtomicBool,
    shutting_down: AtomicBool,
    model: Mutex<Option<String>>,
    failure: Mutex<Option<String>>,
    /// Parts a service reports beside its model (e.g. voice-embed's document store), shown in
    /// `/readyz` under `components`; they do not gate readiness.
    components: Mutex<std::collections::BTreeMap<String, serde_json::Value>>,
}

impl Readiness {
    fn new() -> Self {
        Self {
            ready: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
            model: Mutex::new(None),
            failure: Mutex::new(None),
            components: Mutex::new(Default::default()),
        }
    }
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && !self.shutting_down.load(Ordering::SeqCst)
    }
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }
}

/// Everything a service's handlers share, built once by [`ServiceContext::init`].
#[derive(Clone)]
pub struct ServiceContext {
    pub spec: ServiceSpec,
    pub args: ServiceArgs,
    pub metrics: Metrics,
    pub device_state: Arc<DeviceState>,
    pub readiness: Arc<Readiness>,
    pub queue: WorkQueue,
    pub shutdown: CancellationToken,
    pub api_keys: ApiKeys,
    pub rate_limiter: RateLimiter,
    /// rustls configs (HTTP/1.1, h2) when --tls-cert/--tls-key are set.
    tls: Option<(Arc<tokio_rustls::rustls::ServerConfig>, Arc<tokio_rustls::rustls::ServerConfig>)>,
}

impl ServiceContext {
    /// Set up logging and metrics for a service. Call once, first thing in `main`.
    pub fn init(spec: ServiceSpec, args: ServiceArgs) -> Result<Self> {
        telemetry::init(args.log_format, &args.log_level)?;
        Self::new(spec, args)
    }

    /// Like [`init`](Self::init) without installing the global logger (tests, several in one process).
    pub fn new(spec: ServiceSpec, args: ServiceArgs) -> Result<Self> {
        let metrics = Metrics::new(spec.name).context("registering metrics")?;
        let device_state = DeviceState::new(args.device, metrics.clone());
        let queue = WorkQueue::new(args.max_concurrency, args.max_queue, metrics.clone());
        let api_keys = ApiKeys::load(&args.api_key, args.api_key_file.as_deref())?;
        if api_keys.enabled() {
            tracing::info!("API keys configured: HTTP and gRPC API requests need a bearer key");
        }
        let rate_limiter = RateLimiter::new(args.rate_limit, args.rate_limit_burst, args.trust_forwarded_for);
        if rate_limiter.enabled() {
            tracing::info!(per_second = args.rate_limit, burst = args.rate_limit_burst, "per-client rate limit on");
        }
        // Load the certificate at start-up so a bad file stops the service with a clear error.
        anyhow::ensure!(!args.header_read_timeout.is_zero(), "--header-read-timeout must be above 0");
        let tls = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => {
                Some((transport::server_tls_config(cert, key, &[b"http/1.1"])?, transport::server_tls_config(cert, key, &[b"h2"])?))
            }
            (None, None) => None,
            _ => anyhow::bail!("--tls-cert and --tls-key go together"),
        };
        Ok(Self {
            spec,
            args,
            metrics,
            device_state,
            readiness: Arc::new(Readiness::new()),
            queue,
            shutdown: CancellationToken::new(),
            api_keys,
            rate_limiter,
            tls,
        })
    }

    /// TLS, header deadline and connection cap for a listener of this service (`grpc` picks the
    /// h2 TLS config); the agent uses it for its frontend port too.
    pub fn connection_policy(&self, grpc: bool) -> ConnectionPolicy {
        let tls = self.tls.as_ref().map(|(http, h2)| if grpc { h2.clone() } else { http.clone() });
        ConnectionPolicy::new(tls, self.args.header_read_timeout, self.args.max_connections, self.metrics.clone())
    }

    pub fn uses_tls(&self) -> bool {
        self.tls.is_some()
    }

    pub fn requested_device(&self) -> DeviceSpec {
        self.args.device
    }

    /// The model is loaded: `/readyz` turns green.
    pub fn set_ready(&self, model: &str) {
        *self.readiness.model.lock().unwrap() = Some(model.to_string());
        self.readiness.ready.store(true, Ordering::SeqCst);
        self.metrics.ready.set(1);
        tracing::info!(model, device = %self.device_state.status().device, "ready");
    }

    /// Loading failed for good: `/readyz` says why.
    pub fn set_failed(&self, why: String) {
        *self.readiness.failure.lock().unwrap() = Some(why);
    }

    /// Load a service's engine on a blocking thread, so `/healthz` and `/readyz` answer during a
    /// long model load: on success publish it in `cell` and mark the service ready for model
    /// `id`; on failure log, mark failed and exit with status 2 (the orchestrator restarts us).
    pub fn load_in_background<T: Send + Sync + 'static>(
        &self,
        cell: Arc<std::sync::OnceLock<Arc<T>>>,
        load: impl FnOnce() -> anyhow::Result<(String, T)> + Send + 'static,
    ) {
        let ctx = self.clone();
        tokio::task::spawn_blocking(move || match load() {
            Ok((id, engine)) => {
                let _ = cell.set(Arc::new(engine));
                ctx.set_ready(&id);
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "could not load the model; exiting");
                ctx.set_failed(format!("{e:#}"));
                std::process::exit(2);
            }
        });
    }

    /// Report the state of a part of the service in `/readyz` (`components.<name>`).
    pub fn set_component(&self, name: &str, state: serde_json::Value) {
        self.readiness.components.lock().unwrap().insert(name.to_string(), state);
    }

    /// Refuse work unless the model is loaded and we are not shutting down.
    pub fn ensure_ready(&self) -> Result<(), ApiError> {
        if self.readiness.is_shutting_down() {
            return Err(ApiError::unavailable("the service is shutting down", Duration::from_secs(5)));
        }
        if !self.readiness.ready.load(Ordering::SeqCst) {
            return Err(ApiError::unavailable("the model is still loading", Duration::from_secs(5)));
        }
        Ok(())
    }

    fn readyz_body(&self) -> (StatusCode, serde_json::Value) {
        let r = &self.readiness;
        let dev = self.device_state.status();
        let model = r.model.lock().unwrap().clone();
        let (status, code) = if r.is_shutting_down() {
            ("shutting_down", StatusCode::SERVICE_UNAVAILABLE)
        } else if let Some(f) = r.failure.lock().unwrap().clone() {
            return (StatusCode::SERVICE_UNAVAILABLE, json!({"status": "failed", "error": f, "device": dev}));
        } else if r.ready.load(Ordering::SeqCst) {
            ("ready", StatusCode::OK)
        } else {
            ("loading", StatusCode::SERVICE_UNAVAILABLE)
        };
        (
            code,
            json!({
                "status": status,
                "service": self.spec.binary,
                "model": model,
                "device": dev.device,
                "requested_device": dev.requested,
                "primary_device": dev.primary_device,
                "degraded": dev.degraded,
                "degraded_reason": dev.degraded_reason,
                "queue_depth": self.queue.depth(),
                "components": r.components.lock().unwrap().clone(),
            }),
        )
    }
}

/// Bound listeners, so tests can start on port 0 and learn the real ports.
pub struct Listeners {
    pub http: TcpListener,
    pub grpc: Option<TcpListener>,
}

impl Listeners {
    pub async fn bind(args: &ServiceArgs, with_grpc: bool) -> Result<Self> {
        let http_addr = format!("{}:{}", args.host, args.port);
        let http = bind_retrying(&http_addr).await.with_context(|| format!("binding HTTP on {http_addr}"))?;
        let grpc = if with_grpc {
            let grpc_addr = format!("{}:{}", args.host, args.grpc_port);
            Some(bind_retrying(&grpc_addr).await.with_context(|| format!("binding gRPC on {grpc_addr}"))?)
        } else {
            None
        };
        Ok(Self { http, grpc })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr().expect("bound socket has an address")
    }

    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc.as_ref().map(|l| l.local_addr().expect("bound socket has an address"))
    }
}

/// Bind, retrying for up to 10 s while the address is in use: a restarted process (kill -9, a
/// crash loop) may start before the kernel has released its predecessor's socket.
async fn bind_retrying(addr: &str) -> std::io::Result<TcpListener> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpListener::bind(addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                tracing::warn!(addr, "address in use; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => return other,
        }
    }
}

/// Serve until SIGTERM/SIGINT (or `ctx.shutdown` is cancelled), then drain and return.
///
/// `api` holds the service's own routes; the runtime adds health, readiness, metrics, request
/// accounting, the body limit and the request timeout around them.
pub async fn serve(ctx: ServiceContext, listeners: Listeners, api: Router, grpc: Option<tonic::service::Routes>) -> Result<()> {
    let http_addr = listeners.http_addr();
    let grpc_addr = listeners.grpc_addr();
    let app = build_router(&ctx, api);

    spawn_signal_handler(ctx.clone());

    let http_server = transport::serve_http(listeners.http, app, ctx.connection_policy(false), ctx.shutdown.clone());
    tracing::info!(http = %http_addr, grpc = ?grpc_addr, tls = ctx.uses_tls(), service = ctx.spec.binary, "listening");

    let grpc_task = match (grpc, listeners.grpc) {
        (Some(routes), Some(listener)) => {
            let routes = with_grpc_health(&ctx, routes);
            let token = ctx.shutdown.clone();
            let (metrics, keys, limiter) = (ctx.metrics.clone(), ctx.api_keys.clone(), ctx.rate_limiter.clone());
            let timeout = ctx.args.request_timeout;
            let incoming = transport::grpc_incoming(listener, ctx.connection_policy(true), ctx.shutdown.clone());
            Some(tokio::spawn(async move {
                tonic::transport::Server::builder()
                    .timeout(timeout)
                    .http2_keepalive_interval(Some(Duration::from_secs(30)))
                    .http2_keepalive_timeout(Some(Duration::from_secs(20)))
                    .layer(tower::layer::layer_fn(move |inner| GrpcGate {
                        inner,
                        metrics: metrics.clone(),
                        keys: keys.clone(),
                        limiter: limiter.clone(),
                    }))
                    .add_routes(routes)
                    .serve_with_incoming_shutdown(incoming, async move { token.cancelled().await })
                    .await
            }))
        }
        _ => None,
    };

    let http_task = tokio::spawn(http_server);

    // Wait for shutdown to begin, then give in-flight work the grace period.
    ctx.shutdown.cancelled().await;
    let grace = ctx.args.shutdown_grace;
    let drained = tokio::time::timeout(grace, async {
        let _ = http_task.await;
        if let Some(t) = grpc_task {
            let _ = t.await;
        }
    })
    .await;
    match drained {
        Ok(()) => tracing::info!("drained in-flight requests; bye"),
        Err(_) => tracing::warn!(grace_secs = grace.as_secs_f64(), "grace period over with requests still running; exiting"),
    }
    Ok(())
}

fn spawn_signal_handler(ctx: ServiceContext) {
    tokio::spawn(async move {
        let reason = wait_for_signal().await;
        tracing::info!(signal = reason, "shutting down: refusing new work, draining in-flight requests");
        ctx.readiness.shutting_down.store(true, Ordering::SeqCst);
        ctx.metrics.ready.set(0);
        ctx.shutdown.cancel();
    });
}

async fn wait_for_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return "SIGINT";
            }
        };
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = tokio::signal::ctrl_c() => "SIGINT",
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "ctrl-c"
    }
}

fn build_router(ctx: &ServiceContext, api: Router) -> Router {
    let limit = ctx.args.max_body_bytes as usize;
    let api = api.layer(DefaultBodyLimit::max(limit.max(1))).route_layer(middleware::from_fn_with_state(ctx.clone(), limits_and_metrics));
    let ops = Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(ctx.clone());
    api.merge(ops).fallback(|| async { ApiError::not_found("no such route; see README.md for the API").into_response() })
}

async fn readyz(State(ctx): State<ServiceContext>) -> Response {
    let (code, body) = ctx.readyz_body();
    (code, Json(body)).into_response()
}

async fn metrics_text(State(ctx): State<ServiceContext>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], ctx.metrics.render()).into_response()
}

/// Per API request: refuse bodies over the limit by Content-Length before reading them, bound
/// the whole request in time, and count it.
async fn limits_and_metrics(State(ctx): State<ServiceContext>, req: Request, next: Next) -> Response {
    // A request answered without its body being read (401, 413, 429, a validation error first)
    // leaves unread bytes on the connection: hyper then closes it after the response, and a
    // client that reuses it for its next request sees a reset. Saying `Connection: close` in
    // that response tells the client not to reuse it.
    let (parts, body) = req.into_parts();
    let had_body = !http_body::Body::is_end_stream(&body);
    let finished = Arc::new(AtomicBool::new(false));
    let req = Request::from_parts(parts, axum::body::Body::new(TrackedBody { inner: body, finished: finished.clone() }));
    let mut response = admit_and_run(ctx, req, next).await;
    if had_body && !finished.load(Ordering::SeqCst) {
        response.headers_mut().insert(header::CONNECTION, http::HeaderValue::from_static("close"));
    }
    response
}

/// Counts a request in `in_flight_requests` while it lives: a request dropped midway (client gone,
/// timeout) is uncounted too.
struct InFlight(prometheus::IntGauge);

impl InFlight {
    fn enter(gauge: &prometheus::IntGauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A request body that records when it has been read to the end.
struct TrackedBody {
    inner: axum::body::Body,
    finished: Arc<AtomicBool>,
}

impl http_body::Body for TrackedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || this.inner.is_end_stream() {
            this.finished.store(true, Ordering::SeqCst);
        }
        polled
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

async fn admit_and_run(ctx: ServiceContext, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let start = Instant::now();
    let m = &ctx.metrics;

    let authorization = req.headers().get(header::AUTHORIZATION).map(|v| v.as_bytes());
    if !ctx.api_keys.check(authorization) {
        m.rejected.with_label_values(&["unauthorized"]).inc();
        let response = ApiError::unauthorized().into_response();
        m.http_requests.with_label_values(&[&route, &method, response.status().as_str()]).inc();
        return response;
    }
    if ctx.rate_limiter.enabled() {
        let peer = req.extensions().get::<axum::extract::ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        let forwarded = req.headers().get("x-forwarded-for").map(|v| v.as_bytes());
        let key = ctx.api_keys.matching_key(authorization);
        if let Err(wait) = ctx.rate_limiter.check(ctx.rate_limiter.client_key(key, forwarded, peer)) {
            m.rejected.with_label_values(&["rate_limited"]).inc();
            let response = ApiError::rate_limited(wait).into_response();
            m.http_requests.with_label_values(&[&route, &method, response.status().as_str()]).inc();
            return response;
        }
    }
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let response = if declared.is_some_and(|n| n > ctx.args.max_body_bytes) {
        m.rejected.with_label_values(&["body_too_large"]).inc();
        ApiError::too_large(format!(
            "request body of {} bytes exceeds the limit of {} bytes (--max-body-bytes)",
            declared.unwrap_or(0),
            ctx.args.max_body_bytes
        ))
        .into_response()
    } else {
        let _in_flight = InFlight::enter(&m.in_flight);
        let r = match tokio::time::timeout(ctx.args.request_timeout, next.run(req)).await {
            Ok(r) => r,
            Err(_) => {
                m.rejected.with_label_values(&["timeout"]).inc();
                ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "server_error",
                    format!("the request did not complete within {:?} (--request-timeout)", ctx.args.request_timeout),
                )
                .with_code("timeout")
                .into_response()
            }
        };
        r
    };
    m.http_requests.with_label_values(&[&route, &method, response.status().as_str()]).inc();
    m.http_duration.with_label_values(&[&route]).observe(start.elapsed().as_secs_f64());
    response
}

/// Path prefix of the standard `grpc.health.v1.Health` service.
const GRPC_HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";

/// How often the gRPC health status follows the service's readiness.
const HEALTH_POLL: Duration = Duration::from_millis(200);

/// The standard gRPC health service added to `routes`: the server's status (service name "",
/// what Kubernetes' gRPC probes and grpc_health_probe ask by default) is SERVING while the
/// service is ready (`/readyz` 200), NOT_SERVING while the model loads, after a load failure
/// and once shutdown begins.
fn with_grpc_health(ctx: &ServiceContext, routes: tonic::service::Routes) -> tonic::service::Routes {
    let (reporter, health) = tonic_health::server::health_reporter();
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let mut last: Option<bool> = None;
        loop {
            let ready = ctx.readiness.is_ready();
            if last != Some(ready) {
                let status = if ready { tonic_health::ServingStatus::Serving } else { tonic_health::ServingStatus::NotServing };
                reporter.set_service_status("", status).await;
                last = Some(ready);
            }
            if ctx.shutdown.is_cancelled() && !ready {
                break;
            }
            tokio::time::sleep(HEALTH_POLL).await;
        }
    });
    routes.add_service(health)
}

/// In front of every gRPC handler: refuses calls without an accepted bearer key (`authorization`
/// metadata) with `UNAUTHENTICATED` and calls over the client's rate limit with
/// `RESOURCE_EXHAUSTED` + `retry-after`, then counts calls by method and status and their latency
/// to the response head; the health service passes without a key and is not rate limited.
#[derive(Clone)]
struct GrpcGate<S> {
    inner: S,
    metrics: Metrics,
    keys: ApiKeys,
    limiter: RateLimiter,
}

impl<S, B, RB> tower::Service<http::Request<B>> for GrpcGate<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    RB: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = req.uri().path().rsplit('/').next().unwrap_or("unknown").to_string();
        let metrics = self.metrics.clone();
        let authorization = req.headers().get(http::header::AUTHORIZATION).map(|v| v.as_bytes());
        // Health checks carry no key and are not rate limited, like /healthz and /readyz:
        // Kubernetes' gRPC probes and grpc_health_probe cannot send one.
        let health = req.uri().path().starts_with(GRPC_HEALTH_PREFIX);
        let refusal = if health {
            None
        } else if !self.keys.check(authorization) {
            metrics.rejected.with_label_values(&["unauthorized"]).inc();
            Some(ApiError::unauthorized())
        } else if self.limiter.enabled() {
            let peer = req.extensions().get::<tonic::transport::server::TcpConnectInfo>().and_then(|c| c.remote_addr).map(|a| a.ip());
            let forwarded = req.headers().get("x-forwarded-for").map(|v| v.as_bytes());
            let key = self.keys.matching_key(authorization);
            self.limiter.check(self.limiter.client_key(key, forwarded, peer)).err().map(|wait| {
                metrics.rejected.with_label_values(&["rate_limited"]).inc();
                ApiError::rate_limited(wait)
            })
        } else {
            None
        };
        if let Some(err) = refusal {
            let status = err.to_status();
            metrics.grpc_requests.with_label_values(&[&method, &(status.code() as i32).to_string()]).inc();
            return Box::pin(async move { Ok(status.into_http()) });
        }
        let start = Instant::now();
        let in_flight = InFlight::enter(&metrics.in_flight);
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await;
            drop(in_flight);
            let code = match &res {
                Ok(r) => r.headers().get("grpc-status").and_then(|v| v.to_str().ok()).map(|s| s.to_string()).unwrap_or_else(|| "0".into()),
                Err(_) => "transport".into(),
            };
            metrics.grpc_requests.with_label_values(&[&method, &code]).inc();
            metrics.grpc_duration.with_label_values(&[&method]).observe(start.elapsed().as_secs_f64());
            res
        })
    }
}
