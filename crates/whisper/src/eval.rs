//! Word error rate and the project's standard English test set, shared by the tests and the
//! benchmark so both measure the same thing.
//!
//! Normalisation (both sides): lower case, hyphens become spaces, every other character that is not
//! a letter, digit, apostrophe or space is dropped, apostrophes are dropped, whitespace collapsed,
//! and a number below 100 standing alone is written in words (Whisper writes "8 of spades" or
//! "eight of spades" for the same audio; the references spell numbers out).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let c = c.to_lowercase().next().unwrap_or(c);
        if c == '-' || c.is_whitespace() {
            out.push(' ');
        } else if c.is_alphanumeric() {
            out.push(c);
        }
    }
    out.split_whitespace().map(|w| number_in_words(w).unwrap_or_else(|| w.to_string())).collect::<Vec<_>>().join(" ")
}

/// "8" -> "eight", "42" -> "forty two" (voice-g2p's cardinal, the one number reader); None for
/// anything else.
fn number_in_words(word: &str) -> Option<String> {
    if word.is_empty() || word.len() > 2 || !word.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(voice_g2p::cardinal(word.parse().ok()?).replace('-', " "))
}

/// Word-level edit distance between normalised texts: (errors, reference words).
pub fn word_errors(reference: &str, hypothesis: &str) -> (usize, usize) {
    let r: Vec<String> = normalize(reference).split(' ').filter(|w| !w.is_empty()).map(String::from).collect();
    let h: Vec<String> = normalize(hypothesis).split(' ').filter(|w| !w.is_empty()).map(String::from).collect();
    let mut prev: Vec<usize> = (0..=h.len()).collect();
    for (i, rw) in r.iter().enumerate() {
        let mut cur = vec![i + 1; h.len() + 1];
        for (j, hw) in h.iter().enumerate() {
            let sub = prev[j] + usize::from(rw != hw);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    (prev[h.len()], r.len())
}

#[derive(Debug, Clone)]
pub struct Utterance {
    pub name: String,
    pub wav: PathBuf,
    pub reference: String,
}

pub const JFK_REFERENCE: &str = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country.";

/// Debian `pocketsphinx-testdata`'s LibriVox utterances (override the directory with
/// `VOICE_LIBRIVOX_DIR`) plus the JFK sample.
pub fn standard_set(jfk_wav: &Path) -> Result<Vec<Utterance>> {
    let dir =
        std::env::var_os("VOICE_LIBRIVOX_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/share/pocketsphinx/test/data/librivox"));
    let listing = std::fs::read_to_string(dir.join("transcription"))
        .with_context(|| format!("reading {}/transcription (install Debian's pocketsphinx-testdata)", dir.display()))?;
    let mut set = vec![Utterance { name: "jfk".into(), wav: jfk_wav.to_path_buf(), reference: JFK_REFERENCE.into() }];
    for line in listing.lines().filter(|l| !l.trim().is_empty()) {
        set.push(parse_line(line, &dir)?);
    }
    Ok(set)
}

/// Debian `pocketsphinx-testdata`'s five spoken card names ("ten of clubs", 1-3 s of real
/// speech each): short commands, where a short encoder window is most at risk.
pub fn cards_set() -> Result<Vec<Utterance>> {
    let dir = std::env::var_os("VOICE_CARDS_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/share/pocketsphinx/test/data/cards"));
    let listing = std::fs::read_to_string(dir.join("cards.transcription"))
        .with_context(|| format!("reading {}/cards.transcription (install Debian's pocketsphinx-testdata)", dir.display()))?;
    listing.lines().filter(|l| !l.trim().is_empty()).map(|line| parse_line(line, &dir)).collect()
}

/// "<s> words </s> (file-id)", the listing format of pocketsphinx-testdata.
fn parse_line(line: &str, dir: &Path) -> Result<Utterance> {
    let (text, id) = match (line.rfind('('), line.rfind(')')) {
        (Some(a), Some(b)) if b > a => (&line[..a], &line[a + 1..b]),
        _ => bail!("unexpected transcription line: {line}"),
    };
    let text = text.replace("<s>", "").replace("</s>", "");
    Ok(Utterance { name: id.to_string(), wav: dir.join(format!("{id}.wav")), reference: text.split_whitespace().collect::<Vec<_>>().join(" ") })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wer_counts_edits() {
        assert_eq!(word_errors("a b c d", "a x c d"), (1, 4));
        assert_eq!(word_errors("a b c d", "a c d"), (1, 4));
        assert_eq!(word_errors("a b", "a b c"), (1, 2));
        assert_eq!(word_errors("Ill-disposed, sir!", "ill disposed sir"), (0, 3));
        assert_eq!(word_errors("eight of spades", "8 of spades."), (0, 3));
        assert_eq!(word_errors("forty two", "42"), (0, 2));
        assert_eq!(normalize("In 1961, 10 of 100"), "in 1961 ten of 100");
    }
}
