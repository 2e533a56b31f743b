//! Vectorisable elementwise math for the CPU: exp, softmax rows and the erf GELU.
//!
//! The loops are written branch-free so LLVM vectorises them; on x86-64 they are compiled a
//! second time with AVX2+FMA enabled and picked at run time when the CPU has them.

use rayon::prelude::*;

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;

/// e^x with a relative error below 3e-7 on [-87, 88]; smaller inputs give ~1e-38 (not 0),
/// larger ones e^88. Branch-free and without float-to-int conversions, so loops vectorise.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    // 1.5 * 2^23: adding it rounds to an integer held in the low mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    #[allow(clippy::manual_clamp)] // max/min vectorise; clamp adds a NaN assertion
    let x = x.max(-87.0).min(88.0);
    let z = x * LOG2E + MAGIC;
    let n = z - MAGIC;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // 2^n from the integer n sitting in z's mantissa: (n + 127) << 23.
    let bits = z.to_bits().wrapping_sub(MAGIC.to_bits()).wrapping_add(127) << 23;
    p * f32::from_bits(bits)
}

/// Maximum with eight independent lanes (a single running max would not vectorise).
#[inline(always)]
fn max_of(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let chunks = xs.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            acc[i] = if c[i] > acc[i] { c[i] } else { acc[i] };
        }
    }
    let mut m = f32::NEG_INFINITY;
    for &v in acc.iter().chain(rest) {
        m = if v > m { v } else { m };
    }
    m
}

/// Sum with eight independent lanes.
#[inline(always)]
fn sum_of(xs: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = xs.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            acc[i] += c[i];
        }
    }
    acc.iter().sum::<f32>() + rest.iter().sum::<f32>()
}

/// erf with an absolute error below 1.5e-7 (Abramowitz & Stegun 7.1.26).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * z);
    let poly = t * (0.254_829_6 + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let y = 1.0 - poly * exp(-z * z);
    y.copysign(x)
}

#[inline(always)]
fn softmax_row_generic(row: &mut [f32], scale: f32) {
    let mut max = max_of(row);
    if !max.is_finite() {
        max = 0.0;
    }
    for v in row.iter_mut() {
        *v = exp((*v - max) * scale);
    }
    let inv = 1.0 / sum_of(row);
    for v in row.iter_mut() {
        *v *= inv;
    }
}

#[inline(always)]
fn gelu_generic(xs: &mut [f32]) {
    const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
    for v in xs.iter_mut() {
        let x = *v;
        *v = 0.5 * x * (1.0 + erf(x * FRAC_1_SQRT_2));
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn softmax_row(row: &mut [f32], scale: f32) {
        super::softmax_row_generic(row, scale)
    }
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn gelu(xs: &mut [f32]) {
        super::gelu_generic(xs)
    }
}

fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// softmax(row * scale), in place.
pub fn softmax_row(row: &mut [f32], scale: f32) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // Safety: the CPU supports AVX2 and FMA (checked above).
        return unsafe { avx2::softmax_row(row, scale) };
    }
    softmax_row_generic(row, scale)
}

/// Row-wise softmax(x * scale) over a row-major matrix with rows of `width`, in parallel.
pub fn softmax_rows(data: &mut [f32], width: usize, scale: f32) {
    if width == 0 {
        return;
    }
    let rows_per_task = (16_384 / width).max(1);
    data.par_chunks_mut(width * rows_per_task).for_each(|chunk| {
        for row in chunk.chunks_mut(width) {
            softmax_row(row, scale);
        }
    });
}

/// x * Phi(x) with the exact (erf) normal CDF, in place, in parallel.
pub fn gelu_erf(data: &mut [f32]) {
    data.par_chunks_mut(16_384).for_each(|chunk| {
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            // Safety: the CPU supports AVX2 and FMA (checked above).
            return unsafe { avx2::gelu(chunk) };
        }
        gelu_generic(chunk)
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate() {
        let mut worst = 0f32;
        for i in -8700..=8800 {
            let x = i as f32 / 100.0;
            let rel = ((exp(x) as f64 - (x as f64).exp()) / (x as f64).exp()).abs() as f32;
            worst = worst.max(rel);
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert!(exp(f32::NEG_INFINITY) < 1e-37);
    }

    #[test]
    fn erf_and_gelu_are_accurate() {
        let mut worst = 0f64;
        for i in -600..=600 {
            let x = i as f32 / 100.0;
            // Reference erf via a high-precision series/continued fraction is not in std; use
            // the identity with the complementary error function computed by numerical
            // integration at f64.
            let reference = erf_f64(x as f64);
            worst = worst.max((erf(x) as f64 - reference).abs());
        }
        assert!(worst < 4e-7, "worst absolute error {worst}");
        let mut g = vec![-3.0f32, -1.0, 0.0, 1.0, 3.0];
        gelu_erf(&mut g);
        let want = [-0.004_049_7, -0.158_655_26, 0.0, 0.841_344_7, 2.995_950_3];
        for (a, b) in g.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{g:?}");
        }
    }

    fn erf_f64(x: f64) -> f64 {
        // Simpson integration of 2/sqrt(pi) * exp(-t^2) on [0, x].
        let n = 20_000;
        let h = x / n as f64;
        let f = |t: f64| (-t * t).exp();
        let mut s = f(0.0) + f(x);
        for i in 1..n {
            s += f(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
        }
        s * h / 3.0 * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn softmax_sums_to_one_and_handles_masks() {
        let mut m = vec![1.0, 2.0, 3.0, f32::NEG_INFINITY, 0.5, 0.5, f32::NEG_INFINITY, f32::NEG_INFINITY];
        softmax_rows(&mut m, 4, 1.0);
        let s: f32 = m[..4].iter().sum();
        assert!((s - 1.0).abs() < 1e-6);
        assert!((m[2] - 0.665_240_9).abs() < 1e-6, "{m:?}");
        assert!(m[3] < 1e-30);
        assert!((m[4] - 0.5).abs() < 1e-6 && m[6] < 1e-30);
    }
}
