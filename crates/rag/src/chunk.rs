//! Token-aware chunking that respects the document's structure.
//!
//! A document is read into sections (Markdown headings) and paragraphs (blank lines, list items,
//! code fences). Paragraphs are packed into chunks of at most `max_tokens` (counted with the
//! embedding model's tokenizer); a heading always starts a new chunk; a paragraph that does not
//! fit starts the next chunk, and one longer than a chunk is cut at sentence boundaries (and, for a
//! single over-long sentence, at word boundaries). Consecutive chunks of a section share up to
//! `overlap_tokens` of whole sentences, so a fact that straddles a cut is found from either side.
//! Each chunk's text begins with its heading path ("Manual > Descaling"), which is what a reader
//! needs to place the passage and helps both lexical and vector matching.

use serde::{Deserialize, Serialize};

/// Counts tokens the way the embedding model will see them.
pub trait TokenCounter: Send + Sync {
    fn count(&self, text: &str) -> usize;
}

/// Whitespace words: for tests and for callers without a model tokenizer.
pub struct WordCounter;

impl TokenCounter for WordCounter {
    fn count(&self, text: &str) -> usize {
        text.split_whitespace().count()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Markdown,
    Text,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkConfig {
    pub max_tokens: usize,
    pub overlap_tokens: usize,
}

impl Default for ChunkConfig {
    /// all-MiniLM reads 256 tokens ([CLS]/[SEP] included): 200 leaves room for the heading path.
    fn default() -> Self {
        Self { max_tokens: 200, overlap_tokens: 40 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// Heading path + body: what is embedded, indexed and returned.
    pub text: String,
    /// "Title > Section > Subsection", empty when the document has no headings.
    pub section: String,
    pub tokens: usize,
}

enum Block {
    Heading(usize, String),
    Paragraph(String),
}

fn heading_level(line: &str) -> Option<(usize, &str)> {
    let t = line.trim_start();
    let hashes = t.chars().take_while(|&c| c == '#').count();
    if (1..=6).contains(&hashes) {
        let rest = &t[hashes..];
        if rest.is_empty() || rest.starts_with(' ') || rest.starts_with('\t') {
            return Some((hashes, rest.trim().trim_end_matches('#').trim()));
        }
    }
    None
}

fn is_list_item(line: &str) -> bool {
    let t = line.trim_start();
    if t.starts_with("- ") || t.starts_with("* ") || t.starts_with("+ ") {
        return true;
    }
    let digits = t.chars().take_while(char::is_ascii_digit).count();
    digits > 0 && digits < 4 && (t[digits..].starts_with(". ") || t[digits..].starts_with(") "))
}

fn blocks(text: &str, format: Format) -> Vec<Block> {
    let mut out = Vec::new();
    let mut para: Vec<&str> = Vec::new();
    let mut in_fence = false;
    let flush = |para: &mut Vec<&str>, out: &mut Vec<Block>| {
        if !para.is_empty() {
            let p = para.join("\n").trim().to_string();
            if !p.is_empty() {
                out.push(Block::Paragraph(p));
            }
            para.clear();
        }
    };
    for line in text.lines() {
        if format == Format::Markdown {
            let fence = line.trim_start().starts_with("```") || line.trim_start().starts_with("~~~");
            if in_fence {
                para.push(line);
                if fence {
                    in_fence = false;
                    flush(&mut para, &mut out);
                }
                continue;
            }
            if fence {
                flush(&mut para, &mut out);
                in_fence = true;
                para.push(line);
                continue;
            }
            if let Some((level, title)) = heading_level(line) {
                flush(&mut para, &mut out);
                out.push(Block::Heading(level, title.to_string()));
                continue;
            }
            if is_list_item(line) {
                flush(&mut para, &mut out);
            }
        }
        if line.trim().is_empty() {
            flush(&mut para, &mut out);
        } else {
            para.push(line);
        }
    }
    flush(&mut para, &mut out);
    out
}

const ABBREVIATIONS: &[&str] =
    &["mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "approx", "no", "fig", "inc", "ltd", "co", "mt", "a.m", "p.m"];

/// Split a paragraph into sentences: after `.`, `!`, `?` (and closing quotes/brackets) followed
/// by whitespace, unless the word before is a known abbreviation, an initial or a number.
pub fn sentences(text: &str) -> Vec<String> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < chars.len() {
        let (_, c) = chars[i];
        if matches!(c, '.' | '!' | '?') {
            let mut j = i + 1;
            while j < chars.len() && matches!(chars[j].1, '.' | '!' | '?' | '"' | '\'' | ')' | ']' | '”' | '’') {
                j += 1;
            }
            let at_end = j >= chars.len();
            if at_end || chars[j].1.is_whitespace() {
                let end_byte = if at_end { text.len() } else { chars[j].0 };
                let word_start = text[..chars[i].0].rfind(|ch: char| ch.is_whitespace()).map(|p| p + 1).unwrap_or(0);
                let word = text[word_start..chars[i].0].to_lowercase();
                let word = word.trim_start_matches(|ch: char| !ch.is_alphanumeric());
                let abbreviation = c == '.'
                    && (ABBREVIATIONS.contains(&word)
                        || (word.chars().count() == 1 && word.chars().all(char::is_alphabetic))
                        || (!at_end && chars[j..].iter().find(|(_, ch)| !ch.is_whitespace()).is_some_and(|(_, ch)| ch.is_lowercase())));
                if !abbreviation {
                    let s = text[start..end_byte].trim();
                    if !s.is_empty() {
                        out.push(s.to_string());
                    }
                    start = end_byte;
                }
                i = j;
                continue;
            }
        }
        i += 1;
    }
    let rest = text[start..].trim();
    if !rest.is_empty() {
        out.push(rest.to_string());
    }
    out
}

/// Cut one over-long sentence at word boundaries into pieces of at most `max` tokens.
fn split_words(sentence: &str, max: usize, counter: &dyn TokenCounter) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut cur_tokens = 0;
    for word in sentence.split_whitespace() {
        let t = counter.count(word).max(1);
        if cur_tokens + t > max && !cur.is_empty() {
            out.push((std::mem::take(&mut cur), cur_tokens));
            cur_tokens = 0;
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(word);
        cur_tokens += t;
    }
    if !cur.is_empty() {
        out.push((cur, cur_tokens));
    }
    out
}

struct Packer<'a> {
    cfg: ChunkConfig,
    counter: &'a dyn TokenCounter,
    out: Vec<Chunk>,
    section: String,
    section_tokens: usize,
    /// Pieces of the chunk being built: (text, tokens, starts a new paragraph).
    pieces: Vec<(String, usize, bool)>,
    tokens: usize,
    /// Whether the current chunk has content of its own (not only overlap carried over).
    fresh: bool,
}

impl Packer<'_> {
    fn budget(&self) -> usize {
        self.cfg.max_tokens.saturating_sub(self.section_tokens).max(8)
    }

    fn emit(&mut self) {
        if self.fresh && !self.pieces.is_empty() {
            let mut body = String::new();
            for (i, (text, _, new_para)) in self.pieces.iter().enumerate() {
                if i > 0 {
                    body.push_str(if *new_para { "\n\n" } else { " " });
                }
                body.push_str(text);
            }
            let text = if self.section.is_empty() { body } else { format!("{}\n\n{}", self.section, body) };
            let tokens = self.tokens + self.section_tokens;
            self.out.push(Chunk { text, section: self.section.clone(), tokens });
        }
        // Carry whole trailing sentences up to the overlap budget into the next chunk.
        let mut carry = Vec::new();
        let mut carried = 0;
        for piece in self.pieces.iter().rev() {
            if carried + piece.1 > self.cfg.overlap_tokens || carry.len() + 1 >= self.pieces.len() {
                break;
            }
            carried += piece.1;
            carry.push(piece.clone());
        }
        carry.reverse();
        self.pieces = carry;
        self.tokens = carried;
        self.fresh = false;
    }

    fn new_section(&mut self, path: String) {
        self.emit();
        self.pieces.clear();
        self.tokens = 0;
        self.section_tokens = if path.is_empty() { 0 } else { self.counter.count(&path) + 1 };
        self.section = path;
    }

    fn push_piece(&mut self, text: String, tokens: usize, new_para: bool) {
        if self.tokens + tokens > self.budget() {
            self.emit();
            // The carried overlap must leave room for this piece.
            while !self.pieces.is_empty() && self.tokens + tokens > self.budget() {
                let (_, t, _) = self.pieces.remove(0);
                self.tokens -= t;
            }
        }
        self.pieces.push((text, tokens, new_para));
        self.tokens += tokens;
        self.fresh = true;
    }

    fn paragraph(&mut self, p: &str) {
        let budget = self.budget();
        let whole = self.counter.count(p);
        // A paragraph that fits in the current chunk, or in a fresh one, is never cut.
        if whole <= budget {
            if self.tokens + whole > budget {
                self.emit();
                self.pieces.clear();
                self.tokens = 0;
            }
            self.pieces.push((p.to_string(), whole, true));
            self.tokens += whole;
            self.fresh = true;
            return;
        }
        let mut first = true;
        for s in sentences(p) {
            let t = self.counter.count(&s);
            if t > budget {
                for (piece, pt) in split_words(&s, budget, self.counter) {
                    self.push_piece(piece, pt, first);
                    first = false;
                }
            } else {
                self.push_piece(s, t, first);
                first = false;
            }
        }
    }
}

/// Chunk a document.
pub fn chunk_document(text: &str, format: Format, cfg: ChunkConfig, counter: &dyn TokenCounter) -> Vec<Chunk> {
    let mut packer = Packer { cfg, counter, out: Vec::new(), section: String::new(), section_tokens: 0, pieces: Vec::new(), tokens: 0, fresh: false };
    let mut path: Vec<(usize, String)> = Vec::new();
    for block in blocks(text, format) {
        match block {
            Block::Heading(level, title) => {
                while path.last().is_some_and(|(l, _)| *l >= level) {
                    path.pop();
                }
                if !title.is_empty() {
                    path.push((level, title));
                }
                packer.new_section(path.iter().map(|(_, t)| t.as_str()).collect::<Vec<_>>().join(" > "));
            }
            Block::Paragraph(p) => packer.paragraph(&p),
        }
    }
    packer.emit();
    packer.out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentence_boundaries() {
        assert_eq!(
            sentences("Dr. Smith arrived at 3 p.m. on Monday. It rained! Was it cold? Yes, e.g. very."),
            vec!["Dr. Smith arrived at 3 p.m. on Monday.", "It rained!", "Was it cold?", "Yes, e.g. very."]
        );
        assert_eq!(sentences("Version 2.5 is out. \"Great.\" Next"), vec!["Version 2.5 is out.", "\"Great.\"", "Next"]);
    }

    #[test]
    fn headings_start_chunks_and_paths_are_kept() {
        let doc = "# Manual\n\nIntro paragraph here.\n\n## Descaling\n\nUse citric acid. Rinse twice.\n\n### Frequency\n\nEvery month.\n\n## Cleaning\n\nWipe it.";
        let chunks = chunk_document(doc, Format::Markdown, ChunkConfig::default(), &WordCounter);
        let sections: Vec<&str> = chunks.iter().map(|c| c.section.as_str()).collect();
        assert_eq!(sections, vec!["Manual", "Manual > Descaling", "Manual > Descaling > Frequency", "Manual > Cleaning"]);
        assert!(chunks[1].text.starts_with("Manual > Descaling\n\nUse citric acid."));
        // Plain text: headings are just text.
        let plain = chunk_document(doc, Format::Text, ChunkConfig::default(), &WordCounter);
        assert_eq!(plain.len(), 1);
    }

    #[test]
    fn long_text_respects_budget_with_sentence_overlap() {
        let para: String = (0..60).map(|i| format!("Sentence number {i} has exactly seven words. ")).collect();
        let cfg = ChunkConfig { max_tokens: 50, overlap_tokens: 15 };
        let chunks = chunk_document(&para, Format::Text, cfg, &WordCounter);
        assert!(chunks.len() >= 9, "{} chunks", chunks.len());
        for c in &chunks {
            assert!(c.tokens <= 50, "chunk of {} tokens", c.tokens);
            assert_eq!(WordCounter.count(&c.text), c.tokens);
            assert!(c.text.ends_with('.'), "chunks end at sentence boundaries: {:?}", c.text);
        }
        // Overlap: each chunk starts with whole trailing sentences of the previous one, at most
        // 15 tokens of them, ending with its last sentence.
        for w in chunks.windows(2) {
            let prev = sentences(&w[0].text);
            let next = sentences(&w[1].text);
            let shared = next.iter().take_while(|s| prev.contains(s)).count();
            assert!((1..=2).contains(&shared), "{shared} shared sentences between {:?} and {:?}", w[0].text, w[1].text);
            assert_eq!(next[shared - 1], *prev.last().unwrap());
        }
        // Every sentence is somewhere.
        for i in 0..60 {
            assert!(chunks.iter().any(|c| c.text.contains(&format!("number {i} "))));
        }
    }

    #[test]
    fn paragraphs_are_not_split_when_they_fit() {
        let p1 = "one two three four five six seven eight nine ten.";
        let p2 = "eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty.";
        let doc = format!("{p1}\n\n{p2}\n\n{p1}");
        let chunks = chunk_document(&doc, Format::Text, ChunkConfig { max_tokens: 25, overlap_tokens: 5 }, &WordCounter);
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].text, format!("{p1}\n\n{p2}"));
        assert_eq!(chunks[1].text, p1);
    }

    #[test]
    fn a_giant_word_soup_is_cut_at_words() {
        let soup = "word ".repeat(1000);
        let chunks = chunk_document(&soup, Format::Text, ChunkConfig { max_tokens: 100, overlap_tokens: 0 }, &WordCounter);
        assert_eq!(chunks.len(), 10);
        assert!(chunks.iter().all(|c| c.tokens == 100));
    }

    #[test]
    fn code_fences_stay_whole() {
        let doc = "# T\n\n```\nfn main() {\n\n    # not a heading\n}\n```\n\nAfter.";
        let chunks = chunk_document(doc, Format::Markdown, ChunkConfig::default(), &WordCounter);
        assert_eq!(chunks.len(), 1);
        assert!(chunks[0].text.contains("# not a heading"));
    }
}
