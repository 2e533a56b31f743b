//! English text front end for Kokoro-82M.
//!
//! `text -> normalize -> tokens -> lexicon (misaki gold/silver) / espeak-ng fallback -> phonemes -> ids`
//!
//! This is a Rust port of the logic of the Python `misaki` package (v0.9.4, `misaki/en.py` and
//! `misaki/espeak.py`), which is what Kokoro-82M was trained with, plus the chunking of
//! `kokoro/pipeline.py`. Differences that matter:
//!
//! * **No POS tagger.** misaki runs spaCy to tag every word; heteronyms in the lexicon are dicts
//!   keyed by tag (`"read": {"DEFAULT": "ɹˈid", "VBD": "ɹˈɛd", ..}`). We always take `DEFAULT`,
//!   except the context-only key `"None"` (a word before punctuation or the end, e.g. stressed
//!   `"be"`), which misaki picks without tags too. The few tag-driven special cases (`a`, `I`,
//!   `in`, `used to`) use simple context rules instead, and an all-capitals word in mixed-case
//!   text stands in for spaCy's proper-noun tag (acronyms are spelled), see [`lexicon`].
//!   spaCy's clitic split ("She'd've" -> "She" "'d" "'ve") is reproduced by hand.
//! * **Numbers, currency, dates, URLs ... are expanded to words by [`normalize`]** before lookup
//!   (misaki reads digits inside its lexicon); the readings follow common English usage.
//! * espeak-ng is run as a CLI process (`espeak-ng -q --ipa --tie=^`), once per request for all
//!   out-of-lexicon words, instead of through `phonemizer`'s library binding (see [`espeak`] for
//!   how the CLI is made to answer like the library).
//!
//! Data (`us_gold.json`, `us_silver.json`, `gb_gold.json`, `gb_silver.json`, `vocab.json`) is
//! loaded at run time from one directory (model id `kokoro-82m` in the model manifest).

mod chunk;
pub mod espeak;
pub mod lexicon;
mod normalize;
mod numbers;
mod pipeline;
mod sentences;
mod tokenize;
mod vocab;

use std::path::Path;

pub use chunk::Chunk;
pub use normalize::normalize;
pub use numbers::cardinal;
pub use sentences::split_sentences;
pub use vocab::Vocab;

/// Kokoro's context window is 512 tokens including the two pad tokens.
pub const KOKORO_MAX_TOKENS: usize = 510;

/// Which English: picks the lexicon files and the espeak-ng voice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    /// American English (`us_*.json`, espeak `en-us`), Kokoro voices `a*`.
    Us,
    /// British English (`gb_*.json`, espeak `en-gb`), Kokoro voices `b*`.
    Gb,
}

impl Variant {
    pub fn is_british(self) -> bool {
        self == Variant::Gb
    }

    /// File-name prefix of the lexicon files.
    pub fn prefix(self) -> &'static str {
        match self {
            Variant::Us => "us",
            Variant::Gb => "gb",
        }
    }

    /// espeak-ng voice name.
    pub fn espeak_voice(self) -> &'static str {
        match self {
            Variant::Us => "en-us",
            Variant::Gb => "en-gb",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum G2pError {
    /// A data file is missing or malformed.
    #[error("g2p data: {0}")]
    Data(String),
    /// espeak-ng is needed for an out-of-lexicon word but could not be run.
    #[error("espeak-ng: {0}")]
    Espeak(String),
    /// Nothing speakable is left after normalisation (empty input, only symbols, non-Latin text).
    #[error("nothing to speak after normalisation")]
    Empty,
    /// `max_tokens` of 0 cannot hold any phoneme.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// English grapheme-to-phoneme converter producing Kokoro-82M phoneme strings.
pub struct G2p {
    variant: Variant,
    lexicon: lexicon::Lexicon,
    vocab: Vocab,
    espeak: espeak::Espeak,
}

impl G2p {
    /// Load `{us,gb}_gold.json`, `{us,gb}_silver.json` (for `variant`) and `vocab.json` from `dir`.
    pub fn load(dir: &Path, variant: Variant) -> Result<G2p, G2pError> {
        let lexicon = lexicon::Lexicon::load(dir, variant)?;
        let vocab = Vocab::load(&dir.join("vocab.json"))?;
        Ok(G2p { variant, lexicon, vocab, espeak: espeak::Espeak::new(variant) })
    }

    /// Use another espeak-ng executable (default: `espeak-ng` on `PATH`, or `$VOICE_ESPEAK_NG`).
    pub fn with_espeak_program(mut self, program: impl Into<std::path::PathBuf>) -> Self {
        self.espeak = self.espeak.with_program(program);
        self
    }

    pub fn variant(&self) -> Variant {
        self.variant
    }

    pub fn vocab(&self) -> &Vocab {
        &self.vocab
    }

    pub fn lexicon(&self) -> &lexicon::Lexicon {
        &self.lexicon
    }

    /// Normalise and phonemize the whole text as one string (no chunking).
    pub fn phonemize(&self, text: &str) -> Result<String, G2pError> {
        let tokens = self.tokens(text)?;
        let ps = chunk::join_phonemes(&tokens);
        if ps.is_empty() {
            return Err(G2pError::Empty);
        }
        Ok(ps)
    }

    /// Normalise, phonemize and split into chunks of at most `max_tokens` phoneme tokens
    /// (Kokoro: [`KOKORO_MAX_TOKENS`]), cutting at sentence ends first, then clause
    /// punctuation, then spaces; a single word longer than `max_tokens` is cut inside.
    pub fn chunks(&self, text: &str, max_tokens: usize) -> Result<Vec<Chunk>, G2pError> {
        if max_tokens == 0 {
            return Err(G2pError::InvalidArgument("max_tokens must be at least 1".into()));
        }
        let normalized = normalize(text);
        let tokens = self.phonemize_normalized(&normalized)?;
        let chunks = chunk::split(&normalized, &tokens, max_tokens, &self.vocab);
        if chunks.is_empty() {
            return Err(G2pError::Empty);
        }
        Ok(chunks)
    }

    /// [`G2p::chunks`], then each chunk cut at its sentence ends ([`split_sentences`]; pieces
    /// under `min_tokens` join a neighbour): what a streaming synthesizer feeds the model one at
    /// a time.
    pub fn pieces(&self, text: &str, max_tokens: usize, min_tokens: usize) -> Result<Vec<Chunk>, G2pError> {
        let mut out = Vec::new();
        for chunk in self.chunks(text, max_tokens)? {
            for (phonemes, text) in split_sentences(&chunk.phonemes, &chunk.text, min_tokens) {
                out.push(Chunk { text, phonemes });
            }
        }
        Ok(out)
    }

    /// Phoneme tokens of a text (normalised first), with their spans in the normalised text.
    fn tokens(&self, text: &str) -> Result<Vec<pipeline::PToken>, G2pError> {
        self.phonemize_normalized(&normalize(text))
    }

    fn phonemize_normalized(&self, normalized: &str) -> Result<Vec<pipeline::PToken>, G2pError> {
        if normalized.trim().is_empty() {
            return Err(G2pError::Empty);
        }
        pipeline::phonemize(normalized, &self.lexicon, &self.espeak, &self.vocab)
    }
}
