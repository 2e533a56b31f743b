//! Lexical analysis for BM25: the same terms on both storage backends.
//!
//! Lower-cased alphanumeric words, English stop words dropped, Snowball (Porter 2) stems, so
//! "charging", "charged" and "charge" meet. BM25 itself (k1 = 1.2, b = 0.75, Lucene's idf) is
//! computed in Rust for the embedded store and in SQL for PostgreSQL with these same constants.

use std::collections::BTreeMap;

use rust_stemmers::{Algorithm, Stemmer};

pub const BM25_K1: f64 = 1.2;
pub const BM25_B: f64 = 0.75;

/// Lucene's BM25 idf: never negative, even for a term in every chunk.
pub fn idf(chunks: f64, df: f64) -> f64 {
    (1.0 + (chunks - df + 0.5) / (df + 0.5)).ln()
}

/// One term's BM25 contribution.
pub fn bm25_term(idf: f64, tf: f64, len: f64, avg_len: f64) -> f64 {
    let norm = if avg_len > 0.0 { len / avg_len } else { 1.0 };
    idf * tf * (BM25_K1 + 1.0) / (tf + BM25_K1 * (1.0 - BM25_B + BM25_B * norm))
}

const STOP_WORDS: &[&str] = &[
    "a",
    "about",
    "above",
    "after",
    "again",
    "against",
    "all",
    "am",
    "an",
    "and",
    "any",
    "are",
    "as",
    "at",
    "be",
    "because",
    "been",
    "before",
    "being",
    "below",
    "between",
    "both",
    "but",
    "by",
    "can",
    "could",
    "did",
    "do",
    "does",
    "doing",
    "down",
    "during",
    "each",
    "few",
    "for",
    "from",
    "further",
    "had",
    "has",
    "have",
    "having",
    "he",
    "her",
    "here",
    "hers",
    "herself",
    "him",
    "himself",
    "his",
    "how",
    "i",
    "if",
    "in",
    "into",
    "is",
    "it",
    "its",
    "itself",
    "just",
    "me",
    "more",
    "most",
    "my",
    "myself",
    "no",
    "nor",
    "not",
    "now",
    "of",
    "off",
    "on",
    "once",
    "only",
    "or",
    "other",
    "our",
    "ours",
    "ourselves",
    "out",
    "over",
    "own",
    "same",
    "she",
    "should",
    "so",
    "some",
    "such",
    "than",
    "that",
    "the",
    "their",
    "theirs",
    "them",
    "themselves",
    "then",
    "there",
    "these",
    "they",
    "this",
    "those",
    "through",
    "to",
    "too",
    "under",
    "until",
    "up",
    "very",
    "was",
    "we",
    "were",
    "what",
    "when",
    "where",
    "which",
    "while",
    "who",
    "whom",
    "why",
    "will",
    "with",
    "would",
    "you",
    "your",
    "yours",
    "yourself",
    "yourselves",
];

fn is_stop_word(w: &str) -> bool {
    STOP_WORDS.binary_search(&w).is_ok()
}

thread_local! {
    static STEMMER: Stemmer = Stemmer::create(Algorithm::English);
}

/// The terms of `text`, in order, repeats kept.
pub fn terms(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    STEMMER.with(|stemmer| {
        for word in text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
            let lower = word.to_lowercase();
            if lower.chars().count() > 64 || is_stop_word(&lower) {
                continue;
            }
            out.push(stemmer.stem(&lower).into_owned());
        }
    });
    out
}

/// Term frequencies (sorted by term) and the length in terms, as the index stores them.
pub fn term_frequencies(text: &str) -> (Vec<(String, u32)>, u32) {
    let all = terms(text);
    let len = all.len() as u32;
    let mut tf: BTreeMap<String, u32> = BTreeMap::new();
    for t in all {
        *tf.entry(t).or_default() += 1;
    }
    (tf.into_iter().collect(), len)
}

/// Distinct query terms, sorted (a query's repeated word counts once on both backends).
pub fn query_terms(text: &str) -> Vec<String> {
    let mut t = terms(text);
    t.sort();
    t.dedup();
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_words_are_sorted_for_binary_search() {
        assert!(STOP_WORDS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn stems_and_stop_words() {
        assert_eq!(terms("The Charging of batteries, charged!"), vec!["charg", "batteri", "charg"]);
        let (tf, len) = term_frequencies("charge charging cable");
        assert_eq!(len, 3);
        assert_eq!(tf, vec![("cabl".to_string(), 1), ("charg".to_string(), 2)]);
        assert_eq!(query_terms("how do I charge the charger"), vec!["charg", "charger"]);
    }

    #[test]
    fn idf_is_positive_and_bm25_saturates() {
        assert!(idf(10.0, 10.0) > 0.0);
        assert!(idf(100.0, 1.0) > idf(100.0, 50.0));
        let one = bm25_term(1.0, 1.0, 10.0, 10.0);
        let ten = bm25_term(1.0, 10.0, 10.0, 10.0);
        assert!(ten > one && ten < 2.2 * one);
    }
}
