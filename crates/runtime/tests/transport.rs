//! The server bootstrap's defences on real sockets: TLS on both ports (reqwest and tonic clients
//! trusting a throw-away CA), slow-loris and idle connections cut at the header deadline while
//! other clients are served, the per-client rate limit (HTTP 429 + Retry-After, gRPC
//! RESOURCE_EXHAUSTED), the connection cap, and the standard gRPC health service every server
//! gets (NOT_SERVING until ready, then SERVING; open without an API key, like /readyz).

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    time::{Duration, Instant},
};

use axum::{routing::get, Router};
use clap::Parser;
use voice_proto::agent::v1::{
    agent_client::AgentClient, agent_server::Agent, agent_server::AgentServer, DispatchRequest, DispatchResponse, ListConversationsRequest,
    ListConversationsResponse,
};
use voice_runtime::{cli, Listeners, ServiceContext, ServiceSpec};

/// The gRPC API behind the runtime's gate in these tests (the agent's, with nothing behind it).
struct NoAgent;

#[tonic::async_trait]
impl Agent for NoAgent {
    async fn dispatch(&self, _: tonic::Request<DispatchRequest>) -> Result<tonic::Response<DispatchResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("test"))
    }
    async fn list_conversations(
        &self,
        _: tonic::Request<ListConversationsRequest>,
    ) -> Result<tonic::Response<ListConversationsResponse>, tonic::Status> {
        Ok(tonic::Response::new(ListConversationsResponse { conversations: vec![] }))
    }
}

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    service: voice_runtime::ServiceArgs,
}

fn spec() -> ServiceSpec {
    ServiceSpec {
        name: "transport_test",
        binary: "voice-transport-test",
        env_prefix: "VOICE_TRANSPORT_TEST",
        default_port: 0,
        default_grpc_port: 0,
        default_model: "none",
        default_gpu_memory_budget: "0",
        default_max_body_bytes: "1MB",
    }
}

struct Running {
    http: SocketAddr,
    grpc: SocketAddr,
    ctx: ServiceContext,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.ctx.shutdown.cancel();
    }
}

/// Start the runtime's server with one route (`/v1/ping`) and one gRPC API, on free ports;
/// the service is ready at once.
async fn start(flags: &[&str]) -> Running {
    let s = start_loading(flags).await;
    s.ctx.set_ready("none");
    s
}

/// Like [`start`], but the service is not ready (its model "loads") until the caller says so.
async fn start_loading(flags: &[&str]) -> Running {
    let mut argv = vec!["voice-transport-test", "--log-format", "text"];
    argv.extend_from_slice(flags);
    let args: Args = cli::parse_from(&spec(), argv).expect("flags parse");
    let ctx = ServiceContext::new(spec(), args.service.clone()).expect("context");
    let listeners = Listeners::bind(&args.service, true).await.unwrap();
    let (http, grpc) = (listeners.http_addr(), listeners.grpc_addr().unwrap());
    let api = Router::new().route("/v1/ping", get(|| async { "pong" }));
    let c = ctx.clone();
    tokio::spawn(async move { voice_runtime::serve(c, listeners, api, Some(tonic::service::Routes::new(AgentServer::new(NoAgent)))).await });
    Running { http, grpc, ctx }
}

/// A self-signed certificate for 127.0.0.1/localhost made with the openssl CLI (as README shows).
fn make_cert(dir: &std::path::Path) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let ok = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:FALSE", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(ok.status.success(), "openssl: {}", String::from_utf8_lossy(&ok.stderr));
    (cert, key)
}

fn metric(text: &str, prefix: &str) -> f64 {
    text.lines().filter(|l| l.starts_with(prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_on_both_ports_and_plaintext_refused() {
    let dir = std::env::temp_dir().join(format!("voice-tls-{}", std::process::id()));
    let (cert, key) = make_cert(&dir);
    let (c, k) = (cert.to_string_lossy().to_string(), key.to_string_lossy().to_string());
    let s = start(&["--tls-cert", &c, "--tls-key", &k]).await;

    let ca = std::fs::read(&cert).unwrap();
    let client = reqwest::Client::builder().add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap()).build().unwrap();
    let r = client.get(format!("https://127.0.0.1:{}/v1/ping", s.http.port())).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "pong");
    // The probes are served over TLS too.
    let r = client.get(format!("https://localhost:{}/healthz", s.http.port())).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // Plain HTTP on the TLS port gets no HTTP answer; a client not trusting the CA is refused.
    let plain = reqwest::Client::new().get(format!("http://127.0.0.1:{}/v1/ping", s.http.port())).send().await;
    assert!(plain.is_err(), "plaintext got an answer: {plain:?}");
    let untrusting = reqwest::Client::new().get(format!("https://127.0.0.1:{}/v1/ping", s.http.port())).send().await;
    assert!(untrusting.is_err(), "a client without the CA got an answer");

    // gRPC over TLS (h2 by ALPN) with tonic's client.
    let tls = tonic::transport::ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(&ca)).domain_name("localhost");
    let channel = tonic::transport::Endpoint::from_shared(format!("https://127.0.0.1:{}", s.grpc.port()))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut api = AgentClient::new(channel);
    assert!(api.list_conversations(ListConversationsRequest {}).await.unwrap().into_inner().conversations.is_empty());

    // A cert without its key (or a wrong file) stops start-up with a message naming the flag.
    let args: Args = cli::parse_from(&spec(), ["x", "--tls-cert", &c, "--tls-key", &c]).unwrap();
    let err = ServiceContext::new(spec(), args.service).err().expect("a certificate is not a key");
    assert!(format!("{err:#}").contains("--tls-key"), "{err:#}");
    assert!(cli::parse_from::<Args, _, _>(&spec(), ["x", "--tls-cert", &c]).is_err(), "--tls-cert alone must be refused");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_are_cut_at_the_header_deadline() {
    let s = start(&["--header-read-timeout", "1s"]).await;
    let http = s.http;
    let started = Instant::now();
    // Slow loris: a request line, then one header byte every 200 ms, never finishing.
    let loris = std::thread::spawn(move || {
        let mut tcp = TcpStream::connect(http).unwrap();
        tcp.write_all(b"GET /v1/ping HTTP/1.1\r\nHost: x\r\n").unwrap();
        let t0 = Instant::now();
        for b in b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter() {
            if tcp.write_all(&[*b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
            let mut buf = [0u8; 256];
            tcp.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
            match tcp.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => break, // hyper may answer 408 before closing
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => break,
            }
        }
        t0.elapsed()
    });
    // Idle: connects and sends nothing, on both ports.
    let idle = |addr: SocketAddr| {
        std::thread::spawn(move || {
            let mut tcp = TcpStream::connect(addr).unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let t0 = Instant::now();
            let mut buf = [0u8; 64];
            let _ = tcp.read(&mut buf); // returns when the server closes
            t0.elapsed()
        })
    };
    let (idle_http, idle_grpc) = (idle(s.http), idle(s.grpc));
    // Half an HTTP/2 preface on the gRPC port, then nothing.
    let grpc = s.grpc;
    let half_preface = std::thread::spawn(move || {
        let mut tcp = TcpStream::connect(grpc).unwrap();
        tcp.write_all(b"PRI * HTTP/2.0\r\n").unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let t0 = Instant::now();
        let _ = tcp.read(&mut [0u8; 64]);
        t0.elapsed()
    });

    // Meanwhile a normal client is served at once.
    let r = reqwest::get(format!("http://{}/v1/ping", s.http)).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(started.elapsed() < Duration::from_millis(900), "a normal request waited {:?} behind slow clients", started.elapsed());

    let loris = tokio::task::spawn_blocking(move || loris.join().unwrap()).await.unwrap();
    let idle_http = tokio::task::spawn_blocking(move || idle_http.join().unwrap()).await.unwrap();
    let idle_grpc = tokio::task::spawn_blocking(move || idle_grpc.join().unwrap()).await.unwrap();
    let half_preface = tokio::task::spawn_blocking(move || half_preface.join().unwrap()).await.unwrap();
    eprintln!("slow loris cut after {loris:?}, idle HTTP after {idle_http:?}, idle gRPC after {idle_grpc:?}, half preface after {half_preface:?}");
    for (what, t) in [("slow loris", loris), ("idle HTTP", idle_http), ("idle gRPC", idle_grpc), ("half HTTP/2 preface", half_preface)] {
        assert!(t >= Duration::from_millis(800) && t < Duration::from_secs(3), "{what} connection lasted {t:?} with a 1 s deadline");
    }
    let m = reqwest::get(format!("http://{}/metrics", s.http)).await.unwrap().text().await.unwrap();
    assert!(metric(&m, "voice_transport_test_rejected_requests_total{reason=\"slow_client\"}") >= 3.0, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_client_rate_limit_on_http_and_grpc() {
    let s = start(&["--rate-limit", "2", "--rate-limit-burst", "3", "--api-key", "k-one", "--api-key", "k-two"]).await;
    let client = reqwest::Client::new();
    let url = format!("http://{}/v1/ping", s.http);
    let mut codes = vec![];
    for _ in 0..4 {
        let r = client.get(&url).bearer_auth("k-one").send().await.unwrap();
        codes.push(r.status().as_u16());
        if r.status() == 429 {
            let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
            assert!((1..=2).contains(&retry), "Retry-After {retry}");
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(body["error"]["type"], "rate_limit_error");
            assert_eq!(body["error"]["code"], "rate_limit_exceeded");
        }
    }
    assert_eq!(codes, [200, 200, 200, 429], "burst of 3 then refused");
    // Another key is another client; probes are not limited.
    assert_eq!(client.get(&url).bearer_auth("k-two").send().await.unwrap().status(), 200);
    for _ in 0..5 {
        assert_eq!(client.get(format!("http://{}/healthz", s.http)).send().await.unwrap().status(), 200);
    }
    // After the refill a token is back.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(client.get(&url).bearer_auth("k-one").send().await.unwrap().status(), 200);

    // gRPC shares the limiter: k-two's bucket is full again (3), the fourth call is refused.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", s.grpc)).unwrap().connect().await.unwrap();
    let mut api = AgentClient::new(channel.clone());
    let mut statuses = vec![];
    for _ in 0..4 {
        let mut req = tonic::Request::new(ListConversationsRequest {});
        req.metadata_mut().insert("authorization", "Bearer k-two".parse().unwrap());
        statuses.push(match api.list_conversations(req).await {
            Ok(_) => tonic::Code::Ok,
            Err(st) => {
                assert!(st.metadata().get("retry-after").is_some(), "no retry-after on {st:?}");
                st.code()
            }
        });
    }
    assert_eq!(statuses, [tonic::Code::Ok, tonic::Code::Ok, tonic::Code::Ok, tonic::Code::ResourceExhausted]);
    // Without a key the API is refused; the health service answers (probes carry no key) and
    // is not rate limited.
    let e = api.list_conversations(ListConversationsRequest {}).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e}");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    // (start() made the service ready; the health service follows within its 200 ms poll.)
    tokio::time::sleep(Duration::from_millis(400)).await;
    for _ in 0..5 {
        let reply = health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
        assert_eq!(reply.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
    }
    let m = reqwest::get(format!("http://{}/metrics", s.http)).await.unwrap().text().await.unwrap();
    assert_eq!(metric(&m, "voice_transport_test_rejected_requests_total{reason=\"rate_limited\"}"), 2.0, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_wait_for_a_free_slot() {
    let s = start(&["--max-connections", "1", "--header-read-timeout", "1s"]).await;
    // The only slot: a keep-alive connection that stays idle until the deadline closes it.
    let mut first = TcpStream::connect(s.http).unwrap();
    first.write_all(b"GET /v1/ping HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = [0u8; 512];
    let n = first.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
    let t0 = Instant::now();
    let r = reqwest::get(format!("http://{}/v1/ping", s.http)).await.unwrap();
    assert_eq!(r.status(), 200);
    let waited = t0.elapsed();
    eprintln!("second connection served after {waited:?}");
    assert!(waited >= Duration::from_millis(600), "the second connection did not wait for the slot ({waited:?})");
}

/// The health service follows readiness: NOT_SERVING while the model loads, SERVING once ready
/// (within its 200 ms poll).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_health_follows_readiness() {
    use tonic_health::pb::{health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest};
    let s = start_loading(&[]).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", s.grpc)).unwrap().connect().await.unwrap();
    let health = HealthClient::new(channel);
    let status = || {
        let mut h = health.clone();
        async move { h.check(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner().status }
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(status().await, ServingStatus::NotServing as i32, "serving before the model is ready");
    s.ctx.set_ready("none");
    let deadline = Instant::now() + Duration::from_secs(3);
    while status().await != ServingStatus::Serving as i32 {
        assert!(Instant::now() < deadline, "not SERVING 3 s after ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
