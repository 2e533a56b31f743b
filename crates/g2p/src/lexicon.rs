//! misaki's English lexicon: gold and silver dictionaries, capitalisation, stress and the
//! `-s` / `-ed` / `-ing` stemming rules (port of `misaki.en.Lexicon`).
//!
//! **No POS tags.** misaki passes spaCy's tag to every lookup. Here the tag is always absent:
//! heteronym entries (`{"DEFAULT": .., "VERB": .., "None": ..}`) resolve to `DEFAULT`, except
//! `"None"` which misaki (and we) pick from context alone when the word is followed by
//! punctuation or the end. The tag-dependent special cases use these rules instead:
//! * `a` / `A`: the article `ɐ`, except a capital `A` before punctuation or the end (`ˈA`, the
//!   letter: "plan A.");
//! * `I`: always the pronoun (`ˌI`);
//! * `in`: unstressed preposition unless before punctuation or the end;
//! * `used`: `jˈust` before "to" ("used to"), else `jˈuzd`;
//! * `am` / `AM` never as the noun "a.m." (the normaliser writes times as "a.m.").
//!
//! Words made of capitals that are not in the lexicon are spelled letter by letter (misaki's
//! `get_NNP`). In place of spaCy's `NNP` tag, an all-capitals word in mixed-case text counts as
//! a proper noun (an acronym): then, as in misaki, only a gold entry for it with primary stress
//! is used ("NASA"), else it is spelled ("IT", "AT", "FBI"); in all-capitals text words are
//! looked up normally.

use std::collections::HashMap;
use std::path::Path;

use crate::{G2pError, Variant};

pub const PRIMARY_STRESS: char = 'ˈ';
pub const SECONDARY_STRESS: char = 'ˌ';
const VOWELS: &str = "AIOQWYaiuæɑɒɔəɛɜɪʊʌᵻ";
const CONSONANTS: &str = "bdfhjklmnpstvwzðŋɡɹɾʃʒʤʧθ";
const US_TAUS: &str = "AIOWYiuæɑəɛɪɹʊʌ";
/// Punctuation that blocks the look-ahead of `the`/`to`/... (quotes do not).
pub const NON_QUOTE_PUNCTS: &str = ";:,.!?—…";

pub fn is_vowel(c: char) -> bool {
    VOWELS.contains(c)
}

/// One lexicon value: a pronunciation, or pronunciations keyed by POS tag.
#[derive(Debug, Clone)]
pub enum Entry {
    Plain(String),
    Tagged(Vec<(String, Option<String>)>),
}

impl Entry {
    fn tagged(&self, key: &str) -> Option<Option<&str>> {
        match self {
            Entry::Plain(_) => None,
            Entry::Tagged(v) => v.iter().find(|(k, _)| k == key).map(|(_, p)| p.as_deref()),
        }
    }

    /// The pronunciation without a POS tag: the plain value, or `"None"` when the word ends a
    /// phrase and the entry has it, or `"NOUN"` for an acronym (`nnp`, misaki's parent tag of
    /// `NNP`: `"IT": {"DEFAULT": "ɪt", "NOUN": null}` makes "IT" spelled), else `"DEFAULT"`.
    fn resolve(&self, ctx: Option<&Ctx>, nnp: bool) -> Option<&str> {
        match self {
            Entry::Plain(s) => Some(s),
            Entry::Tagged(_) => {
                if ctx.is_some_and(|c| c.future_vowel.is_none()) {
                    if let Some(p) = self.tagged("None") {
                        return p;
                    }
                }
                if nnp {
                    if let Some(p) = self.tagged("NNP").or_else(|| self.tagged("NOUN")) {
                        return p;
                    }
                }
                self.tagged("DEFAULT").flatten()
            }
        }
    }

    fn plain(&self) -> Option<&str> {
        match self {
            Entry::Plain(s) => Some(s),
            Entry::Tagged(_) => self.tagged("DEFAULT").flatten(),
        }
    }
}

/// Right-to-left context: what the following word starts with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Ctx {
    /// `Some(true)`: the next word starts with a vowel sound; `Some(false)`: a consonant;
    /// `None`: punctuation or the end follows.
    pub future_vowel: Option<bool>,
    /// The next word is "to".
    pub future_to: bool,
}

impl Ctx {
    /// Context for the word before a token with phonemes `ps` and text `text`
    /// (misaki `G2P.token_context`).
    pub fn before(self, ps: &str, text: &str) -> Ctx {
        let mut vowel = self.future_vowel;
        for c in ps.chars() {
            if NON_QUOTE_PUNCTS.contains(c) {
                vowel = None;
                break;
            }
            if VOWELS.contains(c) {
                vowel = Some(true);
                break;
            }
            if CONSONANTS.contains(c) {
                vowel = Some(false);
                break;
            }
        }
        Ctx { future_vowel: vowel, future_to: matches!(text, "to" | "To" | "TO") }
    }
}

pub struct Lexicon {
    british: bool,
    golds: HashMap<String, Entry>,
    silvers: HashMap<String, Entry>,
}

fn load_dict(path: &Path) -> Result<HashMap<String, Entry>, G2pError> {
    let text = std::fs::read_to_string(path).map_err(|e| G2pError::Data(format!("cannot read {}: {e}", path.display())))?;
    let raw: HashMap<String, serde_json::Value> = serde_json::from_str(&text).map_err(|e| G2pError::Data(format!("{}: {e}", path.display())))?;
    let mut out = HashMap::with_capacity(raw.len());
    for (k, v) in raw {
        let entry = match v {
            serde_json::Value::String(s) => Entry::Plain(s),
            serde_json::Value::Object(m) => Entry::Tagged(m.into_iter().map(|(tag, p)| (tag, p.as_str().map(str::to_string))).collect()),
            _ => return Err(G2pError::Data(format!("{}: bad value for {k:?}", path.display()))),
        };
        out.insert(k, entry);
    }
    Ok(out)
}

// Python string predicates, as misaki uses them.
fn lower(s: &str) -> String {
    s.to_lowercase()
}
fn upper(s: &str) -> String {
    s.to_uppercase()
}
fn is_lower(s: &str) -> bool {
    s == lower(s)
}
fn is_upper(s: &str) -> bool {
    s == upper(s)
}
fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(f) => f.to_uppercase().chain(chars.flat_map(char::to_lowercase)).collect(),
        None => String::new(),
    }
}
fn is_alpha(s: &str) -> bool {
    !s.is_empty() && s.chars().all(char::is_alphabetic)
}
/// Everything after the first character (`s[1:]`).
fn tail(s: &str) -> &str {
    s.char_indices().nth(1).map(|(i, _)| &s[i..]).unwrap_or("")
}
fn lexicon_char(c: char) -> bool {
    c == '\'' || c == '-' || c.is_ascii_alphabetic()
}
/// `s[:-n]` for an ASCII suffix that is known to be there.
fn cut(s: &str, n: usize) -> &str {
    &s[..s.len() - n]
}

fn symbol_word(w: &str) -> Option<&'static str> {
    Some(match w {
        "%" => "percent",
        "&" => "and",
        "+" => "plus",
        "@" => "at",
        _ => return None,
    })
}

/// misaki `apply_stress`: `stress` < -1 removes stress, -1 (or 0/-0.5 with a primary) demotes,
/// 0/0.5/1 adds a secondary to unstressed words, >= 1 promotes, > 1 adds a primary.
pub fn apply_stress(ps: &str, stress: Option<f32>) -> String {
    let Some(stress) = stress else { return ps.to_string() };
    let has_primary = ps.contains(PRIMARY_STRESS);
    let has_secondary = ps.contains(SECONDARY_STRESS);
    let has_vowel = ps.chars().any(is_vowel);
    // Put a stress mark right before the first vowel.
    let restress = |mark: char| -> String {
        let mut out = String::with_capacity(ps.len() + 2);
        let mut placed = false;
        for c in ps.chars() {
            if !placed && is_vowel(c) {
                out.push(mark);
                placed = true;
            }
            out.push(c);
        }
        out
    };
    if stress < -1.0 {
        ps.replace([PRIMARY_STRESS, SECONDARY_STRESS], "")
    } else if stress == -1.0 || ((stress == 0.0 || stress == -0.5) && has_primary) {
        ps.replace(SECONDARY_STRESS, "").replace(PRIMARY_STRESS, &SECONDARY_STRESS.to_string())
    } else if (stress == 0.0 || stress == 0.5 || stress == 1.0) && !has_primary && !has_secondary {
        if !has_vowel {
            return ps.to_string();
        }
        restress(SECONDARY_STRESS)
    } else if stress >= 1.0 && !has_primary && has_secondary {
        ps.replace(SECONDARY_STRESS, &PRIMARY_STRESS.to_string())
    } else if stress > 1.0 && !has_primary && !has_secondary {
        if !has_vowel {
            return ps.to_string();
        }
        restress(PRIMARY_STRESS)
    } else {
        ps.to_string()
    }
}

/// Stress weight of misaki's `resolve_tokens`: diphthongs and affricates count double.
pub fn stress_weight(ps: &str) -> usize {
    ps.chars().map(|c| if "AIOQWYʤʧ".contains(c) { 2 } else { 1 }).sum()
}

impl Lexicon {
    /// Load `{us,gb}_gold.json` and `{us,gb}_silver.json` from `dir`.
    pub fn load(dir: &Path, variant: Variant) -> Result<Lexicon, G2pError> {
        let p = variant.prefix();
        let golds = load_dict(&dir.join(format!("{p}_gold.json")))?;
        let silvers = load_dict(&dir.join(format!("{p}_silver.json")))?;
        if golds.is_empty() {
            return Err(G2pError::Data(format!("{p}_gold.json is empty")));
        }
        Ok(Lexicon { british: variant.is_british(), golds, silvers })
    }

    /// Lookup in a dictionary "grown" like misaki's `grow_dictionary`: a lowercase key also
    /// answers for its Capitalised form and vice versa (keys of 2+ characters), without
    /// materialising the extra entries.
    fn grown<'a>(d: &'a HashMap<String, Entry>, w: &str) -> Option<&'a Entry> {
        if let Some(e) = d.get(w) {
            return Some(e);
        }
        if w.chars().count() < 2 {
            return None;
        }
        let lw = lower(w);
        if w == lw {
            let cap = capitalize(w);
            if cap != w && lower(&cap) == w {
                return d.get(&cap);
            }
        } else if w == capitalize(&lw) {
            return d.get(&lw);
        }
        None
    }

    fn gold(&self, w: &str) -> Option<&Entry> {
        Self::grown(&self.golds, w)
    }

    fn silver(&self, w: &str) -> Option<&Entry> {
        Self::grown(&self.silvers, w)
    }

    /// Whether `word` is in the gold dictionary (exact or capitalisation variant).
    pub fn contains_gold(&self, word: &str) -> bool {
        self.gold(word).is_some()
    }

    /// The raw gold/silver entry's default pronunciation, for tests and tools.
    pub fn entry(&self, word: &str) -> Option<&str> {
        self.gold(word).or_else(|| self.silver(word)).and_then(Entry::plain)
    }

    /// Spell a word letter by letter ("NASA" -> "ˌɛnˌAˌɛsˈA"), misaki `get_NNP`.
    fn get_nnp(&self, word: &str) -> Option<String> {
        let mut ps = String::new();
        for c in word.chars().filter(|c| c.is_alphabetic()) {
            ps.push_str(self.gold(&upper(&c.to_string()))?.plain()?);
        }
        let ps = apply_stress(&ps, Some(0.0));
        // Last secondary stress becomes primary.
        Some(match ps.rfind(SECONDARY_STRESS) {
            Some(i) => format!("{}{}{}", &ps[..i], PRIMARY_STRESS, &ps[i + SECONDARY_STRESS.len_utf8()..]),
            None => ps,
        })
    }

    fn gold_plain(&self, w: &str) -> String {
        self.gold(w).and_then(Entry::plain).unwrap_or("").to_string()
    }

    /// misaki `get_special_case`, with context rules in place of POS tags (see module docs).
    fn special_case(&self, word: &str, nnp: bool, stress: Option<f32>, ctx: &Ctx) -> Option<String> {
        if let Some(w) = symbol_word(word) {
            return self.lookup(w, false, None, Some(ctx));
        }
        let stripped = word.trim_matches('.');
        if stripped.contains('.') && is_alpha(&word.replace('.', "")) && word.split('.').map(|p| p.chars().count()).max().unwrap_or(0) < 3 {
            return self.get_nnp(word);
        }
        match word {
            "a" => return Some("ɐ".into()),
            "A" => return Some(if ctx.future_vowel.is_none() { "ˈA" } else { "ɐ" }.into()),
            "am" | "Am" | "AM" if nnp => return self.get_nnp(word),
            "AN" if nnp => return self.get_nnp(word),
            "am" | "Am" | "AM" => {
                if ctx.future_vowel.is_none() || word != "am" || stress.is_some_and(|s| s > 0.0) {
                    return Some(self.gold_plain("am"));
                }
                return Some("ɐm".into());
            }
            "an" | "An" | "AN" => return Some("ɐn".into()),
            "I" => return Some(format!("{SECONDARY_STRESS}I")),
            "to" | "To" => {
                return Some(match ctx.future_vowel {
                    None => self.gold_plain("to"),
                    Some(false) => "tə".into(),
                    Some(true) => "tʊ".into(),
                })
            }
            "in" | "In" => {
                let s = if ctx.future_vowel.is_none() { "ˈ" } else { "" };
                return Some(format!("{s}ɪn"));
            }
            "the" | "The" => return Some(if ctx.future_vowel == Some(true) { "ði" } else { "ðə" }.into()),
            "TO" | "IN" | "THE" if !nnp => {
                return self.special_case(&capitalize(word), nnp, stress, ctx);
            }
            "vs" | "vs." | "Vs" | "Vs." | "VS" => return self.lookup("versus", false, None, Some(ctx)),
            "used" | "Used" | "USED" => {
                let tag = if ctx.future_to { "VBD" } else { "DEFAULT" };
                return self.gold("used").and_then(|e| e.tagged(tag).flatten().or_else(|| e.plain())).map(str::to_string);
            }
            _ => {}
        }
        None
    }

    /// misaki `is_known`.
    fn is_known(&self, word: &str) -> bool {
        if self.gold(word).is_some() || symbol_word(word).is_some() || self.silver(word).is_some() {
            return true;
        }
        if !is_alpha(word) || !word.chars().all(lexicon_char) {
            return false;
        }
        if word.chars().count() == 1 {
            return true;
        }
        if is_upper(word) && self.gold(&lower(word)).is_some() {
            return true;
        }
        let t = tail(word);
        t == upper(t)
    }

    /// misaki `lookup`: gold, then silver, heteronyms by context, then letter spelling.
    fn lookup(&self, word: &str, nnp: bool, stress: Option<f32>, ctx: Option<&Ctx>) -> Option<String> {
        let mut word = word.to_string();
        let mut is_nnp = false;
        if is_upper(&word) && self.gold(&word).is_none() {
            word = lower(&word);
            is_nnp = nnp;
        }
        let entry = match self.gold(&word) {
            Some(e) => Some(e),
            None if !is_nnp => self.silver(&word),
            None => None,
        };
        match entry.and_then(|e| e.resolve(ctx, nnp)) {
            Some(ps) if !is_nnp || ps.contains(PRIMARY_STRESS) => Some(apply_stress(ps, stress)),
            _ => self.get_nnp(&word),
        }
    }

    fn suffix_s(&self, stem: &str) -> Option<String> {
        let last = stem.chars().last()?;
        Some(if "ptkfθ".contains(last) {
            format!("{stem}s")
        } else if "szʃʒʧʤ".contains(last) {
            format!("{stem}{}z", if self.british { 'ɪ' } else { 'ᵻ' })
        } else {
            format!("{stem}z")
        })
    }

    fn stem_s(&self, word: &str, nnp: bool, stress: Option<f32>, ctx: &Ctx) -> Option<String> {
        let n = word.chars().count();
        if n < 3 || !word.ends_with('s') {
            return None;
        }
        let stem = if !word.ends_with("ss") && self.is_known(cut(word, 1)) {
            cut(word, 1).to_string()
        } else if (word.ends_with("'s") || (n > 4 && word.ends_with("es") && !word.ends_with("ies"))) && self.is_known(cut(word, 2)) {
            cut(word, 2).to_string()
        } else if n > 4 && word.ends_with("ies") && self.is_known(&format!("{}y", cut(word, 3))) {
            format!("{}y", cut(word, 3))
        } else {
            return None;
        };
        let ps = self.lookup(&stem, nnp, stress, Some(ctx))?;
        self.suffix_s(&ps)
    }

    fn suffix_ed(&self, stem: &str) -> Option<String> {
        let chars: Vec<char> = stem.chars().collect();
        let last = *chars.last()?;
        Some(if "pkfθʃsʧ".contains(last) {
            format!("{stem}t")
        } else if last == 'd' {
            format!("{stem}{}d", if self.british { 'ɪ' } else { 'ᵻ' })
        } else if last != 't' {
            format!("{stem}d")
        } else if self.british || chars.len() < 2 {
            format!("{stem}ɪd")
        } else if US_TAUS.contains(chars[chars.len() - 2]) {
            format!("{}ɾᵻd", &stem[..stem.len() - 1])
        } else {
            format!("{stem}ᵻd")
        })
    }

    fn stem_ed(&self, word: &str, nnp: bool, stress: Option<f32>, ctx: &Ctx) -> Option<String> {
        let n = word.chars().count();
        if n < 4 || !word.ends_with('d') {
            return None;
        }
        let stem = if !word.ends_with("dd") && self.is_known(cut(word, 1)) {
            cut(word, 1)
        } else if n > 4 && word.ends_with("ed") && !word.ends_with("eed") && self.is_known(cut(word, 2)) {
            cut(word, 2)
        } else {
            return None;
        };
        let ps = self.lookup(stem, nnp, stress, Some(ctx))?;
        self.suffix_ed(&ps)
    }

    fn suffix_ing(&self, stem: &str) -> Option<String> {
        let chars: Vec<char> = stem.chars().collect();
        let last = *chars.last()?;
        if self.british {
            if "əː".contains(last) {
                return None;
            }
        } else if chars.len() > 1 && last == 't' && US_TAUS.contains(chars[chars.len() - 2]) {
            return Some(format!("{}ɾɪŋ", &stem[..stem.len() - 1]));
        }
        Some(format!("{stem}ɪŋ"))
    }

    fn stem_ing(&self, word: &str, nnp: bool, stress: Option<f32>, ctx: &Ctx) -> Option<String> {
        let n = word.chars().count();
        if n < 5 || !word.ends_with("ing") {
            return None;
        }
        let base = cut(word, 3);
        // "([bcdgklmnprstvxz])\1ing$|cking$": a doubled consonant before -ing.
        let doubled = {
            let b = word.as_bytes();
            let l = b.len();
            word.ends_with("cking") || (l >= 5 && b[l - 5] == b[l - 4] && b"bcdgklmnprstvxz".contains(&b[l - 4]))
        };
        let stem = if n > 5 && self.is_known(base) {
            base.to_string()
        } else if self.is_known(&format!("{base}e")) {
            format!("{base}e")
        } else if n > 5 && doubled && self.is_known(cut(word, 4)) {
            cut(word, 4).to_string()
        } else {
            return None;
        };
        let ps = self.lookup(&stem, nnp, stress, Some(ctx))?;
        self.suffix_ing(&ps)
    }

    /// misaki `get_word`.
    fn get_word(&self, word: &str, nnp: bool, stress: Option<f32>, ctx: &Ctx) -> Option<String> {
        if let Some(ps) = self.special_case(word, nnp, stress, ctx) {
            return Some(ps);
        }
        let mut word = word.to_string();
        let wl = lower(&word);
        if word.chars().count() > 1
            && is_alpha(&word.replace('\'', ""))
            && word != wl
            && (!nnp || word.chars().count() > 7)
            && self.gold(&word).is_none()
            && self.silver(&word).is_none()
            && (is_upper(&word) || tail(&word) == lower(tail(&word)))
            && (self.gold(&wl).is_some()
                || self.silver(&wl).is_some()
                || self.stem_s(&wl, nnp, stress, ctx).is_some()
                || self.stem_ed(&wl, nnp, stress, ctx).is_some()
                || self.stem_ing(&wl, nnp, stress, ctx).is_some())
        {
            word = wl;
        }
        if self.is_known(&word) {
            return self.lookup(&word, nnp, stress, Some(ctx));
        }
        if word.ends_with("s'") {
            let w = format!("{}'s", cut(&word, 2));
            if self.is_known(&w) {
                return self.lookup(&w, nnp, stress, Some(ctx));
            }
        }
        if word.ends_with('\'') && self.is_known(cut(&word, 1)) {
            return self.lookup(cut(&word, 1), nnp, stress, Some(ctx));
        }
        if let Some(ps) = self.stem_s(&word, nnp, stress, ctx) {
            return Some(ps);
        }
        if let Some(ps) = self.stem_ed(&word, nnp, stress, ctx) {
            return Some(ps);
        }
        self.stem_ing(&word, nnp, Some(stress.unwrap_or(0.5)), ctx)
    }

    /// Pronounce one word (misaki `Lexicon.__call__`), `None` if it is not in the lexicon and
    /// cannot be derived from it. `ctx` describes what follows the word; `nnp` stands in for
    /// spaCy's proper-noun tag (an all-capitals word in mixed-case text: an acronym), which
    /// makes capitals not found as such in the gold lexicon be spelled out.
    pub fn word(&self, text: &str, nnp: bool, ctx: &Ctx) -> Option<String> {
        let word = text.replace(['‘', '’'], "'");
        if word.is_empty() {
            return None;
        }
        let stress = if is_lower(&word) {
            None
        } else if is_upper(&word) {
            Some(2.0)
        } else {
            Some(0.5)
        };
        self.get_word(&word, nnp, stress, ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stress_rules() {
        assert_eq!(apply_stress("həlˈO", Some(-1.0)), "həlˌO");
        assert_eq!(apply_stress("həlˈO", Some(-2.0)), "həlO");
        assert_eq!(apply_stress("ðə", Some(0.5)), "ðˌə");
        assert_eq!(apply_stress("ðə", Some(2.0)), "ðˈə");
        assert_eq!(apply_stress("bˌi", Some(2.0)), "bˈi");
        assert_eq!(apply_stress("bʃ", Some(2.0)), "bʃ");
        assert_eq!(apply_stress("x", None), "x");
    }

    #[test]
    fn python_string_helpers() {
        assert_eq!(capitalize("hELLO"), "Hello");
        assert_eq!(tail("Hello"), "ello");
        assert!(is_upper("'"));
        assert!(is_lower("'"));
        assert!(!is_alpha(""));
    }

    #[test]
    fn context_from_phonemes() {
        let c = Ctx::default();
        assert_eq!(c.before("ˈæpᵊl", "apple").future_vowel, Some(true));
        assert_eq!(c.before("kˈæt", "cat").future_vowel, Some(false));
        assert_eq!(c.before(".", ".").future_vowel, None);
        assert_eq!(c.before("“", "“"), c);
        assert!(c.before("tə", "to").future_to);
    }
}
