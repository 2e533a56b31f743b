//! The G2P pass over normalised text (port of `misaki.en.G2P.__call__` without spaCy).
//!
//! Words are resolved right to left so that each word knows what follows it (`Ctx`: "the"
//! before a vowel is `ði`, "to" before a vowel `tʊ`, ...). A word is a group of sub-tokens
//! ("well-known" = `well`, `-`, `known`); as in misaki the longest span found in the lexicon
//! wins, and a group with any unknown part goes whole to espeak-ng. All unknown words of one
//! request are sent to espeak-ng in a single process call.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use crate::espeak::Espeak;
use crate::lexicon::{apply_stress, stress_weight, Ctx, Lexicon, NON_QUOTE_PUNCTS, PRIMARY_STRESS};
use crate::tokenize::{tokenize, word_subtokens, TokKind};
use crate::{G2pError, Vocab};

/// A token with its phonemes, ready for joining and chunking.
#[derive(Debug, Clone)]
pub struct PToken {
    /// Byte range in the normalised text.
    pub span: Range<usize>,
    /// Phonemes (only Kokoro vocabulary symbols); may be empty.
    pub phonemes: String,
    pub ws_after: bool,
    /// The punctuation symbol, for punctuation tokens.
    pub punct: Option<char>,
}

/// Most sub-tokens one lexicon lookup may span.
const MAX_SPAN: usize = 16;

const SUBTOKEN_JUNKS: &str = "',-._‘’/";

fn is_junk(s: &str) -> bool {
    s.chars().all(|c| SUBTOKEN_JUNKS.contains(c))
}

#[derive(Debug, Clone)]
struct Sub {
    text: String,
    phonemes: Option<String>,
    prespace: bool,
}

fn concat(subs: &[Sub]) -> String {
    subs.iter().map(|s| s.text.as_str()).collect()
}

/// Lexicon lookups of one request, memoised: texts repeat (words, and the spans tried inside
/// compounds), and the right-to-left pass repeats pass 1's lookups.
struct Memo<'a> {
    lexicon: &'a Lexicon,
    seen: HashMap<(String, bool, Ctx), Option<String>>,
}

impl Memo<'_> {
    fn word(&mut self, text: &str, nnp: bool, ctx: &Ctx) -> Option<String> {
        let key = (text.to_string(), nnp, *ctx);
        if let Some(hit) = self.seen.get(&key) {
            return hit.clone();
        }
        let ps = self.lexicon.word(text, nnp, ctx);
        self.seen.insert(key, ps.clone());
        ps
    }
}

/// Resolve one word group. `fallback` is asked for the phonemes of text the lexicon cannot
/// handle. Returns the context for the word before it.
fn resolve_group(
    subs: &mut [Sub],
    mut ctx: Ctx,
    is_list: bool,
    nnp: bool,
    lexicon: &mut Memo<'_>,
    fallback: &mut dyn FnMut(&str) -> Result<Option<String>, G2pError>,
) -> Result<Ctx, G2pError> {
    let n = subs.len();
    if n == 0 {
        return Ok(ctx);
    }
    if !is_list {
        // A lone word followed by whitespace (misaki's non-list path).
        let t = subs[0].text.clone();
        let ps = match lexicon.word(&t, nnp, &ctx) {
            Some(ps) => Some(ps),
            None => fallback(&t)?,
        };
        let next = ctx.before(ps.as_deref().unwrap_or(""), &t);
        subs[0].phonemes = ps;
        return Ok(next);
    }
    let (mut left, mut right) = (0, n);
    let mut should_fallback = false;
    while left < right {
        // misaki tries every span; spans are capped so that a pathological word of thousands
        // of sub-tokens stays linear (no lexicon entry has anywhere near this many parts).
        left = left.max(right.saturating_sub(MAX_SPAN));
        let merged = concat(&subs[left..right]);
        let ps = if subs[left..right].iter().any(|s| s.phonemes.is_some()) { None } else { lexicon.word(&merged, nnp, &ctx) };
        if let Some(ps) = ps {
            ctx = ctx.before(&ps, &merged);
            subs[left].phonemes = Some(ps);
            for s in &mut subs[left + 1..right] {
                s.phonemes = Some(String::new());
            }
            right = left;
            left = 0;
        } else if left + 1 < right {
            left += 1;
        } else {
            right -= 1;
            if subs[right].phonemes.is_none() {
                if is_junk(&subs[right].text) {
                    subs[right].phonemes = Some(String::new());
                } else {
                    should_fallback = true;
                    break;
                }
            }
            left = 0;
        }
    }
    if should_fallback {
        let whole = concat(subs);
        subs[0].phonemes = fallback(&whole)?;
        subs[0].prespace = false;
        for s in &mut subs[1..] {
            s.phonemes = Some(String::new());
            s.prespace = false;
        }
    } else {
        resolve_tokens(subs);
    }
    Ok(ctx)
}

/// misaki `resolve_tokens`: spacing and stress between the parts of a compound.
fn resolve_tokens(subs: &mut [Sub]) {
    let text = concat(subs);
    let mut classes = HashSet::new();
    for c in text.chars().filter(|c| !SUBTOKEN_JUNKS.contains(*c)) {
        classes.insert(if c.is_alphabetic() {
            0
        } else if c.is_ascii_digit() {
            1
        } else {
            2
        });
    }
    // Number words written by the normaliser ("twenty-four") are read as misaki reads numbers:
    // separate words, each with its own stress.
    let prespace = text.contains(' ') || text.contains('/') || classes.len() > 1 || is_number_compound(&text);
    let last = subs.len() - 1;
    for (i, s) in subs.iter_mut().enumerate() {
        if s.phonemes.is_none() {
            let single_punct = s.text.chars().count() == 1 && NON_QUOTE_PUNCTS.contains(s.text.as_str());
            if i == last && single_punct {
                s.phonemes = Some(s.text.clone());
            } else if is_junk(&s.text) {
                s.phonemes = Some(String::new());
            }
        } else if i > 0 {
            s.prespace = prespace;
        }
    }
    if prespace {
        return;
    }
    let mut indices: Vec<(bool, usize, usize)> = subs
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let ps = s.phonemes.as_deref().filter(|p| !p.is_empty())?;
            Some((ps.contains(PRIMARY_STRESS), stress_weight(ps), i))
        })
        .collect();
    let demote = |s: &mut Sub| {
        if let Some(ps) = &s.phonemes {
            s.phonemes = Some(apply_stress(ps, Some(-0.5)));
        }
    };
    if indices.len() == 2 && subs[indices[0].2].text.chars().count() == 1 {
        demote(&mut subs[indices[1].2]);
        return;
    }
    let primaries = indices.iter().filter(|x| x.0).count();
    if indices.len() < 2 || primaries <= indices.len().div_ceil(2) {
        return;
    }
    indices.sort();
    let half = indices.len() / 2;
    for &(_, _, i) in &indices[..half] {
        demote(&mut subs[i]);
    }
}

/// "twenty-four", "ninety-ninth", "Thirty-Ones": a tens word, a hyphen, a units word.
fn is_number_compound(text: &str) -> bool {
    const TENS: [&str; 8] = ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"];
    const UNITS: [&str; 9] = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine"];
    const UNIT_ORDINALS: [&str; 9] = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth"];
    let Some((tens, units)) = text.split_once('-') else { return false };
    let (tens, units) = (tens.to_lowercase(), units.to_lowercase());
    let units = units.strip_suffix("es").filter(|u| *u == "six").or_else(|| units.strip_suffix('s')).unwrap_or(&units);
    TENS.contains(&tens.as_str()) && (UNITS.contains(&units) || UNIT_ORDINALS.contains(&units))
}

/// misaki `merge_tokens` for phonemes (unknown parts contribute nothing).
fn merge_phonemes(subs: &[Sub]) -> String {
    let mut ps = String::new();
    for s in subs {
        let p = s.phonemes.as_deref().unwrap_or("");
        if s.prespace && !ps.is_empty() && !ps.ends_with(char::is_whitespace) && !p.is_empty() {
            ps.push(' ');
        }
        ps.push_str(p);
    }
    ps
}

/// Phonemize normalised text into tokens.
pub fn phonemize(text: &str, lexicon: &Lexicon, espeak: &Espeak, vocab: &Vocab) -> Result<Vec<PToken>, G2pError> {
    let toks = tokenize(text);
    let lexicon = &mut Memo { lexicon, seen: HashMap::new() };
    // Sub-tokens of each word (None for punctuation).
    let mut groups: Vec<Option<Vec<Sub>>> = toks
        .iter()
        .map(|t| match t.kind {
            TokKind::Word => {
                let w = &text[t.span.clone()];
                Some(word_subtokens(w).into_iter().map(|r| Sub { text: w[r].to_string(), phonemes: None, prespace: false }).collect())
            }
            TokKind::Punct(_) => None,
        })
        .collect();
    let is_list = |i: usize, subs: &[Sub]| subs.len() > 1 || !toks[i].ws_after;
    let nnp = acronym_flags(text, &toks);

    // Pass 1: which texts need espeak-ng (lexicon success does not depend on the context).
    let mut wanted: Vec<String> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut tried: HashSet<(String, bool, bool)> = HashSet::new();
    for (i, g) in groups.iter().enumerate() {
        let Some(subs) = g else { continue };
        if !tried.insert((text[toks[i].span.clone()].to_string(), is_list(i, subs), nnp[i])) {
            continue; // the same word was tried already
        }
        let mut trial = subs.clone();
        let mut record = |t: &str| -> Result<Option<String>, G2pError> {
            if seen.insert(t.to_string()) {
                wanted.push(t.to_string());
            }
            Ok(None)
        };
        resolve_group(&mut trial, Ctx::default(), is_list(i, subs), nnp[i], lexicon, &mut record)?;
    }
    let mut from_espeak: HashMap<String, Option<String>> = HashMap::new();
    if !wanted.is_empty() {
        let results = espeak.phonemize(&wanted)?;
        from_espeak.extend(wanted.into_iter().zip(results));
    }

    // Pass 2: right to left with context. A word resolves the same way in the same context:
    // repeated words are resolved once.
    type GroupKey = (String, bool, bool, Ctx);
    let mut resolved: HashMap<GroupKey, (Vec<Sub>, Ctx)> = HashMap::new();
    let mut ctx = Ctx::default();
    let mut out: Vec<PToken> = Vec::with_capacity(toks.len());
    for (i, tok) in toks.iter().enumerate().rev() {
        let phonemes = match tok.kind {
            TokKind::Punct(p) => {
                let ps = p.to_string();
                ctx = ctx.before(&ps, &ps);
                ps
            }
            TokKind::Word => {
                let subs = groups[i].as_mut().expect("word tokens have sub-tokens");
                let list = subs.len() > 1 || !tok.ws_after;
                let key = (text[tok.span.clone()].to_string(), list, nnp[i], ctx);
                if let Some((done, next)) = resolved.get(&key) {
                    *subs = done.clone();
                    ctx = *next;
                    let ps = merge_phonemes(subs);
                    out.push(PToken { span: tok.span.clone(), phonemes: finish_phonemes(&ps, vocab), ws_after: tok.ws_after, punct: None });
                    continue;
                }
                let mut fallback = |t: &str| -> Result<Option<String>, G2pError> {
                    match from_espeak.get(t) {
                        Some(ps) => Ok(ps.clone()),
                        // Not predicted by pass 1 (context-dependent entry): ask espeak alone.
                        None => Ok(espeak.phonemize(&[t.to_string()])?.pop().flatten()),
                    }
                };
                ctx = resolve_group(subs, ctx, list, nnp[i], lexicon, &mut fallback)?;
                resolved.insert(key, (subs.clone(), ctx));
                merge_phonemes(subs)
            }
        };
        out.push(PToken {
            span: tok.span.clone(),
            phonemes: finish_phonemes(&phonemes, vocab),
            ws_after: tok.ws_after,
            punct: match tok.kind {
                TokKind::Punct(p) => Some(p),
                TokKind::Word => None,
            },
        });
    }
    out.reverse();
    Ok(out)
}

/// Stand-in for spaCy's `NNP` tag: a word of two or more capitals (and no lowercase) whose
/// neighbouring words are not also in capitals, i.e. an acronym rather than shouting.
fn acronym_flags(text: &str, toks: &[crate::tokenize::Tok]) -> Vec<bool> {
    let caps: Vec<bool> = toks
        .iter()
        .map(|t| {
            let w = &text[t.span.clone()];
            t.kind == TokKind::Word && w.chars().filter(|c| c.is_alphabetic()).count() >= 2 && !w.chars().any(char::is_lowercase)
        })
        .collect();
    let words: Vec<usize> = (0..toks.len()).filter(|&i| toks[i].kind == TokKind::Word).collect();
    let mut flags = vec![false; toks.len()];
    for (k, &i) in words.iter().enumerate() {
        let prev = k > 0 && caps[words[k - 1]];
        let next = words.get(k + 1).is_some_and(|&j| caps[j]);
        flags[i] = caps[i] && !prev && !next;
    }
    flags
}

/// misaki's final step for Kokoro v1.0 (`version != "2.0"`): flap `ɾ` -> `T`, glottal stop
/// `ʔ` -> `t`; then keep only symbols Kokoro knows (spaces inside compounds stay).
fn finish_phonemes(ps: &str, vocab: &Vocab) -> String {
    ps.chars()
        .map(|c| match c {
            'ɾ' => 'T',
            'ʔ' => 't',
            c => c,
        })
        .filter(|&c| c == ' ' || vocab.contains(c))
        .collect()
}
