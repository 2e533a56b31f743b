//! Test harness: start the real `voice-stt` binary on free ports, wait until ready, kill it
//! when the test (or the test process) ends.
#![allow(dead_code)]

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command},
    time::{Duration, Instant},
};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub struct Server {
    pub child: Child,
    pub http: String,
    pub grpc: String,
    pub log: PathBuf,
}

impl Server {
    pub fn start(args: &[&str], envs: &[(&str, &str)]) -> Server {
        let (hp, gp) = (free_port(), free_port());
        let log = std::env::temp_dir().join(format!("voice-stt-test-{hp}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_voice-stt"));
        cmd.args(["--port", &hp.to_string(), "--grpc-port", &gp.to_string()]);
        if !args.contains(&"--device") {
            cmd.args(["--device", "cpu"]);
        }
        cmd.args(args)
            .env_remove("VOICE_STT_MODEL")
            .stdout(out.try_clone().unwrap())
            .stderr(out);
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
        let child = cmd.spawn().expect("spawn voice-stt");
        let mut s = Server { child, http: format!("http://127.0.0.1:{hp}"), grpc: format!("http://127.0.0.1:{gp}"), log };
        s.wait_ready(Duration::from_secs(120));
        s
    }

    pub fn wait_ready(&mut self, limit: Duration) {
        let start = Instant::now();
        let client = reqwest::blocking::Client::new();
        while start.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("voice-stt exited with {status} before it was ready; log:\n{}", self.log_text());
            }
            if let Ok(r) = client.get(format!("{}/readyz", self.http)).send() {
                if r.status().as_u16() == 200 {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("voice-stt did not become ready; log:\n{}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The JFK sample (fetched into the model cache on first use).
pub fn jfk_path() -> PathBuf {
    voice_models::Fetcher::new(None)
        .resolve("jfk-sample", true, &[])
        .expect("fetch jfk-sample")
        .dir
        .join("jfk.wav")
}

pub fn jfk_bytes() -> Vec<u8> {
    std::fs::read(jfk_path()).unwrap()
}

pub fn jfk_pcm() -> Vec<f32> {
    voice_runtime::audio::decode_to_rate(&jfk_bytes(), 16_000, 60.0).unwrap().samples
}

/// JFK's words, normalised: what every correct transcript must contain.
pub const JFK_WORDS: &str = "and so my fellow americans ask not what your country can do for you ask what you can do for your country";

pub fn assert_jfk(text: &str) {
    let (errors, words) = voice_whisper::eval::word_errors(JFK_WORDS, text);
    assert!(errors <= 1, "expected the JFK sentence, got {text:?} ({errors}/{words} word errors)");
}

/// A WAV writer for any layout the tests need.
pub fn wav(samples_per_channel: &[Vec<f32>], rate: u32, format: SampleFormat) -> Vec<u8> {
    let channels = samples_per_channel.len() as u16;
    let frames = samples_per_channel[0].len();
    let (tag, bits): (u16, u16) = match format {
        SampleFormat::U8 => (1, 8),
        SampleFormat::S16 => (1, 16),
        SampleFormat::S24 => (1, 24),
        SampleFormat::F32 => (3, 32),
    };
    let block = channels * bits / 8;
    let data_len = frames * block as usize;
    let mut out = Vec::new();
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&((36 + data_len) as u32).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&tag.to_le_bytes());
    out.extend_from_slice(&channels.to_le_bytes());
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * block as u32).to_le_bytes());
    out.extend_from_slice(&block.to_le_bytes());
    out.extend_from_slice(&bits.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(data_len as u32).to_le_bytes());
    for i in 0..frames {
        for ch in samples_per_channel {
            let s = ch[i].clamp(-1.0, 1.0);
            match format {
                SampleFormat::U8 => out.push(((s * 127.0).round() as i32 + 128) as u8),
                SampleFormat::S16 => out.extend_from_slice(&((s * 32767.0).round() as i16).to_le_bytes()),
                SampleFormat::S24 => out.extend_from_slice(&(((s * 8_388_607.0).round() as i32).to_le_bytes())[..3]),
                SampleFormat::F32 => out.extend_from_slice(&s.to_le_bytes()),
            }
        }
    }
    out
}

#[derive(Clone, Copy)]
pub enum SampleFormat {
    U8,
    S16,
    S24,
    F32,
}

/// One server per test binary, shared by its tests. It is started from a thread that never
/// exits, because the child's parent-death signal fires when the spawning *thread* ends.
pub fn shared(args: &'static [&'static str]) -> &'static SharedServer {
    static SHARED: std::sync::OnceLock<SharedServer> = std::sync::OnceLock::new();
    SHARED.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let s = Server::start(args, &[]);
            tx.send(SharedServer { http: s.http.clone(), grpc: s.grpc.clone(), log: s.log.clone() }).unwrap();
            let _keep = s;
            loop {
                std::thread::park();
            }
        });
        rx.recv().expect("shared server started")
    })
}

pub struct SharedServer {
    pub http: String,
    pub grpc: String,
    pub log: PathBuf,
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(300)).build().unwrap()
}

/// POST a multipart transcription request; returns (status, headers, body).
pub fn transcribe(base: &str, file: Option<(Vec<u8>, &str)>, fields: &[(&str, &str)]) -> (u16, reqwest::header::HeaderMap, String) {
    let mut form = reqwest::blocking::multipart::Form::new();
    if let Some((bytes, name)) = file {
        form = form.part("file", reqwest::blocking::multipart::Part::bytes(bytes).file_name(name.to_string()));
    }
    for (k, v) in fields {
        form = form.text(k.to_string(), v.to_string());
    }
    let r = client().post(format!("{base}/v1/audio/transcriptions")).multipart(form).send().unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().unwrap())
}

/// Assert an OpenAI-shaped error with this status.
pub fn assert_error(resp: &(u16, reqwest::header::HeaderMap, String), status: u16, needle: &str) {
    assert_eq!(resp.0, status, "expected {status}, got {} with {}", resp.0, resp.2);
    let v: serde_json::Value = serde_json::from_str(&resp.2).unwrap_or_else(|_| panic!("error body is not JSON: {}", resp.2));
    let msg = v["error"]["message"].as_str().unwrap_or_else(|| panic!("no error.message in {}", resp.2));
    assert!(v["error"]["type"].is_string(), "no error.type in {}", resp.2);
    assert!(msg.to_lowercase().contains(&needle.to_lowercase()), "message {msg:?} lacks {needle:?}");
}

/// Send a request head and at most `body_prefix` over a raw socket and read the response: for
/// refusals the server makes before reading a body (an HTTP client library would still be busy
/// writing the body when the server closes).
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
