//! Compile the project's subset of LiveKit's FFI protocol (proto/livekit-ffi/) with protox (pure
//! Rust, no protoc) and prost-build.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The manifest dir at run time, not compile time: a build-script binary can be reused from a
    // shared target dir by a checkout at another path.
    let root = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto/livekit-ffi");
    let files = ["handle.proto", "participant.proto", "track.proto", "audio_frame.proto", "room.proto", "ffi.proto"];
    for f in &files {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    let fds = protox::compile(files, [&root])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    // Kept for checking the subset against the library's own descriptors (see proto/livekit-ffi/README.md).
    std::fs::write(out.join("livekit_ffi_subset.fds"), prost::Message::encode_to_vec(&fds))?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
