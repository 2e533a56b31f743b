//! Helpers the benchmark binaries share (each binary includes this file as a module).
// Not every binary uses every helper.
#![allow(dead_code)]

/// A memory figure of this process from /proc/self/status (`VmRSS:`, `VmHWM:` = peak), in MB.
pub fn rss_mb(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse::<f64>().ok()))
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// The median (upper middle for an even count) of a non-empty sample.
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Which voice-ai service `load-test` and `http-fuzz` talk to: it decides their requests and
/// what a correct answer is.
#[derive(Debug, Clone, Copy, clap::ValueEnum, PartialEq, Eq)]
pub enum Target {
    Stt,
    Llm,
    Tts,
    Embed,
    Agent,
}
