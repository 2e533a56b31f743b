//! The forward pass as plain f32 loops on the host: ~0.7 M multiply-adds per window, every one
//! of them in a small register-blocked product (several weight rows against several input frames
//! at once: independent 8-lane FMA chains in AVX2 registers when the CPU has them, a plain
//! loop LLVM vectorises otherwise).
//! Activations are time-major with a zero frame on either side (the convolutions' padding), so
//! the three taps of a kernel over all input channels are one contiguous dot product. Everything
//! lives in the caller's scratch buffers: nothing is allocated per window.

use crate::weights::HostParams;

pub(crate) const N_FFT: usize = 256;
pub(crate) const HOP: usize = 128;
pub(crate) const BINS: usize = N_FFT / 2 + 1;
/// Context + window, reflect-padded on the right by 64: (640 - 256) / 128 + 1 = 4 STFT frames.
pub(crate) const PADDED: usize = crate::CONTEXT_SAMPLES + crate::WINDOW_SAMPLES + 64;
pub(crate) const FRAMES: usize = (PADDED - N_FFT) / HOP + 1;
pub(crate) const HIDDEN: usize = 128;

/// Per-stream scratch: every activation of one window. The `p*` buffers are time-major
/// [frame][channel] with one zero frame before and after (never written).
#[derive(Clone)]
pub(crate) struct Scratch {
    /// The model's input: context, window, then the reflection of their last 64 samples.
    pub x: [f32; PADDED],
    /// STFT, [frame][258]: 129 real parts, then 129 imaginary parts.
    stft: [f32; FRAMES * 2 * BINS],
    /// Magnitudes, 4 frames of 129.
    p0: [f32; (FRAMES + 2) * BINS],
    /// conv1 out: 4 frames of 128.
    p1: [f32; (4 + 2) * 128],
    /// conv2 out: 2 frames of 64.
    p2: [f32; (2 + 2) * 64],
    /// conv3 out: 1 frame of 64.
    p3: [f32; (1 + 2) * 64],
    /// LSTM input: [conv4 out (128) | h (128)].
    xh: [f32; 2 * HIDDEN],
    gates: [f32; 4 * HIDDEN],
}

impl Scratch {
    pub fn new() -> Self {
        Self {
            x: [0.0; PADDED],
            stft: [0.0; FRAMES * 2 * BINS],
            p0: [0.0; (FRAMES + 2) * BINS],
            p1: [0.0; (4 + 2) * 128],
            p2: [0.0; (2 + 2) * 64],
            p3: [0.0; (1 + 2) * 64],
            xh: [0.0; 2 * HIDDEN],
            gates: [0.0; 4 * HIDDEN],
        }
    }
}

/// A dot product that LLVM vectorises on any target (8 independent lanes).
#[inline(always)]
fn dot(w: &[f32], x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (wc, xc) = (w.chunks_exact(8), x.chunks_exact(8));
    let tail: f32 = wc.remainder().iter().zip(xc.remainder()).map(|(a, b)| a * b).sum();
    for (a, b) in wc.zip(xc) {
        for l in 0..8 {
            acc[l] += a[l] * b[l];
        }
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// d[r][v] = w[r] . x[v] for R weight rows and V vectors, all of length n.
fn block_generic<const R: usize, const V: usize>(w: [&[f32]; R], x: [&[f32]; V], n: usize) -> [[f32; V]; R] {
    std::array::from_fn(|r| std::array::from_fn(|v| dot(&w[r][..n], &x[v][..n])))
}

/// [`block_generic`] with R * V independent 8-lane FMA chains in registers, each weight and
/// input vector loaded once per 8 elements. The loads are plain reads of `[f32; 8]` through
/// pointers stepped by one array (not `_mm256_loadu_ps` at `ptr.add(o)`): the debug-assertion
/// builds the tests use keep `ptr::add`/`copy_nonoverlapping` UB checks and overflow checks in
/// this loop otherwise, which made it 2-4x slower.
///
/// Safety: AVX2 and FMA must be present; every slice must hold at least n values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_avx2<const R: usize, const V: usize>(w: [&[f32]; R], x: [&[f32]; V], n: usize) -> [[f32; V]; R] {
    use std::arch::x86_64::*;
    let mut wp: [*const [f32; 8]; R] = w.map(|s| s.as_ptr().cast());
    let mut xp: [*const [f32; 8]; V] = x.map(|s| s.as_ptr().cast());
    let mut acc = [[_mm256_setzero_ps(); V]; R];
    for _ in 0..n / 8 {
        // Safety: n / 8 steps of 8 stay within each slice's first n values.
        let wv: [__m256; R] = std::array::from_fn(|r| std::mem::transmute::<[f32; 8], __m256>(*wp[r]));
        for p in wp.iter_mut() {
            *p = p.wrapping_add(1);
        }
        for v in 0..V {
            let xv = std::mem::transmute::<[f32; 8], __m256>(*xp[v]);
            xp[v] = xp[v].wrapping_add(1);
            for r in 0..R {
                acc[r][v] = _mm256_fmadd_ps(wv[r], xv, acc[r][v]);
            }
        }
    }
    let body = n / 8 * 8;
    let mut out = [[0f32; V]; R];
    for r in 0..R {
        for v in 0..V {
            let a = std::mem::transmute::<__m256, [f32; 8]>(acc[r][v]);
            let mut sum = ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]));
            for i in body..n {
                sum += w[r][i] * x[v][i];
            }
            out[r][v] = sum;
        }
    }
    out
}

#[inline(always)]
fn block<const R: usize, const V: usize>(w: [&[f32]; R], x: [&[f32]; V], n: usize) -> [[f32; V]; R] {
    assert!(w.iter().all(|s| s.len() >= n) && x.iter().all(|s| s.len() >= n));
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // Safety: AVX2 and FMA are present (checked at run time; std caches the answer), and
        // the lengths were checked above.
        return unsafe { block_avx2::<R, V>(w, x, n) };
    }
    block_generic::<R, V>(w, x, n)
}

/// For every row r of `w` (rows of length n, a multiple of R of them) and every vector v:
/// `put(r, v, b[r] + w[r] . x[v])`.
#[inline(always)]
fn rows_times<const R: usize, const V: usize>(w: &[f32], n: usize, b: Option<&[f32]>, x: [&[f32]; V], mut put: impl FnMut(usize, usize, f32)) {
    let rows = w.len() / n;
    debug_assert!(rows.is_multiple_of(R) && w.len() == rows * n);
    for r0 in (0..rows).step_by(R) {
        let d = block::<R, V>(std::array::from_fn(|i| &w[(r0 + i) * n..(r0 + i + 1) * n]), x, n);
        for (i, dr) in d.iter().enumerate() {
            let bias = b.map_or(0.0, |b| b[r0 + i]);
            for (v, dv) in dr.iter().enumerate() {
                put(r0 + i, v, bias + dv);
            }
        }
    }
}

/// Conv1d weights, kernel 3, stored [out][tap][in]: the taps of one output over three
/// consecutive (padded) input frames are one dot product of length 3 * in.
struct Conv {
    w: Vec<f32>,
    b: Vec<f32>,
    c_in: usize,
}

impl Conv {
    /// `w` as PyTorch stores it: [out][in][tap].
    fn new(w: &[f32], b: &[f32], c_in: usize) -> Self {
        let c_out = b.len();
        let mut t = vec![0f32; w.len()];
        for o in 0..c_out {
            for c in 0..c_in {
                for k in 0..3 {
                    t[(o * 3 + k) * c_in + c] = w[(o * c_in + c) * 3 + k];
                }
            }
        }
        Self { w: t, b: b.to_vec(), c_in }
    }

    /// The T output frames of a stride-`stride` conv over the padded input `x`, ReLU applied,
    /// output frame `t` written to frame `t + first` of `y`.
    fn forward_relu<const R: usize, const T: usize>(&self, x: &[f32], stride: usize, y: &mut [f32], first: usize) {
        let (n, c_out) = (3 * self.c_in, self.b.len());
        let xs: [&[f32]; T] = std::array::from_fn(|t| &x[t * stride * self.c_in..][..n]);
        rows_times::<R, T>(&self.w, n, Some(&self.b), xs, |o, t, v| y[(t + first) * c_out + o] = v.max(0.0));
    }
}

pub(crate) struct HostModel {
    /// [258][256]: 129 real rows, then 129 imaginary rows.
    basis: Vec<f32>,
    convs: [Conv; 4],
    /// [512][256]: [W_ih | W_hh] per gate row (gates i, f, g, o).
    w_lstm: Vec<f32>,
    /// b_ih + b_hh.
    b_lstm: Vec<f32>,
    w_out: Vec<f32>,
    b_out: f32,
}

#[inline]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

impl HostModel {
    pub fn new(p: &HostParams) -> Self {
        let conv = |n: &str, c_in| Conv::new(p.get(&format!("{n}.weight")), p.get(&format!("{n}.bias")), c_in);
        let (wih, whh) = (p.get("lstm_cell.weight_ih"), p.get("lstm_cell.weight_hh"));
        let mut w_lstm = Vec::with_capacity(4 * HIDDEN * 2 * HIDDEN);
        for r in 0..4 * HIDDEN {
            w_lstm.extend_from_slice(&wih[r * HIDDEN..(r + 1) * HIDDEN]);
            w_lstm.extend_from_slice(&whh[r * HIDDEN..(r + 1) * HIDDEN]);
        }
        let b_lstm = p.get("lstm_cell.bias_ih").iter().zip(p.get("lstm_cell.bias_hh")).map(|(a, b)| a + b).collect();
        Self {
            basis: p.get("stft_conv.weight").to_vec(),
            convs: [conv("conv1", BINS), conv("conv2", 128), conv("conv3", 64), conv("conv4", 64)],
            w_lstm,
            b_lstm,
            w_out: p.get("final_conv.weight").to_vec(),
            b_out: p.get("final_conv.bias")[0],
        }
    }

    /// One window: `s.x` holds the padded input; `h`, `c` are updated; returns the probability.
    pub fn forward(&self, s: &mut Scratch, h: &mut [f32; HIDDEN], c: &mut [f32; HIDDEN]) -> f32 {
        // STFT: 258 basis rows against the 4 overlapping frames, then magnitudes.
        let frames: [&[f32]; FRAMES] = std::array::from_fn(|f| &s.x[f * HOP..f * HOP + N_FFT]);
        let stft = &mut s.stft;
        rows_times::<2, FRAMES>(&self.basis, N_FFT, None, frames, |j, f, v| stft[f * 2 * BINS + j] = v);
        for f in 0..FRAMES {
            let spec = &s.stft[f * 2 * BINS..(f + 1) * 2 * BINS];
            for b in 0..BINS {
                let (re, im) = (spec[b], spec[BINS + b]);
                s.p0[(f + 1) * BINS + b] = (re * re + im * im).sqrt();
            }
        }
        // Encoder: 4 frames -> 4 -> 2 -> 1 -> 1.
        let [c1, c2, c3, c4] = &self.convs;
        c1.forward_relu::<2, 4>(&s.p0, 1, &mut s.p1, 1);
        c2.forward_relu::<4, 2>(&s.p1, 2, &mut s.p2, 1);
        c3.forward_relu::<4, 1>(&s.p2, 2, &mut s.p3, 1);
        c4.forward_relu::<4, 1>(&s.p3, 1, &mut s.xh[..HIDDEN], 0);
        s.xh[HIDDEN..].copy_from_slice(h);
        // LSTM cell.
        let gates = &mut s.gates;
        rows_times::<4, 1>(&self.w_lstm, 2 * HIDDEN, Some(&self.b_lstm), [&s.xh], |r, _, v| gates[r] = v);
        for j in 0..HIDDEN {
            let i = sigmoid(s.gates[j]);
            let f = sigmoid(s.gates[HIDDEN + j]);
            let g = s.gates[2 * HIDDEN + j].tanh();
            let o = sigmoid(s.gates[3 * HIDDEN + j]);
            c[j] = f * c[j] + i * g;
            h[j] = o * c[j].tanh();
        }
        // Decoder: ReLU, 1x1 conv, sigmoid.
        let z: f32 = h.iter().zip(&self.w_out).map(|(h, w)| h.max(0.0) * w).sum();
        sigmoid(z + self.b_out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check<const R: usize, const V: usize>(n: usize) {
        let w: Vec<Vec<f32>> = (0..R).map(|r| (0..n + 3).map(|i| ((i * 31 + r * 7) % 17) as f32 / 17.0 - 0.5).collect()).collect();
        let x: Vec<Vec<f32>> = (0..V).map(|v| (0..n + 5).map(|i| ((i * 13 + v * 5) % 11) as f32 / 11.0 - 0.5).collect()).collect();
        let ws: [&[f32]; R] = std::array::from_fn(|r| &w[r][..]);
        let xs: [&[f32]; V] = std::array::from_fn(|v| &x[v][..]);
        let naive: [[f32; V]; R] = std::array::from_fn(|r| std::array::from_fn(|v| (0..n).map(|i| w[r][i] * x[v][i]).sum()));
        for (name, got) in [("generic", block_generic::<R, V>(ws, xs, n)), ("dispatched", block::<R, V>(ws, xs, n))] {
            for r in 0..R {
                for v in 0..V {
                    assert!((got[r][v] - naive[r][v]).abs() < 1e-4, "{name} R={R} V={V} n={n}: {} vs {}", got[r][v], naive[r][v]);
                }
            }
        }
    }

    #[test]
    fn blocked_products_match_naive_sums() {
        for n in [0, 1, 7, 8, 9, 129, 256, 387] {
            check::<2, 4>(n);
            check::<4, 2>(n);
            check::<4, 1>(n);
            check::<1, 1>(n);
        }
    }
}
