//! Tensor operations the model crates share, each with a fast CPU path and a plain candle path
//! for every other device (CUDA) or layout:
//!
//! - [`linear`]: `x W^T + b` through BLAS `sgemm` on the CPU;
//! - [`attention`]: multi-head scaled dot-product attention that reads q/k/v straight out of
//!   fused projections (row strides, no head split copies) and writes heads interleaved;
//! - [`conv1d`]: im2col + `sgemm`;
//! - [`gelu_erf`], softmax: vectorised, parallel, no libm calls.
//!
//! The CPU path needs a CBLAS at run time (see [`blas`]); without one, or for non-f32 tensors,
//! every function computes the same result with candle's ops.

pub mod blas;
pub mod gemv;
pub mod int8;
pub mod math;
pub mod quant;

use candle_core::{DType, Device, Result, Tensor, D};

/// A read view of a CPU f32 tensor's elements, from its start offset.
fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        candle_core::Storage::Cpu(candle_core::CpuStorage::F32(v)) => Some(f(&v[layout.start_offset()..])),
        _ => None,
    }
}

fn cpu_blas(ts: &[&Tensor]) -> Option<&'static blas::Blas> {
    if ts.iter().all(|t| matches!(t.device(), Device::Cpu) && t.dtype() == DType::F32) {
        blas::get()
    } else {
        None
    }
}

/// Rows of `x` up to which single-row products use [`gemv`] rather than BLAS.
const GEMV_MAX_ROWS: usize = 4;

/// `x W^T + b` for x (..., in), W (out, in), b (out). On the CPU, W may be f16 (half the memory
/// traffic for the large output projections of decoders) with x f32.
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    if let Some(y) = linear_gemv(x, w, b)? {
        return Ok(y);
    }
    if w.dtype() == DType::F16 && x.dtype() == DType::F32 {
        return linear(x, &w.to_dtype(DType::F32)?, b);
    }
    let mut all = vec![x, w];
    all.extend(b);
    if let Some(blas) = cpu_blas(&all) {
        let (n, k) = w.dims2()?;
        let x = x.contiguous()?;
        let w = w.contiguous()?;
        let dims = x.dims().to_vec();
        if dims.last() != Some(&k) {
            candle_core::bail!("linear: input {:?} does not end in {k}", dims);
        }
        let m = x.elem_count() / k;
        let mut out = vec![0f32; m * n];
        let beta = match b {
            Some(b) => {
                let b = b.contiguous()?;
                with_f32(&b, |bv| {
                    for row in out.chunks_mut(n) {
                        row.copy_from_slice(&bv[..n]);
                    }
                });
                1.0
            }
            None => 0.0,
        };
        with_f32(&x, |xv| {
            with_f32(&w, |wv| unsafe {
                // Safety: xv holds m*k, wv n*k and out m*n contiguous elements.
                blas.sgemm(false, true, m, n, k, 1.0, xv.as_ptr(), k, wv.as_ptr(), k, beta, out.as_mut_ptr(), n)
            })
        });
        let mut shape = dims;
        *shape.last_mut().unwrap() = n;
        return Tensor::from_vec(out, shape, &Device::Cpu);
    }
    let y = x.broadcast_matmul(&w.t()?)?;
    match b {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

/// Few rows on the CPU: one parallel matrix-vector product per row, no BLAS call.
fn linear_gemv(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Option<Tensor>> {
    if !matches!(x.device(), Device::Cpu) || x.dtype() != DType::F32 || !matches!(w.device(), Device::Cpu) {
        return Ok(None);
    }
    let (n, k) = w.dims2()?;
    let m = x.elem_count() / k.max(1);
    if m > GEMV_MAX_ROWS || !w.is_contiguous() || b.is_some_and(|b| b.dtype() != DType::F32) {
        return Ok(None);
    }
    let x = x.contiguous()?;
    let b = b.map(|b| b.contiguous()).transpose()?;
    let xv = with_f32(&x, |v| v[..m * k].to_vec()).expect("CPU f32");
    let bv = b.as_ref().map(|b| with_f32(b, |v| v[..n].to_vec()).expect("CPU f32"));
    let mut out = vec![0f32; m * n];
    let (ws, wl) = w.storage_and_layout();
    let off = wl.start_offset();
    for (xr, yr) in xv.chunks(k).zip(out.chunks_mut(n)) {
        match &*ws {
            candle_core::Storage::Cpu(candle_core::CpuStorage::F32(v)) => gemv::gemv(gemv::Weights::F32(&v[off..off + n * k]), xr, bv.as_deref(), yr),
            candle_core::Storage::Cpu(candle_core::CpuStorage::F16(v)) => {
                // Safety: half::f16 is a transparent u16.
                let bits: &[u16] = unsafe { std::slice::from_raw_parts(v.as_ptr().add(off) as *const u16, n * k) };
                gemv::gemv(gemv::Weights::F16(bits), xr, bv.as_deref(), yr)
            }
            _ => return Ok(None),
        }
    }
    let mut shape = x.dims().to_vec();
    *shape.last_mut().unwrap() = n;
    Ok(Some(Tensor::from_vec(out, shape, &Device::Cpu)?))
}

/// Offset, batch stride and row stride of a 3-D tensor whose last dimension is contiguous
/// (a column slice of a fused projection, for instance).
fn rows3(t: &Tensor) -> Option<(usize, usize, usize)> {
    let l = t.layout();
    let s = l.stride();
    (s.len() == 3 && s[2] == 1).then(|| (l.start_offset(), s[0], s[1]))
}

/// Multi-head attention. q: (b, n, d), k and v: (b, t, d), heads interleaved along d (head h owns
/// columns h*dh..(h+1)*dh); each may be a column slice of a larger projection. With
/// `causal_offset = Some(p)`, query i sees keys 0..=p+i (p = tokens already cached). Returns
/// (b, n, d) with the heads interleaved again.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, n_head: usize, causal_offset: Option<usize>) -> Result<Tensor> {
    let (b, n, d) = q.dims3()?;
    let (_, t, _) = k.dims3()?;
    let dh = d / n_head;
    let scale = (dh as f32).powf(-0.5);
    if n == 1 && matches!(q.device(), Device::Cpu) && q.dtype() == DType::F32 && k.dtype() == DType::F32 && v.dtype() == DType::F32 {
        if let (Some(r), true) = (single_query_attention(q, k, v, n_head, scale)?, true) {
            return Ok(r);
        }
    }
    if let (Some(blas), Some((qo, qb, qr)), Some((ko, kb, kr)), Some((vo, vb, vr))) = (cpu_blas(&[q, k, v]), rows3(q), rows3(k), rows3(v)) {
        let mut out = vec![0f32; b * n * d];
        let (qs, _) = q.storage_and_layout();
        let (ks, _) = k.storage_and_layout();
        let (vs, _) = v.storage_and_layout();
        let (
            candle_core::Storage::Cpu(candle_core::CpuStorage::F32(qv)),
            candle_core::Storage::Cpu(candle_core::CpuStorage::F32(kv)),
            candle_core::Storage::Cpu(candle_core::CpuStorage::F32(vv)),
        ) = (&*qs, &*ks, &*vs)
        else {
            candle_core::bail!("attention: expected CPU f32 storage");
        };
        // Heads one after the other: each BLAS call uses every core (concurrent calls into
        // OpenBLAS serialise), and the softmax rows are split over the rayon pool.
        let mut scores = vec![0f32; n * t];
        for bi in 0..b {
            for h in 0..n_head {
                // Safety: offsets and strides come from the tensors' own layouts; scores holds
                // n*t and out b*n*d elements.
                unsafe {
                    blas.sgemm(
                        false,
                        true,
                        n,
                        t,
                        dh,
                        1.0,
                        qv.as_ptr().add(qo + bi * qb + h * dh),
                        qr,
                        kv.as_ptr().add(ko + bi * kb + h * dh),
                        kr,
                        0.0,
                        scores.as_mut_ptr(),
                        t,
                    );
                }
                if let Some(p) = causal_offset {
                    for (i, row) in scores.chunks_mut(t).enumerate() {
                        for s in row.iter_mut().skip(p + i + 1) {
                            *s = f32::NEG_INFINITY;
                        }
                    }
                }
                math::softmax_rows(&mut scores, t, scale);
                unsafe {
                    blas.sgemm(
                        false,
                        false,
                        n,
                        dh,
                        t,
                        1.0,
                        scores.as_ptr(),
                        t,
                        vv.as_ptr().add(vo + bi * vb + h * dh),
                        vr,
                        0.0,
                        out.as_mut_ptr().add(bi * n * d + h * dh),
                        d,
                    );
                }
            }
        }
        return Tensor::from_vec(out, (b, n, d), &Device::Cpu);
    }
    // Any device: split heads, two matmuls and a softmax.
    let split = |x: &Tensor, len: usize| -> Result<Tensor> { x.reshape((b, len, n_head, dh))?.transpose(1, 2)?.contiguous() };
    let (qh, kh, vh) = (split(&q.contiguous()?, n)?, split(&k.contiguous()?, t)?, split(&v.contiguous()?, t)?);
    let mut w = (qh * scale as f64)?.matmul(&kh.t()?)?;
    if let Some(p) = causal_offset {
        let m: Vec<f32> = (0..n).flat_map(|i| (0..t).map(move |j| if j > p + i { f32::NEG_INFINITY } else { 0.0 })).collect();
        let mask = Tensor::from_vec(m, (n, t), q.device())?.to_dtype(w.dtype())?;
        w = w.broadcast_add(&mask)?;
    }
    let w = candle_nn::ops::softmax_last_dim(&w)?;
    w.matmul(&vh)?.transpose(1, 2)?.reshape((b, n, d))
}

/// One query per batch row (a decoding step): per head, dot products against every key row,
/// softmax, weighted sum of value rows, without BLAS calls. Heads run in parallel.
fn single_query_attention(q: &Tensor, k: &Tensor, v: &Tensor, n_head: usize, scale: f32) -> Result<Option<Tensor>> {
    let (Some((qo, qb, _)), Some((ko, kb, kr)), Some((vo, vb, vr))) = (rows3(q), rows3(k), rows3(v)) else {
        return Ok(None);
    };
    let (b, _, d) = q.dims3()?;
    let (_, t, _) = k.dims3()?;
    let dh = d / n_head;
    let (qs, _) = q.storage_and_layout();
    let (ks, _) = k.storage_and_layout();
    let (vs, _) = v.storage_and_layout();
    let (
        candle_core::Storage::Cpu(candle_core::CpuStorage::F32(qv)),
        candle_core::Storage::Cpu(candle_core::CpuStorage::F32(kv)),
        candle_core::Storage::Cpu(candle_core::CpuStorage::F32(vv)),
    ) = (&*qs, &*ks, &*vs)
    else {
        return Ok(None);
    };
    let mut out = vec![0f32; b * d];
    use rayon::prelude::*;
    let per_head = |(i, o): (usize, &mut [f32])| {
        let (bi, h) = (i / n_head, i % n_head);
        let qh = &qv[qo + bi * qb + h * dh..qo + bi * qb + (h + 1) * dh];
        let mut scores: Vec<f32> = (0..t)
            .map(|j| {
                let row = ko + bi * kb + j * kr + h * dh;
                gemv::dot_f32(&kv[row..row + dh], qh)
            })
            .collect();
        math::softmax_row(&mut scores, scale);
        o.fill(0.0);
        for (j, p) in scores.iter().enumerate() {
            let row = vo + bi * vb + j * vr + h * dh;
            for (acc, x) in o.iter_mut().zip(&vv[row..row + dh]) {
                *acc += p * x;
            }
        }
    };
    // Short caches (self-attention while decoding) are cheaper on one thread.
    if t * d < (1 << 16) {
        out.chunks_mut(dh).enumerate().for_each(per_head);
    } else {
        out.par_chunks_mut(dh).enumerate().for_each(per_head);
    }
    Ok(Some(Tensor::from_vec(out, (b, 1, d), &Device::Cpu)?))
}

/// y (b, c, t) + bias (c) per channel: the candle path of the convolutions.
fn add_channel_bias(y: Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    match bias {
        Some(bias) => y.broadcast_add(&bias.reshape((1, (), 1))?),
        None => Ok(y),
    }
}

/// 1-D convolution, x (b, c_in, t), w (c_out, c_in, k), bias (c_out).
pub fn conv1d(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, stride: usize, padding: usize) -> Result<Tensor> {
    conv1d_dilated(x, w, bias, stride, padding, 1)
}

/// [`conv1d`] with a dilation (taps `dilation` samples apart).
pub fn conv1d_dilated(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, stride: usize, padding: usize, dilation: usize) -> Result<Tensor> {
    let mut all = vec![x, w];
    all.extend(bias);
    if let Some(blas) = cpu_blas(&all) {
        let (b, c_in, t_in) = x.dims3()?;
        let (c_out, _, ks) = w.dims3()?;
        let span = dilation * (ks - 1) + 1;
        if t_in + 2 * padding < span {
            candle_core::bail!("conv1d: input of {t_in} samples is shorter than the kernel span {span}");
        }
        let t_out = (t_in + 2 * padding - span) / stride + 1;
        let x = x.contiguous()?;
        let w = w.contiguous()?;
        let kk = c_in * ks;
        let mut out = vec![0f32; b * c_out * t_out];
        if let Some(bias) = bias {
            let bias = bias.contiguous()?;
            with_f32(&bias, |bv| {
                for (i, row) in out.chunks_mut(t_out).enumerate() {
                    row.fill(bv[i % c_out]);
                }
            });
        }
        let beta = if bias.is_some() { 1.0 } else { 0.0 };
        if stride == 1 && ks > 1 {
            // Tap by tap: out += W_k (c_out, c_in) x X_pad shifted by k * dilation. The shifted
            // inputs are views of one padded copy (row stride t_pad), so nothing like im2col's
            // c_in * k * t_out buffer is written; for the vocoder's long sequences that copy
            // cost as much as the products.
            let t_pad = t_in + 2 * padding;
            let mut wk = vec![0f32; ks * c_out * c_in];
            with_f32(&w, |wv| {
                for co in 0..c_out {
                    for ci in 0..c_in {
                        for k in 0..ks {
                            wk[(k * c_out + co) * c_in + ci] = wv[(co * c_in + ci) * ks + k];
                        }
                    }
                }
            });
            let mut xpad = vec![0f32; c_in * t_pad];
            with_f32(&x, |xv| {
                for bi in 0..b {
                    for c in 0..c_in {
                        let src = &xv[(bi * c_in + c) * t_in..(bi * c_in + c + 1) * t_in];
                        xpad[c * t_pad + padding..c * t_pad + padding + t_in].copy_from_slice(src);
                    }
                    for k in 0..ks {
                        let beta_k = if k == 0 { beta } else { 1.0 };
                        // Safety: wk holds ks*c_out*c_in, xpad c_in*t_pad (the shifted view ends
                        // at (c_in-1)*t_pad + k*dilation + t_out <= c_in*t_pad), out b*c_out*t_out.
                        unsafe {
                            blas.sgemm(
                                false,
                                false,
                                c_out,
                                t_out,
                                c_in,
                                1.0,
                                wk.as_ptr().add(k * c_out * c_in),
                                c_in,
                                xpad.as_ptr().add(k * dilation),
                                t_pad,
                                beta_k,
                                out.as_mut_ptr().add(bi * c_out * t_out),
                                t_out,
                            );
                        }
                    }
                }
            });
            return Tensor::from_vec(out, (b, c_out, t_out), &Device::Cpu);
        }
        let mut cols = vec![0f32; kk * t_out];
        with_f32(&x, |xv| {
            with_f32(&w, |wv| {
                for bi in 0..b {
                    let xb = &xv[bi * c_in * t_in..(bi + 1) * c_in * t_in];
                    use rayon::prelude::*;
                    cols.par_chunks_mut(t_out).enumerate().for_each(|(r, row)| {
                        let (c, j) = (r / ks, r % ks);
                        let src = &xb[c * t_in..(c + 1) * t_in];
                        for (to, dst) in row.iter_mut().enumerate() {
                            let pos = (to * stride + j * dilation) as isize - padding as isize;
                            *dst = if pos >= 0 && (pos as usize) < t_in { src[pos as usize] } else { 0.0 };
                        }
                    });
                    // Safety: wv holds c_out*kk, cols kk*t_out and out b*c_out*t_out elements.
                    unsafe {
                        blas.sgemm(
                            false,
                            false,
                            c_out,
                            t_out,
                            kk,
                            1.0,
                            wv.as_ptr(),
                            kk,
                            cols.as_ptr(),
                            t_out,
                            beta,
                            out.as_mut_ptr().add(bi * c_out * t_out),
                            t_out,
                        );
                    }
                }
            })
        });
        return Tensor::from_vec(out, (b, c_out, t_out), &Device::Cpu);
    }
    let y = x.conv1d(w, padding, stride, dilation, 1)?;
    add_channel_bias(y, bias)
}

/// Transposed 1-D convolution (groups 1), x (b, c_in, t), w (c_in, c_out, k), bias (c_out):
/// output length (t - 1) * stride - 2 * padding + k + output_padding. On the CPU one `sgemm`
/// gives every tap's contribution (c_out * k, t) and an overlap-add places them, instead of
/// candle's direct loops.
pub fn conv_transpose1d(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, stride: usize, padding: usize, output_padding: usize) -> Result<Tensor> {
    let mut all = vec![x, w];
    all.extend(bias);
    if let Some(blas) = cpu_blas(&all) {
        let (b, c_in, t_in) = x.dims3()?;
        let (w_in, c_out, ks) = w.dims3()?;
        if w_in != c_in {
            candle_core::bail!("conv_transpose1d: input has {c_in} channels, weight expects {w_in}");
        }
        let full = (t_in - 1) * stride + ks + output_padding;
        if full < 2 * padding {
            candle_core::bail!("conv_transpose1d: padding {padding} exceeds the output");
        }
        let t_out = full - 2 * padding;
        let x = x.contiguous()?;
        let w = w.contiguous()?;
        let bias_v: Option<Vec<f32>> = match bias {
            Some(bv) => Some(bv.contiguous()?.flatten_all()?.to_vec1::<f32>()?),
            None => None,
        };
        let mut out = vec![0f32; b * c_out * t_out];
        let mut cols = vec![0f32; c_out * ks * t_in];
        with_f32(&x, |xv| {
            with_f32(&w, |wv| {
                for bi in 0..b {
                    // cols (c_out*k, t_in) = W^T (c_out*k, c_in) x X (c_in, t_in)
                    // Safety: wv holds c_in*c_out*k, xv b*c_in*t_in, cols c_out*k*t_in elements.
                    unsafe {
                        blas.sgemm(
                            true,
                            false,
                            c_out * ks,
                            t_in,
                            c_in,
                            1.0,
                            wv.as_ptr(),
                            c_out * ks,
                            xv.as_ptr().add(bi * c_in * t_in),
                            t_in,
                            0.0,
                            cols.as_mut_ptr(),
                            t_in,
                        );
                    }
                    use rayon::prelude::*;
                    out[bi * c_out * t_out..(bi + 1) * c_out * t_out].par_chunks_mut(t_out).enumerate().for_each(|(co, row)| {
                        if let Some(bv) = &bias_v {
                            row.fill(bv[co]);
                        }
                        for k in 0..ks {
                            let src = &cols[(co * ks + k) * t_in..(co * ks + k + 1) * t_in];
                            for (ti, &v) in src.iter().enumerate() {
                                let pos = ti * stride + k;
                                if pos >= padding && pos - padding < t_out {
                                    row[pos - padding] += v;
                                }
                            }
                        }
                    });
                }
            })
        });
        return Tensor::from_vec(out, (b, c_out, t_out), &Device::Cpu);
    }
    let y = x.conv_transpose1d(w, padding, output_padding, stride, 1, 1)?;
    add_channel_bias(y, bias)
}

/// GELU with the exact normal CDF (PyTorch's default, Whisper's activation).
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    if matches!(x.device(), Device::Cpu) && x.dtype() == DType::F32 {
        // In place on a fresh contiguous copy (or on x itself when it is already a fresh
        // contiguous tensor nobody else holds: `contiguous` then returns a shared handle, so
        // copy explicitly to never mutate a caller's tensor).
        let y = if x.is_contiguous() { x.copy()? } else { x.contiguous()? };
        y.inplace_op1(&GeluInPlace)?;
        return Ok(y);
    }
    x.gelu_erf()
}

/// GELU on a tensor the caller owns outright (a fresh activation), without a copy.
pub fn gelu_erf_owned(x: Tensor) -> Result<Tensor> {
    if matches!(x.device(), Device::Cpu) && x.dtype() == DType::F32 && x.is_contiguous() {
        x.inplace_op1(&GeluInPlace)?;
        return Ok(x);
    }
    gelu_erf(&x)
}

struct GeluInPlace;

impl candle_core::InplaceOp1 for GeluInPlace {
    fn name(&self) -> &'static str {
        "gelu-erf-inplace"
    }
    fn cpu_fwd(&self, storage: &mut candle_core::CpuStorage, layout: &candle_core::Layout) -> Result<()> {
        match (storage, layout.contiguous_offsets()) {
            (candle_core::CpuStorage::F32(v), Some((a, b))) => {
                math::gelu_erf(&mut v[a..b]);
                Ok(())
            }
            _ => candle_core::bail!("gelu-erf-inplace needs a contiguous f32 tensor"),
        }
    }
}

/// Softmax over the last dimension.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if matches!(x.device(), Device::Cpu) && x.dtype() == DType::F32 {
        let x = x.contiguous()?;
        let width = x.dim(D::Minus1)?;
        let mut v = with_f32(&x, |xv| xv[..x.elem_count()].to_vec()).expect("CPU f32");
        math::softmax_rows(&mut v, width, 1.0);
        return Tensor::from_vec(v, x.shape(), &Device::Cpu);
    }
    candle_nn::ops::softmax_last_dim(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    /// Without a BLAS both sides below are candle, and the comparison proves nothing. Where the
    /// machine has one (scripts/test.sh installs OpenBLAS and sets VOICE_EXPECT_BLAS=1), it must
    /// have been loaded.
    fn expect_blas() {
        if std::env::var("VOICE_EXPECT_BLAS").is_ok_and(|v| v == "1") {
            let lib = blas::get().map(|b| b.library.clone());
            assert!(lib.is_some(), "VOICE_EXPECT_BLAS=1 but no CBLAS loaded: the fast paths were not tested");
        }
    }

    /// The fast paths agree with candle's ops on random data (they only differ when a BLAS is
    /// present, which [`expect_blas`] checks where one is installed).
    #[test]
    fn fast_paths_match_candle() -> Result<()> {
        expect_blas();
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 7, 48), &dev)?;
        let w = Tensor::randn(0f32, 0.2, (40, 48), &dev)?;
        let b = Tensor::randn(0f32, 1.0, 40, &dev)?;
        let want = x.broadcast_matmul(&w.t()?)?.broadcast_add(&b)?;
        assert!(max_diff(&linear(&x, &w, Some(&b))?, &want) < 1e-4);

        let qkv = Tensor::randn(0f32, 1.0, (2, 5, 3 * 48), &dev)?;
        let (q, k, v) = (qkv.narrow(2, 0, 48)?, qkv.narrow(2, 48, 48)?, qkv.narrow(2, 96, 48)?);
        for causal in [None, Some(0)] {
            let fast = attention(&q, &k, &v, 4, causal)?;
            // Reference: per head, explicitly.
            let split = |x: &Tensor| x.contiguous().unwrap().reshape((2, 5, 4, 12)).unwrap().transpose(1, 2).unwrap().contiguous().unwrap();
            let mut s = (split(&q) * (12f64).powf(-0.5))?.matmul(&split(&k).t()?)?;
            if causal.is_some() {
                let m: Vec<f32> = (0..5).flat_map(|i| (0..5).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 })).collect();
                s = s.broadcast_add(&Tensor::from_vec(m, (5, 5), &dev)?)?;
            }
            let r = candle_nn::ops::softmax_last_dim(&s)?.matmul(&split(&v))?.transpose(1, 2)?.reshape((2, 5, 48))?;
            assert!(max_diff(&fast, &r) < 1e-5, "causal {causal:?}");
        }

        // A single query (a decoding step) against 9 cached keys.
        let q1 = Tensor::randn(0f32, 1.0, (1, 1, 48), &dev)?;
        let kv = Tensor::randn(0f32, 1.0, (1, 9, 96), &dev)?;
        let (k1, v1) = (kv.narrow(2, 0, 48)?, kv.narrow(2, 48, 48)?);
        let split = |x: &Tensor, t: usize| x.contiguous().unwrap().reshape((1, t, 4, 12)).unwrap().transpose(1, 2).unwrap().contiguous().unwrap();
        let s1 = (split(&q1, 1) * (12f64).powf(-0.5))?.matmul(&split(&k1, 9).t()?)?;
        let r1 = candle_nn::ops::softmax_last_dim(&s1)?.matmul(&split(&v1, 9))?.transpose(1, 2)?.reshape((1, 1, 48))?;
        assert!(max_diff(&attention(&q1, &k1, &v1, 4, Some(8))?, &r1) < 1e-5);
        // f16 weights through the gemv path.
        let w16 = w.to_dtype(DType::F16)?;
        let x1 = x.narrow(1, 0, 1)?;
        let want16 = x1.broadcast_matmul(&w16.to_dtype(DType::F32)?.t()?)?;
        assert!(max_diff(&linear(&x1, &w16, None)?, &want16) < 1e-4);

        let xc = Tensor::randn(0f32, 1.0, (1, 6, 21), &dev)?;
        let wc = Tensor::randn(0f32, 0.3, (9, 6, 3), &dev)?;
        let bc = Tensor::randn(0f32, 1.0, 9, &dev)?;
        for stride in [1, 2] {
            let want = xc.conv1d(&wc, 1, stride, 1, 1)?.broadcast_add(&bc.reshape((1, 9, 1))?)?;
            assert!(max_diff(&conv1d(&xc, &wc, Some(&bc), stride, 1)?, &want) < 1e-4, "stride {stride}");
        }

        let g = Tensor::randn(0f32, 2.0, (3, 100), &dev)?;
        assert!(max_diff(&gelu_erf(&g)?, &g.gelu_erf()?) < 1e-5);
        assert!(max_diff(&softmax_last_dim(&g)?, &candle_nn::ops::softmax_last_dim(&g)?) < 1e-6);
        Ok(())
    }
}
