//! espeak-ng fallback for words outside the lexicon (port of `misaki.espeak.EspeakFallback`).
//!
//! espeak-ng runs as a process (`espeak-ng -q --ipa --tie=^ -v en-us`), one word per input
//! line, one output line per input line; all unknown words of a request go to one process.
//! Its IPA is then mapped to misaki's phoneme set with misaki's `E2M` table and the
//! American/British tweaks, so the result uses only Kokoro's symbols.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::{G2pError, Variant};

/// espeak IPA -> misaki, longest keys first (the order misaki applies them in).
const E2M: &[(&str, &str)] = &[
    ("ʔˌn\u{329}", "ʔn"),
    ("ʔn\u{329}", "ʔn"),
    ("a^ɪ", "I"),
    ("a^ʊ", "W"),
    ("d^ʒ", "ʤ"),
    ("e^ɪ", "A"),
    ("t^ʃ", "ʧ"),
    ("ɔ^ɪ", "Y"),
    ("ə^l", "ᵊl"),
    ("ʲo", "jo"),
    ("ʲə", "jə"),
    ("e", "A"),
    ("ʲ", ""),
    ("ɚ", "əɹ"),
    ("r", "ɹ"),
    ("x", "k"),
    ("ç", "k"),
    ("ɐ", "ə"),
    ("ɬ", "l"),
    ("\u{303}", ""),
];

/// Map espeak-ng IPA (with `^` ties) to misaki phonemes, exactly as misaki's
/// `EspeakFallback.__call__` does for Kokoro v1.0 (`version=None`).
pub fn espeak_to_misaki(ipa: &str, british: bool) -> String {
    let mut ps = ipa.trim().to_string();
    for (old, new) in E2M {
        if ps.contains(old) {
            ps = ps.replace(old, new);
        }
    }
    // Syllabic consonants: "n̩" -> "ᵊn" (for any non-space character before U+0329).
    let mut out = String::with_capacity(ps.len());
    let chars: Vec<char> = ps.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if !c.is_whitespace() && c != '\u{329}' && chars.get(i + 1) == Some(&'\u{329}') {
            out.push('ᵊ');
            out.push(c);
            i += 2;
            continue;
        }
        if c != '\u{329}' {
            out.push(c);
        }
        i += 1;
    }
    let mut ps = out;
    if british {
        ps = ps.replace("e^ə", "ɛː").replace("iə", "ɪə").replace("ə^ʊ", "Q");
    } else {
        ps = ps.replace("o^ʊ", "O").replace("ɜːɹ", "ɜɹ").replace("ɜː", "ɜɹ").replace("ɪə", "iə").replace('ː', "");
    }
    // espeak < 1.52 writes "o" where misaki expects "ɔ".
    ps = ps.replace('o', "ɔ");
    // Kokoro v1.0: flap and glottal stop as T and t.
    ps = ps.replace('ɾ', "T").replace('ʔ', "t");
    ps.replace('^', "")
}

/// An espeak-ng command line runner.
#[derive(Debug, Clone)]
pub struct Espeak {
    program: PathBuf,
    variant: Variant,
}

/// Keep what espeak should read of a word: letters, marks, apostrophes, hyphens. Everything
/// else becomes a space so that one word stays one line.
fn sanitize(word: &str) -> String {
    let s: String =
        word.chars().map(|c| if c.is_alphabetic() || matches!(c as u32, 0x300..=0x36F) || matches!(c, '\'' | '’' | '-') { c } else { ' ' }).collect();
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl Espeak {
    /// `espeak-ng` from `$VOICE_ESPEAK_NG` or `PATH`.
    pub fn new(variant: Variant) -> Espeak {
        let program = std::env::var_os("VOICE_ESPEAK_NG").map(PathBuf::from).unwrap_or_else(|| "espeak-ng".into());
        Espeak { program, variant }
    }

    pub fn with_program(mut self, program: impl Into<PathBuf>) -> Espeak {
        self.program = program.into();
        self
    }

    /// Raw espeak-ng IPA (with `^` ties) of each line; one process for all of them.
    pub fn ipa_lines(&self, lines: &[String]) -> Result<Vec<String>, G2pError> {
        if lines.is_empty() {
            return Ok(vec![]);
        }
        let mut child = Command::new(&self.program)
            .args(["-q", "--ipa", "--tie=^", "-v", self.variant.espeak_voice()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                G2pError::Espeak(format!("cannot run {:?} ({e}); install espeak-ng (apt-get install espeak-ng) or set VOICE_ESPEAK_NG", self.program))
            })?;
        let mut input = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for l in lines {
            input.push_str(l);
            input.push('\n');
        }
        let mut stdin = child.stdin.take().ok_or_else(|| G2pError::Espeak("no stdin".into()))?;
        // Write from another thread: espeak's output pipe could fill while we still write.
        let writer = std::thread::spawn(move || {
            let r = stdin.write_all(input.as_bytes());
            drop(stdin);
            r
        });
        let output = child.wait_with_output().map_err(|e| G2pError::Espeak(format!("espeak-ng failed: {e}")))?;
        let written = writer.join().map_err(|_| G2pError::Espeak("writer thread panicked".into()))?;
        if !output.status.success() {
            return Err(G2pError::Espeak(format!("espeak-ng exited with {}: {}", output.status, String::from_utf8_lossy(&output.stderr).trim())));
        }
        written.map_err(|e| G2pError::Espeak(format!("writing to espeak-ng: {e}")))?;
        let text = String::from_utf8_lossy(&output.stdout);
        Ok(text.lines().map(str::to_string).collect())
    }

    /// Phonemes (misaki set) of each word, `None` where espeak has nothing to say.
    pub fn phonemize(&self, words: &[String]) -> Result<Vec<Option<String>>, G2pError> {
        // Each word becomes one or more input lines: espeak-ng breaks very long words over
        // several output lines, so words longer than MAX_PIECE characters (hashes, keyboard
        // mashing) are cut into pieces first, which keeps one output line per input line.
        let mut lines: Vec<String> = Vec::new();
        let mut spans: Vec<Option<(usize, usize)>> = Vec::with_capacity(words.len());
        for w in words {
            let clean = sanitize(w);
            if !clean.chars().any(char::is_alphabetic) {
                spans.push(None);
                continue;
            }
            let start = lines.len();
            let chars: Vec<char> = clean.chars().collect();
            for piece in chars.chunks(MAX_PIECE) {
                let piece: String = piece.iter().collect();
                if piece.chars().any(char::is_alphabetic) {
                    lines.push(piece.trim().to_string());
                }
            }
            spans.push(Some((start, lines.len())));
        }
        // Each line is "<word> zebra": espeak-ng's synthesis path (the CLI) stresses the last
        // word of a clause that has no stress, which its phoneme API (what misaki calls through
        // phonemizer) does not ("misaki" -> "mɪsɐkˈi" instead of "mɪsɐki"). A stressed dummy
        // word after the target keeps the target as the API would say it; it is cut off again.
        let sent: Vec<String> = lines.iter().map(|l| format!("{l} {DUMMY}")).collect();
        let mut out_lines = self.ipa_lines(&sent)?;
        if out_lines.len() != sent.len() {
            // espeak split or merged lines anyway: one process per line keeps results aligned.
            out_lines = Vec::with_capacity(sent.len());
            for l in &sent {
                out_lines.push(self.ipa_lines(std::slice::from_ref(l))?.join(" "));
            }
        }
        for (out, line) in out_lines.iter_mut().zip(&lines) {
            match out.trim_end().rsplit_once(' ') {
                Some((head, dummy)) if dummy.ends_with(DUMMY_IPA_END) => *out = head.to_string(),
                // The dummy did not come back as its own word: ask for the word alone.
                _ => *out = self.ipa_lines(std::slice::from_ref(line))?.join(" "),
            }
        }
        let british = self.variant.is_british();
        Ok(spans
            .into_iter()
            .map(|span| {
                let (a, b) = span?;
                let ps: String = out_lines[a..b].iter().map(|l| espeak_to_misaki(l, british)).collect();
                (!ps.is_empty()).then_some(ps)
            })
            .collect())
    }
}

/// Stressed word appended to every line (see `phonemize`) and how its IPA ends in both accents
/// ("zˈiːbɹə" / "zˈɛbɹə").
const DUMMY: &str = "zebra";
const DUMMY_IPA_END: &str = "bɹə";

/// Longest piece of a word given to espeak-ng as one line.
const MAX_PIECE: usize = 48;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_us() {
        assert_eq!(espeak_to_misaki("həlˈo^ʊ", false), "həlˈO");
        assert_eq!(espeak_to_misaki("bˈʌʔn̩", false), "bˈʌtn");
        assert_eq!(espeak_to_misaki("kˈæɾɚ", false), "kˈæTəɹ");
        assert_eq!(espeak_to_misaki("ɹˈa^ɪt", false), "ɹˈIt");
        assert_eq!(espeak_to_misaki("bˈɜːd", false), "bˈɜɹd");
        assert_eq!(espeak_to_misaki("lˈɪʔl̩", false), "lˈɪtᵊl");
    }

    #[test]
    fn mapping_gb() {
        assert_eq!(espeak_to_misaki("həlˈə^ʊ", true), "həlˈQ");
        assert_eq!(espeak_to_misaki("bˈɜːd", true), "bˈɜːd");
        assert_eq!(espeak_to_misaki("nˈiə", true), "nˈɪə");
    }

    #[test]
    fn sanitizing() {
        assert_eq!(sanitize("foo-bar"), "foo-bar");
        assert_eq!(sanitize("a\nb"), "a b");
        assert_eq!(sanitize("!!"), "");
    }
}
