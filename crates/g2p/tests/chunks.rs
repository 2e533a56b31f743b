//! Chunking to the model's token limit, long inputs, and never panicking on any input.

mod common;

use std::time::Instant;

use common::us;
use proptest::prelude::*;
use voice_g2p::{normalize, G2pError, KOKORO_MAX_TOKENS};

const PARAGRAPH: &str = "The committee met on March 5th, 2024, to discuss the budget. \
    Dr. Smith presented the numbers: revenue grew 12.5% to $3.2 million, while costs fell. \
    Everyone agreed that the results were encouraging; however, several members raised concerns \
    about the long-term sustainability of the program, especially given the uncertain economic \
    outlook and the rising cost of materials. Wait — what about the new Kubernetes cluster? \
    It was approved. The meeting ended at 4:45 pm.";

fn squash(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

#[test]
fn chunks_respect_max_tokens_and_cover_the_text() {
    let g = us();
    for max in [12, 50, 100, KOKORO_MAX_TOKENS] {
        let chunks = g.chunks(PARAGRAPH, max).unwrap();
        for c in &chunks {
            let n = g.vocab().encode(&c.phonemes).len();
            assert!(n <= max, "max {max}: chunk of {n} tokens: {c:?}");
            assert!(!c.phonemes.is_empty());
        }
        // Chunk texts partition the normalised text.
        let joined: String = chunks.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(squash(&joined), squash(&normalize(PARAGRAPH)), "max {max}");
        // Phonemes too: chunking adds or loses nothing but the spaces at the cuts.
        let whole = g.phonemize(PARAGRAPH).unwrap();
        let ps: String = chunks.iter().map(|c| c.phonemes.as_str()).collect();
        assert_eq!(squash(&ps), squash(&whole), "max {max}");
        if max == 50 {
            assert!(chunks.len() >= 4, "{chunks:?}");
        }
        if g.vocab().encode(&whole).len() <= max {
            assert_eq!(chunks.len(), 1, "max {max}");
        }
    }
}

#[test]
fn chunks_prefer_sentence_ends() {
    let g = us();
    let text = "The cat sat on the mat. The dog slept by the door. A bird sang in the tree. \
                The sun was warm today. We all went home early.";
    let chunks = g.chunks(text, 50).unwrap();
    assert!(chunks.len() >= 2);
    for c in &chunks {
        assert!(c.phonemes.ends_with('.'), "chunk not at a sentence end: {c:?}");
        assert!(c.text.ends_with('.'), "{c:?}");
    }
}

#[test]
fn chunks_fall_back_to_commas_then_spaces() {
    let g = us();
    let text = "apples, pears, plums, cherries, peaches, grapes, melons, lemons, limes, oranges";
    for c in g.chunks(text, 30).unwrap() {
        assert!(g.vocab().encode(&c.phonemes).len() <= 30);
        assert!(c.phonemes.ends_with(',') || c.text.ends_with("oranges"), "{c:?}");
    }
    let words = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen";
    let chunks = g.chunks(words, 20).unwrap();
    assert!(chunks.len() > 2);
    for c in &chunks {
        assert!(g.vocab().encode(&c.phonemes).len() <= 20, "{c:?}");
    }
}

#[test]
fn a_word_longer_than_a_chunk_is_cut() {
    let g = us();
    let text = "pneumonoultramicroscopicsilicovolcanoconiosis";
    let chunks = g.chunks(text, 8).unwrap();
    assert!(chunks.len() > 1);
    for c in &chunks {
        assert!(g.vocab().encode(&c.phonemes).len() <= 8, "{c:?}");
    }
    assert!(matches!(g.chunks(text, 0), Err(G2pError::InvalidArgument(_))));
}

#[test]
fn long_input_is_linear() {
    let g = us();
    let mut text = String::new();
    while text.len() < 200_000 {
        text.push_str(PARAGRAPH);
        text.push(' ');
    }
    let t = Instant::now();
    let chunks = g.chunks(&text, KOKORO_MAX_TOKENS).unwrap();
    let elapsed = t.elapsed();
    eprintln!("{} chars -> {} chunks in {elapsed:?}", text.len(), chunks.len());
    assert!(chunks.iter().all(|c| g.vocab().encode(&c.phonemes).len() <= KOKORO_MAX_TOKENS));
    assert!(elapsed.as_secs_f64() < 10.0, "took {elapsed:?}");

    // Pathological shapes at the same size: long words, camelCase monsters, dotted runs, digit
    // runs, punctuation runs, hyphen chains, markup. (espeak-ng itself costs about a
    // millisecond per distinct unknown word, so inputs made of thousands of distinct
    // gibberish words are slow but still linear; that is not exercised here.)
    let shapes: Vec<(&str, String)> = vec![
        ("one huge word", "a".repeat(200_000)),
        ("camelCase", format!("{} ", "aB".repeat(60)).repeat(1600)),
        ("dots", "ab.".repeat(60_000)),
        ("dotted words", "U.S. ".repeat(40_000)),
        ("digits", "9".repeat(200_000)),
        ("numbers", "1,234.5 ".repeat(25_000)),
        ("punctuation", "!?".repeat(100_000)),
        ("hyphen chains", format!("{} ", "x-".repeat(100)).repeat(1000)),
        ("tags", "<b>".repeat(60_000)),
        ("open tags", "<a".repeat(100_000)),
        ("links", "[a](".repeat(50_000)),
        ("emoji", "😀".repeat(50_000)),
    ];
    for (name, text) in shapes {
        let t = Instant::now();
        let r = g.chunks(&text, KOKORO_MAX_TOKENS);
        let elapsed = t.elapsed();
        eprintln!("{name}: {} chars: {:?} in {elapsed:?}", text.len(), r.as_ref().map(Vec::len));
        if let Ok(chunks) = r {
            assert!(chunks.iter().all(|c| g.vocab().encode(&c.phonemes).len() <= KOKORO_MAX_TOKENS));
        }
        assert!(elapsed.as_secs_f64() < 10.0, "{name} took {elapsed:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn never_panics_on_unicode(text in "\\PC{0,200}") {
        let _ = normalize(&text);
        if let Ok(chunks) = us().chunks(&text, 40) {
            for c in chunks {
                prop_assert!(us().vocab().encode(&c.phonemes).len() <= 40);
            }
        }
    }

    #[test]
    fn never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = normalize(&text);
        let _ = us().phonemize(&text);
    }

    #[test]
    fn never_panics_on_texty_input(text in "[a-zA-Z0-9 .,;:!?'\"$£€%&@#/+=<>()\\[\\]-]{0,120}") {
        let n = normalize(&text);
        // The normaliser only emits letters, apostrophes, hyphens, dots and prosody marks.
        prop_assert!(n.chars().all(|c| c.is_alphabetic() || " '-.,;:!?—…\"“”()".contains(c)), "{:?}", n);
        if let Ok(ps) = us().phonemize(&text) {
            prop_assert!(ps.chars().all(|c| c == ' ' || us().vocab().contains(c)));
        }
    }
}
