//! A real livekit-server on free loopback ports for tests, killed on drop.
//!
//! The binary is `$LIVEKIT_SERVER_BIN`, default the one `scripts/fetch-livekit-server.sh` builds
//! (`go install github.com/livekit/livekit-server/cmd/server@v1.13.5`). Missing is a failure,
//! not a skip.

use std::{
    io::Read,
    net::TcpStream,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub const API_KEY: &str = "devkey";
/// livekit-server wants 32+ characters (it only warns about `--dev`'s "secret").
pub const API_SECRET: &str = "voice-ai-livekit-ffi-test-secret-0123456789";

pub struct LiveKitServer {
    child: Child,
    pub port: u16,
    log: PathBuf,
}

use crate::{free_port as free_tcp_port, free_udp_port};

pub fn server_binary() -> PathBuf {
    let bin = std::env::var_os("LIVEKIT_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/voice-ai/livekit/livekit-server-v1.13.5"));
    assert!(bin.is_file(), "livekit-server not found at {} (set LIVEKIT_SERVER_BIN, or build it: scripts/fetch-livekit-server.sh)", bin.display());
    bin
}

impl LiveKitServer {
    /// Start on free ports: signalling, ICE/TCP and the single UDP port, all on 127.0.0.1.
    pub fn start() -> Self {
        Self::start_on(free_tcp_port())
    }

    /// Start on a given signalling port (a restart test reuses it).
    pub fn start_on(port: u16) -> Self {
        let bin = server_binary();
        let (tcp_port, udp_port) = (free_tcp_port(), free_udp_port());
        let config = format!(
            "port: {port}\nbind_addresses: [\"127.0.0.1\"]\n\
             rtc:\n  tcp_port: {tcp_port}\n  udp_port: {udp_port}\n  node_ip: 127.0.0.1\n  use_external_ip: false\n\
             keys:\n  {API_KEY}: {API_SECRET}\nlogging:\n  level: info\n"
        );
        let log = std::env::temp_dir().join(format!("livekit-server-test-{}-{port}.log", std::process::id()));
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(&bin);
        cmd.arg("--config-body").arg(&config).stdin(Stdio::null()).stdout(out.try_clone().unwrap()).stderr(out);
        // The server dies with the test process even if a test panics.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let mut server = LiveKitServer { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("livekit-server exited ({status}) before listening:\n{}", server.log_tail());
            }
            assert!(Instant::now() < deadline, "livekit-server did not listen on {port} within 30 s:\n{}", server.log_tail());
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    pub fn log_tail(&self) -> String {
        let mut s = String::new();
        let _ = std::fs::File::open(&self.log).and_then(|mut f| f.read_to_string(&mut s));
        s.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for LiveKitServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}
