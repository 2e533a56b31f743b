//! Long-form transcription: 30 s windows moved by the timestamps the model predicts (as
//! openai-whisper's `transcribe` does), temperature fallback per window, conditioning on the
//! previous window's text, silence skipping, and language detection on the first window.

use anyhow::Result;
use candle_core::{IndexOp, Tensor, D};
use serde::Serialize;

use crate::{
    decode::{decode_window, Cancel, Cancelled, DecodeOptions, WindowResult},
    mel::{HOP_LENGTH, N_FRAMES, N_SAMPLES, SAMPLE_RATE},
    WhisperModel,
};

/// Seconds per timestamp token.
const TIME_PRECISION: f64 = 0.02;
/// Mel frames per encoder position (the second conv has stride 2).
const INPUT_STRIDE: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Task {
    #[default]
    Transcribe,
    Translate,
}

#[derive(Debug, Clone)]
pub struct TranscribeOptions {
    /// ISO-639-1 code; None = detect (multilingual models) or English (.en models).
    pub language: Option<String>,
    pub task: Task,
    pub initial_prompt: Option<String>,
    /// 0 = greedy, falling back to 0.2, 0.4, ... 1.0 when a window looks wrong; > 0 = sample once.
    pub temperature: f32,
    pub compression_ratio_threshold: Option<f64>,
    pub logprob_threshold: Option<f64>,
    pub no_speech_threshold: Option<f64>,
    pub condition_on_previous_text: bool,
    /// Predict segment timestamps (needed to move through audio longer than 30 s precisely).
    pub timestamps: bool,
    pub seed: u64,
}

impl Default for TranscribeOptions {
    fn default() -> Self {
        Self {
            language: None,
            task: Task::Transcribe,
            initial_prompt: None,
            temperature: 0.0,
            compression_ratio_threshold: Some(2.4),
            logprob_threshold: Some(-1.0),
            no_speech_threshold: Some(0.6),
            condition_on_previous_text: true,
            timestamps: true,
            seed: 0,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Segment {
    pub id: usize,
    pub seek: usize,
    pub start: f64,
    pub end: f64,
    pub text: String,
    pub tokens: Vec<u32>,
    pub temperature: f32,
    pub avg_logprob: f64,
    pub compression_ratio: f64,
    pub no_speech_prob: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Transcript {
    pub text: String,
    pub language: String,
    pub duration: f64,
    pub segments: Vec<Segment>,
}

impl WhisperModel {
    /// Transcribe 16 kHz mono samples.
    pub fn transcribe(&self, samples: &[f32], opts: &TranscribeOptions, cancel: Cancel) -> Result<Transcript> {
        let duration = samples.len() as f64 / SAMPLE_RATE as f64;
        let n_mels = self.mel.n_mels();
        let (mel, total_frames) = self.mel.log_mel(samples, N_SAMPLES);
        let content_frames = total_frames.saturating_sub(N_FRAMES);
        let window = |seek: usize, size: usize| -> Result<Tensor> {
            // pad_or_trim to 3000 frames with zeros, like the reference.
            let mut w = vec![0f32; n_mels * N_FRAMES];
            for m in 0..n_mels {
                let row = &mel[m * total_frames + seek..m * total_frames + seek + size];
                w[m * N_FRAMES..m * N_FRAMES + size].copy_from_slice(row);
            }
            Ok(Tensor::from_vec(w, (1, n_mels, N_FRAMES), &self.device)?.to_dtype(self.model.dtype)?)
        };

        let tok = &self.tokenizer;
        let mut language = opts.language.clone();
        let mut first_features: Option<Tensor> = None;
        if language.is_none() {
            if tok.is_multilingual() && content_frames > 0 {
                let feats = self.model.encoder.forward(&window(0, content_frames.min(N_FRAMES))?, cancel)?;
                language = Some(self.detect_language(&feats)?.0.to_string());
                first_features = Some(feats);
            } else {
                language = Some("en".into());
            }
        }
        let language = language.unwrap_or_else(|| "en".into());
        let sot_sequence = self.sot_sequence(&language, opts.task)?;

        let mut all_tokens: Vec<u32> = Vec::new();
        if let Some(p) = opts.initial_prompt.as_deref().map(str::trim).filter(|p| !p.is_empty()) {
            all_tokens.extend(tok.encode(&format!(" {p}"))?);
        }
        let mut prompt_reset_since = 0usize;
        let mut segments: Vec<Segment> = Vec::new();
        let mut seek = 0usize;
        while seek < content_frames {
            if cancel() {
                return Err(Cancelled.into());
            }
            let time_offset = (seek * HOP_LENGTH) as f64 / SAMPLE_RATE as f64;
            let segment_size = (content_frames - seek).min(N_FRAMES);
            let segment_duration = (segment_size * HOP_LENGTH) as f64 / SAMPLE_RATE as f64;
            let features = match (seek, first_features.take()) {
                (0, Some(f)) => f,
                _ => self.model.encoder.forward(&window(seek, segment_size)?, cancel)?,
            };
            let prompt = &all_tokens[prompt_reset_since..];
            let result = self.decode_with_fallback(&features, prompt, &sot_sequence, opts, cancel)?;
            tracing::debug!(
                seek,
                temperature = result.temperature,
                avg_logprob = result.avg_logprob,
                no_speech_prob = result.no_speech_prob,
                compression_ratio = result.compression_ratio,
                text = %result.text,
                "decoded window"
            );

            if let Some(ns) = opts.no_speech_threshold {
                let mut skip = result.no_speech_prob > ns;
                if opts.logprob_threshold.is_some_and(|lp| result.avg_logprob > lp) {
                    skip = false;
                }
                if skip {
                    seek += segment_size;
                    continue;
                }
            }

            let before = segments.len();
            let advance = self.split_segments(&result, seek, time_offset, segment_size, segment_duration, &mut segments)?;
            seek += if advance == 0 { segment_size } else { advance };
            for s in &segments[before..] {
                all_tokens.extend_from_slice(&s.tokens);
            }
            if !opts.condition_on_previous_text || result.temperature > 0.5 {
                prompt_reset_since = all_tokens.len();
            }
        }
        segments.retain(|s| !s.text.trim().is_empty() && s.end > s.start);
        for (i, s) in segments.iter_mut().enumerate() {
            s.id = i;
        }
        let text = segments.iter().map(|s| s.text.as_str()).collect::<String>().trim().to_string();
        Ok(Transcript { text, language, duration, segments })
    }

    /// Language code and probability from the first window's encoder output.
    pub fn detect_language(&self, features: &Tensor) -> Result<(&'static str, f32)> {
        let tok = &self.tokenizer;
        let dec = &self.model.decoder;
        let mut state = dec.start(features)?;
        let sot = Tensor::new(&[[tok.sot]], &self.device)?;
        let h = dec.forward(&sot, &mut state)?.i((.., 0, ..))?;
        let logits = dec.logits(&h)?;
        let ids: Vec<u32> = tok.languages.iter().map(|(_, id)| *id).collect();
        let idx = Tensor::new(ids.as_slice(), &self.device)?;
        let lang_logits = logits.index_select(&idx, 1)?;
        let probs = candle_nn::ops::softmax(&lang_logits, D::Minus1)?.squeeze(0)?.to_vec1::<f32>()?;
        let (best, p) = probs.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, p)| (i, *p)).unwrap_or((0, 0.0));
        Ok((tok.languages[best].0, p))
    }

    fn sot_sequence(&self, language: &str, task: Task) -> Result<Vec<u32>> {
        let tok = &self.tokenizer;
        let mut seq = vec![tok.sot];
        if tok.is_multilingual() {
            let lang = tok.language_token(language).ok_or_else(|| anyhow::Error::new(UnknownLanguage(language.to_string())))?;
            seq.push(lang);
            let task_tok = match task {
                Task::Transcribe => tok.transcribe,
                Task::Translate => tok.translate,
            };
            seq.extend(task_tok);
        }
        Ok(seq)
    }

    fn decode_with_fallback(
        &self,
        features: &Tensor,
        prompt: &[u32],
        sot_sequence: &[u32],
        opts: &TranscribeOptions,
        cancel: Cancel,
    ) -> Result<WindowResult> {
        let temperatures: Vec<f32> = if opts.temperature > 0.0 { vec![opts.temperature] } else { vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0] };
        let dopts =
            DecodeOptions { timestamps: opts.timestamps, suppress_blank: true, max_new_tokens: self.model.decoder.n_ctx / 2, seed: opts.seed };
        let mut tried: Vec<WindowResult> = Vec::new();
        for &t in &temperatures {
            let r = decode_window(&self.model, &self.tokenizer, &self.masks, features, prompt, sot_sequence, &dopts, t, cancel)?;
            let too_repetitive = opts.compression_ratio_threshold.is_some_and(|c| r.compression_ratio > c);
            let too_unlikely = opts.logprob_threshold.is_some_and(|lp| r.avg_logprob < lp);
            let silence = opts.no_speech_threshold.is_some_and(|ns| r.no_speech_prob > ns) && too_unlikely;
            if silence || (!too_repetitive && !too_unlikely) {
                return Ok(r);
            }
            tried.push(r);
        }
        // Every temperature failed a check: keep the likeliest among those that are not
        // repetitive, else the likeliest overall (faster-whisper's choice).
        let below: Vec<&WindowResult> = tried.iter().filter(|r| opts.compression_ratio_threshold.is_none_or(|c| r.compression_ratio <= c)).collect();
        let pool: Vec<&WindowResult> = if below.is_empty() { tried.iter().collect() } else { below };
        Ok(pool.into_iter().max_by(|a, b| a.avg_logprob.total_cmp(&b.avg_logprob)).cloned().expect("at least one temperature was tried"))
    }

    /// Cut a window's tokens into timestamped segments; returns how many mel frames to advance.
    fn split_segments(
        &self,
        r: &WindowResult,
        seek: usize,
        time_offset: f64,
        segment_size: usize,
        segment_duration: f64,
        out: &mut Vec<Segment>,
    ) -> Result<usize> {
        let ts_begin = self.tokenizer.timestamp_begin;
        let tokens = &r.tokens;
        let is_ts: Vec<bool> = tokens.iter().map(|&t| t >= ts_begin).collect();
        let n = tokens.len();
        let single_timestamp_ending = n >= 2 && !is_ts[n - 2] && is_ts[n - 1];
        let mut consecutive: Vec<usize> = (1..n).filter(|&i| is_ts[i - 1] && is_ts[i]).collect();
        let mut make = |toks: &[u32], start: f64, end: f64| -> Result<()> {
            let text = self.tokenizer.decode_text(toks)?;
            out.push(Segment {
                id: 0,
                seek,
                start,
                end,
                text,
                tokens: toks.to_vec(),
                temperature: r.temperature,
                avg_logprob: r.avg_logprob,
                compression_ratio: r.compression_ratio,
                no_speech_prob: r.no_speech_prob,
            });
            Ok(())
        };
        if !consecutive.is_empty() {
            if single_timestamp_ending {
                consecutive.push(n);
            }
            let mut last = 0usize;
            for &cut in &consecutive {
                let sliced = &tokens[last..cut];
                if sliced.is_empty() {
                    continue;
                }
                let start = (sliced[0].saturating_sub(ts_begin)) as f64 * TIME_PRECISION;
                let end = (sliced[sliced.len() - 1].saturating_sub(ts_begin)) as f64 * TIME_PRECISION;
                make(sliced, time_offset + start, time_offset + end)?;
                last = cut;
            }
            if single_timestamp_ending {
                Ok(segment_size)
            } else {
                let last_ts = tokens[last - 1].saturating_sub(ts_begin) as usize;
                Ok(last_ts * INPUT_STRIDE)
            }
        } else {
            let mut duration = segment_duration;
            if let Some(&last) = tokens.iter().rev().find(|&&t| t >= ts_begin) {
                if last != ts_begin {
                    duration = (last - ts_begin) as f64 * TIME_PRECISION;
                }
            }
            make(tokens, time_offset, time_offset + duration)?;
            Ok(segment_size)
        }
    }
}

/// The requested language is not one the model knows.
#[derive(Debug, thiserror::Error)]
#[error("unknown or unsupported language `{0}` for this model")]
pub struct UnknownLanguage(pub String);
