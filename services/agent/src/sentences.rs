//! Cut a stream of LLM tokens into sentences for text-to-speech, as soon as each is complete.
//!
//! A sentence ends at `.`, `!`, `?` (or `…`, `;`-free newlines) followed by whitespace, except
//! after common abbreviations and initials. The first piece of a reply may also end at a clause
//! (`,` `;` `:` `—`) once it has `first_clause_words` words: the first audio then comes a
//! clause earlier, which is most of the agent's time to first audio on a CPU. When no
//! punctuation comes, a piece ends at a word boundary once it has `first_clause_words + 1`
//! words (the first piece), twice that (the second), and so on: pieces grow, as synthesis gets
//! ahead of playout, while the first audio never waits for a long sentence. Such a cut is not
//! made right after a word that leans on the next one (an article, a preposition, "is"...).

/// Words a word-boundary cut does not follow: the piece would end on a word that belongs with
/// the next one ("the capital of" / "France").
const LEANING: &[&str] = &[
    "a", "an", "the", "of", "to", "in", "on", "at", "by", "for", "with", "from", "and", "or", "but", "as", "is", "are", "was", "were", "be", "my",
    "your", "its", "their", "our", "his", "her", "this", "that", "very", "not", "than", "into", "about",
];

const ABBREVIATIONS: &[&str] =
    &["mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "approx", "no", "fig", "inc", "ltd", "co", "mt"];

#[derive(Debug, Default)]
pub struct SentenceSplitter {
    buf: String,
    emitted: usize,
    first_clause_words: usize,
}

impl SentenceSplitter {
    /// `first_clause_words` = 0: never cut at a clause.
    pub fn new(first_clause_words: usize) -> Self {
        Self { buf: String::new(), emitted: 0, first_clause_words }
    }

    /// Add generated text; returns the sentences it completed.
    pub fn push(&mut self, text: &str) -> Vec<String> {
        self.buf.push_str(text);
        let mut out = Vec::new();
        while let Some(end) = self.find_end() {
            let piece: String = self.buf.drain(..end).collect();
            if let Some(s) = clean(&piece) {
                self.emitted += 1;
                out.push(s);
            }
        }
        out
    }

    /// The end of the reply: whatever is left.
    pub fn finish(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.buf);
        let s = clean(&rest)?;
        self.emitted += 1;
        Some(s)
    }

    /// Byte index just after a complete sentence (terminator + the following whitespace seen).
    fn find_end(&self) -> Option<usize> {
        let b = &self.buf;
        let chars: Vec<(usize, char)> = b.char_indices().collect();
        for (k, &(i, c)) in chars.iter().enumerate() {
            let next = chars.get(k + 1).map(|&(_, n)| n);
            if c == '\n' && b[..i].trim().chars().any(char::is_alphanumeric) {
                return Some(i + 1);
            }
            let terminator = matches!(c, '.' | '!' | '?' | '…');
            let clause = self.emitted == 0 && self.first_clause_words > 0 && matches!(c, ',' | ';' | ':' | '—');
            if !(terminator || clause) {
                continue;
            }
            // Need the next character to know the sentence is over ("3.5", "e.g.").
            let n = next?;
            if !n.is_whitespace() && !matches!(n, '"' | '\'' | ')' | '”' | '’') {
                continue;
            }
            if clause && !terminator {
                if b[..i].split_whitespace().count() < self.first_clause_words {
                    continue;
                }
                return Some(i + c.len_utf8());
            }
            if c == '.' && is_abbreviation(&b[..i]) {
                continue;
            }
            let mut end = i + c.len_utf8();
            // Keep closing quotes/brackets with their sentence.
            for &(j, q) in &chars[k + 1..] {
                if matches!(q, '"' | '\'' | ')' | '”' | '’') {
                    end = j + q.len_utf8();
                } else {
                    break;
                }
            }
            return Some(end);
        }
        self.word_cut()
    }

    /// Byte index just after the word that completes a long enough unpunctuated piece (the
    /// whitespace after it seen), or None.
    fn word_cut(&self) -> Option<usize> {
        if self.first_clause_words == 0 {
            return None;
        }
        let need = (self.first_clause_words + 1).saturating_mul(1 << self.emitted.min(16));
        let b = &self.buf;
        let mut words = 0;
        let mut in_word = false;
        let mut word_start = 0;
        for (i, c) in b.char_indices() {
            if c.is_whitespace() {
                if in_word {
                    words += 1;
                    let word = b[word_start..i].trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase();
                    if words >= need && word.chars().any(char::is_alphanumeric) && !LEANING.contains(&word.as_str()) {
                        return Some(i);
                    }
                }
                in_word = false;
            } else if !in_word {
                in_word = true;
                word_start = i;
            }
        }
        None
    }
}

fn is_abbreviation(before: &str) -> bool {
    let word = before.rsplit(|c: char| c.is_whitespace() || c == '(').next().unwrap_or("");
    let lower = word.to_lowercase();
    // An initial ("J. R. R."), or a listed abbreviation.
    (word.chars().count() == 1 && word.chars().all(|c| c.is_uppercase())) || ABBREVIATIONS.contains(&lower.as_str())
}

/// Strip what a speaker cannot say (markdown marks, list bullets); None when nothing speakable is left.
pub fn clean(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    for line in s.lines() {
        let line = line.trim_start().trim_start_matches(['#', '>', '-', '•']).trim_start();
        let line: String = line.chars().filter(|c| !matches!(c, '*' | '`' | '_' | '~')).collect();
        if !out.is_empty() && !line.trim().is_empty() {
            out.push(' ');
        }
        out.push_str(line.trim());
    }
    let t = out.split_whitespace().collect::<Vec<_>>().join(" ");
    t.chars().any(char::is_alphanumeric).then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(tokens: &[&str], first_clause: usize) -> Vec<String> {
        let mut s = SentenceSplitter::new(first_clause);
        let mut out: Vec<String> = tokens.iter().flat_map(|t| s.push(t)).collect();
        out.extend(s.finish());
        out
    }

    #[test]
    fn sentences_come_out_when_complete() {
        let mut s = SentenceSplitter::new(0);
        assert!(s.push("The capital of France is Paris").is_empty());
        // The terminator alone is not enough: "Paris.5" could follow.
        assert!(s.push(".").is_empty());
        assert_eq!(s.push(" It is"), vec!["The capital of France is Paris."]);
        assert_eq!(s.push(" lovely! Yes"), vec!["It is lovely!"]);
        assert_eq!(s.finish().as_deref(), Some("Yes"));
    }

    #[test]
    fn abbreviations_numbers_and_quotes() {
        let got = split(&["Dr. Smith paid $3.50 for it", ", e.g. a pen. ", "He said \"no.\" Then ", "he left."], 0);
        assert_eq!(got, vec!["Dr. Smith paid $3.50 for it, e.g. a pen.", "He said \"no.\"", "Then he left."]);
        let got = split(&["J. R. R. Tolkien wrote it. Done"], 0);
        assert_eq!(got, vec!["J. R. R. Tolkien wrote it.", "Done"]);
    }

    #[test]
    fn first_clause_cut_only_once_and_only_when_long_enough() {
        let got = split(&["Well, the capital of France, as you may know, is Paris. Also, it is big."], 4);
        assert_eq!(got, vec!["Well, the capital of France,", "as you may know, is Paris.", "Also, it is big."]);
    }

    #[test]
    fn unpunctuated_pieces_end_at_a_word_boundary_and_grow() {
        let words = "the capital of France is a city called Paris which sits on the river Seine and has many old bridges over it and wide avenues";
        let tokens: Vec<String> = words.split(' ').map(|w| format!("{w} ")).collect();
        let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
        let got = split(&tokens, 4);
        // Five words, but not ending on "is" or "a": the first cut is after "city" (7 words);
        // then at least ten, then at least twenty.
        assert_eq!(got[0], "the capital of France is a city");
        assert_eq!(got[1], "called Paris which sits on the river Seine and has");
        assert!(got[1].split(' ').count() >= 10 && got[2].split(' ').count() >= 1, "{got:?}");
        assert_eq!(got.join(" "), words);
        // Not before the word is complete, and never with first_clause_words 0.
        let mut s = SentenceSplitter::new(4);
        assert!(s.push("one two three four five").is_empty());
        assert_eq!(s.push(" six"), vec!["one two three four five"]);
        assert!(split(&tokens, 0).len() == 1);
        // Punctuation still wins: a short sentence is one piece.
        assert_eq!(split(&["The capital of France is Paris. ", "It is big."], 4), vec!["The capital of France is Paris.", "It is big."]);
    }

    #[test]
    fn markdown_and_empty_pieces_are_dropped() {
        let got = split(&["**Paris** is the capital.\n\n- It has *museums*.\n", "..."], 0);
        assert_eq!(got, vec!["Paris is the capital.", "It has museums."]);
        assert_eq!(clean("  ** "), None);
    }
}
