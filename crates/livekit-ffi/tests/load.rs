//! Loading the wrong file fails with a clear message (own process: the library loads once per process).

use voice_livekit::Ffi;

#[test]
fn load_rejects_a_library_that_is_not_livekit_ffi() {
    let candidates = ["/lib/x86_64-linux-gnu/libm.so.6", "/usr/lib/x86_64-linux-gnu/libm.so.6", "/lib64/libm.so.6"];
    let Some(libm) = candidates.iter().map(std::path::Path::new).find(|p| p.is_file()) else {
        panic!("no libm.so.6 to test with at {candidates:?}");
    };
    let msg = format!("{:#}", Ffi::load(libm).unwrap_err());
    assert!(msg.contains("does not look like liblivekit_ffi 0.13"), "{msg}");
    // A failed load leaves the process free to load the right library.
    let missing = format!("{:#}", Ffi::load(std::path::Path::new("/nonexistent/liblivekit_ffi.so")).unwrap_err());
    assert!(missing.contains("not found") && missing.contains("fetch livekit-ffi"), "{missing}");
    let ffi = Ffi::load(&Ffi::locate().unwrap_or_else(|e| panic!("{e:#}"))).unwrap_or_else(|e| panic!("{e:#}"));
    assert!(ffi.version().starts_with("0.13."), "{}", ffi.version());
    // Loaded once per process: a second load returns the same instance.
    assert!(std::sync::Arc::ptr_eq(&ffi, &Ffi::load(ffi.path()).unwrap()));
}
