//! Turning tokens into streamed text: never split a multi-byte UTF-8 character, and hold back
//! text that might be the start of a stop string until it is known not to be one.

use anyhow::Result;

use crate::tokenizer::TextTokenizer;

/// Streams the text of a growing token sequence (the approach of text-generation-inference:
/// decode a small window and emit only what a later token can no longer change).
pub struct IncrementalDecoder {
    tokens: Vec<u32>,
    prefix: usize,
    read: usize,
}

impl Default for IncrementalDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl IncrementalDecoder {
    pub fn new() -> Self {
        Self { tokens: Vec::new(), prefix: 0, read: 0 }
    }

    /// Add a token; returns the text it completes, if any.
    pub fn push(&mut self, tok: &TextTokenizer, token: u32) -> Result<String> {
        self.tokens.push(token);
        let prefix_text = tok.decode(&self.tokens[self.prefix..self.read])?;
        let new_text = tok.decode(&self.tokens[self.prefix..])?;
        if new_text.len() > prefix_text.len() && !new_text.ends_with('\u{FFFD}') && new_text.starts_with(&prefix_text) {
            let delta = new_text[prefix_text.len()..].to_string();
            self.prefix = self.read;
            self.read = self.tokens.len();
            Ok(delta)
        } else {
            Ok(String::new())
        }
    }

    /// Whatever is still held back (an incomplete character at the very end is dropped).
    pub fn flush(&mut self, tok: &TextTokenizer) -> Result<String> {
        let prefix_text = tok.decode(&self.tokens[self.prefix..self.read])?;
        let all = tok.decode(&self.tokens[self.prefix..])?;
        self.prefix = self.tokens.len();
        self.read = self.tokens.len();
        let rest = all.strip_prefix(&prefix_text).unwrap_or("").trim_end_matches('\u{FFFD}');
        Ok(rest.to_string())
    }
}

/// Finds stop strings across token boundaries; the stop string itself is never emitted.
pub struct StopMatcher {
    stops: Vec<String>,
    pending: String,
}

pub enum StopOutcome {
    /// Safe to emit now (may be empty).
    Emit(String),
    /// A stop string was found: emit this, then finish.
    Stop(String),
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Self {
        Self { stops: stops.into_iter().filter(|s| !s.is_empty()).collect(), pending: String::new() }
    }

    pub fn push(&mut self, text: &str) -> StopOutcome {
        if self.stops.is_empty() {
            return StopOutcome::Emit(text.to_string());
        }
        self.pending.push_str(text);
        let first = self.stops.iter().filter_map(|s| self.pending.find(s.as_str())).min();
        if let Some(at) = first {
            let out = self.pending[..at].to_string();
            self.pending.clear();
            return StopOutcome::Stop(out);
        }
        // Hold back the longest suffix that could still begin a stop string.
        let mut hold = 0;
        for s in &self.stops {
            for (i, _) in s.char_indices().skip(1).chain(std::iter::once((s.len(), ' '))) {
                let prefix = &s[..i];
                if i > hold && self.pending.ends_with(prefix) {
                    hold = i;
                }
            }
        }
        let cut = self.pending.len() - hold.min(self.pending.len());
        let out = self.pending[..cut].to_string();
        self.pending.drain(..cut);
        StopOutcome::Emit(out)
    }

    /// The held-back text when generation ends for another reason.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut m = StopMatcher::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for p in pieces {
            match m.push(p) {
                StopOutcome::Emit(t) => out.push_str(&t),
                StopOutcome::Stop(t) => {
                    out.push_str(&t);
                    return (out, true);
                }
            }
        }
        out.push_str(&m.finish());
        (out, false)
    }

    #[test]
    fn stop_strings_across_pieces() {
        assert_eq!(run(&["END"], &["hello E", "N", "D more"]), ("hello ".into(), true));
        assert_eq!(run(&["END"], &["hello E", "NX"]), ("hello ENX".into(), false));
        assert_eq!(run(&["\n\n", "###"], &["a\n", "b", "##", "#c"]), ("a\nb".into(), true));
        assert_eq!(run(&[], &["x", "y"]), ("xy".into(), false));
        assert_eq!(run(&["é!"], &["café", "!"]), ("caf".into(), true));
    }
}
