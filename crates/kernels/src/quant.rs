//! GGML block-quantised weights on the CPU: matrix products of Q4_0, Q4_1 and Q8_0 weights with
//! f32 activations, the activations quantised to 8 bits per block of 32 first (as llama.cpp
//! does), dot products in AVX2 integer arithmetic, rows split over the rayon pool.
//!
//! Block layouts (little endian, as in GGUF files):
//! - Q4_0: f16 d, 16 bytes of nibbles; value = d * (q - 8);
//! - Q4_1: f16 d, f16 m, 16 bytes of nibbles; value = d * q + m;
//! - Q8_0: f16 d, 32 i8; value = d * q.
//!
//! Nibble j of a block holds element j (low half) and element j + 16 (high half).

use half::f16;
use rayon::prelude::*;

pub const QK: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QType {
    Q4_0,
    Q4_1,
    Q8_0,
    F32,
}

impl QType {
    pub fn block_bytes(self) -> usize {
        match self {
            QType::Q4_0 => 18,
            QType::Q4_1 => 20,
            QType::Q8_0 => 34,
            QType::F32 => 4 * QK,
        }
    }
}

/// A row-major (rows x cols) weight matrix in one of the supported encodings.
#[derive(Debug, Clone)]
pub struct QMatrix {
    pub qtype: QType,
    pub rows: usize,
    pub cols: usize,
    /// Raw blocks (quantised types) or little-endian f32.
    pub data: Vec<u8>,
}

/// Activations quantised to 8 bits per block: scale, scale * sum (for Q4_1's offset), values.
pub struct Q8Rows {
    pub cols: usize,
    pub d: Vec<f32>,
    pub s: Vec<f32>,
    pub q: Vec<i8>,
}

fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

impl Q8Rows {
    pub fn quantize(x: &[f32], cols: usize) -> Self {
        assert!(cols % QK == 0, "columns must be a multiple of 32");
        let blocks = x.len() / QK;
        let mut d = vec![0f32; blocks];
        let mut s = vec![0f32; blocks];
        let mut q = vec![0i8; x.len()];
        for (b, chunk) in x.chunks_exact(QK).enumerate() {
            let amax = chunk.iter().fold(0f32, |a, v| a.max(v.abs()));
            let scale = amax / 127.0;
            let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            let mut sum = 0i32;
            for (i, v) in chunk.iter().enumerate() {
                let qi = (v * inv).round() as i32;
                q[b * QK + i] = qi as i8;
                sum += qi;
            }
            d[b] = scale;
            s[b] = scale * sum as f32;
        }
        Self { cols, d, s, q }
    }

    pub fn rows(&self) -> usize {
        self.q.len() / self.cols.max(1)
    }
}

impl QMatrix {
    pub fn new(qtype: QType, rows: usize, cols: usize, data: Vec<u8>) -> Result<Self, String> {
        if cols % QK != 0 {
            return Err(format!("{cols} columns is not a multiple of {QK}"));
        }
        let want = rows * (cols / QK) * qtype.block_bytes();
        if data.len() != want {
            return Err(format!("{qtype:?} {rows}x{cols} needs {want} bytes, got {}", data.len()));
        }
        Ok(Self { qtype, rows, cols, data })
    }

    fn row_bytes(&self) -> usize {
        (self.cols / QK) * self.qtype.block_bytes()
    }

    /// Row `r` as f32 (embedding lookups).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let row = &self.data[r * self.row_bytes()..(r + 1) * self.row_bytes()];
        let bb = self.qtype.block_bytes();
        for (b, o) in out.chunks_exact_mut(QK).enumerate() {
            let blk = &row[b * bb..(b + 1) * bb];
            match self.qtype {
                QType::Q4_0 => {
                    let d = f16_at(blk, 0);
                    for j in 0..16 {
                        o[j] = d * ((blk[2 + j] & 0x0F) as f32 - 8.0);
                        o[j + 16] = d * ((blk[2 + j] >> 4) as f32 - 8.0);
                    }
                }
                QType::Q4_1 => {
                    let (d, m) = (f16_at(blk, 0), f16_at(blk, 2));
                    for j in 0..16 {
                        o[j] = d * (blk[4 + j] & 0x0F) as f32 + m;
                        o[j + 16] = d * (blk[4 + j] >> 4) as f32 + m;
                    }
                }
                QType::Q8_0 => {
                    let d = f16_at(blk, 0);
                    for j in 0..QK {
                        o[j] = d * blk[2 + j] as i8 as f32;
                    }
                }
                QType::F32 => {
                    for j in 0..QK {
                        o[j] = f32::from_le_bytes([blk[4 * j], blk[4 * j + 1], blk[4 * j + 2], blk[4 * j + 3]]);
                    }
                }
            }
        }
    }

    /// out (m x rows) = x (m x cols) W^T. Each weight row is read once for all m inputs.
    pub fn matmul(&self, x: &[f32], m: usize, out: &mut [f32]) {
        assert_eq!(x.len(), m * self.cols);
        assert_eq!(out.len(), m * self.rows);
        let rb = self.row_bytes();
        let rows = self.rows;
        let out_ptr = SendPtr(out.as_mut_ptr());
        if self.qtype == QType::F32 {
            let xs = x;
            self.par_rows(|r| {
                let row = &self.data[r * rb..(r + 1) * rb];
                let w: &[f32] = bytemuck_f32(row);
                for t in 0..m {
                    let v = crate::gemv::dot_f32(w, &xs[t * self.cols..(t + 1) * self.cols]);
                    // Safety: each (t, r) is written by exactly one task.
                    unsafe { *out_ptr.get().add(t * rows + r) = v };
                }
            });
            return;
        }
        let xq = Q8Rows::quantize(x, self.cols);
        let nb = self.cols / QK;
        let dot = dot_fn(self.qtype);
        self.par_rows(|r| {
            let row = &self.data[r * rb..(r + 1) * rb];
            for t in 0..m {
                let v = dot(row, &xq.d[t * nb..(t + 1) * nb], &xq.s[t * nb..(t + 1) * nb], &xq.q[t * self.cols..(t + 1) * self.cols]);
                // Safety: each (t, r) is written by exactly one task.
                unsafe { *out_ptr.get().add(t * rows + r) = v };
            }
        });
    }

    fn par_rows(&self, f: impl Fn(usize) + Sync) {
        const ROWS_PER_TASK: usize = 64;
        if self.rows * self.cols < (1 << 16) {
            (0..self.rows).for_each(f);
        } else {
            (0..self.rows.div_ceil(ROWS_PER_TASK)).into_par_iter().for_each(|c| {
                for r in c * ROWS_PER_TASK..((c + 1) * ROWS_PER_TASK).min(self.rows) {
                    f(r);
                }
            });
        }
    }
}

fn bytemuck_f32(b: &[u8]) -> &[f32] {
    assert!(b.as_ptr() as usize % 4 == 0 && b.len() % 4 == 0, "f32 weights must be 4-byte aligned");
    // Safety: alignment and length checked; any bit pattern is a valid f32.
    unsafe { std::slice::from_raw_parts(b.as_ptr() as *const f32, b.len() / 4) }
}

struct SendPtr(*mut f32);
unsafe impl Sync for SendPtr {}
unsafe impl Send for SendPtr {}
impl SendPtr {
    fn get(&self) -> *mut f32 {
        self.0
    }
}

type DotFn = fn(&[u8], &[f32], &[f32], &[i8]) -> f32;

fn dot_fn(t: QType) -> DotFn {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return match t {
                QType::Q4_0 => |w, d, s, q| unsafe { x86::dot_q4_0(w, d, s, q) },
                QType::Q4_1 => |w, d, s, q| unsafe { x86::dot_q4_1(w, d, s, q) },
                QType::Q8_0 => |w, d, s, q| unsafe { x86::dot_q8_0(w, d, s, q) },
                QType::F32 => unreachable!(),
            };
        }
    }
    match t {
        QType::Q4_0 => dot_q4_0,
        QType::Q4_1 => dot_q4_1,
        QType::Q8_0 => dot_q8_0,
        QType::F32 => unreachable!(),
    }
}

fn dot_q4_0(w: &[u8], d: &[f32], _s: &[f32], q: &[i8]) -> f32 {
    let mut acc = 0f32;
    for (b, blk) in w.chunks_exact(18).enumerate() {
        let mut sum = 0i32;
        for j in 0..16 {
            sum += ((blk[2 + j] & 0x0F) as i32 - 8) * q[b * QK + j] as i32;
            sum += ((blk[2 + j] >> 4) as i32 - 8) * q[b * QK + j + 16] as i32;
        }
        acc += f16_at(blk, 0) * d[b] * sum as f32;
    }
    acc
}

fn dot_q4_1(w: &[u8], d: &[f32], s: &[f32], q: &[i8]) -> f32 {
    let mut acc = 0f32;
    for (b, blk) in w.chunks_exact(20).enumerate() {
        let mut sum = 0i32;
        for j in 0..16 {
            sum += (blk[4 + j] & 0x0F) as i32 * q[b * QK + j] as i32;
            sum += (blk[4 + j] >> 4) as i32 * q[b * QK + j + 16] as i32;
        }
        acc += f16_at(blk, 0) * d[b] * sum as f32 + f16_at(blk, 2) * s[b];
    }
    acc
}

fn dot_q8_0(w: &[u8], d: &[f32], _s: &[f32], q: &[i8]) -> f32 {
    let mut acc = 0f32;
    for (b, blk) in w.chunks_exact(34).enumerate() {
        let mut sum = 0i32;
        for j in 0..QK {
            sum += blk[2 + j] as i8 as i32 * q[b * QK + j] as i32;
        }
        acc += f16_at(blk, 0) * d[b] * sum as f32;
    }
    acc
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{f16_at, QK};

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(_mm256_castps256_ps128(v), hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// 16 bytes of nibbles -> 32 bytes: low nibbles (elements 0..16) then high (16..32).
    #[inline(always)]
    unsafe fn nibbles(p: *const u8) -> __m256i {
        let raw = _mm_loadu_si128(p as *const __m128i);
        let mask = _mm_set1_epi8(0x0F);
        let lo = _mm_and_si128(raw, mask);
        let hi = _mm_and_si128(_mm_srli_epi16(raw, 4), mask);
        _mm256_set_m128i(hi, lo)
    }

    /// Sum of u8 x i8 products in 32 lanes as 8 f32 partial sums.
    #[inline(always)]
    unsafe fn mul_sum_u8_i8(a: __m256i, b: __m256i) -> __m256 {
        let p16 = _mm256_maddubs_epi16(a, b);
        let p32 = _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
        _mm256_cvtepi32_ps(p32)
    }

    /// Signed i8 x i8 via the sign trick (maddubs wants one unsigned side).
    #[inline(always)]
    unsafe fn mul_sum_i8_i8(a: __m256i, b: __m256i) -> __m256 {
        let ax = _mm256_sign_epi8(a, a);
        let sy = _mm256_sign_epi8(b, a);
        mul_sum_u8_i8(ax, sy)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_q4_1(w: &[u8], d: &[f32], s: &[f32], q: &[i8]) -> f32 {
        let nb = d.len();
        let mut acc = _mm256_setzero_ps();
        let mut mins = 0f32;
        for b in 0..nb {
            let blk = w.as_ptr().add(b * 20);
            let dw = f16_at(w, b * 20);
            let mw = f16_at(w, b * 20 + 2);
            let qw = nibbles(blk.add(4));
            let qx = _mm256_loadu_si256(q.as_ptr().add(b * QK) as *const __m256i);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(dw * d[b]), mul_sum_u8_i8(qw, qx), acc);
            mins += mw * s[b];
        }
        hsum(acc) + mins
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_q4_0(w: &[u8], d: &[f32], _s: &[f32], q: &[i8]) -> f32 {
        let nb = d.len();
        let mut acc = _mm256_setzero_ps();
        let eight = _mm256_set1_epi8(8);
        for b in 0..nb {
            let blk = w.as_ptr().add(b * 18);
            let dw = f16_at(w, b * 18);
            let qw = _mm256_sub_epi8(nibbles(blk.add(2)), eight);
            let qx = _mm256_loadu_si256(q.as_ptr().add(b * QK) as *const __m256i);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(dw * d[b]), mul_sum_i8_i8(qw, qx), acc);
        }
        hsum(acc)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_q8_0(w: &[u8], d: &[f32], _s: &[f32], q: &[i8]) -> f32 {
        let nb = d.len();
        let mut acc = _mm256_setzero_ps();
        for b in 0..nb {
            let blk = w.as_ptr().add(b * 34);
            let dw = f16_at(w, b * 34);
            let qw = _mm256_loadu_si256(blk.add(2) as *const __m256i);
            let qx = _mm256_loadu_si256(q.as_ptr().add(b * QK) as *const __m256i);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(dw * d[b]), mul_sum_i8_i8(qw, qx), acc);
        }
        hsum(acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quantize_q4_1(w: &[f32]) -> Vec<u8> {
        let mut out = Vec::new();
        for blk in w.chunks_exact(QK) {
            let (mn, mx) = blk.iter().fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
            let d = (mx - mn) / 15.0;
            let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
            out.extend_from_slice(&f16::from_f32(d).to_bits().to_le_bytes());
            out.extend_from_slice(&f16::from_f32(mn).to_bits().to_le_bytes());
            let q: Vec<u8> = blk.iter().map(|v| (((v - mn) * inv).round() as i32).clamp(0, 15) as u8).collect();
            for j in 0..16 {
                out.push(q[j] | (q[j + 16] << 4));
            }
        }
        out
    }

    fn quantize_q8_0(w: &[f32]) -> Vec<u8> {
        let mut out = Vec::new();
        for blk in w.chunks_exact(QK) {
            let amax = blk.iter().fold(0f32, |a, v| a.max(v.abs()));
            let d = amax / 127.0;
            out.extend_from_slice(&f16::from_f32(d).to_bits().to_le_bytes());
            for v in blk {
                out.push(((v / d).round() as i32).clamp(-127, 127) as i8 as u8);
            }
        }
        out
    }

    fn quantize_q4_0(w: &[f32]) -> Vec<u8> {
        let mut out = Vec::new();
        for blk in w.chunks_exact(QK) {
            let max = blk.iter().fold(0f32, |a, &v| if v.abs() > a.abs() { v } else { a });
            let d = max / -8.0;
            let inv = if d != 0.0 { 1.0 / d } else { 0.0 };
            out.extend_from_slice(&f16::from_f32(d).to_bits().to_le_bytes());
            let q: Vec<u8> = blk.iter().map(|v| ((v * inv + 8.5) as i32).clamp(0, 15) as u8).collect();
            for j in 0..16 {
                out.push(q[j] | (q[j + 16] << 4));
            }
        }
        out
    }

    /// The quantised product equals the product of the dequantised weights with the inputs, up to
    /// the 8-bit quantisation of the inputs.
    #[test]
    fn products_match_dequantised_weights() {
        let (rows, cols, m) = (70, 96, 3);
        let w: Vec<f32> = (0..rows * cols).map(|i| ((i * 7919 % 1013) as f32 / 1013.0 - 0.5) * 2.0).collect();
        let x: Vec<f32> = (0..m * cols).map(|i| ((i as f32) * 0.37).sin()).collect();
        for (qt, data) in [(QType::Q4_1, quantize_q4_1(&w)), (QType::Q8_0, quantize_q8_0(&w)), (QType::Q4_0, quantize_q4_0(&w))] {
            let qm = QMatrix::new(qt, rows, cols, data).unwrap();
            let mut deq = vec![0f32; rows * cols];
            for r in 0..rows {
                qm.dequantize_row(r, &mut deq[r * cols..(r + 1) * cols]);
            }
            let mut out = vec![0f32; m * rows];
            qm.matmul(&x, m, &mut out);
            let mut worst = 0f32;
            for t in 0..m {
                for r in 0..rows {
                    let want: f32 = (0..cols).map(|c| deq[r * cols + c] * x[t * cols + c]).sum();
                    worst = worst.max((out[t * rows + r] - want).abs());
                }
            }
            assert!(worst < 0.05, "{qt:?}: worst abs error {worst}");
            // Scalar and SIMD paths agree.
            let xq = Q8Rows::quantize(&x[..cols], cols);
            let row = &qm.data[..qm.row_bytes()];
            let scalar = match qt {
                QType::Q4_0 => dot_q4_0(row, &xq.d, &xq.s, &xq.q),
                QType::Q4_1 => dot_q4_1(row, &xq.d, &xq.s, &xq.q),
                QType::Q8_0 => dot_q8_0(row, &xq.d, &xq.s, &xq.q),
                QType::F32 => unreachable!(),
            };
            let fast = dot_fn(qt)(row, &xq.d, &xq.s, &xq.q);
            assert!((scalar - fast).abs() < 1e-3 * scalar.abs().max(1.0), "{qt:?}: {scalar} vs {fast}");
        }
    }
}
