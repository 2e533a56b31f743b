//! SentencePiece-style BPE over a scored vocabulary, as llama.cpp's `llm_tokenizer_spm` does for
//! GGUF files whose `tokenizer.ggml.model` is `llama` (Llama 1/2, Gemma): spaces become `▁`,
//! adjacent symbols merge greedily by the score of the merged piece, and characters the vocabulary
//! lacks fall back to `<0xXX>` byte tokens. Control and user-defined tokens written in the text
//! (`<start_of_turn>`, `<bos>`) are matched whole.

use std::collections::{BinaryHeap, HashMap};

/// GGUF token types.
pub const TYPE_NORMAL: i32 = 1;
pub const TYPE_UNKNOWN: i32 = 2;
pub const TYPE_CONTROL: i32 = 3;
pub const TYPE_USER_DEFINED: i32 = 4;
pub const TYPE_UNUSED: i32 = 5;
pub const TYPE_BYTE: i32 = 6;

#[derive(Debug, Clone)]
pub struct SpmTokenizer {
    pieces: Vec<String>,
    scores: Vec<f32>,
    types: Vec<i32>,
    map: HashMap<String, u32>,
    bytes: [Option<u32>; 256],
    unk: u32,
    add_space_prefix: bool,
    /// Control/user-defined tokens matched whole in the text, longest first.
    specials: Vec<(String, u32)>,
}

#[derive(PartialEq)]
struct Bigram {
    score: f32,
    left: usize,
    len: usize,
}

impl Eq for Bigram {}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Bigram {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Highest score first; on ties the leftmost pair.
        self.score.total_cmp(&other.score).then_with(|| other.left.cmp(&self.left))
    }
}

#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

impl SpmTokenizer {
    pub fn new(pieces: Vec<String>, scores: Vec<f32>, types: Vec<i32>, unk: u32, add_space_prefix: bool) -> Self {
        let map: HashMap<String, u32> = pieces.iter().enumerate().map(|(i, p)| (p.clone(), i as u32)).collect();
        let mut bytes = [None; 256];
        for (i, p) in pieces.iter().enumerate() {
            if types.get(i) == Some(&TYPE_BYTE) {
                if let Some(hex) = p.strip_prefix("<0x").and_then(|s| s.strip_suffix('>')) {
                    if let Ok(b) = u8::from_str_radix(hex, 16) {
                        bytes[b as usize] = Some(i as u32);
                    }
                }
            }
        }
        let mut specials: Vec<(String, u32)> = pieces
            .iter()
            .enumerate()
            .filter(|(i, p)| matches!(types.get(*i), Some(&TYPE_CONTROL) | Some(&TYPE_USER_DEFINED)) && !p.is_empty())
            .map(|(i, p)| (p.clone(), i as u32))
            .collect();
        specials.sort_by_key(|s| std::cmp::Reverse(s.0.len()));
        Self { pieces, scores, types, map, bytes, unk, add_space_prefix, specials }
    }

    pub fn vocab_size(&self) -> usize {
        self.pieces.len()
    }

    pub fn token_to_id(&self, piece: &str) -> Option<u32> {
        self.map.get(piece).copied()
    }

    pub fn id_to_piece(&self, id: u32) -> Option<&str> {
        self.pieces.get(id as usize).map(String::as_str)
    }

    pub fn is_control(&self, id: u32) -> bool {
        matches!(self.types.get(id as usize), Some(&TYPE_CONTROL) | Some(&TYPE_UNUSED))
    }

    /// Encode text; special tokens written in the text are recognised when `parse_special`.
    pub fn encode(&self, text: &str, parse_special: bool) -> Vec<u32> {
        let mut out = Vec::new();
        let mut rest = text;
        let mut first = true;
        while !rest.is_empty() {
            let hit = if parse_special { self.find_special(rest) } else { None };
            match hit {
                Some((at, len, id)) => {
                    if at > 0 {
                        self.encode_plain(&rest[..at], first, &mut out);
                    }
                    out.push(id);
                    rest = &rest[at + len..];
                }
                None => {
                    self.encode_plain(rest, first, &mut out);
                    rest = "";
                }
            }
            first = false;
        }
        out
    }

    fn find_special(&self, text: &str) -> Option<(usize, usize, u32)> {
        let mut best: Option<(usize, usize, u32)> = None;
        for (s, id) in &self.specials {
            if let Some(at) = text.find(s.as_str()) {
                let better = match best {
                    None => true,
                    Some((b_at, b_len, _)) => at < b_at || (at == b_at && s.len() > b_len),
                };
                if better {
                    best = Some((at, s.len(), *id));
                }
            }
        }
        best
    }

    fn encode_plain(&self, text: &str, first: bool, out: &mut Vec<u32>) {
        let mut norm = String::with_capacity(text.len() + 3);
        if self.add_space_prefix && first {
            norm.push('\u{2581}');
        }
        for c in text.chars() {
            norm.push(if c == ' ' { '\u{2581}' } else { c });
        }
        let mut symbols: Vec<Symbol> = Vec::new();
        for (i, (start, c)) in norm.char_indices().enumerate() {
            symbols.push(Symbol { start, len: c.len_utf8(), prev: i.checked_sub(1), next: Some(i + 1) });
        }
        if let Some(last) = symbols.last_mut() {
            last.next = None;
        }
        let mut queue = BinaryHeap::new();
        let try_add = |queue: &mut BinaryHeap<Bigram>, symbols: &[Symbol], left: usize| {
            if let Some(right) = symbols[left].next {
                let start = symbols[left].start;
                let len = symbols[left].len + symbols[right].len;
                if let Some(&id) = self.map.get(&norm[start..start + len]) {
                    queue.push(Bigram { score: self.scores.get(id as usize).copied().unwrap_or(0.0), left, len });
                }
            }
        };
        for i in 0..symbols.len() {
            try_add(&mut queue, &symbols, i);
        }
        while let Some(b) = queue.pop() {
            let left = b.left;
            let Some(right) = symbols[left].next else {
                continue;
            };
            // Skip stale entries (one side already merged into something else).
            if symbols[left].len == 0 || symbols[right].len == 0 || symbols[left].len + symbols[right].len != b.len {
                continue;
            }
            symbols[left].len += symbols[right].len;
            symbols[right].len = 0;
            symbols[left].next = symbols[right].next;
            if let Some(n) = symbols[right].next {
                symbols[n].prev = Some(left);
            }
            if let Some(p) = symbols[left].prev {
                try_add(&mut queue, &symbols, p);
            }
            try_add(&mut queue, &symbols, left);
        }
        let mut i = if symbols.is_empty() { None } else { Some(0) };
        while let Some(idx) = i {
            let s = symbols[idx];
            let piece = &norm[s.start..s.start + s.len];
            match self.map.get(piece) {
                Some(&id) => out.push(id),
                None => {
                    for b in piece.bytes() {
                        out.push(self.bytes[b as usize].unwrap_or(self.unk));
                    }
                }
            }
            i = s.next;
        }
    }

    /// Decode ids to text: `▁` becomes a space, byte tokens are reassembled into UTF-8, control
    /// tokens are skipped unless `keep_special`.
    pub fn decode(&self, ids: &[u32], keep_special: bool) -> String {
        let mut bytes: Vec<u8> = Vec::new();
        for &id in ids {
            let Some(piece) = self.pieces.get(id as usize) else {
                continue;
            };
            match self.types.get(id as usize).copied().unwrap_or(TYPE_NORMAL) {
                TYPE_BYTE => {
                    if let Some(b) = piece.strip_prefix("<0x").and_then(|s| s.strip_suffix('>')).and_then(|h| u8::from_str_radix(h, 16).ok()) {
                        bytes.push(b);
                    }
                }
                TYPE_CONTROL | TYPE_UNUSED if !keep_special => {}
                _ => bytes.extend_from_slice(piece.replace('\u{2581}', " ").as_bytes()),
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> SpmTokenizer {
        let mut pieces: Vec<String> = vec!["<unk>".into(), "<bos>".into(), "<eos>".into()];
        let mut types = vec![TYPE_UNKNOWN, TYPE_CONTROL, TYPE_CONTROL];
        for b in 0..=255u8 {
            pieces.push(format!("<0x{b:02X}>"));
            types.push(TYPE_BYTE);
        }
        for p in [
            "\u{2581}",
            "h",
            "e",
            "l",
            "o",
            "he",
            "ll",
            "hell",
            "hello",
            "\u{2581}hello",
            "w",
            "r",
            "d",
            "wo",
            "wor",
            "worl",
            "world",
            "\u{2581}world",
        ] {
            pieces.push(p.into());
            types.push(TYPE_NORMAL);
        }
        let scores: Vec<f32> = (0..pieces.len()).map(|i| i as f32).collect();
        SpmTokenizer::new(pieces, scores, types, 0, false)
    }

    #[test]
    fn merges_by_score_and_falls_back_to_bytes() {
        let t = toy();
        let ids = t.encode("hello world", true);
        let pieces: Vec<&str> = ids.iter().map(|&i| t.id_to_piece(i).unwrap()).collect();
        assert_eq!(pieces, vec!["hello", "\u{2581}world"]);
        assert_eq!(t.decode(&ids, false), "hello world");
        // 'é' is not in the vocabulary: two byte tokens, reassembled on decode.
        let ids = t.encode("hé<eos>", true);
        assert_eq!(ids.len(), 4);
        assert_eq!(*ids.last().unwrap(), 2);
        assert_eq!(t.decode(&ids, false), "hé");
        assert_eq!(t.decode(&ids, true), "hé<eos>");
    }
}
