//! Test harness shared by every service's integration tests: start the real binary on free
//! ports, wait until `/readyz` says ready, kill it when the test (or the test process) ends; one
//! shared server per test binary; OpenAI error-shape assertions; raw HTTP for requests a client
//! library would not send.

pub mod livekit;
pub mod postgres;

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command},
    sync::OnceLock,
    time::{Duration, Instant},
};

/// The repository root, found at run time from the package under test (`cargo test` sets
/// CARGO_MANIFEST_DIR for the test process). Not `env!`: a shared target directory may reuse a
/// test binary compiled in another checkout of the same workspace.
pub fn repo_root() -> PathBuf {
    let start = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from).unwrap_or_else(|| std::env::current_dir().unwrap());
    start.ancestors().find(|d| d.join("Cargo.lock").is_file() && d.join("models/manifest.toml").is_file()).map(PathBuf::from).unwrap_or(start)
}

/// A TCP port nothing listens on, never the same twice in one process: the kernel may hand the
/// same ephemeral port to two `bind(0)` calls once the first listener is closed, and two tests
/// (or two ports of one server) then collide (seen in CI: two voice-stt lifecycle tests' servers
/// on one port; livekit-server given one port for signalling and ICE/TCP).
pub fn free_port() -> u16 {
    unique_port(|| TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port())
}

/// [`free_port`] for UDP (from the same set, so no number is both a TCP and a UDP port here).
pub fn free_udp_port() -> u16 {
    unique_port(|| std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port())
}

fn unique_port(probe: impl Fn() -> u16) -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> = std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let port = probe();
        if GIVEN.lock().unwrap_or_else(|e| e.into_inner()).insert(port) {
            return port;
        }
    }
}

/// A service binary under test: `bin` is `env!("CARGO_BIN_EXE_<name>")` of the test's crate,
/// `env_prefix` its configuration prefix (e.g. `VOICE_STT`).
pub struct Service {
    pub bin: &'static str,
    pub env_prefix: &'static str,
    /// One shared server per test binary (see [`Service::shared`]).
    pub shared: OnceLock<SharedServer>,
}

impl Service {
    pub const fn new(bin: &'static str, env_prefix: &'static str) -> Self {
        Self { bin, env_prefix, shared: OnceLock::new() }
    }

    fn name(&self) -> &str {
        self.bin.rsplit('/').next().unwrap_or(self.bin)
    }

    /// Start the binary with `args` (plus `--device cpu` unless a device is given) and `envs`,
    /// and wait until it is ready.
    pub fn start(&self, args: &[&str], envs: &[(&str, &str)]) -> Server {
        self.start_on(free_port(), free_port(), args, envs)
    }

    /// [`start`](Self::start) on given ports: a restart test brings a service back where its
    /// clients expect it.
    pub fn start_on(&self, hp: u16, gp: u16, args: &[&str], envs: &[(&str, &str)]) -> Server {
        let name = self.name().to_string();
        let log = std::env::temp_dir().join(format!("{name}-test-{hp}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(self.bin);
        cmd.args(["--port", &hp.to_string(), "--grpc-port", &gp.to_string()]);
        if !args.contains(&"--device") {
            cmd.args(["--device", "cpu"]);
        }
        // The developer's own settings must not leak into a test.
        for (k, _) in std::env::vars() {
            if k.starts_with(&format!("{}_", self.env_prefix)) {
                cmd.env_remove(k);
            }
        }
        cmd.args(args).stdout(out.try_clone().unwrap()).stderr(out);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        // The server dies with the test process even if a test panics.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let mut s = Server { child, name, http: format!("http://127.0.0.1:{hp}"), grpc: format!("http://127.0.0.1:{gp}"), log };
        s.wait_ready(Duration::from_secs(180));
        s
    }

    /// One server per test binary, shared by its tests (the first caller's `args` win). It is
    /// started from a thread that never exits, because the child's parent-death signal fires
    /// when the spawning *thread* ends.
    pub fn shared(&'static self, args: &'static [&'static str]) -> &'static SharedServer {
        self.shared.get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let s = self.start(args, &[]);
                tx.send(SharedServer { http: s.http.clone(), grpc: s.grpc.clone(), log: s.log.clone(), pid: s.pid() }).unwrap();
                let _keep = s;
                loop {
                    std::thread::park();
                }
            });
            rx.recv().expect("shared server started")
        })
    }
}

pub struct Server {
    pub child: Child,
    pub name: String,
    pub http: String,
    pub grpc: String,
    pub log: PathBuf,
}

impl Server {
    pub fn wait_ready(&mut self, limit: Duration) {
        let start = Instant::now();
        let client = reqwest::blocking::Client::new();
        while start.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited with {status} before it was ready; log:\n{}", self.name, self.log_text());
            }
            if let Ok(r) = client.get(format!("{}/readyz", self.http)).send() {
                if r.status().as_u16() == 200 {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{} did not become ready; log:\n{}", self.name, self.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The service fell back to the CPU *because of* `VOICE_FAULT_CUDA_INIT`: one log line says
    /// both. A CPU-only binary falls back whatever the injection does ("built without the `cuda`
    /// feature"), so the fallback alone proves nothing about the injected path.
    pub fn assert_fallback_from_injected_cuda_init(&self) {
        let log = self.log_text();
        assert!(
            log.lines().any(|l| l.contains("falling back to the CPU") && l.contains("injected by VOICE_FAULT_CUDA_INIT")),
            "no CPU fallback caused by the injected CUDA init failure in the log:\n{log}"
        );
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The `/readyz` body (model, device, degraded state, queue depth).
    pub fn readyz(&self) -> serde_json::Value {
        let body = client().get(format!("{}/readyz", self.http)).send().unwrap().text().unwrap();
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("/readyz is not JSON ({e}): {body}"))
    }

    /// Ask the server to shut down gracefully.
    pub fn sigterm(&self) {
        // Safety: signalling our own child process.
        unsafe {
            libc::kill(self.pid(), libc::SIGTERM);
        }
    }

    /// Kill the server the hard way (a crash: no drain, no shutdown code).
    pub fn sigkill(&self) {
        // Safety: signalling our own child process.
        unsafe {
            libc::kill(self.pid(), libc::SIGKILL);
        }
    }

    /// Wait for the process to exit, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(start.elapsed() < limit, "{} did not exit within {limit:?}", self.name);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct SharedServer {
    pub http: String,
    pub grpc: String,
    pub log: PathBuf,
    pub pid: i32,
}

impl SharedServer {
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(300)).build().unwrap()
}

/// A response as the assertions below take it: (status, headers, body).
pub type Reply = (u16, reqwest::header::HeaderMap, String);

pub fn reply(r: reqwest::blocking::Response) -> Reply {
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().unwrap_or_default())
}

/// POST a JSON (or any) body.
pub fn post_body(url: &str, content_type: &str, body: impl Into<reqwest::blocking::Body>) -> Reply {
    reply(client().post(url).header("content-type", content_type).body(body).send().unwrap())
}

/// Assert an OpenAI-shaped error with this status whose message contains `needle`.
pub fn assert_error(resp: &Reply, status: u16, needle: &str) {
    assert_eq!(resp.0, status, "expected {status}, got {} with {}", resp.0, resp.2);
    let v: serde_json::Value = serde_json::from_str(&resp.2).unwrap_or_else(|_| panic!("error body is not JSON: {}", resp.2));
    let msg = v["error"]["message"].as_str().unwrap_or_else(|| panic!("no error.message in {}", resp.2));
    assert!(v["error"]["type"].is_string(), "no error.type in {}", resp.2);
    assert!(msg.to_lowercase().contains(&needle.to_lowercase()), "message {msg:?} lacks {needle:?}");
}

/// The value of a Prometheus sample line `name{labels} value` (labels matched as a substring;
/// summed over all matching lines).
pub fn metric(base: &str, name: &str, labels: &str) -> f64 {
    let text = client().get(format!("{base}/metrics")).send().unwrap().text().unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            let key = l.split_whitespace().next().unwrap_or("");
            (key == name || key.starts_with(&format!("{name}{{"))) && key.contains(labels)
        })
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .sum()
}

/// Send a request head and at most `body_prefix` over a raw socket and read the response: for
/// refusals the server makes before reading a body (an HTTP client library would still be busy
/// writing the body when the server closes), and for bodies a client library will not send.
pub fn raw_request(base: &str, head: &str, body_prefix: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let _ = s.write_all(body_prefix);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

#[cfg(test)]
mod tests {
    /// 2,000 ports from ~28,000 ephemeral ones: without the process-wide set, repeats are all
    /// but certain (birthday bound), with it there are none.
    #[test]
    fn free_ports_never_repeat_in_a_process() {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..2000 {
            assert!(seen.insert(super::free_port()), "free_port repeated a port");
        }
    }
}
