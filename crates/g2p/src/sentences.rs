//! Cutting phonemized text at sentence ends, for streaming: the first audio of a long answer
//! then waits only for its first sentence.

/// Sentence-final punctuation in Kokoro's phoneme alphabet.
fn ends_sentence(c: char) -> bool {
    matches!(c, '.' | '!' | '?' | '…')
}

/// Cut a chunk at sentence ends (in phoneme space: abbreviations and decimals were expanded to
/// words by the front end, so every remaining `.` ends a sentence). The first audio of a long
/// answer then waits only for its first sentence. Pieces under `min_tokens` join the next.
pub fn split_sentences(phonemes: &str, text: &str, min_tokens: usize) -> Vec<(String, String)> {
    let mut ph_parts: Vec<String> = Vec::new();
    let mut cur = String::new();
    let chars: Vec<char> = phonemes.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        cur.push(c);
        let at_boundary = ends_sentence(c) && chars.get(i + 1).is_none_or(|n| n.is_whitespace() || matches!(n, '"' | '”' | ')'));
        if at_boundary && cur.trim().chars().count() >= min_tokens {
            ph_parts.push(std::mem::take(&mut cur).trim().to_string());
        }
    }
    if !cur.trim().is_empty() {
        match ph_parts.last_mut() {
            Some(last) if cur.trim().chars().count() < min_tokens => {
                last.push(' ');
                last.push_str(cur.trim());
            }
            _ => ph_parts.push(cur.trim().to_string()),
        }
    }
    // The text side, cut the same way when the counts agree; otherwise all of it on the first.
    let mut text_parts: Vec<String> = Vec::new();
    let mut t = String::new();
    let tc: Vec<char> = text.chars().collect();
    for (i, &c) in tc.iter().enumerate() {
        t.push(c);
        if ends_sentence(c) && tc.get(i + 1).is_none_or(|n| n.is_whitespace()) {
            text_parts.push(std::mem::take(&mut t).trim().to_string());
        }
    }
    if !t.trim().is_empty() {
        text_parts.push(t.trim().to_string());
    }
    if text_parts.len() != ph_parts.len() {
        text_parts = std::iter::once(text.trim().to_string()).chain(std::iter::repeat_n(String::new(), ph_parts.len().saturating_sub(1))).collect();
    }
    ph_parts.into_iter().zip(text_parts).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_split_in_phoneme_space() {
        let parts = split_sentences("həlˈO wˈɜɹld. ðɪs ɪz ɐ tˈɛst! ɔl ɹˈIt?", "Hello world. This is a test! All right?", 4);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0], ("həlˈO wˈɜɹld.".to_string(), "Hello world.".to_string()));
        assert_eq!(parts[2].1, "All right?");
        // A short tail joins the previous piece; the text then stays whole on the first.
        let parts = split_sentences("həlˈO wˈɜɹld. hˈI.", "Hello world. Hi.", 8);
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].0, "həlˈO wˈɜɹld. hˈI.");
        assert_eq!(parts[0].1, "Hello world. Hi.");
    }
}
