//! Loading a generation model and running sequences on it.
//!
//! GGUF files are dispatched on `general.architecture`: `llama` (SmolLM2, Llama, Mistral-style),
//! `qwen2`, `qwen3`, `gemma3`, each onto candle-transformers' quantized implementation. Hugging
//! Face safetensors (`config.json` + `*.safetensors` + `tokenizer.json`) load as Llama or Qwen2
//! in bf16 on a GPU (f32 on the CPU).
//!
//! A loaded model is a template with empty caches; every sequence gets its own copy (weights are
//! reference-counted tensors, so a copy costs only the KV cache it grows).

use std::{fs, path::Path};

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{quantized::gguf_file, DType, Device, Tensor};
use candle_transformers::models as ct;

use crate::{template::ChatTemplate, tokenizer::TextTokenizer};

#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelInfo {
    pub id: String,
    pub architecture: String,
    /// The model's trained context.
    pub trained_context: usize,
    /// The context this server allows (prompt + generated tokens).
    pub context_length: usize,
    pub vocab_size: usize,
    pub layers: usize,
    /// Bytes of K/V cache per token of context (f32 on the CPU).
    pub kv_bytes_per_token: u64,
    pub weight_bytes: u64,
}

#[derive(Clone)]
enum Arch {
    Llama(ct::quantized_llama::ModelWeights),
    /// candle's quantized Qwen2 cannot be copied: one instance, one sequence at a time (it
    /// restarts its cache at position 0).
    Qwen2(std::sync::Arc<std::sync::Mutex<ct::quantized_qwen2::ModelWeights>>),
    Qwen3(ct::quantized_qwen3::ModelWeights),
    Gemma3(ct::quantized_gemma3::ModelWeights),
    HfLlama(std::sync::Arc<ct::llama::Llama>, ct::llama::Config, DType),
    HfQwen2(ct::qwen2::ModelForCausalLM),
    /// Our own CPU implementation for llama-architecture GGUF with Q4_0/Q4_1/Q8_0/F16/F32 weights.
    Cpu(std::sync::Arc<crate::cpu_llama::CpuLlama>),
}

pub struct LoadedModel {
    pub info: ModelInfo,
    pub tokenizer: TextTokenizer,
    pub chat: ChatTemplate,
    pub device: Device,
    template: Arch,
}

/// One generation in progress: its own copy of the model state and its position.
pub struct Sequence {
    arch: Arch,
    hf_cache: Option<ct::llama::Cache>,
    kv: Option<crate::cpu_llama::KvCache>,
    pub pos: usize,
    device: Device,
}

fn md_u64(md: &std::collections::HashMap<String, gguf_file::Value>, key: &str) -> Option<u64> {
    md.get(key).and_then(|v| v.to_u64().ok().or_else(|| v.to_u32().ok().map(u64::from)))
}

/// Read a GGUF header: bounds-checked first ([`crate::gguf_check`]), then candle's reader.
pub fn read_gguf<R: std::io::Read + std::io::Seek>(r: &mut R) -> Result<gguf_file::Content> {
    crate::gguf_check::check_header(r)?;
    gguf_file::Content::read(r).map_err(|e| anyhow!("{e}"))
}

/// Estimate a model's device footprint before loading (weights + K/V for `sequences` x `context`).
pub fn estimate_bytes(dir: &Path, context: usize, sequences: usize) -> Result<u64> {
    let gguf = dir.join("model.gguf");
    if gguf.is_file() {
        let mut f = fs::File::open(&gguf)?;
        let ct = read_gguf(&mut f).with_context(|| format!("reading {}", gguf.display()))?;
        let arch = ct.metadata.get("general.architecture").and_then(|v| v.to_string().ok()).cloned().unwrap_or_default();
        let layers = md_u64(&ct.metadata, &format!("{arch}.block_count")).unwrap_or(0);
        let heads_kv = md_u64(&ct.metadata, &format!("{arch}.attention.head_count_kv")).unwrap_or(1);
        let heads = md_u64(&ct.metadata, &format!("{arch}.attention.head_count")).unwrap_or(1);
        let embd = md_u64(&ct.metadata, &format!("{arch}.embedding_length")).unwrap_or(0);
        let head_dim = md_u64(&ct.metadata, &format!("{arch}.attention.key_length")).unwrap_or(embd / heads.max(1));
        let kv = 2 * layers * heads_kv * head_dim * 4;
        return Ok(fs::metadata(&gguf)?.len() + kv * (context * sequences) as u64 + 200_000_000);
    }
    let weights: u64 = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "safetensors"))
        .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .sum();
    // KV cache in the weights' 16-bit type, from the Hugging Face config.
    let cfg: serde_json::Value = fs::read(dir.join("config.json")).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
    let get = |k: &str| cfg[k].as_u64().unwrap_or(0);
    let heads = get("num_attention_heads").max(1);
    let heads_kv = cfg["num_key_value_heads"].as_u64().unwrap_or(heads);
    let head_dim = cfg["head_dim"].as_u64().unwrap_or(get("hidden_size") / heads);
    let kv = 2 * get("num_hidden_layers") * heads_kv * head_dim * 2;
    Ok(weights + kv * (context * sequences) as u64 + 500_000_000)
}

impl LoadedModel {
    /// Load a model directory: `model.gguf`, or Hugging Face safetensors. `max_context` caps the
    /// context the server allows (0 = the model's own).
    pub fn load(id: &str, dir: &Path, device: &Device, max_context: usize) -> Result<Self> {
        let gguf = dir.join("model.gguf");
        if gguf.is_file() {
            return Self::load_gguf(id, &gguf, device, max_context);
        }
        // Any single *.gguf in the directory.
        if let Some(p) = fs::read_dir(dir)?.filter_map(|e| e.ok().map(|e| e.path())).find(|p| p.extension().is_some_and(|x| x == "gguf")) {
            return Self::load_gguf(id, &p, device, max_context);
        }
        if dir.join("config.json").is_file() {
            return Self::load_safetensors(id, dir, device, max_context);
        }
        bail!("{} holds neither a .gguf file nor a Hugging Face model (config.json + safetensors)", dir.display())
    }

    fn load_gguf(id: &str, path: &Path, device: &Device, max_context: usize) -> Result<Self> {
        let mut f = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let ct = read_gguf(&mut f).with_context(|| format!("{} is not a readable GGUF file", path.display()))?;
        let md = ct.metadata.clone();
        let arch = md
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .ok_or_else(|| anyhow!("GGUF metadata lacks general.architecture"))?;
        let tokenizer = TextTokenizer::from_gguf(&md).context("building the tokenizer from GGUF metadata")?;
        let chat = ChatTemplate::new(md.get("tokenizer.chat_template").and_then(|v| v.to_string().ok()).map(String::as_str))?;
        let layers = md_u64(&md, &format!("{arch}.block_count")).unwrap_or(0) as usize;
        let trained = md_u64(&md, &format!("{arch}.context_length")).unwrap_or(2048) as usize;
        let heads = md_u64(&md, &format!("{arch}.attention.head_count")).unwrap_or(1);
        let heads_kv = md_u64(&md, &format!("{arch}.attention.head_count_kv")).unwrap_or(heads);
        let embd = md_u64(&md, &format!("{arch}.embedding_length")).unwrap_or(0);
        let head_dim = md_u64(&md, &format!("{arch}.attention.key_length")).unwrap_or(embd / heads.max(1));
        // candle's quantized llama precomputes rotary tables for 4096 positions.
        let arch_cap = if arch == "llama" { ct::quantized_llama::MAX_SEQ_LEN } else { usize::MAX };
        let mut context = trained.min(arch_cap);
        if max_context > 0 {
            context = context.min(max_context);
        }
        let use_cpu_llama = device.is_cpu() && crate::cpu_llama::can_load(&ct) && std::env::var("VOICE_LLM_CANDLE_CPU").is_err();
        let template = match arch.as_str() {
            "llama" | "mistral" if use_cpu_llama => Arch::Cpu(std::sync::Arc::new(crate::cpu_llama::CpuLlama::load(&ct, &mut f, context)?)),
            "llama" | "mistral" => Arch::Llama(ct::quantized_llama::ModelWeights::from_gguf(ct, &mut f, device)?),
            "qwen2" => Arch::Qwen2(std::sync::Arc::new(std::sync::Mutex::new(ct::quantized_qwen2::ModelWeights::from_gguf(ct, &mut f, device)?))),
            "qwen3" => Arch::Qwen3(ct::quantized_qwen3::ModelWeights::from_gguf(ct, &mut f, device)?),
            "gemma3" => Arch::Gemma3(ct::quantized_gemma3::ModelWeights::from_gguf(ct, &mut f, device)?),
            other => bail!("GGUF architecture `{other}` is not supported (llama, qwen2, qwen3, gemma3 are)"),
        };
        let info = ModelInfo {
            id: id.to_string(),
            architecture: arch,
            trained_context: trained,
            context_length: context,
            vocab_size: tokenizer.vocab_size(),
            layers,
            kv_bytes_per_token: 2 * layers as u64 * heads_kv * head_dim * 4,
            weight_bytes: fs::metadata(path)?.len(),
        };
        Ok(Self { info, tokenizer, chat, device: device.clone(), template })
    }

    fn load_safetensors(id: &str, dir: &Path, device: &Device, max_context: usize) -> Result<Self> {
        let cfg_text = fs::read_to_string(dir.join("config.json"))?;
        let cfg: serde_json::Value = serde_json::from_str(&cfg_text)?;
        let model_type = cfg["model_type"].as_str().unwrap_or("").to_string();
        let dtype = if device.is_cuda() { DType::BF16 } else { DType::F32 };
        let mut files: Vec<_> =
            fs::read_dir(dir)?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "safetensors")).collect();
        files.sort();
        if files.is_empty() {
            bail!("{} has config.json but no .safetensors", dir.display());
        }
        // Safety: read-only memory maps of files the cache does not rewrite in place.
        let vb = unsafe { candle_nn::VarBuilder::from_mmaped_safetensors(&files, dtype, device)? };
        let tc: serde_json::Value =
            fs::read_to_string(dir.join("tokenizer_config.json")).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
        let tok_str = |v: &serde_json::Value| v.as_str().map(String::from).or_else(|| v["content"].as_str().map(String::from));
        let bos = tok_str(&tc["bos_token"]);
        let eos = tok_str(&tc["eos_token"]);
        let tokenizer = TextTokenizer::from_file(&dir.join("tokenizer.json"), bos.as_deref(), eos.as_deref())?;
        let chat = ChatTemplate::new(tc["chat_template"].as_str())?;
        let trained = cfg["max_position_embeddings"].as_u64().unwrap_or(4096) as usize;
        let layers = cfg["num_hidden_layers"].as_u64().unwrap_or(0);
        let heads = cfg["num_attention_heads"].as_u64().unwrap_or(1);
        let heads_kv = cfg["num_key_value_heads"].as_u64().unwrap_or(heads);
        let hidden = cfg["hidden_size"].as_u64().unwrap_or(0);
        let (template, cap) = match model_type.as_str() {
            "llama" => {
                let lc: ct::llama::LlamaConfig = serde_json::from_str(&cfg_text)?;
                let c = lc.into_config(false);
                let m = ct::llama::Llama::load(vb, &c)?;
                let cap = c.max_position_embeddings;
                (Arch::HfLlama(std::sync::Arc::new(m), c, dtype), cap)
            }
            "qwen2" => {
                let c: ct::qwen2::Config = serde_json::from_str(&cfg_text)?;
                (Arch::HfQwen2(ct::qwen2::ModelForCausalLM::new(&c, vb)?), c.max_position_embeddings)
            }
            other => bail!("safetensors model_type `{other}` is not supported (llama, qwen2 are)"),
        };
        let mut context = trained.min(cap);
        if max_context > 0 {
            context = context.min(max_context);
        }
        let weight_bytes = files.iter().map(|f| fs::metadata(f).map(|m| m.len()).unwrap_or(0)).sum();
        let info = ModelInfo {
            id: id.to_string(),
            architecture: model_type,
            trained_context: trained,
            context_length: context,
            vocab_size: tokenizer.vocab_size(),
            layers: layers as usize,
            kv_bytes_per_token: 2 * layers * heads_kv * (hidden / heads.max(1)) * dtype.size_in_bytes() as u64,
            weight_bytes,
        };
        Ok(Self { info, tokenizer, chat, device: device.clone(), template })
    }

    /// Whether several sequences can be in flight at once (false: the engine runs one at a time).
    pub fn parallel_sequences(&self) -> bool {
        !matches!(self.template, Arch::Qwen2(_))
    }

    pub fn new_sequence(&self) -> Result<Sequence> {
        let hf_cache = match &self.template {
            Arch::HfLlama(_, c, dtype) => Some(ct::llama::Cache::new(true, *dtype, c, &self.device)?),
            _ => None,
        };
        let kv = match &self.template {
            Arch::Cpu(m) => Some(m.new_cache()),
            _ => None,
        };
        Ok(Sequence { arch: self.template.clone(), hf_cache, kv, pos: 0, device: self.device.clone() })
    }

    /// Give the threads that run the model the Linux nice value `nice` (our CPU llama only;
    /// false where the implementation's threads are not ours to set).
    pub fn set_thread_nice(&self, nice: i32) -> Result<bool> {
        match &self.template {
            Arch::Cpu(m) => m.set_nice(nice).map(|_| true),
            _ => Ok(false),
        }
    }

    /// Whether a sequence's cache can be cut back to a prefix ([`Sequence::prefix`]), which the
    /// prefix cache needs: our CPU llama only (candle's implementations keep their caches private).
    pub fn reuses_prefixes(&self) -> bool {
        matches!(self.template, Arch::Cpu(_))
    }

    /// Whether [`forward_batch`](Self::forward_batch) shares one pass over the weights.
    pub fn batches(&self) -> bool {
        matches!(self.template, Arch::Cpu(_))
    }

    /// Feed `tokens[i]` to `seqs[i]` for every i, in one pass over the weights when the
    /// implementation allows it; returns each sequence's last logits.
    pub fn forward_batch(&self, seqs: &mut [&mut Sequence], tokens: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        if let Arch::Cpu(m) = &self.template {
            let mut items: Vec<(&mut crate::cpu_llama::KvCache, &[u32])> = Vec::with_capacity(seqs.len());
            for (s, t) in seqs.iter_mut().zip(tokens) {
                s.pos += t.len();
                items.push((s.kv.as_mut().expect("CPU sequences have a cache"), *t));
            }
            return m.forward(&mut items);
        }
        seqs.iter_mut().zip(tokens).map(|(s, t)| s.forward(t)).collect()
    }
}

impl Sequence {
    /// A copy holding only the first `n` positions, or None where the implementation cannot
    /// cut its cache ([`LoadedModel::reuses_prefixes`]).
    pub fn prefix(&self, n: usize) -> Option<Sequence> {
        let kv = self.kv.as_ref()?.prefix(n);
        let pos = kv.len;
        Some(Sequence { arch: self.arch.clone(), hf_cache: None, kv: Some(kv), pos, device: self.device.clone() })
    }

    /// Feed `tokens` after what the sequence has seen; returns the logits for the last one.
    pub fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        if tokens.is_empty() {
            bail!("no tokens to feed");
        }
        let x = Tensor::new(tokens, &self.device)?.unsqueeze(0)?;
        let pos = self.pos;
        let logits = match &mut self.arch {
            Arch::Llama(m) => m.forward(&x, pos)?,
            Arch::Qwen2(m) => m.lock().map_err(|_| anyhow!("model lock poisoned"))?.forward(&x, pos)?,
            Arch::Qwen3(m) => m.forward(&x, pos)?,
            Arch::Gemma3(m) => m.forward(&x, pos)?,
            Arch::HfLlama(m, _, _) => m.forward(&x, pos, self.hf_cache.as_mut().expect("llama sequences have a cache"))?,
            Arch::HfQwen2(m) => m.forward(&x, pos)?,
            Arch::Cpu(m) => {
                let kv = self.kv.as_mut().expect("CPU sequences have a cache");
                let mut logits = m.forward(&mut [(kv, tokens)])?;
                self.pos += tokens.len();
                return Ok(logits.pop().expect("one sequence, one row of logits"));
            }
        };
        self.pos += tokens.len();
        // Whatever the implementation returns ((1, V), (1, 1, V) or (1, n, V)): the last row.
        let logits = logits.to_dtype(DType::F32)?;
        let v = logits.dim(candle_core::D::Minus1)?;
        let flat = logits.flatten_all()?;
        let n = flat.dim(0)?;
        Ok(flat.narrow(0, n - v, v)?.to_vec1::<f32>()?)
    }
}
