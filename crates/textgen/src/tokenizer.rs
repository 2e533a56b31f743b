//! One tokenizer type for every model: a Hugging Face `tokenizer.json` when the model ships one,
//! else built from GGUF metadata: `gpt2`-type vocabularies become a byte-level BPE
//! (`tokenizer.ggml.tokens` + `merges`, the pre-tokenizer chosen by `tokenizer.ggml.pre`),
//! `llama`-type ones the SentencePiece-style [`SpmTokenizer`].

use std::collections::HashMap;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::quantized::gguf_file::Value;
use serde_json::json;

use crate::spm::{SpmTokenizer, TYPE_CONTROL};

#[derive(Debug, Clone)]
enum Inner {
    Hf(Box<tokenizers::Tokenizer>),
    Spm(Box<SpmTokenizer>),
}

#[derive(Debug, Clone)]
pub struct TextTokenizer {
    inner: Inner,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    /// Prepend BOS to prompts (GGUF `tokenizer.ggml.add_bos_token`).
    pub add_bos: bool,
    /// Tokens that end a generation: EOS plus the end-of-turn tokens chat templates use.
    pub stop_tokens: Vec<u32>,
    pub bos_text: String,
    pub eos_text: String,
}

const END_OF_TURN: &[&str] = &["<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|end|>", "<|endoftext|>", "</s>"];

fn meta<'a>(md: &'a HashMap<String, Value>, key: &str) -> Option<&'a Value> {
    md.get(key)
}

fn meta_u32(md: &HashMap<String, Value>, key: &str) -> Option<u32> {
    meta(md, key).and_then(|v| v.to_u32().ok().or_else(|| v.to_i32().ok().map(|x| x as u32)))
}

fn meta_strings(md: &HashMap<String, Value>, key: &str) -> Result<Vec<String>> {
    let v = meta(md, key).ok_or_else(|| anyhow!("GGUF metadata lacks `{key}`"))?;
    v.to_vec().map_err(|e| anyhow!("`{key}`: {e}"))?.iter().map(|x| x.to_string().cloned().map_err(|e| anyhow!("`{key}`: {e}"))).collect()
}

impl TextTokenizer {
    /// From a Hugging Face tokenizer.json (safetensors models).
    pub fn from_file(path: &std::path::Path, bos: Option<&str>, eos: Option<&str>) -> Result<Self> {
        let tok = tokenizers::Tokenizer::from_file(path).map_err(|e| anyhow!("loading {}: {e}", path.display()))?;
        let id = |s: &str| tok.token_to_id(s);
        let bos_id = bos.and_then(id);
        let eos_id = eos.and_then(id);
        let mut stop: Vec<u32> = eos_id.into_iter().collect();
        stop.extend(END_OF_TURN.iter().filter_map(|s| id(s)));
        stop.dedup();
        Ok(Self {
            bos: bos_id,
            eos: eos_id,
            add_bos: false,
            stop_tokens: stop,
            bos_text: bos.unwrap_or_default().to_string(),
            eos_text: eos.unwrap_or_default().to_string(),
            inner: Inner::Hf(Box::new(tok)),
        })
    }

    /// From GGUF metadata.
    pub fn from_gguf(md: &HashMap<String, Value>) -> Result<Self> {
        let model = meta(md, "tokenizer.ggml.model").and_then(|v| v.to_string().ok()).map(String::as_str).unwrap_or("gpt2").to_string();
        let tokens = meta_strings(md, "tokenizer.ggml.tokens")?;
        let types: Vec<i32> = match meta(md, "tokenizer.ggml.token_type") {
            Some(v) => v.to_vec().map_err(|e| anyhow!("{e}"))?.iter().map(|x| x.to_i32().unwrap_or(1)).collect(),
            None => vec![1; tokens.len()],
        };
        let bos = meta_u32(md, "tokenizer.ggml.bos_token_id");
        let eos = meta_u32(md, "tokenizer.ggml.eos_token_id");
        let add_bos = meta(md, "tokenizer.ggml.add_bos_token").and_then(|v| v.to_bool().ok()).unwrap_or(model == "llama");
        let inner = match model.as_str() {
            "gpt2" => {
                let merges = meta_strings(md, "tokenizer.ggml.merges")?;
                let pre = meta(md, "tokenizer.ggml.pre").and_then(|v| v.to_string().ok()).cloned().unwrap_or_default();
                Inner::Hf(Box::new(byte_level_bpe(&tokens, &types, &merges, &pre)?))
            }
            "llama" => {
                let scores: Vec<f32> = match meta(md, "tokenizer.ggml.scores") {
                    Some(v) => v.to_vec().map_err(|e| anyhow!("{e}"))?.iter().map(|x| x.to_f32().unwrap_or(0.0)).collect(),
                    None => vec![0.0; tokens.len()],
                };
                let unk = meta_u32(md, "tokenizer.ggml.unknown_token_id").unwrap_or(0);
                let space_prefix = meta(md, "tokenizer.ggml.add_space_prefix").and_then(|v| v.to_bool().ok()).unwrap_or(true);
                Inner::Spm(Box::new(SpmTokenizer::new(tokens.clone(), scores, types.clone(), unk, space_prefix)))
            }
            other => {
                bail!("unsupported tokenizer type `{other}` in GGUF (gpt2 and llama are supported)")
            }
        };
        let piece = |id: Option<u32>| id.and_then(|i| tokens.get(i as usize)).cloned().unwrap_or_default();
        let mut stop: Vec<u32> = eos.into_iter().collect();
        for s in END_OF_TURN {
            if let Some(i) = tokens.iter().position(|t| t == s) {
                if !stop.contains(&(i as u32)) {
                    stop.push(i as u32);
                }
            }
        }
        Ok(Self { bos_text: piece(bos), eos_text: piece(eos), inner, bos, eos, add_bos, stop_tokens: stop })
    }

    /// Encode text; special tokens written in it (`<|im_start|>`) become their ids.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match &self.inner {
            Inner::Hf(t) => Ok(t.encode(text, false).map_err(|e| anyhow!("tokenizing: {e}"))?.get_ids().to_vec()),
            Inner::Spm(t) => Ok(t.encode(text, true)),
        }
    }

    /// Encode a prompt: BOS first when the model wants it and the text does not start with it.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = self.encode(text)?;
        if let (true, Some(bos)) = (self.add_bos, self.bos) {
            if ids.first() != Some(&bos) {
                ids.insert(0, bos);
            }
        }
        Ok(ids)
    }

    /// Decode ids; special tokens are left out.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        match &self.inner {
            Inner::Hf(t) => t.decode(ids, true).map_err(|e| anyhow!("detokenizing: {e}")),
            Inner::Spm(t) => Ok(t.decode(ids, false)),
        }
    }

    pub fn token_to_id(&self, s: &str) -> Option<u32> {
        match &self.inner {
            Inner::Hf(t) => t.token_to_id(s),
            Inner::Spm(t) => t.token_to_id(s),
        }
    }

    pub fn vocab_size(&self) -> usize {
        match &self.inner {
            Inner::Hf(t) => t.get_vocab_size(true),
            Inner::Spm(t) => t.vocab_size(),
        }
    }
}

/// Pre-tokenizer regexes by `tokenizer.ggml.pre` (as llama.cpp maps them).
fn pre_tokenizer(pre: &str) -> serde_json::Value {
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    let split = |regex: &str| json!({"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false});
    match pre {
        // SmolLM / StarCoder: every digit on its own, then GPT-2's split.
        "smollm" | "starcoder" | "refact" => {
            json!({"type": "Sequence", "pretokenizers": [split("\\p{N}"), byte_level(true)]})
        }
        "qwen2" | "deepseek-llm" => json!({"type": "Sequence", "pretokenizers": [
            split("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"),
            byte_level(false)]}),
        "llama-bpe" | "llama3" | "smaug-bpe" => json!({"type": "Sequence", "pretokenizers": [
            split("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"),
            byte_level(false)]}),
        _ => byte_level(true),
    }
}

fn byte_level_bpe(tokens: &[String], types: &[i32], merges: &[String], pre: &str) -> Result<tokenizers::Tokenizer> {
    // tokenizers' BPE builder indexes a buffer by the merged token's length before it checks that
    // the merge result is in the vocabulary (a panic on a corrupt file, found by the gguf_model
    // fuzz target): check every merge here first.
    let known: std::collections::HashSet<&str> = tokens.iter().map(String::as_str).collect();
    for (i, m) in merges.iter().enumerate() {
        let Some((a, b)) = m.split_once(' ') else { bail!("GGUF merge {i} `{m}` is not two tokens separated by a space") };
        if !(known.contains(a) && known.contains(b) && known.contains(format!("{a}{b}").as_str())) {
            bail!("GGUF merge {i} `{m}` uses or makes a token missing from the vocabulary");
        }
    }
    let vocab: serde_json::Map<String, serde_json::Value> = tokens.iter().enumerate().map(|(i, t)| (t.clone(), json!(i))).collect();
    let added: Vec<serde_json::Value> = tokens
        .iter()
        .enumerate()
        .filter(|(i, _)| types.get(*i) == Some(&TYPE_CONTROL))
        .map(|(i, t)| json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}))
        .collect();
    let tj = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer(pre),
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": false, "byte_fallback": false, "ignore_merges": false, "vocab": vocab, "merges": merges},
    });
    let text = serde_json::to_string(&tj)?;
    text.parse::<tokenizers::Tokenizer>().map_err(|e| anyhow!("building the BPE tokenizer from GGUF metadata: {e}")).context("tokenizer")
}
