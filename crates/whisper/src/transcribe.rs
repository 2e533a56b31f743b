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

/// How much audio the encoder sees when the whole audio fits in one 30 s window.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum EncoderWindow {
    /// The model's 30 s window, the audio zero-padded to it (openai-whisper's behaviour). The
    /// encoder's cost does not depend on the audio's length: ~0.4 s for tiny.en on two cores.
    #[default]
    Full,
    /// For audio up to `max_audio_seconds`: the audio plus `pad_seconds` of the same zero
    /// padding (whisper.cpp's `audio_ctx`), so the encoder's cost follows the audio's length.
    /// The model was trained on 30 s windows only, and on short ones it can loop (more so
    /// without timestamps), so the result is kept only when one greedy pass passes
    /// [`FIT_GUARDS`]; otherwise the audio is transcribed again on the full window.
    Fit { pad_seconds: f32, max_audio_seconds: f32 },
}

impl EncoderWindow {
    /// The fitted window as measured on real and synthesized speech (benches/README.md,
    /// "Encoder window"): [`FIT_PAD_SECONDS`], [`FIT_MAX_AUDIO_SECONDS`].
    pub const fn fit() -> Self {
        EncoderWindow::Fit { pad_seconds: FIT_PAD_SECONDS, max_audio_seconds: FIT_MAX_AUDIO_SECONDS }
    }
}

/// Padding after the audio in [`EncoderWindow::fit`]: with 0.5-1 s, tiny.en loops or guesses on
/// more short commands (the guards then fall back: no WER lost, time lost); 1.5 s kept 29 of 31.
pub const FIT_PAD_SECONDS: f32 = 1.5;
/// The longest audio [`EncoderWindow::fit`] applies to: up to 4 s every utterance measured gave
/// the same or fewer word errors than the 30 s window; one LibriVox sentence of 5.3 s lost a
/// word with every padding tried (0.5-20 s).
pub const FIT_MAX_AUDIO_SECONDS: f32 = 4.0;

/// What a greedy pass on a fitted window must show to be kept.
#[derive(Debug, Clone, Copy)]
pub struct FitGuards {
    /// Above this the text repeats itself (openai-whisper's threshold for a failed window).
    pub max_compression_ratio: f64,
    /// Below this average token log-probability the model is guessing.
    pub min_avg_logprob: f64,
    /// Below this log-probability for any one text token, the word is a guess that the 30 s
    /// window may get right: "Can you name a large often?" (-2.26 on "often"; the 30 s window
    /// hears "ocean"). Kept windows on the measured sets stayed above -1.6.
    pub min_token_logprob: f64,
    /// More text tokens per second of audio than anyone speaks: a loop.
    pub max_tokens_per_second: f64,
    /// A run of this many tokens or more said twice in a row ("What do bees make? What do bees
    /// make?") is the short-window loop, too short for the compression ratio to notice. Shorter
    /// repeats are speech ("five five").
    pub min_repeated_span: usize,
}

pub const FIT_GUARDS: FitGuards =
    FitGuards { max_compression_ratio: 2.4, min_avg_logprob: -1.0, min_token_logprob: -2.0, max_tokens_per_second: 8.0, min_repeated_span: 3 };

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
    pub window: EncoderWindow,
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
            window: EncoderWindow::Full,
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
    /// Seconds of audio the encoder saw per window: 30 unless a fitted window was kept.
    pub window_seconds: f64,
}

impl Transcript {
    /// Made on a fitted encoder window ([`EncoderWindow::Fit`]), not on Whisper's 30 s one.
    pub fn fitted_window(&self) -> bool {
        self.window_seconds < seconds_of(N_FRAMES)
    }
}

impl WhisperModel {
    /// Transcribe 16 kHz mono samples.
    pub fn transcribe(&self, samples: &[f32], opts: &TranscribeOptions, cancel: Cancel) -> Result<Transcript> {
        let duration = samples.len() as f64 / SAMPLE_RATE as f64;
        let n_mels = self.mel.n_mels();
        let (mel, total_frames) = self.mel.log_mel(samples, N_SAMPLES);
        let content_frames = total_frames.saturating_sub(N_FRAMES);
        // `size` frames of the log-mel from `seek`, followed by zeros up to `frames` (the
        // reference's pad_or_trim: the padding is zero features, not the log-mel of silence).
        let window = |seek: usize, size: usize, frames: usize| -> Result<Tensor> {
            let mut w = vec![0f32; n_mels * frames];
            for m in 0..n_mels {
                let row = &mel[m * total_frames + seek..m * total_frames + seek + size];
                w[m * frames..m * frames + size].copy_from_slice(row);
            }
            Ok(Tensor::from_vec(w, (1, n_mels, frames), &self.device)?.to_dtype(self.model.dtype)?)
        };

        let tok = &self.tokenizer;
        let mut language = opts.language.clone();
        let mut first_features: Option<Tensor> = None;
        if language.is_none() {
            if tok.is_multilingual() && content_frames > 0 {
                let feats = self.model.encoder.forward(&window(0, content_frames.min(N_FRAMES), N_FRAMES)?, cancel)?;
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
        if let EncoderWindow::Fit { pad_seconds, max_audio_seconds } = opts.window {
            // Not when the language was detected on the full window (its features are there).
            let max_frames = (max_audio_seconds.max(0.0) as f64 * SAMPLE_RATE as f64 / HOP_LENGTH as f64) as usize;
            if content_frames > 0 && content_frames <= max_frames.min(N_FRAMES) && first_features.is_none() {
                let pad = (pad_seconds.max(0.0) as f64 * SAMPLE_RATE as f64 / HOP_LENGTH as f64).round() as usize;
                // Even: the second convolution halves the frames.
                let frames = (content_frames + pad).next_multiple_of(INPUT_STRIDE).min(N_FRAMES);
                if frames < N_FRAMES {
                    let features = self.model.encoder.forward(&window(0, content_frames, frames)?, cancel)?;
                    let content_seconds = seconds_of(content_frames);
                    // A pass that loops is cut at the guard's token budget (+ timestamps) instead
                    // of running to the decoder's limit: a rejected try costs little.
                    let budget = FIT_GUARDS.max_text_tokens(content_seconds);
                    let dopts = DecodeOptions {
                        timestamps: opts.timestamps,
                        suppress_blank: true,
                        max_new_tokens: (if opts.timestamps { budget * 2 } else { budget } + 1).min(self.model.decoder.n_ctx / 2),
                        seed: opts.seed,
                    };
                    let r = decode_window(&self.model, tok, &self.masks, &features, &all_tokens, &sot_sequence, &dopts, 0.0, cancel)?;
                    let window_seconds = seconds_of(frames);
                    match FIT_GUARDS.failed(&r, tok.eot, content_seconds) {
                        None => {
                            let mut segments = Vec::new();
                            self.split_segments(&r, 0, 0.0, content_frames, content_seconds, &mut segments)?;
                            return Ok(finish(segments, language, duration, window_seconds));
                        }
                        Some(why) => tracing::debug!(window_seconds, why, text = %r.text, "fitted window rejected; transcribing on the full window"),
                    }
                }
            }
        }

        let mut prompt_reset_since = 0usize;
        let mut segments: Vec<Segment> = Vec::new();
        let mut seek = 0usize;
        while seek < content_frames {
            if cancel() {
                return Err(Cancelled.into());
            }
            let time_offset = seconds_of(seek);
            let segment_size = (content_frames - seek).min(N_FRAMES);
            let segment_duration = seconds_of(segment_size);
            let features = match (seek, first_features.take()) {
                (0, Some(f)) => f,
                _ => self.model.encoder.forward(&window(seek, segment_size, N_FRAMES)?, cancel)?,
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
        Ok(finish(segments, language, duration, seconds_of(N_FRAMES)))
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

/// Seconds of audio in `frames` log-mel frames.
fn seconds_of(frames: usize) -> f64 {
    (frames * HOP_LENGTH) as f64 / SAMPLE_RATE as f64
}

/// Drop empty segments, number them and join their text.
fn finish(mut segments: Vec<Segment>, language: String, duration: f64, window_seconds: f64) -> Transcript {
    segments.retain(|s| !s.text.trim().is_empty() && s.end > s.start);
    for (i, s) in segments.iter_mut().enumerate() {
        s.id = i;
    }
    let text = segments.iter().map(|s| s.text.as_str()).collect::<String>().trim().to_string();
    Transcript { text, language, duration, segments, window_seconds }
}

impl FitGuards {
    /// The most text tokens `content_seconds` of speech can hold (short audio counts as 1 s).
    pub fn max_text_tokens(&self, content_seconds: f64) -> usize {
        (self.max_tokens_per_second * content_seconds.max(1.0)).ceil() as usize
    }

    /// Why a greedy pass over `content_seconds` of audio on a fitted window is not kept, if it is not.
    pub fn failed(&self, r: &WindowResult, eot: u32, content_seconds: f64) -> Option<&'static str> {
        // Text only: timestamps between two copies of a phrase must not hide the repeat.
        let text: Vec<u32> = r.tokens.iter().copied().filter(|&t| t < eot).collect();
        let text_tokens = text.len();
        if !r.ended {
            Some("no end of text")
        } else if r.compression_ratio > self.max_compression_ratio {
            Some("repetitive")
        } else if r.avg_logprob < self.min_avg_logprob {
            Some("unlikely")
        } else if r.min_text_logprob < self.min_token_logprob {
            Some("an unlikely word")
        } else if text_tokens > self.max_text_tokens(content_seconds) {
            Some("too many tokens for the audio")
        } else if repeats_span(&text, self.min_repeated_span) {
            Some("repeats itself")
        } else {
            None
        }
    }
}

/// Whether some run of at least `min_span` tokens is immediately followed by itself.
fn repeats_span(tokens: &[u32], min_span: usize) -> bool {
    let n = tokens.len();
    (min_span.max(1)..=n / 2).any(|k| (0..=n - 2 * k).any(|i| tokens[i..i + k] == tokens[i + k..i + 2 * k]))
}

/// The requested language is not one the model knows.
#[derive(Debug, thiserror::Error)]
#[error("unknown or unsupported language `{0}` for this model")]
pub struct UnknownLanguage(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    fn result(tokens: &[u32], ended: bool) -> WindowResult {
        WindowResult {
            tokens: tokens.to_vec(),
            text: String::new(),
            avg_logprob: -0.2,
            no_speech_prob: 0.0,
            temperature: 0.0,
            compression_ratio: 1.0,
            ended,
            min_text_logprob: -0.5,
        }
    }

    #[test]
    fn repeated_phrases_are_loops_repeated_words_are_speech() {
        assert!(repeats_span(&[1, 2, 3, 1, 2, 3], 3));
        assert!(repeats_span(&[9, 1, 2, 3, 4, 1, 2, 3, 4, 8], 3));
        assert!(!repeats_span(&[5, 5, 5], 3), "five five five");
        assert!(!repeats_span(&[1, 2, 1, 2], 3));
        assert!(!repeats_span(&[1, 2, 3, 4, 1, 2, 3], 3));
        assert!(!repeats_span(&[], 3));
    }

    #[test]
    fn fitted_window_guards() {
        let eot = 100;
        let g = FIT_GUARDS;
        assert_eq!(g.failed(&result(&[1, 2, 3, 4], true), eot, 1.0), None);
        assert_eq!(g.failed(&result(&[1, 2, 3, 4], false), eot, 1.0), Some("no end of text"));
        // 2 s of audio hold at most 16 text tokens; timestamps (>= eot) do not count.
        let many: Vec<u32> = (1..=17).collect();
        assert_eq!(g.failed(&result(&many, true), eot, 2.0), Some("too many tokens for the audio"));
        assert_eq!(g.failed(&result(&many[..16], true), eot, 2.0), None);
        assert_eq!(g.failed(&result(&[200, 1, 2, 3, 201, 201, 1, 2, 3, 202], true), eot, 3.0), Some("repeats itself"));
        let mut unlikely = result(&[1, 2], true);
        unlikely.avg_logprob = -1.5;
        assert_eq!(g.failed(&unlikely, eot, 1.0), Some("unlikely"));
        let mut one_guess = result(&[1, 2], true);
        one_guess.min_text_logprob = -2.3;
        assert_eq!(g.failed(&one_guess, eot, 1.0), Some("an unlikely word"));
    }
}
