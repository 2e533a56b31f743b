//! Matrix-vector products for single-token decoding on the CPU, where a BLAS call costs more in
//! thread wake-ups than in arithmetic and memory bandwidth is the limit: `y = W x (+ b)` with W
//! row-major (out x in) in f32 or f16 (half the bytes to read, converted in registers with F16C),
//! split over the rayon pool by output rows.

use half::f16;
use rayon::prelude::*;

#[inline(always)]
fn dot_f32_generic(w: &[f32], x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let wc = w.chunks_exact(8);
    let xc = x.chunks_exact(8);
    let (wr, xr) = (wc.remainder(), xc.remainder());
    for (a, b) in wc.zip(xc) {
        for i in 0..8 {
            acc[i] += a[i] * b[i];
        }
    }
    acc.iter().sum::<f32>() + wr.iter().zip(xr).map(|(a, b)| a * b).sum::<f32>()
}

#[inline(always)]
fn dot_f16_generic(w: &[u16], x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let wc = w.chunks_exact(8);
    let xc = x.chunks_exact(8);
    let (wr, xr) = (wc.remainder(), xc.remainder());
    for (a, b) in wc.zip(xc) {
        for i in 0..8 {
            acc[i] += f16::from_bits(a[i]).to_f32() * b[i];
        }
    }
    acc.iter().sum::<f32>() + wr.iter().zip(xr).map(|(a, b)| f16::from_bits(*a).to_f32() * b).sum::<f32>()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_f32(w: &[f32], x: &[f32]) -> f32 {
        super::dot_f32_generic(w, x)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_f16(w: &[u16], x: &[f32]) -> f32 {
        let n = w.len().min(x.len());
        let (wp, xp) = (w.as_ptr(), x.as_ptr());
        let mut a0 = _mm256_setzero_ps();
        let mut a1 = _mm256_setzero_ps();
        let mut i = 0;
        while i + 16 <= n {
            let w0 = _mm256_cvtph_ps(_mm_loadu_si128(wp.add(i) as *const __m128i));
            let w1 = _mm256_cvtph_ps(_mm_loadu_si128(wp.add(i + 8) as *const __m128i));
            a0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xp.add(i)), a0);
            a1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xp.add(i + 8)), a1);
            i += 16;
        }
        let a = _mm256_add_ps(a0, a1);
        let hi = _mm256_extractf128_ps(a, 1);
        let lo = _mm256_castps256_ps128(a);
        let s = _mm_add_ps(hi, lo);
        let s = _mm_hadd_ps(s, s);
        let s = _mm_hadd_ps(s, s);
        let mut total = _mm_cvtss_f32(s);
        while i < n {
            total += half::f16::from_bits(*wp.add(i)).to_f32() * *xp.add(i);
            i += 1;
        }
        total
    }
}

/// Whether this CPU has AVX2 + FMA (for callers with their own `#[target_feature]` loops).
pub fn has_avx2_fma() -> bool {
    features().0
}

fn features() -> (bool, bool) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static F: OnceLock<(bool, bool)> = OnceLock::new();
        *F.get_or_init(|| {
            let avx = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
            (avx, avx && is_x86_feature_detected!("f16c"))
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        (false, false)
    }
}

pub fn dot_f32(w: &[f32], x: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if features().0 {
        // Safety: AVX2 and FMA are present (checked at run time).
        return unsafe { x86::dot_f32(w, x) };
    }
    dot_f32_generic(w, x)
}

pub fn dot_f16(w: &[u16], x: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if features().1 {
        // Safety: AVX2, FMA and F16C are present (checked at run time).
        return unsafe { x86::dot_f16(w, x) };
    }
    dot_f16_generic(w, x)
}

/// Weights of a gemv, borrowed.
pub enum Weights<'a> {
    F32(&'a [f32]),
    /// IEEE half floats as raw bits.
    F16(&'a [u16]),
}

/// y[r] = sum_k W[r, k] x[k] (+ b[r]) for every output row r, in parallel.
pub fn gemv(w: Weights, x: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
    let k = x.len();
    const ROWS_PER_TASK: usize = 256;
    let run = |(chunk, ys): (usize, &mut [f32])| {
        let r0 = chunk * ROWS_PER_TASK;
        for (i, y) in ys.iter_mut().enumerate() {
            let r = r0 + i;
            let v = match &w {
                Weights::F32(w) => dot_f32(&w[r * k..(r + 1) * k], x),
                Weights::F16(w) => dot_f16(&w[r * k..(r + 1) * k], x),
            };
            *y = v + bias.map_or(0.0, |b| b[r]);
        }
    };
    // Below ~1 MB of weights, waking other threads costs more than it saves.
    if out.len() * k < (1 << 18) {
        out.chunks_mut(ROWS_PER_TASK).enumerate().for_each(run);
    } else {
        out.par_chunks_mut(ROWS_PER_TASK).enumerate().for_each(run);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemv_matches_naive() {
        let (rows, k) = (1000, 77);
        let w: Vec<f32> = (0..rows * k).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
        let x: Vec<f32> = (0..k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..rows).map(|i| i as f32 * 0.01).collect();
        let naive: Vec<f32> = (0..rows).map(|r| (0..k).map(|j| w[r * k + j] * x[j]).sum::<f32>() + b[r]).collect();
        let mut y = vec![0f32; rows];
        gemv(Weights::F32(&w), &x, Some(&b), &mut y);
        assert!(y.iter().zip(&naive).all(|(a, b)| (a - b).abs() < 1e-4));
        let wh: Vec<u16> = w.iter().map(|v| f16::from_f32(*v).to_bits()).collect();
        let naive16: Vec<f32> = (0..rows).map(|r| (0..k).map(|j| f16::from_bits(wh[r * k + j]).to_f32() * x[j]).sum::<f32>()).collect();
        gemv(Weights::F16(&wh), &x, None, &mut y);
        assert!(y.iter().zip(&naive16).all(|(a, b)| (a - b).abs() < 1e-4));
    }
}
