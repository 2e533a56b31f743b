//! int8 convolutions on the CPU with AVX-512 VNNI: what onnxruntime's `ConvInteger` does for
//! the Kokoro export, and the reason it outran our f32 path.
//!
//! Weights are quantized once, symmetric int8 per output channel (from f32 weights, so both
//! weight sources work; for the registry export they were int8 already and re-round onto a
//! per-channel grid at least as fine as the export's per-tensor one). Activations are quantized
//! per call, asymmetric uint8 over the whole input (onnxruntime's `DynamicQuantizeLinear`), the
//! convolution's zero padding being the zero point. The products accumulate exactly in int32
//! (`vpdpbusd`: four u8 x s8 products per 32-bit lane) and are scaled back to f32 with the
//! bias: `y = sx * sw[m] * (acc - zx * sum(wq[m])) + b[m]`.
//!
//! Layout: the input is packed as `[c_in / 4][t][4]` bytes so that one 64-byte load holds four
//! channels of 16 consecutive time steps, which is what `vpdpbusd` multiplies against four
//! weights broadcast to every lane; a tap's time shift is then just an offset. f32 stays the
//! reference path and the path of every CPU without VNNI.

use rayon::prelude::*;

/// Output rows per register block.
const MR: usize = 8;
/// 16-column vectors per register block (48 columns): 24 accumulators + 3 inputs + 1 weight.
const NR: usize = 3;
const NB: usize = 16 * NR;

/// Is the int8 path available on this CPU (AVX-512 F + BW + VNNI)?
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A stride-1 `Conv1d` weight (c_out, c_in, k) quantized for [`conv1d`].
#[derive(Debug, Clone)]
pub struct QuantConv1d {
    pub c_out: usize,
    pub c_in: usize,
    pub ks: usize,
    groups: usize,
    /// `[tap][row block][group][row in block]`: four int8 weights (input channels 4g..4g+4)
    /// as one i32, rows padded to a multiple of MR with zeros.
    packed: Vec<i32>,
    /// Per output channel: weight scale, and the sum of its int8 weights.
    scale: Vec<f32>,
    row_sum: Vec<i32>,
}

impl QuantConv1d {
    /// From f32 weights laid out (c_out, c_in, k), as PyTorch's.
    pub fn from_f32(w: &[f32], c_out: usize, c_in: usize, ks: usize) -> Self {
        assert_eq!(w.len(), c_out * c_in * ks, "conv weight of {} values for ({c_out}, {c_in}, {ks})", w.len());
        let groups = c_in.div_ceil(4);
        let blocks = c_out.div_ceil(MR);
        let mut packed = vec![0i32; ks * blocks * groups * MR];
        let mut scale = vec![0f32; c_out];
        let mut row_sum = vec![0i32; c_out];
        for m in 0..c_out {
            let row = &w[m * c_in * ks..(m + 1) * c_in * ks];
            let max = row.iter().fold(0f32, |a, v| a.max(v.abs()));
            let s = if max > 0.0 { max / 127.0 } else { 1.0 };
            scale[m] = s;
            let (mb, r) = (m / MR, m % MR);
            for k in 0..ks {
                for g in 0..groups {
                    let mut bytes = [0u8; 4];
                    for (j, b) in bytes.iter_mut().enumerate() {
                        let ci = 4 * g + j;
                        if ci < c_in {
                            let q = (row[ci * ks + k] / s).round().clamp(-127.0, 127.0) as i8;
                            row_sum[m] += q as i32;
                            *b = q as u8;
                        }
                    }
                    packed[((k * blocks + mb) * groups + g) * MR + r] = i32::from_le_bytes(bytes);
                }
            }
        }
        Self { c_out, c_in, ks, groups, packed, scale, row_sum }
    }

    /// The weights as the int8 path sees them, back in f32 (c_out, c_in, k): for tests.
    pub fn dequantized(&self) -> Vec<f32> {
        let blocks = self.c_out.div_ceil(MR);
        let mut w = vec![0f32; self.c_out * self.c_in * self.ks];
        for m in 0..self.c_out {
            for k in 0..self.ks {
                for ci in 0..self.c_in {
                    let v = self.packed[((k * blocks + m / MR) * self.groups + ci / 4) * MR + m % MR];
                    let q = v.to_le_bytes()[ci % 4] as i8;
                    w[(m * self.c_in + ci) * self.ks + k] = q as f32 * self.scale[m];
                }
            }
        }
        w
    }
}

/// Asymmetric uint8 quantization of a whole tensor, zero exactly representable.
fn activation_params(x: &[f32]) -> (f32, u8) {
    let (lo, hi) = x.iter().fold((0f32, 0f32), |(l, h), &v| if v.is_finite() { (l.min(v), h.max(v)) } else { (l, h) });
    let scale = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
    let zero = (-lo / scale).round().clamp(0.0, 255.0) as u8;
    (scale, zero)
}

/// x (c_in, t_in) row-major -> (c_out, t_out), stride 1, zero padding `padding` on both sides,
/// taps `dilation` apart, the input quantized per call over its own range (onnxruntime's
/// `DynamicQuantizeLinear`). None when the CPU lacks VNNI (the caller takes the f32 path).
pub fn conv1d(x: &[f32], t_in: usize, q: &QuantConv1d, bias: Option<&[f32]>, padding: usize, dilation: usize) -> Option<Vec<f32>> {
    if !available() {
        return None;
    }
    let (sx, zx) = activation_params(x);
    conv1d_quantized(x, t_in, q, bias, padding, dilation, sx, zx)
}

/// [`conv1d`] with the input's quantization given (a statically quantized model: its scale and
/// zero point are the graph's). Values of `x` already on that grid are read back exactly.
#[allow(clippy::too_many_arguments)]
pub fn conv1d_quantized(
    x: &[f32],
    t_in: usize,
    q: &QuantConv1d,
    bias: Option<&[f32]>,
    padding: usize,
    dilation: usize,
    sx: f32,
    zx: u8,
) -> Option<Vec<f32>> {
    if !(available() && sx > 0.0 && sx.is_finite()) {
        return None;
    }
    assert_eq!(x.len(), q.c_in * t_in, "conv input of {} values for ({}, {t_in})", x.len(), q.c_in);
    let span = dilation * (q.ks - 1) + 1;
    let t_padded = t_in + 2 * padding;
    if t_padded < span {
        return None; // the f32 path reports it
    }
    let t_out = t_padded - span + 1;
    let t_out_blocks = t_out.div_ceil(NB) * NB;
    // Packed input: every column a block may read, with the zero point outside the signal.
    let t_pack = t_out_blocks + span - 1;
    let mut xp = vec![zx; q.groups * t_pack * 4];
    xp.par_chunks_mut(t_pack * 4).enumerate().for_each(|(g, dst)| {
        let rows: [Option<&[f32]>; 4] = std::array::from_fn(|j| {
            let ci = 4 * g + j;
            (ci < q.c_in).then(|| &x[ci * t_in..(ci + 1) * t_in])
        });
        // Safety: target features checked by `available`; dst holds t_pack >= t_in + padding
        // time steps of 4 bytes.
        unsafe { pack_group(rows, t_in, &mut dst[padding * 4..], 1.0 / sx, zx) };
    });
    let blocks = q.c_out.div_ceil(MR);
    let mut out = vec![0f32; q.c_out * t_out];
    out.par_chunks_mut(MR * t_out).enumerate().for_each(|(mb, rows)| {
        let mut acc = vec![0i32; MR * NB];
        for n0 in (0..t_out).step_by(NB) {
            // Safety: the target features were checked by `available`; the kernel reads xp at
            // (g, n0 + k * dilation + [0, NB)) with n0 + NB <= t_out_blocks and
            // k * dilation <= span - 1, so within t_pack, and packed within its length.
            unsafe { kernel(&xp, t_pack, &q.packed, q.groups, blocks, mb, q.ks, dilation, n0, &mut acc) };
            let rows_here = rows.len() / t_out;
            let n1 = (n0 + NB).min(t_out);
            for r in 0..rows_here {
                let m = mb * MR + r;
                let b = bias.map_or(0.0, |b| b[m]);
                // Safety: as above.
                unsafe {
                    dequantize_row(
                        &acc[r * NB..r * NB + n1 - n0],
                        &mut rows[r * t_out + n0..r * t_out + n1],
                        sx * q.scale[m],
                        zx as i32 * q.row_sum[m],
                        b,
                    )
                };
            }
        }
    });
    Some(out)
}

/// `x W^T + b` for x (m, k) row-major already quantized to (sx, zx), W (n, k) as a kernel-1
/// [`QuantConv1d`]: the same exact int32 products, x read as k channels of m steps. Returns
/// (m, n) row-major; None without VNNI.
pub fn linear_quantized(x: &[f32], m: usize, q: &QuantConv1d, bias: Option<&[f32]>, sx: f32, zx: u8) -> Option<Vec<f32>> {
    assert_eq!(q.ks, 1, "linear_quantized needs a kernel-1 weight");
    assert_eq!(x.len(), m * q.c_in, "linear input of {} values for ({m}, {})", x.len(), q.c_in);
    let y = conv1d_quantized(&transpose(x, m, q.c_in), m, q, bias, 0, 1, sx, zx)?;
    Some(transpose(&y, q.c_out, m))
}

/// (r, c) row-major -> (c, r).
fn transpose(x: &[f32], r: usize, c: usize) -> Vec<f32> {
    let mut out = vec![0f32; r * c];
    // Blocks of 16 x 16 keep both sides in cache.
    for i0 in (0..r).step_by(16) {
        for j0 in (0..c).step_by(16) {
            for i in i0..(i0 + 16).min(r) {
                for j in j0..(j0 + 16).min(c) {
                    out[j * r + i] = x[i * c + j];
                }
            }
        }
    }
    out
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel(
    xp: &[u8],
    t_pack: usize,
    packed: &[i32],
    groups: usize,
    blocks: usize,
    mb: usize,
    ks: usize,
    dilation: usize,
    n0: usize,
    acc_out: &mut [i32],
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_si512(); NR]; MR];
    for k in 0..ks {
        let off = n0 + k * dilation;
        let wk = &packed[(k * blocks + mb) * groups * MR..(k * blocks + mb + 1) * groups * MR];
        for g in 0..groups {
            let base = xp.as_ptr().add((g * t_pack + off) * 4);
            let xs =
                [_mm512_loadu_si512(base as *const _), _mm512_loadu_si512(base.add(64) as *const _), _mm512_loadu_si512(base.add(128) as *const _)];
            let w = wk.as_ptr().add(g * MR);
            for (r, row) in acc.iter_mut().enumerate() {
                let wv = _mm512_set1_epi32(*w.add(r));
                for (a, xv) in row.iter_mut().zip(&xs) {
                    *a = _mm512_dpbusd_epi32(*a, *xv, wv);
                }
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        for (j, a) in row.iter().enumerate() {
            _mm512_storeu_si512(acc_out.as_mut_ptr().add(r * NB + j * 16) as *mut _, *a);
        }
    }
}

/// Quantize four channels (None: a padding channel, all zero point) of `t` steps into the
/// packed `[t][4]` layout: one 32-bit lane per time step, channel j in byte j.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn pack_group(rows: [Option<&[f32]>; 4], t: usize, dst: &mut [u8], inv: f32, zx: u8) {
    use std::arch::x86_64::*;
    assert!(dst.len() >= t * 4);
    let (vinv, vzx, lo, hi) = (_mm512_set1_ps(inv), _mm512_set1_ps(zx as f32), _mm512_setzero_si512(), _mm512_set1_epi32(255));
    let pad = _mm512_set1_epi32(zx as i32);
    for t0 in (0..t).step_by(16) {
        let n = (t - t0).min(16);
        let mask: __mmask16 = if n == 16 { 0xffff } else { (1u16 << n) - 1 };
        let mut word = _mm512_setzero_si512();
        for (j, row) in rows.iter().enumerate() {
            let q = match row {
                // Round to nearest (even) in the conversion, then clamp to a byte.
                Some(r) => {
                    let v = _mm512_maskz_loadu_ps(mask, r.as_ptr().add(t0));
                    _mm512_min_epi32(_mm512_max_epi32(_mm512_cvtps_epi32(_mm512_fmadd_ps(v, vinv, vzx)), lo), hi)
                }
                None => pad,
            };
            word = _mm512_or_si512(word, _mm512_sllv_epi32(q, _mm512_set1_epi32(8 * j as i32)));
        }
        _mm512_mask_storeu_epi32(dst.as_mut_ptr().add(t0 * 4) as *mut i32, mask, word);
    }
}

/// `out[n] = s * (acc[n] - offset) + b`, vectorised.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dequantize_row(acc: &[i32], out: &mut [f32], s: f32, offset: i32, b: f32) {
    for (y, &a) in out.iter_mut().zip(acc) {
        *y = s * (a - offset) as f32 + b;
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn pack_group(_: [Option<&[f32]>; 4], _: usize, _: &mut [u8], _: f32, _: u8) {
    unreachable!("int8 kernel without x86_64")
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn dequantize_row(_: &[i32], _: &mut [f32], _: f32, _: i32, _: f32) {
    unreachable!("int8 kernel without x86_64")
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel(_: &[u8], _: usize, _: &[i32], _: usize, _: usize, _: usize, _: usize, _: usize, _: usize, _: &mut [i32]) {
    unreachable!("int8 kernel without x86_64")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The int8 convolution against a plain f32 one on the same quantized weights and on the
    /// same quantized input: the integer products must be exact, so the only difference left is
    /// the input's rounding (bounded by half a step times the weights' L1 norm).
    #[test]
    fn int8_conv_matches_the_f32_conv_of_its_quantized_operands() {
        if !available() {
            eprintln!("no AVX-512 VNNI on this CPU: int8 path not tested");
            return;
        }
        for &(c_in, c_out, ks, pad, dil, t) in &[(128, 128, 11, 25, 5, 301), (256, 256, 3, 1, 1, 97), (128, 22, 7, 3, 1, 50), (6, 9, 3, 1, 1, 5)] {
            let x: Vec<f32> = (0..c_in * t).map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * if i % 13 == 0 { 3.0 } else { 1.0 }).collect();
            let w: Vec<f32> = (0..c_out * c_in * ks).map(|i| ((i * 104729 % 997) as f32 / 498.5 - 1.0) * 0.05).collect();
            let bias: Vec<f32> = (0..c_out).map(|i| i as f32 * 0.01).collect();
            let q = QuantConv1d::from_f32(&w, c_out, c_in, ks);
            let got = conv1d(&x, t, &q, Some(&bias), pad, dil).unwrap();
            let wq = q.dequantized();
            let (sx, zx) = activation_params(&x);
            let xq: Vec<f32> = x.iter().map(|&v| (v.mul_add(1.0 / sx, zx as f32).round_ties_even().clamp(0.0, 255.0) - zx as f32) * sx).collect();
            let t_out = t + 2 * pad - dil * (ks - 1);
            assert_eq!(got.len(), c_out * t_out);
            for m in 0..c_out {
                for n in 0..t_out {
                    let mut want = bias[m] as f64;
                    for ci in 0..c_in {
                        for k in 0..ks {
                            let pos = n as isize + (k * dil) as isize - pad as isize;
                            if pos >= 0 && (pos as usize) < t {
                                want += wq[(m * c_in + ci) * ks + k] as f64 * xq[ci * t + pos as usize] as f64;
                            }
                        }
                    }
                    let g = got[m * t_out + n] as f64;
                    assert!((g - want).abs() <= 1e-4 * (1.0 + want.abs()), "({c_in},{c_out},{ks}) row {m} col {n}: {g} vs {want}");
                }
            }
        }
    }

    /// A statically quantized linear: inputs on the given grid are read back exactly, so the
    /// result is the f64 product of the grid values and the quantized weights (to f32 rounding).
    #[test]
    fn linear_on_a_given_grid_is_the_product_of_its_grid_values() {
        if !available() {
            eprintln!("no AVX-512 VNNI on this CPU: int8 path not tested");
            return;
        }
        let (m, k, n, sx, zx) = (37, 70, 45, 0.037f32, 131u8);
        let x: Vec<f32> = (0..m * k).map(|i| ((i * 7919 % 256) as f32 - zx as f32) * sx).collect();
        let w: Vec<f32> = (0..n * k).map(|i| ((i * 104729 % 997) as f32 / 498.5 - 1.0) * 0.05).collect();
        let bias: Vec<f32> = (0..n).map(|i| i as f32 * 0.01 - 0.2).collect();
        let q = QuantConv1d::from_f32(&w, n, k, 1);
        let wq = q.dequantized();
        let got = linear_quantized(&x, m, &q, Some(&bias), sx, zx).unwrap();
        for i in 0..m {
            for j in 0..n {
                let want: f64 = bias[j] as f64 + (0..k).map(|c| x[i * k + c] as f64 * wq[j * k + c] as f64).sum::<f64>();
                let g = got[i * n + j] as f64;
                assert!((g - want).abs() <= 1e-5 * (1.0 + want.abs()), "({i}, {j}): {g} vs {want}");
            }
        }
        // Off the grid, the values are rounded onto it (not an error).
        assert!(linear_quantized(&vec![0.5; m * k], m, &q, None, sx, zx).is_some());
        assert!(linear_quantized(&x, m, &q, None, 0.0, zx).is_none());
    }

    #[test]
    fn weights_round_trip_within_half_a_step() {
        let w: Vec<f32> = (0..4 * 5 * 3).map(|i| (i as f32 - 30.0) * 0.013).collect();
        let q = QuantConv1d::from_f32(&w, 4, 5, 3);
        for (m, row) in w.chunks(15).enumerate() {
            let step = row.iter().fold(0f32, |a, v| a.max(v.abs())) / 127.0;
            for (a, b) in row.iter().zip(&q.dequantized()[m * 15..(m + 1) * 15]) {
                assert!((a - b).abs() <= step / 2.0 + 1e-7);
            }
        }
    }
}
