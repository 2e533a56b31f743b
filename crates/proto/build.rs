//! Compile the contracts under proto/ with protox (pure Rust: no protoc needed on build machines).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The manifest dir at run time, not compile time: a build-script binary can be reused from
    // a shared target dir by a checkout at another path.
    let root = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files =
        ["voice/stt/v1/stt.proto", "voice/llm/v1/llm.proto", "voice/embed/v1/embed.proto", "voice/tts/v1/tts.proto", "voice/agent/v1/agent.proto"];
    for f in &files {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    let fds = protox::compile(files, [&root])?;
    tonic_prost_build::configure().build_server(true).build_client(true).compile_fds(fds)?;
    Ok(())
}
