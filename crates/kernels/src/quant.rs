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
    pub const fn block_bytes(self) -> usize {
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

#[inline(always)]
fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

impl Q8Rows {
    pub fn quantize(x: &[f32], cols: usize) -> Self {
        assert!(cols.is_multiple_of(QK), "columns must be a multiple of 32");
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
        if !cols.is_multiple_of(QK) {
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
        matmul_group(x, m, &mut [(self, out)]);
    }
}

/// Several products of the same input, `outs[i] = x W_i^T` (e.g. the Q, K and V projections, or
/// the gate and up projections): the input is quantised once and all rows of all matrices are
/// spread over the pool in ONE parallel section, because at decode time (m = 1) these matrices
/// are small and the cost of waking the pool is comparable to the work itself.
pub fn matmul_group(x: &[f32], m: usize, outs: &mut [(&QMatrix, &mut [f32])]) {
    const ROWS_PER_TASK: usize = 32;
    let Some(cols) = outs.first().map(|(w, _)| w.cols) else {
        return;
    };
    assert_eq!(x.len(), m * cols);
    for (w, out) in outs.iter() {
        assert_eq!(w.cols, cols, "every matrix of a group takes the same input");
        assert_eq!(out.len(), m * w.rows);
    }
    let xq = outs.iter().any(|(w, _)| w.qtype != QType::F32).then(|| Q8Rows::quantize(x, cols));
    let nb = cols / QK;
    // (matrix, first row, end row) tasks, and raw output pointers (each (t, r) is written once).
    let mut tasks = Vec::new();
    let mut work = 0usize;
    for (i, (w, _)) in outs.iter().enumerate() {
        for r0 in (0..w.rows).step_by(ROWS_PER_TASK) {
            tasks.push((i, r0, (r0 + ROWS_PER_TASK).min(w.rows)));
        }
        work += w.rows * w.cols * m;
    }
    let ptrs: Vec<SendPtr> = outs.iter_mut().map(|(_, o)| SendPtr(o.as_mut_ptr())).collect();
    let mats: Vec<&QMatrix> = outs.iter().map(|(w, _)| *w).collect();
    let run = |&(i, r0, r1): &(usize, usize, usize)| {
        let w = mats[i];
        let rb = w.row_bytes();
        let out = ptrs[i].get();
        if w.qtype == QType::F32 {
            for r in r0..r1 {
                let row: &[f32] = bytemuck_f32(&w.data[r * rb..(r + 1) * rb]);
                for t in 0..m {
                    let v = crate::gemv::dot_f32(row, &x[t * cols..(t + 1) * cols]);
                    // Safety: each (t, r) of matrix i is written by exactly one task.
                    unsafe { *out.add(t * w.rows + r) = v };
                }
            }
            return;
        }
        let xq = xq.as_ref().expect("quantised input");
        let dot = dot_fn(w.qtype);
        let dot4 = dot4_fn(w.qtype);
        let m4 = m - m % 4;
        for r in r0..r1 {
            let row = &w.data[r * rb..(r + 1) * rb];
            for t0 in (0..m4).step_by(4) {
                let v = dot4(row, xq, t0);
                for (i, v) in v.into_iter().enumerate() {
                    // Safety: each (t, r) of matrix i is written by exactly one task.
                    unsafe { *out.add((t0 + i) * w.rows + r) = v };
                }
            }
            for t in m4..m {
                let v = dot(row, &xq.d[t * nb..(t + 1) * nb], &xq.s[t * nb..(t + 1) * nb], &xq.q[t * cols..(t + 1) * cols]);
                // Safety: each (t, r) of matrix i is written by exactly one task.
                unsafe { *out.add(t * w.rows + r) = v };
            }
        }
    };
    if work < (1 << 16) {
        tasks.iter().for_each(run);
    } else {
        tasks.par_iter().for_each(run);
    }
}

fn bytemuck_f32(b: &[u8]) -> &[f32] {
    assert!((b.as_ptr() as usize).is_multiple_of(4) && b.len().is_multiple_of(4), "f32 weights must be 4-byte aligned");
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
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c") {
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

/// One weight row against four consecutive activation rows `t0..t0 + 4` of `xq`: the block is
/// loaded and unpacked once for all four (batched decoding and prefill).
type Dot4Fn = fn(&[u8], &Q8Rows, usize) -> [f32; 4];

fn dot4_fn(t: QType) -> Dot4Fn {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c") {
            return match t {
                QType::Q4_0 => |w, x, t0| unsafe { x86::dot4::<0>(w, x, t0) },
                QType::Q4_1 => |w, x, t0| unsafe { x86::dot4::<1>(w, x, t0) },
                QType::Q8_0 => |w, x, t0| unsafe { x86::dot4::<8>(w, x, t0) },
                QType::F32 => unreachable!(),
            };
        }
    }
    match t {
        QType::Q4_0 => |w, x, t0| dot4_portable(dot_q4_0, w, x, t0),
        QType::Q4_1 => |w, x, t0| dot4_portable(dot_q4_1, w, x, t0),
        QType::Q8_0 => |w, x, t0| dot4_portable(dot_q8_0, w, x, t0),
        QType::F32 => unreachable!(),
    }
}

fn dot4_portable(dot: DotFn, w: &[u8], x: &Q8Rows, t0: usize) -> [f32; 4] {
    let nb = x.cols / QK;
    std::array::from_fn(|i| {
        let t = t0 + i;
        dot(w, &x.d[t * nb..(t + 1) * nb], &x.s[t * nb..(t + 1) * nb], &x.q[t * x.cols..(t + 1) * x.cols])
    })
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

    use super::QK;

    /// f16 at byte offset `at` to f32 in one instruction (F16C).
    #[inline(always)]
    unsafe fn f16_at(b: &[u8], at: usize) -> f32 {
        let h = u16::from_le_bytes([*b.get_unchecked(at), *b.get_unchecked(at + 1)]);
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h as i32)))
    }

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

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_q4_1(w: &[u8], d: &[f32], s: &[f32], q: &[i8]) -> f32 {
        // Two blocks per iteration with separate accumulators: the loop is bound by the latency
        // of the fmadd / add chains and by weight loads, not by arithmetic.
        let nb = d.len();
        let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let (mut mins0, mut mins1) = (0f32, 0f32);
        let wp = w.as_ptr();
        let qp = q.as_ptr();
        let mut b = 0;
        while b + 1 < nb {
            let (o0, o1) = (b * 20, b * 20 + 20);
            let qw0 = nibbles(wp.add(o0 + 4));
            let qw1 = nibbles(wp.add(o1 + 4));
            let qx0 = _mm256_loadu_si256(qp.add(b * QK) as *const __m256i);
            let qx1 = _mm256_loadu_si256(qp.add(b * QK + QK) as *const __m256i);
            acc0 = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(w, o0) * *d.get_unchecked(b)), mul_sum_u8_i8(qw0, qx0), acc0);
            acc1 = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(w, o1) * *d.get_unchecked(b + 1)), mul_sum_u8_i8(qw1, qx1), acc1);
            mins0 += f16_at(w, o0 + 2) * *s.get_unchecked(b);
            mins1 += f16_at(w, o1 + 2) * *s.get_unchecked(b + 1);
            b += 2;
        }
        if b < nb {
            let o0 = b * 20;
            let qw0 = nibbles(wp.add(o0 + 4));
            let qx0 = _mm256_loadu_si256(qp.add(b * QK) as *const __m256i);
            acc0 = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(w, o0) * *d.get_unchecked(b)), mul_sum_u8_i8(qw0, qx0), acc0);
            mins0 += f16_at(w, o0 + 2) * *s.get_unchecked(b);
        }
        hsum(_mm256_add_ps(acc0, acc1)) + mins0 + mins1
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_q4_0(w: &[u8], d: &[f32], _s: &[f32], q: &[i8]) -> f32 {
        let nb = d.len();
        let mut acc = _mm256_setzero_ps();
        let eight = _mm256_set1_epi8(8);
        for (b, &db) in d.iter().enumerate().take(nb) {
            let blk = w.as_ptr().add(b * 18);
            let dw = f16_at(w, b * 18);
            let qw = _mm256_sub_epi8(nibbles(blk.add(2)), eight);
            let qx = _mm256_loadu_si256(q.as_ptr().add(b * QK) as *const __m256i);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(dw * db), mul_sum_i8_i8(qw, qx), acc);
        }
        hsum(acc)
    }

    /// Bytes of one block of `dot4`'s KIND (0 = Q4_0, 1 = Q4_1, 8 = Q8_0).
    const fn kind_block_bytes(kind: u8) -> usize {
        let t = match kind {
            0 => super::QType::Q4_0,
            1 => super::QType::Q4_1,
            _ => super::QType::Q8_0,
        };
        t.block_bytes()
    }

    /// One block `b` of one weight row against activation rows t0..t0 + 4, added to `acc` /
    /// `mins` (the per-row accumulators of one chain).
    #[inline(always)]
    unsafe fn block4<const KIND: u8>(w: &[u8], x: &super::Q8Rows, t0: usize, b: usize, acc: &mut [__m256; 4], mins: &mut [f32; 4]) {
        let cols = x.cols;
        let nb = cols / QK;
        let bb = kind_block_bytes(KIND);
        let blk = w.as_ptr().add(b * bb);
        let dw = f16_at(w, b * bb);
        // Unsigned weights (Q4_1) multiply directly; signed ones use the sign trick, whose
        // weight half is computed once here.
        let (qw, signs) = match KIND {
            0 => {
                let q = _mm256_sub_epi8(nibbles(blk.add(2)), _mm256_set1_epi8(8));
                (_mm256_sign_epi8(q, q), q)
            }
            1 => {
                let q = nibbles(blk.add(4));
                (q, q)
            }
            _ => {
                let q = _mm256_loadu_si256(blk.add(2) as *const __m256i);
                (_mm256_sign_epi8(q, q), q)
            }
        };
        let mw = if KIND == 1 { f16_at(w, b * bb + 2) } else { 0.0 };
        for i in 0..4 {
            let t = t0 + i;
            let qx = _mm256_loadu_si256(x.q.as_ptr().add(t * cols + b * QK) as *const __m256i);
            let prod = if KIND == 1 { mul_sum_u8_i8(qw, qx) } else { mul_sum_u8_i8(qw, _mm256_sign_epi8(qx, signs)) };
            acc[i] = _mm256_fmadd_ps(_mm256_set1_ps(dw * *x.d.get_unchecked(t * nb + b)), prod, acc[i]);
            if KIND == 1 {
                mins[i] += mw * *x.s.get_unchecked(t * nb + b);
            }
        }
    }

    /// `dot4::<0>` is Q4_0, `<1>` Q4_1, `<8>` Q8_0: one weight row against activation rows
    /// t0..t0 + 4, each block unpacked once. Every row's sum is formed in exactly the order of
    /// the single-row kernel of its type (Q4_1 and Q8_0 alternate two accumulator chains by
    /// block, Q4_0 uses one), so a row's result is the same bits whether it was computed alone
    /// or in a group of four: a prompt prefilled in chunks, a prefix reused from the cache and
    /// a batched decode step all give the logits of one row at a time.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot4<const KIND: u8>(w: &[u8], x: &super::Q8Rows, t0: usize) -> [f32; 4] {
        let cols = x.cols;
        let nb = cols / QK;
        assert!(x.q.len() >= (t0 + 4) * cols && x.d.len() >= (t0 + 4) * nb);
        assert!(w.len() >= nb * kind_block_bytes(KIND));
        let (mut acc0, mut acc1) = ([_mm256_setzero_ps(); 4], [_mm256_setzero_ps(); 4]);
        let (mut mins0, mut mins1) = ([0f32; 4], [0f32; 4]);
        let mut b = 0;
        if KIND == 0 {
            while b < nb {
                block4::<KIND>(w, x, t0, b, &mut acc0, &mut mins0);
                b += 1;
            }
            return std::array::from_fn(|i| hsum(acc0[i]));
        }
        while b + 1 < nb {
            block4::<KIND>(w, x, t0, b, &mut acc0, &mut mins0);
            block4::<KIND>(w, x, t0, b + 1, &mut acc1, &mut mins1);
            b += 2;
        }
        if b < nb {
            block4::<KIND>(w, x, t0, b, &mut acc0, &mut mins0);
        }
        if KIND == 1 {
            std::array::from_fn(|i| hsum(_mm256_add_ps(acc0[i], acc1[i])) + mins0[i] + mins1[i])
        } else {
            std::array::from_fn(|i| hsum(_mm256_add_ps(acc0[i], acc1[i])))
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_q8_0(w: &[u8], d: &[f32], _s: &[f32], q: &[i8]) -> f32 {
        let nb = d.len();
        let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let wp = w.as_ptr();
        let qp = q.as_ptr();
        let mut b = 0;
        while b + 1 < nb {
            let (o0, o1) = (b * 34, b * 34 + 34);
            let qw0 = _mm256_loadu_si256(wp.add(o0 + 2) as *const __m256i);
            let qw1 = _mm256_loadu_si256(wp.add(o1 + 2) as *const __m256i);
            let qx0 = _mm256_loadu_si256(qp.add(b * QK) as *const __m256i);
            let qx1 = _mm256_loadu_si256(qp.add(b * QK + QK) as *const __m256i);
            acc0 = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(w, o0) * *d.get_unchecked(b)), mul_sum_i8_i8(qw0, qx0), acc0);
            acc1 = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(w, o1) * *d.get_unchecked(b + 1)), mul_sum_i8_i8(qw1, qx1), acc1);
            b += 2;
        }
        if b < nb {
            let o0 = b * 34;
            let qw0 = _mm256_loadu_si256(wp.add(o0 + 2) as *const __m256i);
            let qx0 = _mm256_loadu_si256(qp.add(b * QK) as *const __m256i);
            acc0 = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(w, o0) * *d.get_unchecked(b)), mul_sum_i8_i8(qw0, qx0), acc0);
        }
        hsum(_mm256_add_ps(acc0, acc1))
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
        // m = 7: one group of four rows through dot4 and three through the single-row path; 3 blocks
        // per row exercise the two-block unrolled loop's tail.
        let (rows, cols, m) = (70, 96, 7);
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
            let xq = Q8Rows::quantize(&x, cols);
            let four = dot4_fn(qt)(row, &xq, 2);
            for (i, v) in four.iter().enumerate() {
                let nb = cols / QK;
                let t = 2 + i;
                let one = dot_fn(qt)(row, &xq.d[t * nb..(t + 1) * nb], &xq.s[t * nb..(t + 1) * nb], &xq.q[t * cols..(t + 1) * cols]);
                assert!((one - v).abs() < 1e-3 * one.abs().max(1.0), "{qt:?} dot4 row {i}: {v} vs {one}");
            }
        }
    }

    #[test]
    fn grouped_products_equal_separate_ones() {
        let cols = 64;
        let w1: Vec<f32> = (0..40 * cols).map(|i| (i * 31 % 97) as f32 / 97.0 - 0.5).collect();
        let w2: Vec<f32> = (0..24 * cols).map(|i| (i * 17 % 89) as f32 / 89.0 - 0.5).collect();
        let a = QMatrix::new(QType::Q4_1, 40, cols, quantize_q4_1(&w1)).unwrap();
        let b = QMatrix::new(QType::Q8_0, 24, cols, quantize_q8_0(&w2)).unwrap();
        let m = 5;
        let x: Vec<f32> = (0..m * cols).map(|i| (i as f32 * 0.11).cos()).collect();
        let (mut oa, mut ob) = (vec![0f32; m * 40], vec![0f32; m * 24]);
        matmul_group(&x, m, &mut [(&a, &mut oa), (&b, &mut ob)]);
        let (mut sa, mut sb) = (vec![0f32; m * 40], vec![0f32; m * 24]);
        a.matmul(&x, m, &mut sa);
        b.matmul(&x, m, &mut sb);
        assert_eq!(oa, sa);
        assert_eq!(ob, sb);
    }

    #[test]
    fn a_rows_result_does_not_depend_on_the_rows_beside_it() {
        // The prefix cache and batched decoding rely on this: row t of an m-row product is the
        // same bits as the product of row t alone (m = 1 runs the single-row kernels, m = 9
        // runs two groups of four through dot4 and one row alone).
        let (rows, cols, m) = (40, 160, 9);
        let w: Vec<f32> = (0..rows * cols).map(|i| ((i * 7919 % 1013) as f32 / 1013.0 - 0.5) * 2.0).collect();
        let x: Vec<f32> = (0..m * cols).map(|i| (i as f32 * 0.37).sin() * (1.0 + (i % 13) as f32)).collect();
        for (qt, data) in [(QType::Q4_1, quantize_q4_1(&w)), (QType::Q8_0, quantize_q8_0(&w)), (QType::Q4_0, quantize_q4_0(&w))] {
            let qm = QMatrix::new(qt, rows, cols, data).unwrap();
            let mut all = vec![0f32; m * rows];
            qm.matmul(&x, m, &mut all);
            for t in 0..m {
                let mut one = vec![0f32; rows];
                qm.matmul(&x[t * cols..(t + 1) * cols], 1, &mut one);
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&all[t * rows..(t + 1) * rows]), bits(&one), "{qt:?} row {t}");
            }
        }
    }
}
