//! A CBLAS `sgemm` loaded at run time (OpenBLAS from the distribution, or any library named by
//! `VOICE_BLAS_LIB`). Loading at run time keeps the build free of a system dependency: without
//! the library the kernels fall back to candle's own matmul, which is 2-3x slower on the CPU.
//! `VOICE_BLAS=off` disables it (for comparisons).

use std::sync::OnceLock;

type SgemmFn = unsafe extern "C" fn(
    order: i32,
    trans_a: i32,
    trans_b: i32,
    m: i32,
    n: i32,
    k: i32,
    alpha: f32,
    a: *const f32,
    lda: i32,
    b: *const f32,
    ldb: i32,
    beta: f32,
    c: *mut f32,
    ldc: i32,
);
type SetThreadsFn = unsafe extern "C" fn(n: i32);

pub const ROW_MAJOR: i32 = 101;
pub const NO_TRANS: i32 = 111;
pub const TRANS: i32 = 112;

pub struct Blas {
    sgemm: SgemmFn,
    pub library: String,
    _lib: libloading::Library,
}

const CANDIDATES: &[&str] = &[
    "libopenblas.so.0",
    "libopenblas.so",
    "libopenblasp-r0.3.so",
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "libmkl_rt.so",
    "libmkl_rt.so.2",
];

/// Keep large buffers in the heap rather than mapping and unmapping them for every tensor:
/// with glibc's defaults each multi-megabyte activation is a fresh mmap whose pages fault in one by
/// one, which made CPU inference 10-15% slower and noisier. Freed memory stays reserved up to the
/// peak the workload reached (a bound, not a leak).
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
    }
}

fn load() -> Option<Blas> {
    tune_allocator();
    if std::env::var("VOICE_BLAS").map(|v| v == "off" || v == "0").unwrap_or(false) {
        tracing::info!("CPU BLAS disabled by VOICE_BLAS=off: using candle's matmul");
        return None;
    }
    let names: Vec<String> = match std::env::var("VOICE_BLAS_LIB") {
        Ok(p) if !p.is_empty() => vec![p],
        _ => CANDIDATES.iter().map(|s| s.to_string()).collect(),
    };
    for name in names {
        // Safety: loading a shared library runs its initialisers; these are well-known BLAS
        // libraries whose initialisers only set up thread pools.
        let lib = match unsafe { libloading::Library::new(&name) } {
            Ok(l) => l,
            Err(_) => continue,
        };
        let sgemm: SgemmFn = match unsafe { lib.get::<SgemmFn>(b"cblas_sgemm\0") } {
            Ok(f) => *f,
            Err(_) => continue,
        };
        // VOICE_BLAS_THREADS overrides; default: candle's thread count (all cores). (Splitting
        // work over rayon with single-threaded BLAS calls was measured slower: concurrent calls
        // into OpenBLAS serialise.)
        let threads = std::env::var("VOICE_BLAS_THREADS")
            .ok()
            .and_then(|v| v.parse::<i32>().ok())
            .filter(|&n| n > 0)
            .unwrap_or(candle_core::utils::get_num_threads() as i32);
        for setter in [&b"openblas_set_num_threads\0"[..], &b"MKL_Set_Num_Threads\0"[..]] {
            if let Ok(f) = unsafe { lib.get::<SetThreadsFn>(setter) } {
                unsafe { f(threads) };
            }
        }
        tracing::info!(library = %name, threads, "CPU matmul through BLAS");
        return Some(Blas { sgemm, library: name, _lib: lib });
    }
    tracing::warn!("no CBLAS library found (install libopenblas0 for 2-3x faster CPU inference); using candle's matmul");
    None
}

/// The process-wide BLAS, if one could be loaded.
pub fn get() -> Option<&'static Blas> {
    static BLAS: OnceLock<Option<Blas>> = OnceLock::new();
    BLAS.get_or_init(load).as_ref()
}

impl Blas {
    /// C (m x n, row stride ldc) = alpha * op(A) * op(B) + beta * C, row-major.
    ///
    /// # Safety
    /// The pointers must be valid for the given shapes and strides.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn sgemm(
        &self,
        trans_a: bool,
        trans_b: bool,
        m: usize,
        n: usize,
        k: usize,
        alpha: f32,
        a: *const f32,
        lda: usize,
        b: *const f32,
        ldb: usize,
        beta: f32,
        c: *mut f32,
        ldc: usize,
    ) {
        (self.sgemm)(
            ROW_MAJOR,
            if trans_a { TRANS } else { NO_TRANS },
            if trans_b { TRANS } else { NO_TRANS },
            m as i32,
            n as i32,
            k as i32,
            alpha,
            a,
            lda as i32,
            b,
            ldb as i32,
            beta,
            c,
            ldc as i32,
        )
    }
}
