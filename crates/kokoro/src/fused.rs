//! CPU kernels for the generator's hot elementwise chains, which at 120 frames per predicted
//! frame run over millions of values: instance norm + AdaIN affine + activation (Snake or leaky
//! ReLU) in one read and one write per value, instead of the eight or so candle passes (each
//! allocating) the plain path takes. Snake's sin^2 uses a polynomial cosine that vectorises:
//! sin^2(a x) = (1 - cos(2 a x)) / 2.

use rayon::prelude::*;

/// What follows the AdaIN affine.
#[derive(Debug, Clone, Copy)]
pub enum Act<'a> {
    /// x + sin^2(alpha x) / alpha, alpha per channel.
    Snake(&'a [f32]),
    LeakyRelu(f32),
}

/// cos(x), absolute error < 2e-6 for |x| < 2.5e4 (Cody-Waite reduction to
/// [-pi, pi], then an even polynomial). No branches, so loops over it vectorise.
#[inline(always)]
pub fn fast_cos(x: f32) -> f32 {
    const INV_2PI: f32 = 0.159_154_94;
    // 2 pi in three parts with few significant bits in the first two, so that k * C1 and
    // k * C2 are exact for |k| < 2^12 (Cody-Waite).
    const C1: f32 = 6.28125;
    const C2: f32 = 0.001_935_482;
    const C3: f32 = -1.748_455_5e-7;
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23: adding and subtracting rounds to an integer
    let k = (x * INV_2PI + MAGIC) - MAGIC;
    let t = ((x - k * C1) - k * C2) - k * C3;
    let t2 = t * t;
    // Taylor coefficients of cos up to t^18 (error at |t| = pi below 1e-7 after the t^18 term).
    let mut p = -1.0 / 6_402_373_705_728_000.0f32; // -1/18!
    p = p * t2 + 1.0 / 20_922_789_888_000.0; // 1/16!
    p = p * t2 - 1.0 / 87_178_291_200.0; // -1/14!
    p = p * t2 + 1.0 / 479_001_600.0; // 1/12!
    p = p * t2 - 1.0 / 3_628_800.0; // -1/10!
    p = p * t2 + 1.0 / 40_320.0; // 1/8!
    p = p * t2 - 1.0 / 720.0; // -1/6!
    p = p * t2 + 1.0 / 24.0;
    p = p * t2 - 0.5;
    p * t2 + 1.0
}

#[inline(always)]
fn row_kernel(x: &[f32], out: &mut [f32], gamma: f32, beta: f32, act: Act, c: usize) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    let scale = (1.0 + gamma) / (var + 1e-5).sqrt();
    let shift = beta - mean * scale;
    match act {
        Act::Snake(alpha) => {
            let a = alpha[c];
            let two_a = 2.0 * a;
            let half_inv_a = 0.5 / a;
            for (o, &v) in out.iter_mut().zip(x) {
                let y = v * scale + shift;
                *o = y + (1.0 - fast_cos(two_a * y)) * half_inv_a;
            }
        }
        Act::LeakyRelu(slope) => {
            for (o, &v) in out.iter_mut().zip(x) {
                let y = v * scale + shift;
                *o = if y > 0.0 { y } else { y * slope };
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn row_avx2(x: &[f32], out: &mut [f32], gamma: f32, beta: f32, act: Act, c: usize) {
    row_kernel(x, out, gamma, beta, act, c)
}

/// x (c, t) row-major; gamma/beta (c) from the style; returns act((1 + gamma) * norm(x) + beta).
pub fn adain_act(x: &[f32], channels: usize, gamma: &[f32], beta: &[f32], act: Act) -> Vec<f32> {
    let t = x.len() / channels;
    let mut out = vec![0f32; x.len()];
    let avx2 = voice_kernels::gemv::has_avx2_fma();
    out.par_chunks_mut(t).zip(x.par_chunks(t)).enumerate().for_each(|(c, (o, xr))| {
        #[cfg(target_arch = "x86_64")]
        if avx2 {
            // Safety: AVX2 and FMA are present (checked at run time).
            unsafe { row_avx2(xr, o, gamma[c], beta[c], act, c) };
            return;
        }
        let _ = avx2;
        row_kernel(xr, o, gamma[c], beta[c], act, c);
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_cos_is_accurate() {
        let mut worst = 0f32;
        for i in -200_000..200_000 {
            let x = i as f32 * 0.01234;
            worst = worst.max((fast_cos(x) - (x as f64).cos() as f32).abs());
        }
        assert!(worst < 2e-6, "worst error {worst}");
    }

    #[test]
    fn matches_the_unfused_definition() {
        let (c, t) = (3, 50);
        let x: Vec<f32> = (0..c * t).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.03).collect();
        let (g, b, a) = (vec![0.2, -0.1, 0.5], vec![0.1, 0.0, -0.3], vec![0.7, 1.3, 2.0]);
        let y = adain_act(&x, c, &g, &b, Act::Snake(&a));
        for ch in 0..c {
            let row = &x[ch * t..(ch + 1) * t];
            let mean = row.iter().map(|&v| v as f64).sum::<f64>() / t as f64;
            let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / t as f64;
            for i in 0..t {
                let n = (row[i] as f64 - mean) / (var + 1e-5).sqrt();
                let z = (1.0 + g[ch] as f64) * n + b[ch] as f64;
                let want = z + (a[ch] as f64 * z).sin().powi(2) / a[ch] as f64;
                assert!((y[ch * t + i] as f64 - want).abs() < 1e-4, "{} vs {want}", y[ch * t + i]);
            }
        }
    }
}
