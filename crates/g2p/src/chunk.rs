//! Joining token phonemes and splitting them into model-sized chunks (after
//! `KPipeline.en_tokenize` / `waterfall_last` in `kokoro/pipeline.py`).

use crate::pipeline::PToken;
use crate::Vocab;

/// One piece of text the model can say in one go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The (normalised) source text of the chunk.
    pub text: String,
    /// Its phonemes; `vocab.encode(&phonemes).len() <= max_tokens`.
    pub phonemes: String,
}

/// Kokoro's `tokens_to_ps`: phonemes, a space after tokens followed by whitespace; runs of
/// spaces (from tokens without phonemes) collapsed, ends trimmed.
pub fn join_phonemes(tokens: &[PToken]) -> String {
    let mut out = String::new();
    for t in tokens {
        out.push_str(&t.phonemes);
        if t.ws_after && !out.ends_with(' ') && !out.is_empty() {
            out.push(' ');
        }
    }
    collapse_spaces(&out)
}

fn collapse_spaces(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.trim().chars() {
        if c == ' ' && out.ends_with(' ') {
            continue;
        }
        out.push(c);
    }
    out
}

/// Where a chunk may end, best first (Kokoro's waterfall): sentence ends, then clause marks,
/// then commas and dashes.
const WATERFALL: [&str; 3] = ["!.?…", ":;", ",—"];
/// Closing marks that stay with the punctuation before them.
const BUMPS: &str = ")”";

/// Split tokens into chunks of at most `max_tokens` vocabulary symbols each.
pub fn split(text: &str, tokens: &[PToken], max_tokens: usize, vocab: &Vocab) -> Vec<Chunk> {
    // cost[i]: an upper bound of what token i adds to a chunk (its symbols plus a space).
    let cost: Vec<usize> = tokens.iter().map(|t| vocab.count(&t.phonemes) + usize::from(t.ws_after)).collect();
    let mut prefix = Vec::with_capacity(tokens.len() + 1);
    prefix.push(0usize);
    for c in &cost {
        prefix.push(prefix.last().copied().unwrap_or(0) + c);
    }
    let range_cost = |a: usize, b: usize| prefix[b] - prefix[a]; // tokens a..b
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < tokens.len() {
        // Does tokens[start..=i] still fit? (The bound counts a trailing space the join trims.)
        let own = vocab.count(&tokens[i].phonemes);
        if range_cost(start, i) + own <= max_tokens {
            i += 1;
            continue;
        }
        if i == start {
            // A single token longer than a chunk: cut its phonemes (at spaces when it has any).
            let pieces = hard_split(&tokens[i].phonemes, max_tokens, vocab);
            let texts = split_text(&text[tokens[i].span.clone()], pieces.len());
            for (piece, t) in pieces.into_iter().zip(texts) {
                chunks.push(Chunk { text: t, phonemes: piece });
            }
            i += 1;
            start = i;
            continue;
        }
        let cut = best_cut(tokens, start, i, max_tokens, &range_cost, vocab);
        emit(text, &tokens[start..cut], &mut chunks);
        start = cut;
        i = i.max(start);
    }
    if start < tokens.len() {
        emit(text, &tokens[start..], &mut chunks);
    }
    chunks
}

/// End (exclusive) of the chunk that starts at `start` when token `i` does not fit: the last
/// sentence end whose remainder still fits with token `i`, else a clause mark, else a comma,
/// else just before token `i` (a word boundary).
fn best_cut(tokens: &[PToken], start: usize, i: usize, max_tokens: usize, range_cost: &dyn Fn(usize, usize) -> usize, vocab: &Vocab) -> usize {
    let own = vocab.count(&tokens[i].phonemes);
    for level in WATERFALL {
        let Some(k) = (start..i).rev().find(|&k| tokens[k].punct.is_some_and(|p| level.contains(p))) else {
            continue;
        };
        let mut z = k + 1;
        if z < i && tokens[z].punct.is_some_and(|p| BUMPS.contains(p)) {
            z += 1;
        }
        // The rest (z..=i) must fit in the next chunk, else this cut gains nothing.
        if z > start && range_cost(z, i) + own <= max_tokens {
            return z;
        }
    }
    i
}

fn emit(text: &str, toks: &[PToken], chunks: &mut Vec<Chunk>) {
    let phonemes = join_phonemes(toks);
    if phonemes.is_empty() {
        return;
    }
    let (Some(first), Some(last)) = (toks.first(), toks.last()) else { return };
    let src = text.get(first.span.start..last.span.end).unwrap_or("").trim().to_string();
    chunks.push(Chunk { text: src, phonemes });
}

/// Cut a word's text into `n` roughly equal parts (the text of a word cut across chunks).
fn split_text(word: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = word.chars().collect();
    (0..n).map(|k| chars[k * chars.len() / n..(k + 1) * chars.len() / n].iter().collect()).collect()
}

/// Cut one over-long phoneme string into pieces of at most `max` vocabulary symbols, at the
/// last space that fits when there is one.
fn hard_split(ps: &str, max: usize, vocab: &Vocab) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut cur = String::new();
    let mut count = 0;
    let mut last_space: Option<usize> = None; // byte index in `cur`
    for c in ps.chars() {
        let n = usize::from(vocab.contains(c));
        if count + n > max {
            if let Some(at) = last_space.filter(|&at| at > 0) {
                let rest = cur.split_off(at);
                pieces.push(cur.trim().to_string());
                cur = rest.trim_start().to_string();
                count = vocab.count(&cur);
            }
            if count + n > max {
                pieces.push(std::mem::take(&mut cur).trim().to_string());
                count = 0;
            }
            last_space = None;
        }
        if c == ' ' {
            last_space = Some(cur.len());
        }
        cur.push(c);
        count += n;
    }
    if !cur.trim().is_empty() {
        pieces.push(cur.trim().to_string());
    }
    pieces.retain(|p| !p.is_empty());
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab() -> Vocab {
        Vocab::from_json(r#"{"a": 1, "b": 2, " ": 3, ".": 4, ",": 5}"#).unwrap()
    }

    #[test]
    fn hard_split_respects_max() {
        let v = vocab();
        for p in hard_split("aaaa bbbb aaaa", 5, &v) {
            assert!(v.count(&p) <= 5, "{p}");
        }
        assert_eq!(hard_split("aaaa bbbb", 5, &v), vec!["aaaa", "bbbb"]);
        assert_eq!(hard_split("aaaaaaa", 3, &v), vec!["aaa", "aaa", "a"]);
    }
}
