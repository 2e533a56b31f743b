//! Lexicon pronunciations, stemming, acronyms, espeak-ng fallback, errors.

mod common;

use common::{gb, us};
use voice_g2p::{G2p, G2pError, Variant};

fn ps(g: &G2p, text: &str) -> String {
    g.phonemize(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

#[test]
fn gold_words_us() {
    // misaki us_gold.json values, with Kokoro v1.0's ɾ -> T.
    for (word, expected) in [
        ("hello", "həlˈO"),
        ("world", "wˈɜɹld"),
        ("water", "wˈɔTəɹ"),
        ("computer", "kəmpjˈuTəɹ"),
        ("beautiful", "bjˈuTəfəl"),
        ("language", "lˈæŋɡwɪʤ"),
        ("people", "pˈipᵊl"),
        ("thought", "θˈɔt"),
        ("yesterday", "jˈɛstəɹdˌA"),
        ("question", "kwˈɛsʧᵊn"),
        ("tomato", "təmˈATO"),
        ("schedule", "skˈɛʤˌul"),
    ] {
        assert_eq!(ps(us(), word), expected, "{word}");
    }
}

#[test]
fn gold_words_gb_differ() {
    for (word, expected) in [("tomato", "təmˈɑːtQ"), ("hello", "həlˈQ"), ("water", "wˈɔːtə"), ("schedule", "ʃˈɛdjuːl")] {
        assert_eq!(ps(gb(), word), expected, "{word}");
        assert_ne!(ps(us(), word), expected, "{word}");
    }
}

#[test]
fn function_words_follow_context() {
    // "the" before a vowel, "to" before a consonant / vowel, "a" as article.
    assert_eq!(ps(us(), "the apple"), "ði ˈæpᵊl");
    assert_eq!(ps(us(), "the cat"), "ðə kˈæt");
    assert_eq!(ps(us(), "to go"), "tə ɡˌO");
    assert_eq!(ps(us(), "to eat"), "tʊ ˈit");
    assert_eq!(ps(us(), "a cat"), "ɐ kˈæt");
    assert_eq!(ps(us(), "I see"), "ˌI sˈi");
    // Heteronyms without a tagger: DEFAULT, or the phrase-final "None" variant.
    assert_eq!(ps(us(), "read it"), "ɹˈid ɪt");
    assert_eq!(ps(us(), "I will be."), "ˌI wɪl bˈi.");
    assert_eq!(ps(us(), "used to"), "jˈust tu");
}

#[test]
fn capitals_and_punctuation() {
    assert_eq!(ps(us(), "Hello, World!"), "həlˈO, wˈɜɹld!");
    assert_eq!(ps(us(), "\"Hello\" (world)..."), "“həlˈO” (wˈɜɹld)…");
    assert_eq!(ps(us(), "well - known"), "wˈɛl — nˈOn");
}

#[test]
fn stemming_rules() {
    // Not in the gold lexicon; derived from the stem with misaki's suffix rules.
    assert_eq!(ps(us(), "walked"), "wˈɔkt");
    assert_eq!(ps(us(), "cities"), "sˈɪTiz");
    assert_eq!(ps(us(), "hoping"), "hˈOpɪŋ");
    assert_eq!(ps(us(), "books"), "bˈʊks");
    assert_eq!(ps(us(), "John's"), "ʤˈɑnz");
    assert_eq!(ps(gb(), "hoping"), "hˈQpɪŋ");
}

#[test]
fn compounds_and_acronyms() {
    assert_eq!(ps(us(), "well-known"), "wˌɛlnˈOn");
    // Acronyms not in the lexicon are spelled; "IT" in mixed-case text is the acronym.
    assert_eq!(ps(us(), "the FBI"), "ði ˌɛfbˌiˈI");
    assert_eq!(ps(us(), "work in IT"), "wˈɜɹk ɪn ˌItˈi");
    assert_eq!(ps(us(), "NASA"), "nˈæsə");
    assert_eq!(ps(us(), "U.S."), "jˌuˈɛs");
    // Shouting is read as words.
    assert_eq!(ps(us(), "I LOVE IT"), "ˌI lˈʌv ˈɪt");
}

#[test]
fn out_of_lexicon_words_use_espeak_and_vocab_symbols() {
    for g in [us(), gb()] {
        let text = "Zyxwv flibbertigibbetness snorkelwhatsit Kubernetes";
        let out = ps(g, text);
        assert_eq!(out.split(' ').count(), 4, "{out}");
        for c in out.chars() {
            assert!(c == ' ' || g.vocab().contains(c), "{c:?} not in vocab: {out}");
        }
        assert!(out.contains('ˈ'), "espeak stress kept: {out}");
    }
    assert_eq!(ps(us(), "Kubernetes"), "kjˈubəɹnˌits");
}

#[test]
fn token_ids() {
    let ids = us().vocab().encode(&ps(us(), "Hello, world!"));
    // həlˈO, wˈɜɹld!  (Kokoro v1.0 ids)
    assert_eq!(ids, vec![50, 83, 54, 156, 31, 3, 16, 65, 156, 87, 123, 54, 46, 5]);
    assert_eq!(us().vocab().len(), 114);
}

#[test]
fn empty_and_unspeakable_inputs() {
    for text in ["", "   ", "😀🎉", "你好世界", "Привет", "<b></b>", "***"] {
        match us().phonemize(text) {
            Err(G2pError::Empty) => {}
            other => panic!("{text:?}: expected Empty, got {other:?}"),
        }
    }
    // Mixed scripts: the Latin part is kept.
    assert_eq!(ps(us(), "hello 你好 world"), "həlˈO wˈɜɹld");
}

#[test]
fn missing_espeak_is_an_error_not_a_panic() {
    let g = G2p::load(&common::data_dir(), Variant::Us).unwrap().with_espeak_program("/nonexistent/espeak-ng");
    // In-lexicon text needs no espeak.
    assert_eq!(g.phonemize("hello world").unwrap(), "həlˈO wˈɜɹld");
    match g.phonemize("hello zyxwvut") {
        Err(G2pError::Espeak(msg)) => assert!(msg.contains("espeak-ng"), "{msg}"),
        other => panic!("expected Espeak error, got {other:?}"),
    }
}

#[test]
fn missing_data_is_an_error() {
    match G2p::load(std::path::Path::new("/nonexistent"), Variant::Us) {
        Err(G2pError::Data(msg)) => assert!(msg.contains("us_gold.json"), "{msg}"),
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("loaded from nowhere"),
    }
}

#[test]
fn many_unknown_words_share_one_espeak_call_and_stay_aligned() {
    // Distinct made-up words: each must get its own (non-empty) pronunciation, in order.
    let words: Vec<String> = (0..150)
        .map(|i| {
            let a = ["zorb", "quix", "plon", "vex", "drub", "snarf", "glim", "trok", "blen", "frist"];
            let b = ["anty", "ulom", "etch", "irvo", "oggle", "ampish", "undra", "ezzle", "ovik", "ashty"];
            format!("{}{}{}", a[i % 10], b[(i / 10) % 10], ["", "o", "um"][i / 100])
        })
        .collect();
    let text = words.join(" ");
    let out = ps(us(), &text);
    let got: Vec<&str> = out.split(' ').collect();
    assert_eq!(got.len(), words.len(), "{out}");
    // Spot-check alignment against single-word calls.
    for k in [0, 37, 99, 149] {
        assert_eq!(got[k], ps(us(), &words[k]), "word {k} {}", words[k]);
    }
}
