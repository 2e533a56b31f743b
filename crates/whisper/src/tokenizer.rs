//! Whisper's special tokens and languages on top of a Hugging Face `tokenizer.json`.
//!
//! Ids are looked up by their text (`<|startoftranscript|>`, ...) because English-only and
//! multilingual vocabularies number them differently. Timestamp tokens follow
//! `<|notimestamps|>` directly (0.00 s, 0.02 s, ...) whether or not tokenizer.json lists them.

use anyhow::{anyhow, Context, Result};
use tokenizers::Tokenizer;

/// Whisper's language codes in token order (`<|en|>` is the first language token).
pub const LANGUAGES: &[&str] = &[
    "en", "zh", "de", "es", "ru", "ko", "fr", "ja", "pt", "tr", "pl", "ca", "nl", "ar", "sv", "it", "id", "hi", "fi", "vi", "he", "uk", "el", "ms",
    "cs", "ro", "da", "hu", "ta", "no", "th", "ur", "hr", "bg", "lt", "la", "mi", "ml", "cy", "sk", "te", "fa", "lv", "bn", "sr", "az", "sl", "kn",
    "et", "mk", "br", "eu", "is", "hy", "ne", "mn", "bs", "kk", "sq", "sw", "gl", "mr", "pa", "si", "km", "sn", "yo", "so", "af", "oc", "ka", "be",
    "tg", "sd", "gu", "am", "yi", "lo", "uz", "fo", "ht", "ps", "tk", "nn", "mt", "sa", "lb", "my", "bo", "tl", "mg", "as", "tt", "haw", "ln", "ha",
    "ba", "jw", "su", "yue",
];

#[derive(Debug, Clone)]
pub struct WhisperTokenizer {
    inner: Tokenizer,
    pub eot: u32,
    pub sot: u32,
    pub sot_prev: Option<u32>,
    pub sot_lm: Option<u32>,
    pub transcribe: Option<u32>,
    pub translate: Option<u32>,
    pub no_timestamps: u32,
    pub timestamp_begin: u32,
    pub no_speech: Option<u32>,
    /// (code, token id) for the languages this vocabulary has.
    pub languages: Vec<(&'static str, u32)>,
    /// English-only models (`.en`) keep the language and task tokens in their vocabulary but were
    /// trained without them; like openai-whisper, tell them apart by vocabulary size.
    pub multilingual: bool,
}

impl WhisperTokenizer {
    /// `model_vocab`: the model's output vocabulary (51865 and up for multilingual models).
    pub fn from_file(path: &std::path::Path, model_vocab: usize) -> Result<Self> {
        let inner = Tokenizer::from_file(path).map_err(|e| anyhow!("loading {}: {e}", path.display()))?;
        Self::new(inner, model_vocab)
    }

    pub fn new(inner: Tokenizer, model_vocab: usize) -> Result<Self> {
        let id = |t: &str| inner.token_to_id(t);
        let need = |t: &str| id(t).ok_or_else(|| anyhow!("tokenizer.json has no `{t}` token: not a Whisper tokenizer?"));
        let no_timestamps = need("<|notimestamps|>")?;
        let languages = LANGUAGES.iter().filter_map(|code| id(&format!("<|{code}|>")).map(|i| (*code, i))).collect();
        Ok(Self {
            eot: need("<|endoftext|>")?,
            sot: need("<|startoftranscript|>")?,
            sot_prev: id("<|startofprev|>"),
            sot_lm: id("<|startoflm|>"),
            transcribe: id("<|transcribe|>"),
            translate: id("<|translate|>"),
            no_timestamps,
            timestamp_begin: no_timestamps + 1,
            no_speech: id("<|nospeech|>").or_else(|| id("<|nocaptions|>")),
            languages,
            multilingual: model_vocab >= 51865,
            inner,
        })
    }

    pub fn is_multilingual(&self) -> bool {
        self.multilingual
    }

    pub fn language_token(&self, code: &str) -> Option<u32> {
        let code = code.trim().to_ascii_lowercase();
        let code = normalize_language(&code);
        self.languages.iter().find(|(c, _)| *c == code).map(|(_, id)| *id)
    }

    pub fn language_code(&self, token: u32) -> Option<&'static str> {
        self.languages.iter().find(|(_, id)| *id == token).map(|(c, _)| *c)
    }

    /// Encode plain text (no special tokens).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, false).map_err(|e| anyhow!("tokenizing: {e}")).context("encode")?;
        Ok(enc.get_ids().to_vec())
    }

    /// Decode text tokens; special and timestamp tokens are skipped.
    pub fn decode_text(&self, tokens: &[u32]) -> Result<String> {
        let text: Vec<u32> = tokens.iter().copied().filter(|&t| t < self.eot).collect();
        self.inner.decode(&text, false).map_err(|e| anyhow!("detokenizing: {e}"))
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}

/// Accept common full names as well as codes ("english" -> "en").
fn normalize_language(code: &str) -> &str {
    match code {
        "english" => "en",
        "chinese" => "zh",
        "german" => "de",
        "spanish" => "es",
        "russian" => "ru",
        "korean" => "ko",
        "french" => "fr",
        "japanese" => "ja",
        "portuguese" => "pt",
        "italian" => "it",
        "dutch" => "nl",
        other => other,
    }
}
