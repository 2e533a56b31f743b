//! Llama-architecture GGUF models (SmolLM2, Llama, Mistral) on the CPU with our own kernels:
//! Q4_0/Q4_1/Q8_0/F16/F32 weights multiplied in 8-bit integer arithmetic (`voice_kernels::quant`),
//! RMSNorm, interleaved rotary embeddings, grouped-query attention over a per-sequence K/V cache,
//! SwiGLU. It exists because candle's quantized CPU matmul has no SIMD path for Q4_1 and gave
//! wrong greedy answers for the registry SmolLM2 in candle 0.11.1 (a dequantised run answers
//! correctly); and because owning the forward pass lets several sequences share one pass over
//! the weights (batched decoding).

use std::io::{Read, Seek, SeekFrom};

use anyhow::{anyhow, bail, ensure, Context, Result};
use candle_core::quantized::{gguf_file, GgmlDType};
use rayon::prelude::*;
use voice_kernels::quant::{matmul_group, QMatrix, QType, QK};

#[derive(Debug, Clone)]
pub struct LlamaConfig {
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    pub eps: f32,
    pub rope_base: f32,
    pub vocab: usize,
    pub context: usize,
}

struct Layer {
    attn_norm: Vec<f32>,
    wq: QMatrix,
    wk: QMatrix,
    wv: QMatrix,
    wo: QMatrix,
    ffn_norm: Vec<f32>,
    w_gate: QMatrix,
    w_up: QMatrix,
    w_down: QMatrix,
}

pub struct CpuLlama {
    pub cfg: LlamaConfig,
    tok_embd: QMatrix,
    layers: Vec<Layer>,
    out_norm: Vec<f32>,
    output: Option<QMatrix>,
    /// cos/sin per (position, pair).
    rope: Vec<(f32, f32)>,
    /// The forward pass runs INSIDE this pool: its serial parts run on one worker and each
    /// parallel section is split with the other workers through rayon's local deques, instead of
    /// the caller injecting every one of the ~150 sections per token from outside the pool and
    /// sleeping until it finishes (a cross-thread wake-up each time, measured at ~30% of decode).
    pool: rayon::ThreadPool,
}

/// A sequence's keys and values, per layer: (positions x n_head_kv x head_dim).
#[derive(Clone, Default)]
pub struct KvCache {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    pub len: usize,
}

impl KvCache {
    /// A copy of the first `n` positions (all of them if it holds fewer).
    pub fn prefix(&self, n: usize) -> KvCache {
        let n = n.min(self.len);
        let cut = |layers: &[Vec<f32>]| -> Vec<Vec<f32>> {
            layers.iter().map(|l| l.len().checked_div(self.len).map_or_else(Vec::new, |per_position| l[..per_position * n].to_vec())).collect()
        };
        KvCache { k: cut(&self.k), v: cut(&self.v), len: n }
    }
}

fn supported(t: GgmlDType) -> bool {
    matches!(t, GgmlDType::Q4_0 | GgmlDType::Q4_1 | GgmlDType::Q8_0 | GgmlDType::F16 | GgmlDType::F32)
}

/// Can this GGUF run on [`CpuLlama`]? (llama architecture, every matrix in a supported type)
pub fn can_load(ct: &gguf_file::Content) -> bool {
    let arch = ct.metadata.get("general.architecture").and_then(|v| v.to_string().ok()).map(String::as_str);
    matches!(arch, Some("llama") | Some("mistral")) && ct.tensor_infos.values().all(|t| supported(t.ggml_dtype))
}

fn read_tensor<R: Read + Seek>(ct: &gguf_file::Content, r: &mut R, name: &str) -> Result<(GgmlDType, Vec<usize>, Vec<u8>)> {
    let info = ct.tensor_infos.get(name).ok_or_else(|| anyhow!("the GGUF file lacks tensor `{name}`"))?;
    let dims = info.shape.dims().to_vec();
    let elems = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| anyhow!("tensor `{name}`: shape {dims:?} overflows"))?;
    let bs = info.ggml_dtype.block_size();
    if !elems.is_multiple_of(bs) {
        bail!("tensor `{name}`: {elems} elements is not a whole number of blocks");
    }
    let bytes = (elems / bs).checked_mul(info.ggml_dtype.type_size()).ok_or_else(|| anyhow!("tensor `{name}`: size overflows"))?;
    // The data must lie inside the file before we allocate for it.
    let start = ct.tensor_data_offset.checked_add(info.offset).ok_or_else(|| anyhow!("tensor `{name}`: offset overflows"))?;
    let file_len = r.seek(SeekFrom::End(0))?;
    if start.checked_add(bytes as u64).is_none_or(|end| end > file_len) {
        bail!("tensor `{name}`: {bytes} bytes at offset {start} run past the end of the {file_len}-byte file");
    }
    r.seek(SeekFrom::Start(start))?;
    let mut buf = vec![0u8; bytes];
    r.read_exact(&mut buf).with_context(|| format!("reading tensor `{name}`"))?;
    Ok((info.ggml_dtype, dims, buf))
}

fn f32s(dtype: GgmlDType, buf: &[u8]) -> Result<Vec<f32>> {
    Ok(match dtype {
        GgmlDType::F32 => buf.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        GgmlDType::F16 => buf.chunks_exact(2).map(|c| half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32()).collect(),
        other => bail!("expected an f32/f16 vector, got {other:?}"),
    })
}

/// A (rows x cols) matrix (candle reports GGUF shapes row-major: [rows, cols]).
fn matrix<R: Read + Seek>(ct: &gguf_file::Content, r: &mut R, name: &str) -> Result<QMatrix> {
    let (dtype, dims, buf) = read_tensor(ct, r, name)?;
    if dims.len() != 2 {
        bail!("tensor `{name}` is not a matrix: {dims:?}");
    }
    let (rows, cols) = (dims[0], dims[1]);
    let (qtype, data) = match dtype {
        GgmlDType::Q4_0 => (QType::Q4_0, buf),
        GgmlDType::Q4_1 => (QType::Q4_1, buf),
        GgmlDType::Q8_0 => (QType::Q8_0, buf),
        GgmlDType::F32 | GgmlDType::F16 => {
            let v = f32s(dtype, &buf)?;
            (QType::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect())
        }
        other => bail!("tensor `{name}` has unsupported type {other:?}"),
    };
    QMatrix::new(qtype, rows, cols, data).map_err(|e| anyhow!("tensor `{name}`: {e}"))
}

impl CpuLlama {
    pub fn load<R: Read + Seek>(ct: &gguf_file::Content, r: &mut R, context_cap: usize) -> Result<Self> {
        let md = &ct.metadata;
        let arch = md.get("general.architecture").and_then(|v| v.to_string().ok()).cloned().unwrap_or_else(|| "llama".into());
        let get = |k: &str| md.get(&format!("{arch}.{k}")).ok_or_else(|| anyhow!("GGUF metadata lacks {arch}.{k}"));
        let u = |k: &str| -> Result<usize> { Ok(get(k)?.to_u32().map_err(|e| anyhow!("{k}: {e}"))? as usize) };
        let n_embd = u("embedding_length")?;
        let n_head = u("attention.head_count")?;
        let n_head_kv = u("attention.head_count_kv").unwrap_or(n_head);
        // Zero or inconsistent sizes would divide by zero or index out of bounds further on.
        ensure!(n_embd > 0 && n_head > 0 && n_head_kv > 0, "GGUF metadata: embedding_length, head_count and head_count_kv must be positive");
        ensure!(n_head.is_multiple_of(n_head_kv), "GGUF metadata: head_count {n_head} is not a multiple of head_count_kv {n_head_kv}");
        let head_dim = u("rope.dimension_count").unwrap_or(n_embd / n_head);
        ensure!(head_dim > 0, "GGUF metadata: the head dimension is 0");
        let cfg = LlamaConfig {
            n_layer: u("block_count")?,
            n_embd,
            n_head,
            n_head_kv,
            head_dim,
            n_ff: u("feed_forward_length")?,
            eps: get("attention.layer_norm_rms_epsilon").and_then(|v| v.to_f32().map_err(|e| anyhow!("{e}"))).unwrap_or(1e-5),
            rope_base: get("rope.freq_base").and_then(|v| v.to_f32().map_err(|e| anyhow!("{e}"))).unwrap_or(10_000.0),
            vocab: 0,
            context: u("context_length").unwrap_or(2048).min(context_cap.max(1)),
        };
        if n_head % n_head_kv != 0 || head_dim * n_head != n_embd || head_dim % 2 != 0 || n_embd % QK != 0 {
            bail!("unsupported llama shape: {n_embd} dims, {n_head} heads, {n_head_kv} kv heads, head dim {head_dim}");
        }
        // Each layer has nine tensors: a block count beyond that is a lie (and a huge allocation).
        if cfg.n_layer > ct.tensor_infos.len() / 9 {
            bail!("GGUF metadata claims {} layers but the file has {} tensors", cfg.n_layer, ct.tensor_infos.len());
        }
        let tok_embd = matrix(ct, r, "token_embd.weight")?;
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let p = |n: &str| format!("blk.{i}.{n}.weight");
            let vec = |r: &mut R, n: &str| -> Result<Vec<f32>> {
                let (t, _, b) = read_tensor(ct, r, &p(n))?;
                f32s(t, &b)
            };
            layers.push(Layer {
                attn_norm: vec(r, "attn_norm")?,
                wq: matrix(ct, r, &p("attn_q"))?,
                wk: matrix(ct, r, &p("attn_k"))?,
                wv: matrix(ct, r, &p("attn_v"))?,
                wo: matrix(ct, r, &p("attn_output"))?,
                ffn_norm: vec(r, "ffn_norm")?,
                w_gate: matrix(ct, r, &p("ffn_gate"))?,
                w_up: matrix(ct, r, &p("ffn_up"))?,
                w_down: matrix(ct, r, &p("ffn_down"))?,
            });
        }
        let (t, _, b) = read_tensor(ct, r, "output_norm.weight")?;
        let out_norm = f32s(t, &b)?;
        let output = if ct.tensor_infos.contains_key("output.weight") { Some(matrix(ct, r, "output.weight")?) } else { None };
        let mut cfg = cfg;
        cfg.vocab = output.as_ref().map(|o| o.rows).unwrap_or(tok_embd.rows);
        let half = head_dim / 2;
        let mut rope = Vec::with_capacity(cfg.context * half);
        for pos in 0..cfg.context {
            for i in 0..half {
                let theta = pos as f32 * cfg.rope_base.powf(-((2 * i) as f32) / head_dim as f32);
                rope.push((theta.cos(), theta.sin()));
            }
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(rayon::current_num_threads())
            .thread_name(|i| format!("llama-cpu-{i}"))
            .build()
            .map_err(|e| anyhow!("cannot start the CPU thread pool: {e}"))?;
        Ok(Self { cfg, tok_embd, layers, out_norm, output, rope, pool })
    }

    /// Give this model's threads the Linux nice value `nice` (higher = yields more): on a
    /// machine shared with speech synthesis, the rest of an answer is decoded in the cycles
    /// the synthesis of its first sentence leaves, instead of taking half of them.
    pub fn set_nice(&self, nice: i32) -> Result<()> {
        let failed = self.pool.broadcast(|_| {
            // Linux: the nice value is per thread; who = the calling thread's id.
            // Safety: plain syscalls on the calling thread.
            let tid = unsafe { libc::syscall(libc::SYS_gettid) } as libc::id_t;
            (unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) } != 0).then(std::io::Error::last_os_error)
        });
        match failed.into_iter().flatten().next() {
            Some(e) => bail!("setting the nice value {nice} of the model's threads: {e}"),
            None => Ok(()),
        }
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache { k: vec![Vec::new(); self.cfg.n_layer], v: vec![Vec::new(); self.cfg.n_layer], len: 0 }
    }

    fn rms_norm(&self, x: &[f32], w: &[f32], out: &mut [f32]) {
        let d = self.cfg.n_embd;
        for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
            let ms = xr.iter().map(|v| v * v).sum::<f32>() / d as f32;
            let inv = 1.0 / (ms + self.cfg.eps).sqrt();
            for ((o, v), g) in or.iter_mut().zip(xr).zip(w) {
                *o = v * inv * g;
            }
        }
    }

    /// Rotate consecutive pairs of every head of `x` (rows x heads*head_dim) at positions `pos0..`.
    fn rope(&self, x: &mut [f32], heads: usize, positions: &[usize]) {
        let hd = self.cfg.head_dim;
        let half = hd / 2;
        for (row, &pos) in x.chunks_exact_mut(heads * hd).zip(positions) {
            let table = &self.rope[pos * half..(pos + 1) * half];
            for h in row.chunks_exact_mut(hd) {
                for (i, &(c, s)) in table.iter().enumerate() {
                    let (a, b) = (h[2 * i], h[2 * i + 1]);
                    h[2 * i] = a * c - b * s;
                    h[2 * i + 1] = a * s + b * c;
                }
            }
        }
    }

    /// One pass for several sequences: `items[i]` feeds `tokens[i]` after what its cache holds.
    /// Returns the logits after the last token of each item.
    pub fn forward(&self, items: &mut [(&mut KvCache, &[u32])]) -> Result<Vec<Vec<f32>>> {
        self.pool.install(|| self.forward_in_pool(items))
    }

    fn forward_in_pool(&self, items: &mut [(&mut KvCache, &[u32])]) -> Result<Vec<Vec<f32>>> {
        let c = &self.cfg;
        let (d, hd) = (c.n_embd, c.head_dim);
        let kv_dim = c.n_head_kv * hd;
        let rows: usize = items.iter().map(|(_, t)| t.len()).sum();
        if rows == 0 {
            bail!("nothing to feed");
        }
        let mut positions = Vec::with_capacity(rows);
        for (cache, toks) in items.iter() {
            if cache.len + toks.len() > c.context {
                bail!("context of {} tokens exceeded", c.context);
            }
            positions.extend(cache.len..cache.len + toks.len());
        }
        // Embeddings.
        let mut x = vec![0f32; rows * d];
        {
            let mut r = 0;
            for (_, toks) in items.iter() {
                for &t in toks.iter() {
                    if t as usize >= self.tok_embd.rows {
                        bail!("token id {t} is outside the vocabulary");
                    }
                    self.tok_embd.dequantize_row(t as usize, &mut x[r * d..(r + 1) * d]);
                    r += 1;
                }
            }
        }
        let mut h = vec![0f32; rows * d];
        let mut q = vec![0f32; rows * d];
        let mut k = vec![0f32; rows * kv_dim];
        let mut v = vec![0f32; rows * kv_dim];
        let mut att = vec![0f32; rows * d];
        let mut o = vec![0f32; rows * d];
        let mut g = vec![0f32; rows * c.n_ff];
        let mut up = vec![0f32; rows * c.n_ff];
        for (li, l) in self.layers.iter().enumerate() {
            self.rms_norm(&x, &l.attn_norm, &mut h);
            matmul_group(&h, rows, &mut [(&l.wq, &mut q), (&l.wk, &mut k), (&l.wv, &mut v)]);
            self.rope(&mut q, c.n_head, &positions);
            self.rope(&mut k, c.n_head_kv, &positions);
            // Append to each sequence's cache, then attend.
            let mut r0 = 0;
            for (cache, toks) in items.iter_mut() {
                let n = toks.len();
                cache.k[li].extend_from_slice(&k[r0 * kv_dim..(r0 + n) * kv_dim]);
                cache.v[li].extend_from_slice(&v[r0 * kv_dim..(r0 + n) * kv_dim]);
                let past = cache.len;
                self.attend(&q[r0 * d..(r0 + n) * d], &cache.k[li], &cache.v[li], past, &mut att[r0 * d..(r0 + n) * d]);
                r0 += n;
            }
            l.wo.matmul(&att, rows, &mut o);
            for (xv, ov) in x.iter_mut().zip(&o) {
                *xv += ov;
            }
            self.rms_norm(&x, &l.ffn_norm, &mut h);
            matmul_group(&h, rows, &mut [(&l.w_gate, &mut g), (&l.w_up, &mut up)]);
            for (gv, uv) in g.iter_mut().zip(&up) {
                *gv = *gv / (1.0 + (-*gv).exp()) * uv;
            }
            l.w_down.matmul(&g, rows, &mut o);
            for (xv, ov) in x.iter_mut().zip(&o) {
                *xv += ov;
            }
        }
        for (cache, toks) in items.iter_mut() {
            cache.len += toks.len();
        }
        // Logits for the last row of each item only.
        let mut last_rows = Vec::with_capacity(items.len() * d);
        let mut r0 = 0;
        for (_, toks) in items.iter() {
            r0 += toks.len();
            last_rows.extend_from_slice(&x[(r0 - 1) * d..r0 * d]);
        }
        let m = items.len();
        let mut normed = vec![0f32; m * d];
        self.rms_norm(&last_rows, &self.out_norm, &mut normed);
        let out_w = self.output.as_ref().unwrap_or(&self.tok_embd);
        let mut logits = vec![0f32; m * out_w.rows];
        out_w.matmul(&normed, m, &mut logits);
        Ok(logits.chunks_exact(out_w.rows).map(|c| c.to_vec()).collect())
    }

    /// Causal grouped-query attention of `n` new query rows against a cache of `past + n` rows.
    fn attend(&self, q: &[f32], kc: &[f32], vc: &[f32], past: usize, out: &mut [f32]) {
        let c = &self.cfg;
        let (hd, nh) = (c.head_dim, c.n_head);
        let group = nh / c.n_head_kv;
        let kv_dim = c.n_head_kv * hd;
        let scale = 1.0 / (hd as f32).sqrt();
        let n = q.len() / (nh * hd);
        let task = |(idx, o): (usize, &mut [f32])| {
            let (i, h) = (idx / nh, idx % nh);
            let kvh = h / group;
            let qh = &q[i * nh * hd + h * hd..i * nh * hd + (h + 1) * hd];
            let t = past + i + 1;
            let mut scores: Vec<f32> =
                (0..t).map(|j| voice_kernels::gemv::dot_f32(&kc[j * kv_dim + kvh * hd..j * kv_dim + (kvh + 1) * hd], qh)).collect();
            voice_kernels::math::softmax_row(&mut scores, scale);
            o.fill(0.0);
            for (j, p) in scores.iter().enumerate() {
                let vr = &vc[j * kv_dim + kvh * hd..j * kv_dim + (kvh + 1) * hd];
                for (a, b) in o.iter_mut().zip(vr) {
                    *a += p * b;
                }
            }
        };
        if n * (past + n) * nh * hd < (1 << 16) {
            out.chunks_mut(hd).enumerate().for_each(task);
        } else {
            out.par_chunks_mut(hd).enumerate().for_each(task);
        }
    }
}
