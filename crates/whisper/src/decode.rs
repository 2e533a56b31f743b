//! Decoding one 30 s window: greedy or sampled, with Whisper's logit rules applied on the device.
//!
//! Per step the host learns six numbers in one copy (best token, best timestamp token, their
//! log-probabilities, the timestamp log-mass and the best text log-probability): the logits and
//! the rule masks never leave the device. The rules follow openai-whisper's decoding.py:
//! SuppressBlank, SuppressTokens, and ApplyTimestampRules (pairs, monotonic timestamps, initial
//! timestamp within 1 s, and "a timestamp when timestamps outweigh any text token").

use std::io::Write;

use anyhow::{bail, Result};
use candle_core::{DType, Device, IndexOp, Tensor, D};
use rand::{Rng, SeedableRng};

use crate::{model::Whisper, tokenizer::WhisperTokenizer};

/// Index of the last timestamp allowed as the first sampled token (1.0 s / 0.02 s).
const MAX_INITIAL_TIMESTAMP_INDEX: u32 = 50;

/// Masks (0 or -inf over the vocabulary) built once per model, on its device.
#[derive(Debug, Clone)]
pub struct Masks {
    /// Tokens never sampled (non-speech symbols, task and start tokens, ...).
    pub always: Tensor,
    /// Blank and end-of-text at the first sampled position.
    pub blank: Tensor,
    /// Every token below end-of-text (text tokens).
    pub text: Tensor,
    /// Every timestamp token.
    pub timestamps: Tensor,
    /// First sampled token with timestamps: not text, and at most 1 s in.
    pub first_timestamp: Tensor,
    /// Token ids as f32, to build range masks on the device.
    pub ids: Tensor,
    pub vocab: usize,
    /// Host copies for the CPU path.
    pub always_host: Vec<f32>,
    pub blank_ids: Vec<u32>,
}

fn mask_from(vocab: usize, device: &Device, f: impl Fn(u32) -> bool) -> Result<Tensor> {
    let v: Vec<f32> = (0..vocab as u32).map(|i| if f(i) { f32::NEG_INFINITY } else { 0.0 }).collect();
    Ok(Tensor::from_vec(v, (1, vocab), device)?)
}

impl Masks {
    pub fn new(tok: &WhisperTokenizer, vocab: usize, suppress: &[u32], begin_suppress: &[u32], device: &Device) -> Result<Self> {
        let mut never: Vec<u32> = suppress.to_vec();
        never.extend([tok.sot].iter().chain(tok.sot_prev.iter()).chain(tok.sot_lm.iter()));
        never.extend(tok.transcribe.iter().chain(tok.translate.iter()).chain(tok.no_speech.iter()));
        never.push(tok.no_timestamps);
        // Language tokens are prompts, never outputs.
        never.extend(tok.languages.iter().map(|(_, id)| *id));
        let ts = tok.timestamp_begin;
        let eot = tok.eot;
        let always = mask_from(vocab, device, |i| never.contains(&i))?;
        let mut blank_ids = begin_suppress.to_vec();
        blank_ids.push(eot);
        Ok(Self {
            always_host: always.flatten_all()?.to_vec1::<f32>()?,
            blank_ids,
            always,
            blank: mask_from(vocab, device, |i| begin_suppress.contains(&i) || i == eot)?,
            text: mask_from(vocab, device, |i| i < eot)?,
            timestamps: mask_from(vocab, device, |i| i >= ts)?,
            first_timestamp: mask_from(vocab, device, |i| i < ts || i > ts + MAX_INITIAL_TIMESTAMP_INDEX)?,
            ids: Tensor::arange(0u32, vocab as u32, device)?.to_dtype(DType::F32)?.reshape((1, vocab))?,
            vocab,
        })
    }

    /// -inf for ids in [lo, hi), else 0.
    fn range(&self, lo: u32, hi: u32) -> Result<Tensor> {
        let inside = (self.ids.ge(lo as f64)?.to_dtype(DType::F32)? * self.ids.lt(hi as f64)?.to_dtype(DType::F32)?)?;
        // 1 -> -inf, 0 -> 0 (via -inf * 1 = -inf and 0 * -inf avoided with where_cond).
        let neg = Tensor::full(f32::NEG_INFINITY, inside.shape(), inside.device())?;
        let zero = inside.zeros_like()?;
        inside.ne(0f64)?.where_cond(&neg, &zero).map_err(Into::into)
    }
}

#[derive(Debug, Clone)]
pub struct DecodeOptions {
    pub timestamps: bool,
    pub suppress_blank: bool,
    /// Upper bound on sampled tokens (Whisper: half the text context).
    pub max_new_tokens: usize,
    pub seed: u64,
}

#[derive(Debug, Clone)]
pub struct WindowResult {
    /// Sampled tokens without the end-of-text (timestamps included).
    pub tokens: Vec<u32>,
    pub text: String,
    pub avg_logprob: f64,
    pub no_speech_prob: f64,
    pub temperature: f32,
    pub compression_ratio: f64,
    /// The model ended the text itself (end-of-text), rather than running into the token limit.
    pub ended: bool,
    /// The lowest log-probability of a sampled text token (0 when there is none): the word the
    /// model was least sure of.
    pub min_text_logprob: f64,
}

/// Cancellation check, polled every decoding step.
pub type Cancel<'a> = &'a (dyn Fn() -> bool + Sync);

#[derive(Debug, thiserror::Error)]
#[error("transcription cancelled")]
pub struct Cancelled;

pub fn compression_ratio(text: &str) -> f64 {
    if text.is_empty() {
        return 0.0;
    }
    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(6));
    let _ = enc.write_all(text.as_bytes());
    let compressed = enc.finish().map(|v| v.len()).unwrap_or(text.len());
    text.len() as f64 / compressed.max(1) as f64
}

#[allow(clippy::too_many_arguments)]
pub fn decode_window(
    model: &Whisper,
    tok: &WhisperTokenizer,
    masks: &Masks,
    audio_features: &Tensor,
    prompt: &[u32],
    sot_sequence: &[u32],
    opts: &DecodeOptions,
    temperature: f32,
    cancel: Cancel,
) -> Result<WindowResult> {
    let dec = &model.decoder;
    let device = audio_features.device();
    let n_ctx = dec.n_ctx;

    let mut init: Vec<u32> = Vec::new();
    if !prompt.is_empty() {
        if let Some(prev) = tok.sot_prev {
            init.push(prev);
            let keep = (n_ctx / 2).saturating_sub(1);
            init.extend_from_slice(&prompt[prompt.len().saturating_sub(keep)..]);
        }
    }
    let sot_index = init.len();
    init.extend_from_slice(sot_sequence);
    if !opts.timestamps {
        init.push(tok.no_timestamps);
    }
    let max_new = opts.max_new_tokens.min(n_ctx.saturating_sub(init.len()));

    let mut state = dec.start(audio_features)?;
    let tokens_t = Tensor::new(init.as_slice(), device)?.unsqueeze(0)?;
    let hidden = dec.forward(&tokens_t, &mut state)?; // (1, n, d)

    let no_speech_prob = match tok.no_speech {
        Some(ns) => {
            let l = dec.logits(&hidden.i((.., sot_index, ..))?)?;
            let p = candle_nn::ops::softmax_last_dim(&l)?;
            p.i((0, ns as usize))?.to_scalar::<f32>()? as f64
        }
        None => 0.0,
    };

    let mut rng = rand::rngs::StdRng::seed_from_u64(opts.seed ^ (temperature.to_bits() as u64));
    let ts_begin = tok.timestamp_begin;
    let mut h = hidden.i((.., init.len() - 1, ..))?; // (1, d)
    let mut sampled: Vec<u32> = Vec::new();
    let mut sum_logprob = 0f64;
    let mut ended = false;
    let mut min_text_logprob = 0f64;
    for step in 0..max_new {
        if cancel() {
            return Err(Cancelled.into());
        }
        let logits = dec.logits(&h)?; // (1, V) f32
        let vocab = logits.dim(1)?;
        if vocab != masks.vocab {
            bail!("model vocabulary {vocab} does not match the masks ({})", masks.vocab);
        }
        let rules = StepRules::new(step, &sampled, ts_begin, opts);
        let (token, logprob) = if logits.device().is_cpu() {
            // The logits are in host memory already: apply the rules and pick in one pass.
            let mut v = logits.flatten_all()?.to_vec1::<f32>()?;
            pick_host(&mut v, &rules, masks, tok, temperature, &mut rng)
        } else {
            pick(&rules.apply(&logits, masks, ts_begin)?, ts_begin as usize, opts.timestamps, temperature, &mut rng)?
        };
        sum_logprob += logprob;
        if token < tok.eot {
            min_text_logprob = min_text_logprob.min(logprob);
        }
        if token == tok.eot {
            ended = true;
            break;
        }
        sampled.push(token);
        if step + 1 == max_new {
            break;
        }
        let t = Tensor::new(&[[token]], device)?;
        h = dec.forward(&t, &mut state)?.squeeze(1)?;
    }
    let text = tok.decode_text(&sampled)?;
    let avg_logprob = sum_logprob / (sampled.len() + 1) as f64;
    Ok(WindowResult {
        compression_ratio: compression_ratio(&text),
        tokens: sampled,
        text,
        avg_logprob,
        no_speech_prob,
        temperature,
        ended,
        min_text_logprob,
    })
}

/// Which of Whisper's logit rules apply at this step (decided from the tokens sampled so far).
#[derive(Debug, Clone, Copy)]
struct StepRules {
    blank: bool,
    first_timestamp: bool,
    /// No timestamp may come next (decoding without timestamps, or a segment just closed).
    suppress_timestamps: bool,
    /// Only a timestamp may come next (a segment's text ended with a single timestamp).
    suppress_text: bool,
    /// Timestamps below this token are forbidden (they must not decrease).
    timestamp_floor: Option<u32>,
    /// Whether the "timestamp mass beats any text token" rule applies.
    mass_rule: bool,
}

impl StepRules {
    fn new(step: usize, sampled: &[u32], ts_begin: u32, opts: &DecodeOptions) -> Self {
        let mut r = StepRules {
            blank: step == 0 && opts.suppress_blank,
            first_timestamp: opts.timestamps && step == 0,
            suppress_timestamps: !opts.timestamps,
            suppress_text: false,
            timestamp_floor: None,
            mass_rule: opts.timestamps,
        };
        if opts.timestamps {
            let n = sampled.len();
            let last_ts = n >= 1 && sampled[n - 1] >= ts_begin;
            let penultimate_ts = n < 2 || sampled[n - 2] >= ts_begin;
            if last_ts {
                if penultimate_ts {
                    r.suppress_timestamps = true;
                } else {
                    r.suppress_text = true;
                }
            }
            if let Some(&last) = sampled.iter().rev().find(|&&t| t >= ts_begin) {
                let hi = if last_ts && !penultimate_ts { last } else { last + 1 };
                if hi > ts_begin {
                    r.timestamp_floor = Some(hi);
                }
            }
        }
        r
    }

    /// The masked logits on the device.
    fn apply(&self, logits: &Tensor, masks: &Masks, ts_begin: u32) -> Result<Tensor> {
        let mut m = logits.broadcast_add(&masks.always)?;
        if self.blank {
            m = (m + &masks.blank)?;
        }
        if self.first_timestamp {
            m = (m + &masks.first_timestamp)?;
        }
        if self.suppress_timestamps {
            m = (m + &masks.timestamps)?;
        }
        if self.suppress_text {
            m = (m + &masks.text)?;
        }
        if let Some(hi) = self.timestamp_floor {
            m = (m + masks.range(ts_begin, hi)?)?;
        }
        Ok(m)
    }
}

/// The host-side pick for logits already in host memory (CPU device): the same rules and the
/// same choice as [`pick`], without a tensor op per rule.
fn pick_host(v: &mut [f32], r: &StepRules, masks: &Masks, tok: &WhisperTokenizer, temperature: f32, rng: &mut impl Rng) -> (u32, f64) {
    let ts = tok.timestamp_begin as usize;
    let vocab = v.len();
    let ninf = f32::NEG_INFINITY;
    for (x, m) in v.iter_mut().zip(masks.always_host.iter()) {
        *x += m;
    }
    if r.blank {
        for &i in &masks.blank_ids {
            if (i as usize) < vocab {
                v[i as usize] = ninf;
            }
        }
    }
    if r.first_timestamp {
        v[..ts.min(vocab)].fill(ninf);
        let last_allowed = (ts + MAX_INITIAL_TIMESTAMP_INDEX as usize + 1).min(vocab);
        v[last_allowed..].fill(ninf);
    }
    if r.suppress_timestamps {
        v[ts.min(vocab)..].fill(ninf);
    }
    if r.suppress_text {
        v[..(tok.eot as usize).min(vocab)].fill(ninf);
    }
    if let Some(hi) = r.timestamp_floor {
        v[ts.min(vocab)..(hi as usize).min(vocab)].fill(ninf);
    }
    // log-softmax pieces.
    let max = v.iter().fold(ninf, |a, &b| if b > a { b } else { a });
    let lse = max + v.iter().map(|&x| (x - max).exp()).sum::<f32>().ln();
    let argmax = |range: std::ops::Range<usize>, noise: Option<&[f32]>| -> usize {
        let mut best = range.start;
        let mut best_v = ninf;
        for i in range {
            let s = match noise {
                Some(g) => v[i] / temperature + g[i],
                None => v[i],
            };
            if s > best_v {
                best_v = s;
                best = i;
            }
        }
        best
    };
    let noise: Option<Vec<f32>> = (temperature > 0.0).then(|| {
        (0..vocab)
            .map(|_| {
                let u: f32 = rng.random_range(f32::EPSILON..1.0);
                -(-u.ln()).ln()
            })
            .collect()
    });
    let best = argmax(0..vocab, noise.as_deref());
    if r.mass_rule && ts < vocab {
        let ts_max = v[ts..].iter().fold(ninf, |a, &b| if b > a { b } else { a });
        let text_max = v[..ts].iter().fold(ninf, |a, &b| if b > a { b } else { a });
        if ts_max.is_finite() {
            let ts_mass = ts_max + v[ts..].iter().map(|&x| (x - ts_max).exp()).sum::<f32>().ln();
            // In log-probabilities: (ts_mass - lse) > (text_max - lse).
            if ts_mass > text_max {
                let t = argmax(ts..vocab, noise.as_deref());
                return (t as u32, (v[t] - ts_mass) as f64);
            }
        }
    }
    (best as u32, (v[best] - lse) as f64)
}

/// Choose the next token from masked logits (1, V) in one device-to-host copy.
fn pick(masked: &Tensor, ts_begin: usize, timestamps: bool, temperature: f32, rng: &mut impl Rng) -> Result<(u32, f64)> {
    let vocab = masked.dim(1)?;
    let logprobs = candle_nn::ops::log_softmax(masked, D::Minus1)?;
    let scores = if temperature > 0.0 {
        // Gumbel-max: argmax(logits / T + G) samples softmax(logits / T).
        let g: Vec<f32> = (0..vocab)
            .map(|_| {
                let u: f32 = rng.random_range(f32::EPSILON..1.0);
                -(-u.ln()).ln()
            })
            .collect();
        let g = Tensor::from_vec(g, (1, vocab), masked.device())?;
        ((masked / temperature as f64)? + g)?
    } else {
        masked.clone()
    };
    let best = scores.argmax_keepdim(D::Minus1)?; // (1, 1) u32
    let best_lp = logprobs.gather(&best, D::Minus1)?;
    if !timestamps {
        let v = Tensor::cat(&[&best.to_dtype(DType::F32)?, &best_lp], 1)?.to_vec2::<f32>()?;
        return Ok((v[0][0] as u32, v[0][1] as f64));
    }
    let ts_scores = scores.narrow(1, ts_begin, vocab - ts_begin)?;
    let ts_best = (ts_scores.argmax_keepdim(D::Minus1)?.to_dtype(DType::F32)? + ts_begin as f64)?;
    let ts_best_lp = logprobs.gather(&ts_best.to_dtype(DType::U32)?, D::Minus1)?;
    let ts_lp = logprobs.narrow(1, ts_begin, vocab - ts_begin)?;
    let ts_max = ts_lp.max_keepdim(D::Minus1)?;
    let ts_mass = (ts_lp.broadcast_sub(&ts_max)?.exp()?.sum_keepdim(D::Minus1)?.log()? + &ts_max)?;
    let text_max = logprobs.narrow(1, 0, ts_begin)?.max_keepdim(D::Minus1)?;
    let v = Tensor::cat(&[&best.to_dtype(DType::F32)?, &best_lp, &ts_best, &ts_best_lp, &ts_mass, &text_max], 1)?.to_vec2::<f32>()?;
    let [b, blp, t, tlp, mass, text] = [v[0][0], v[0][1], v[0][2], v[0][3], v[0][4], v[0][5]];
    // When the timestamps together are likelier than any single text token, sample a timestamp
    // (openai-whisper's ApplyTimestampRules); its log-probability is then renormalised over them.
    if mass.is_finite() && mass > text {
        Ok((t as u32, (tlp - mass) as f64))
    } else {
        Ok((b as u32, blp as f64))
    }
}
