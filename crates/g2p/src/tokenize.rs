//! Tokenisation of normalised text into words and punctuation, and misaki's sub-tokenisation
//! of a word (`en.subtokenize`), written out by hand instead of with a regex engine.

use std::ops::Range;

/// Punctuation that is kept as a prosody token (all are Kokoro vocabulary symbols).
pub const PUNCTS: &str = ";:,.!?—…\"“”()";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokKind {
    Word,
    /// Punctuation with the phoneme symbol it becomes.
    Punct(char),
}

/// A token of normalised text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tok {
    pub kind: TokKind,
    /// Byte range in the normalised text.
    pub span: Range<usize>,
    /// Whitespace follows the token.
    pub ws_after: bool,
}

/// Letters in groups of one or two separated by dots with a final dot ("U.S.", "e.g.",
/// "p.m."): the byte length of the longest such prefix of `s`, if it has two groups or more.
fn dotted_prefix(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut groups = 0;
    let mut end = None;
    loop {
        let start = i;
        while i < b.len() && b[i].is_ascii_alphabetic() && i - start < 3 {
            i += 1;
        }
        let n = i - start;
        if n == 0 || n > 2 || b.get(i) != Some(&b'.') {
            break;
        }
        i += 1;
        groups += 1;
        if groups >= 2 {
            end = Some(i);
        }
    }
    end
}

/// Split normalised text into words and punctuation tokens.
pub fn tokenize(text: &str) -> Vec<Tok> {
    let mut toks: Vec<Tok> = Vec::new();
    let mut word_start: Option<usize> = None;
    // Straight double quotes alternate: open at a word start, close otherwise.
    let mut iter = text.char_indices().peekable();
    let mut prev_ws = true;
    while let Some((i, c)) = iter.next() {
        if c.is_whitespace() {
            if let Some(s) = word_start.take() {
                toks.push(Tok { kind: TokKind::Word, span: s..i, ws_after: true });
            } else if let Some(last) = toks.last_mut() {
                last.ws_after = true;
            }
            prev_ws = true;
            continue;
        }
        if c == '.' {
            // Dotted abbreviations stay words: "U.S.", "a.m.".
            let from = word_start.unwrap_or(i);
            if let Some(len) = dotted_prefix(&text[from..]) {
                if from + len > i {
                    // Consume up to the end of the abbreviation.
                    while let Some(&(j, _)) = iter.peek() {
                        if j >= from + len {
                            break;
                        }
                        iter.next();
                    }
                    toks.push(Tok { kind: TokKind::Word, span: from..from + len, ws_after: false });
                    word_start = None;
                    prev_ws = false;
                    continue;
                }
            }
        }
        if PUNCTS.contains(c) {
            if let Some(s) = word_start.take() {
                toks.push(Tok { kind: TokKind::Word, span: s..i, ws_after: false });
                prev_ws = false;
            }
            let symbol = match c {
                '"' => {
                    if prev_ws {
                        '“'
                    } else {
                        '”'
                    }
                }
                c => c,
            };
            toks.push(Tok { kind: TokKind::Punct(symbol), span: i..i + c.len_utf8(), ws_after: false });
            // After an opening quote or bracket the next quote still opens.
            prev_ws = matches!(symbol, '“' | '(');
            continue;
        }
        if word_start.is_none() {
            word_start = Some(i);
        }
        prev_ws = false;
    }
    if let Some(s) = word_start {
        toks.push(Tok { kind: TokKind::Word, span: s..text.len(), ws_after: false });
    }
    if let Some(last) = toks.last_mut() {
        last.ws_after = false;
    }
    toks
}

/// Split English clitics off a word the way spaCy's tokenizer does before misaki sees it
/// ("She'd've" -> "She", "'d", "'ve"; "don't" -> "do", "n't"), then sub-tokenise each piece.
/// The whole word is still looked up first; the pieces matter when it is not in the lexicon.
pub fn word_subtokens(word: &str) -> Vec<Range<usize>> {
    let mut cuts = Vec::new();
    let mut end = word.len();
    loop {
        let head = &word[..end];
        let lower = head.to_lowercase();
        let cut = if (lower.ends_with("n't") || lower.ends_with("n’t")) && head.chars().count() > 3 {
            Some(end - head.chars().rev().take(3).map(char::len_utf8).sum::<usize>())
        } else {
            head.rfind(is_apos).filter(|&p| p > 0).filter(|&p| {
                let suffix = head[p..].chars().skip(1).collect::<String>().to_lowercase();
                matches!(suffix.as_str(), "s" | "d" | "ve" | "ll" | "re" | "m")
            })
        };
        match cut {
            Some(c) if c > 0 && c < end => {
                cuts.push(c);
                end = c;
            }
            _ => break,
        }
    }
    cuts.reverse();
    let mut out = Vec::new();
    let mut start = 0;
    for piece_end in cuts.into_iter().chain(std::iter::once(word.len())) {
        out.extend(subtokenize(&word[start..piece_end]).into_iter().map(|r| r.start + start..r.end + start));
        start = piece_end;
    }
    out
}

fn is_apos(c: char) -> bool {
    matches!(c, '\'' | '‘' | '’')
}

/// misaki's `subtokenize` regex, alternative by alternative:
/// `^['‘’]+ | \p{Lu}(?=\p{Lu}\p{Ll}) | (?:^-)?(?:\d?[,.]?\d)+ | [-_]+ | ['‘’]{2,} |
///  \p{L}*?(?:['‘’]\p{L})*?\p{Ll}(?=\p{Lu}) | \p{L}+(?:['‘’]\p{L})* | [^-_\p{L}'‘’\d] | ['‘’]+$`
/// Returns byte ranges into `word`.
pub fn subtokenize(word: &str) -> Vec<Range<usize>> {
    let chars: Vec<(usize, char)> = word.char_indices().collect();
    let n = chars.len();
    let at = |k: usize| chars.get(k).map(|&(_, c)| c);
    let byte = |k: usize| if k < n { chars[k].0 } else { word.len() };
    let is_letter = |k: usize| at(k).is_some_and(char::is_alphabetic);
    let is_digit = |k: usize| at(k).is_some_and(|c| c.is_ascii_digit());
    let mut out = Vec::new();
    let mut i = 0;
    while i < n {
        let c = chars[i].1;
        // ^['‘’]+
        if i == 0 && is_apos(c) {
            let mut j = i;
            while at(j).is_some_and(is_apos) {
                j += 1;
            }
            out.push(byte(i)..byte(j));
            i = j;
            continue;
        }
        // \p{Lu}(?=\p{Lu}\p{Ll})
        if c.is_uppercase() && at(i + 1).is_some_and(char::is_uppercase) && at(i + 2).is_some_and(char::is_lowercase) {
            out.push(byte(i)..byte(i + 1));
            i += 1;
            continue;
        }
        // (?:^-)?(?:\d?[,.]?\d)+
        {
            let mut j = i;
            if i == 0 && c == '-' {
                j += 1;
            }
            let start_digits = j;
            loop {
                if is_digit(j) {
                    if matches!(at(j + 1), Some(',' | '.')) && is_digit(j + 2) {
                        j += 3;
                    } else if is_digit(j + 1) {
                        j += 2;
                    } else {
                        j += 1;
                    }
                } else if matches!(at(j), Some(',' | '.')) && is_digit(j + 1) {
                    j += 2;
                } else {
                    break;
                }
            }
            if j > start_digits {
                out.push(byte(i)..byte(j));
                i = j;
                continue;
            }
        }
        // [-_]+
        if matches!(c, '-' | '_') {
            let mut j = i;
            while matches!(at(j), Some('-' | '_')) {
                j += 1;
            }
            out.push(byte(i)..byte(j));
            i = j;
            continue;
        }
        // ['‘’]{2,}
        if is_apos(c) && at(i + 1).is_some_and(is_apos) {
            let mut j = i;
            while at(j).is_some_and(is_apos) {
                j += 1;
            }
            out.push(byte(i)..byte(j));
            i = j;
            continue;
        }
        if c.is_alphabetic() {
            // Extent of \p{L}+(?:['‘’]\p{L})* from i.
            let mut j = i;
            while is_letter(j) {
                j += 1;
            }
            while at(j).is_some_and(is_apos) && is_letter(j + 1) {
                j += 2;
            }
            // \p{L}*?...\p{Ll}(?=\p{Lu}): the shortest prefix ending in a lowercase letter
            // followed by an uppercase one (camelCase boundary).
            let mut cut = None;
            for k in i..j {
                if at(k).is_some_and(char::is_lowercase) && at(k + 1).is_some_and(char::is_uppercase) {
                    cut = Some(k + 1);
                    break;
                }
            }
            let end = cut.unwrap_or(j);
            out.push(byte(i)..byte(end));
            i = end;
            continue;
        }
        // ['‘’]+$
        if is_apos(c) {
            let mut j = i;
            while at(j).is_some_and(is_apos) {
                j += 1;
            }
            if j == n {
                out.push(byte(i)..byte(j));
                i = j;
                continue;
            }
            // A lone apostrophe inside a word that no alternative matches is skipped.
            i += 1;
            continue;
        }
        // [^-_\p{L}'‘’\d]
        if !c.is_ascii_digit() {
            out.push(byte(i)..byte(i + 1));
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subs(w: &str) -> Vec<&str> {
        subtokenize(w).into_iter().map(|r| &w[r]).collect()
    }

    #[test]
    fn subtokens() {
        assert_eq!(subs("hello"), vec!["hello"]);
        assert_eq!(subs("don't"), vec!["don't"]);
        assert_eq!(subs("well-known"), vec!["well", "-", "known"]);
        assert_eq!(subs("camelCase"), vec!["camel", "Case"]);
        assert_eq!(subs("iPhone"), vec!["i", "Phone"]);
        assert_eq!(subs("'cause"), vec!["'", "cause"]);
        assert_eq!(subs("dogs'"), vec!["dogs", "'"]);
        assert_eq!(subs("XMLHttp"), vec!["XMLHttp"]);
        assert_eq!(subs("ABCdef"), vec!["ABCdef"]);
        assert_eq!(subs("ABc"), vec!["A", "Bc"]);
        assert_eq!(subs("rock'n'roll"), vec!["rock'n'r", "oll"]);
        assert_eq!(subs("1,234.5x"), vec!["1,234.5", "x"]);
    }

    #[test]
    fn clitics() {
        let w = |s: &'static str| word_subtokens(s).into_iter().map(|r| &s[r]).collect::<Vec<_>>();
        // As misaki sub-tokenises spaCy's pieces "She", "'d", "'ve".
        assert_eq!(w("She'd've"), vec!["She", "'", "d", "'", "ve"]);
        assert_eq!(w("don't"), vec!["do", "n't"]);
        assert_eq!(w("John's"), vec!["John", "'", "s"]);
        assert_eq!(w("O'Brien"), vec!["O'B", "rien"]); // misaki's regex does this too
        assert_eq!(w("'s"), vec!["'", "s"]);
    }

    #[test]
    fn tokens() {
        let t = "Hello, \"world\" (U.S.) p.m.. end";
        let toks = tokenize(t);
        let texts: Vec<&str> = toks.iter().map(|k| &t[k.span.clone()]).collect();
        assert_eq!(texts, vec!["Hello", ",", "\"", "world", "\"", "(", "U.S.", ")", "p.m.", ".", "end"]);
        assert_eq!(toks[2].kind, TokKind::Punct('“'));
        assert_eq!(toks[4].kind, TokKind::Punct('”'));
        assert!(toks[1].ws_after && !toks[0].ws_after && !toks[10].ws_after);
    }
}
