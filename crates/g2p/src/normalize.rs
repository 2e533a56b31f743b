//! Text normalisation: turn arbitrary text into plain English words and prosody punctuation.
//!
//! What it does, in order:
//! 1. character clean-up ([`clean`]): markup tags `<...>` are **stripped, not interpreted** (SSML
//!    included), a few HTML entities are decoded, Markdown links keep their text, control and
//!    zero-width characters are removed, full-width ASCII and typographic variants are folded
//!    (dashes, quotes, ligatures, exotic spaces);
//! 2. words are expanded one by one with a little look-ahead ([`expand`]): numbers (cardinals,
//!    negatives, decimals, thousands separators, ordinals, years, decades, ranges, fractions),
//!    currency, percentages, times, dates, units, URLs, e-mail addresses, abbreviations and
//!    symbols (`&`, `+`, `@`, `%`, `=`, `#`);
//! 3. words containing non-Latin letters (CJK, Cyrillic, Greek, ...) are dropped whole, and
//!    emoji and other symbols are removed: Kokoro's English voices cannot say them;
//! 4. paragraph breaks become sentence ends, whitespace is collapsed to single spaces.
//!
//! Readings are American-leaning and variant-independent: slash dates are month first
//! ("3/15/2024") unless the first number cannot be a month; times use "a.m."/"p.m." (spelled
//! by the lexicon, doubled as "p.m.." at a sentence end so that the period survives). Runs of
//! more than 256 bytes without a space are dropped. Everything is linear in the input length
//! and never panics.

use crate::numbers;

/// Normalise `text` for English G2P. The result contains only Latin letters, apostrophes,
/// hyphens, dots inside abbreviations, the prosody punctuation `, . ! ? ; : — … " “ ” ( )` and
/// single spaces. It may be empty.
pub fn normalize(text: &str) -> String {
    let cleaned = clean(text);
    let words = split_words(&cleaned);
    let mut out = Output::default();
    let mut i = 0;
    while i < words.len() {
        if words[i].para_before {
            out.sentence_break();
        }
        let consumed = expand(&words, i, &mut out);
        i += consumed.max(1);
    }
    out.finish()
}

// ---------------------------------------------------------------------------------------------
// Step 1: characters

/// Character-level clean-up. Keeps newlines (they mark paragraphs); everything else that is
/// whitespace becomes a plain space.
fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let Some(c) = text[i..].chars().next() else { break };
        let next = i + c.len_utf8();
        match c {
            '<' => {
                if let Some(end) = tag_end(text, i) {
                    out.push(' ');
                    i = end;
                    continue;
                }
                out.push(' ');
            }
            '&' => {
                if let Some((rep, end)) = entity(text, i) {
                    out.push_str(rep);
                    i = end;
                    continue;
                }
                out.push('&');
            }
            '[' => {
                if let Some((label, end)) = markdown_link(text, i) {
                    out.push_str(label);
                    i = end;
                    continue;
                }
                out.push('[');
            }
            '\r' | '\n' | '\u{2028}' | '\u{2029}' | '\u{85}' => out.push('\n'),
            '\u{AD}' | '\u{200B}' | '\u{200C}' | '\u{200D}' | '\u{2060}' | '\u{FEFF}' => {}
            c if c.is_whitespace() => out.push(' '),
            c if c.is_control() => {}
            '\u{FF01}'..='\u{FF5E}' => {
                // Full-width ASCII: same character 0xFEE0 lower.
                if let Some(a) = char::from_u32(c as u32 - 0xFEE0) {
                    out.push(a);
                }
            }
            '。' => out.push('.'),
            '、' => out.push(','),
            '«' | '„' | '‟' => out.push('“'),
            '»' => out.push('”'),
            '‚' | '‛' => out.push('‘'),
            '`' | '´' | '′' => out.push('\''),
            '″' => out.push('"'),
            '‐' | '‑' | '−' | '﹣' => out.push('-'),
            '‒' | '–' => out.push('–'),
            '―' | '⸺' | '⸻' | '﹘' => out.push('—'),
            '⋯' => out.push('…'),
            '•' | '·' | '◦' | '▪' => out.push(' '),
            'ﬀ' => out.push_str("ff"),
            'ﬁ' => out.push_str("fi"),
            'ﬂ' => out.push_str("fl"),
            'ﬃ' => out.push_str("ffi"),
            'ﬄ' => out.push_str("ffl"),
            'ﬅ' | 'ﬆ' => out.push_str("st"),
            c => out.push(c),
        }
        i = next;
    }
    out
}

/// End (exclusive) of a markup tag starting at `start` (`<b>`, `</p>`, `<!-- .. -->`,
/// `<speak version="1.0">`), if there is one. Bounded look-ahead keeps this linear.
fn tag_end(text: &str, start: usize) -> Option<usize> {
    let rest = &text.as_bytes()[start..];
    let second = *rest.get(1)?;
    if !(second.is_ascii_alphabetic() || matches!(second, b'/' | b'!' | b'?')) {
        return None;
    }
    let window = &rest[..rest.len().min(2048)];
    let close = window.iter().skip(1).position(|&b| b == b'>' || b == b'<')? + 1;
    (window[close] == b'>').then_some(start + close + 1)
}

fn entity(text: &str, start: usize) -> Option<(&'static str, usize)> {
    const ENTITIES: [(&str, &str); 9] = [
        ("&amp;", "&"),
        ("&lt;", " "),
        ("&gt;", " "),
        ("&quot;", "\""),
        ("&apos;", "'"),
        ("&#39;", "'"),
        ("&nbsp;", " "),
        ("&mdash;", "—"),
        ("&hellip;", "…"),
    ];
    let rest = &text[start..];
    ENTITIES.iter().find(|(name, _)| rest.starts_with(name)).map(|(name, rep)| (*rep, start + name.len()))
}

/// `[label](target)` -> label (the target is not spoken).
fn markdown_link(text: &str, start: usize) -> Option<(&str, usize)> {
    let rest = &text[start + 1..];
    let window = &rest[..floor_boundary(rest, 500)];
    let close = window.find([']', '[', '\n'])?;
    if !window[close..].starts_with("](") {
        return None;
    }
    let label = &window[..close];
    let after = &rest[close + 2..];
    let twindow = &after[..floor_boundary(after, 2000)];
    let end = twindow.find([')', ' ', '\n'])?;
    if !twindow[end..].starts_with(')') {
        return None;
    }
    Some((label, start + 1 + close + 2 + end + 1))
}

/// Largest char boundary `<= max` in `s`.
fn floor_boundary(s: &str, max: usize) -> usize {
    if max >= s.len() {
        return s.len();
    }
    let mut i = max;
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

// ---------------------------------------------------------------------------------------------
// Step 2: words

struct RawWord<'a> {
    text: &'a str,
    /// A paragraph break (blank line, or a line break before a non-lowercase word) precedes it.
    para_before: bool,
}

fn split_words(text: &str) -> Vec<RawWord<'_>> {
    fn word<'a>(w: &'a str, newlines: usize) -> RawWord<'a> {
        let first = w.chars().next().unwrap_or(' ');
        let para_before = newlines >= 2 || (newlines == 1 && !first.is_lowercase());
        RawWord { text: w, para_before }
    }
    let mut words = Vec::new();
    let mut newlines = 0usize;
    let mut start: Option<usize> = None;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            if let Some(s) = start.take() {
                words.push(word(&text[s..i], newlines));
                newlines = 0;
            }
            if c == '\n' {
                newlines += 1;
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        words.push(word(&text[s..], newlines));
    }
    words
}

/// Output pieces, joined by single spaces.
#[derive(Default)]
struct Output {
    pieces: Vec<String>,
}

impl Output {
    fn push(&mut self, piece: String) {
        let piece = piece.trim();
        if piece.is_empty() {
            return;
        }
        // Closing punctuation cut off from its word (by a space or a dropped word) goes back to
        // the previous word, so that it is not read after a pause.
        if piece.chars().all(|c| ".,!?;:…)”".contains(c)) {
            // Avoid doubled sentence ends like "etc.." from separate tokens; closing marks at
            // the very start have nothing to close and are dropped.
            if let Some(last) = self.pieces.last_mut() {
                if !(ends_sentence(last) && piece == ".") {
                    last.push_str(piece);
                }
            }
            return;
        }
        self.pieces.push(piece.to_string());
    }

    /// End the current sentence (paragraph break): add a period unless punctuation is there.
    fn sentence_break(&mut self) {
        if let Some(last) = self.pieces.last_mut() {
            let end = last.chars().last().unwrap_or('.');
            if !(".!?…:;,—".contains(end) || end == '”' || end == '"' || end == ')') {
                last.push('.');
            }
        }
    }

    fn finish(self) -> String {
        let joined = self.pieces.join(" ");
        // Pieces may contain inner runs of spaces from expansions: collapse them.
        let mut out = String::with_capacity(joined.len());
        let mut space = false;
        for c in joined.chars() {
            if c == ' ' {
                space = !out.is_empty();
            } else {
                if space {
                    out.push(' ');
                    space = false;
                }
                out.push(c);
            }
        }
        out
    }
}

fn ends_sentence(s: &str) -> bool {
    s.ends_with(['.', '!', '?', '…'])
}

/// Longest word (between spaces, without surrounding punctuation) that is read.
const MAX_WORD_BYTES: usize = 256;

const LEAD_PUNCT: &str = "\"“”([{¿¡*_~";
const TRAIL_PUNCT: &str = ".,!?;:…\"”)]}*_~";

/// Split a raw word into leading punctuation, core and trailing punctuation. A trailing period
/// that belongs to an abbreviation ("Dr.", "e.g.", "U.S.") stays in the core.
fn split_affixes(w: &str) -> (&str, &str, &str) {
    let lead_len = w.len() - w.trim_start_matches(|c| LEAD_PUNCT.contains(c)).len();
    let rest = &w[lead_len..];
    let core_len = rest.trim_end_matches(|c| TRAIL_PUNCT.contains(c)).len();
    let (mut core, mut trail) = rest.split_at(core_len);
    if trail.starts_with('.') && !core.is_empty() {
        let with_dot = &rest[..core_len + 1];
        let contextual = matches!(with_dot, "St." | "No." | "Nos." | "no.") || month_abbreviation(with_dot);
        if contextual || abbreviation(with_dot).is_some() || is_dotted_acronym(with_dot) {
            core = with_dot;
            trail = &trail[1..];
        }
    }
    (&w[..lead_len], core, trail)
}

/// "U.S.", "e.g.", "a.m.", "Ph.D.": letters in groups of at most two, separated by dots.
fn is_dotted_acronym(s: &str) -> bool {
    let Some(inner) = s.strip_suffix('.') else { return false };
    if !inner.contains('.') {
        return false;
    }
    inner.split('.').all(|p| !p.is_empty() && p.len() <= 2 && p.chars().all(|c| c.is_ascii_alphabetic()))
}

/// Leading punctuation as it is spoken: brackets become parentheses, markup emphasis vanishes.
fn map_lead(lead: &str) -> String {
    lead.chars()
        .filter_map(|c| match c {
            '[' | '{' => Some('('),
            '*' | '_' | '~' | '¿' | '¡' => None,
            c => Some(c),
        })
        .collect()
}

fn map_trail(trail: &str) -> String {
    let mut s: String = trail
        .chars()
        .filter_map(|c| match c {
            ']' | '}' => Some(')'),
            '*' | '_' | '~' => None,
            c => Some(c),
        })
        .collect();
    while s.contains("...") {
        s = s.replace("...", "…");
    }
    while s.contains("..") {
        s = s.replace("..", ".");
    }
    s
}

/// Expand word `i` (and maybe a following one); returns how many raw words were used.
fn expand(words: &[RawWord<'_>], i: usize, out: &mut Output) -> usize {
    let (lead, core, trail) = split_affixes(words[i].text);
    let next = words.get(i + 1).map(|w| w.text);
    let next_next = words.get(i + 2).map(|w| w.text);
    let mut trail = map_trail(trail);
    let mut consumed = 1;

    let spoken = if core.is_empty() || core.len() > MAX_WORD_BYTES {
        // A run of hundreds of characters without a space is not speech (hashes, base64,
        // minified code): it is dropped rather than spelled out.
        String::new()
    } else if let Some((expansion, sentence_end)) = abbreviation_in_context(core, next) {
        if sentence_end && trail.is_empty() && starts_sentence(next) {
            trail.push('.');
        }
        expansion
    } else if let Some((s, used)) = month_day(core, &trail, next) {
        if used {
            consumed = 2;
            trail = map_trail(split_affixes(next.unwrap_or("")).2);
        }
        s
    } else if month_abbreviation(core) {
        MONTHS[month_index(core).unwrap_or(0)].to_string()
    } else {
        let (s, extra) = expand_core(core, &trail, next, next_next);
        if let Some(extra) = extra {
            consumed = 2;
            // The consumed word's own trailing punctuation ("3 p.m." at a sentence end) and a
            // sentence end hidden in its abbreviation dot.
            let (_, ncore, ntrail) = split_affixes(next.unwrap_or(""));
            trail = map_trail(ntrail);
            if extra.sentence_dot && trail.is_empty() && ncore.ends_with('.') && starts_sentence(next_next) {
                trail.push('.');
            }
        }
        s
    };
    // A word that had trailing punctuation on a dropped core keeps the punctuation.
    let mut piece = map_lead(lead);
    piece.push_str(&spoken);
    piece.push_str(&trail);
    if piece.chars().all(|c| !c.is_alphanumeric()) {
        // Only punctuation: a lone dash is a pause; a lone '&' etc. were handled in expand_core.
        for p in punct_piece(&piece) {
            out.push(p);
        }
    } else {
        out.push(piece);
    }
    consumed
}

/// A punctuation-only piece: dashes become "—", dot runs "…", anything unspeakable is dropped.
fn punct_piece(piece: &str) -> Vec<String> {
    let t = piece.trim();
    if t.is_empty() {
        return vec![];
    }
    if t.chars().all(|c| matches!(c, '-' | '–' | '—')) {
        return vec!["—".into()];
    }
    let kept: String = t.chars().filter(|c| ".,!?;:…—\"“”()‘’'".contains(*c)).collect();
    vec![map_trail(&kept)]
}

/// The word after an abbreviation dot starts a new sentence (or there is none).
fn starts_sentence(next: Option<&str>) -> bool {
    match next {
        None => true,
        Some(w) => w.chars().find(|c| c.is_alphanumeric()).is_none_or(|c| c.is_uppercase()),
    }
}

/// What a look-ahead expansion did with the next word.
struct Extra {
    /// The next word ended in an abbreviation dot that may also end the sentence ("p.m.").
    sentence_dot: bool,
}

// ---------------------------------------------------------------------------------------------
// Abbreviations

/// Abbreviation table: (lowercase key, expansion, may end a sentence).
const ABBREVIATIONS: &[(&str, &str, bool)] = &[
    ("mr.", "Mister", false),
    ("mr", "Mister", false),
    ("mrs.", "Missus", false),
    ("mrs", "Missus", false),
    ("ms.", "Miss", false),
    ("dr.", "Doctor", false),
    ("dr", "Doctor", false),
    ("prof.", "Professor", false),
    ("mt.", "Mount", false),
    ("gen.", "General", false),
    ("capt.", "Captain", false),
    ("lt.", "Lieutenant", false),
    ("sgt.", "Sergeant", false),
    ("rev.", "Reverend", false),
    ("gov.", "Governor", false),
    ("sen.", "Senator", false),
    ("rep.", "Representative", false),
    ("fig.", "figure", false),
    ("vs.", "versus", false),
    ("vs", "versus", false),
    ("e.g.", "for example", false),
    ("i.e.", "that is", false),
    ("cf.", "compare", false),
    ("approx.", "approximately", false),
    ("dept.", "department", false),
    ("etc.", "et cetera", true),
    ("etc", "et cetera", false),
    ("jr.", "Junior", true),
    ("sr.", "Senior", true),
    ("inc.", "Incorporated", true),
    ("ltd.", "Limited", true),
    ("corp.", "Corporation", true),
    ("ave.", "Avenue", true),
    ("blvd.", "Boulevard", true),
    ("a.m.", "a.m.", true),
    ("p.m.", "p.m.", true),
];

fn abbreviation(core: &str) -> Option<(&'static str, bool)> {
    if core.len() > 8 {
        return None;
    }
    let lower = core.to_ascii_lowercase();
    ABBREVIATIONS.iter().find(|(k, _, _)| *k == lower).map(|(_, e, s)| (*e, *s))
}

/// Abbreviation expansion that depends on the next word: "St." is Saint before a name and
/// Street otherwise; "No." is "number" only before a digit.
fn abbreviation_in_context(core: &str, next: Option<&str>) -> Option<(String, bool)> {
    let lower = core.to_ascii_lowercase();
    let next_first = next.and_then(|w| w.trim_start_matches(|c| LEAD_PUNCT.contains(c)).chars().next());
    match lower.as_str() {
        "st." | "st" if core.starts_with('S') => {
            if next_first.is_some_and(char::is_uppercase) {
                Some(("Saint".into(), false))
            } else {
                Some(("Street".into(), true))
            }
        }
        "no." | "nos." if next_first.is_some_and(|c| c.is_ascii_digit()) => Some(("number".into(), false)),
        _ => abbreviation(core).map(|(e, s)| (e.to_string(), s)),
    }
}

// ---------------------------------------------------------------------------------------------
// Dates

const MONTHS: [&str; 12] = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];

/// Month of a (possibly abbreviated, "Jan." / "Sept") month name.
fn month_index(word: &str) -> Option<usize> {
    let w = word.trim_end_matches('.');
    if w.len() < 3 || !w.chars().next().is_some_and(char::is_uppercase) {
        return None;
    }
    let lower = w.to_ascii_lowercase();
    MONTHS.iter().position(|m| {
        let ml = m.to_ascii_lowercase();
        ml == lower || (lower.len() >= 3 && ml.starts_with(&lower) && (lower.len() == 3 || lower == "sept"))
    })
}

/// "Jan.", "Sept.", "Dec.": an abbreviated month name with its dot.
fn month_abbreviation(w: &str) -> bool {
    w.ends_with('.') && (4..=5).contains(&w.len()) && month_index(w).is_some()
}

/// A day of month in a word: "5", "5th", "21st" (optionally followed by punctuation).
fn day_number(core: &str) -> Option<u64> {
    let digits_len = core.bytes().take_while(u8::is_ascii_digit).count();
    if digits_len == 0 || digits_len > 2 {
        return None;
    }
    let suffix = core[digits_len..].to_ascii_lowercase();
    if !(suffix.is_empty() || matches!(suffix.as_str(), "st" | "nd" | "rd" | "th")) {
        return None;
    }
    let d: u64 = core[..digits_len].parse().ok()?;
    (1..=31).contains(&d).then_some(d)
}

/// "March 5th" / "March 5" -> "March fifth" (uses the next word). Returns (text, used_next).
fn month_day(core: &str, trail: &str, next: Option<&str>) -> Option<(String, bool)> {
    let m = month_index(core)?;
    if !trail.is_empty() {
        return None;
    }
    let (nlead, ncore, _) = split_affixes(next?);
    if !nlead.is_empty() {
        return None;
    }
    let day = day_number(ncore)?;
    Some((format!("{} {}", MONTHS[m], numbers::ordinal(day)), true))
}

fn date_words(year: u64, month: u64, day: u64) -> Option<String> {
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let y = numbers::year(year).unwrap_or_else(|| numbers::cardinal(year));
    Some(format!("{} {}, {}", MONTHS[month as usize - 1], numbers::ordinal(day), y))
}

// ---------------------------------------------------------------------------------------------
// Numbers

/// A parsed number at the start of a word.
#[derive(Debug, Clone)]
struct Num<'a> {
    negative: bool,
    /// Integer digits without separators (may be empty: ".5").
    int: String,
    /// The integer part was written with valid thousands separators ("1,234").
    grouped: bool,
    /// Digits after the decimal point.
    frac: Option<&'a str>,
}

impl Num<'_> {
    fn int_value(&self) -> Option<u64> {
        if self.int.is_empty() || self.int.len() > 18 {
            return None;
        }
        self.int.parse().ok()
    }

    fn is_integer(&self) -> bool {
        self.frac.is_none() && !self.int.is_empty()
    }

    /// "3.14" -> "three point one four"; "007" -> "zero zero seven"; 4-digit years when allowed.
    fn words(&self, allow_year: bool) -> String {
        let mut s = String::new();
        if self.negative {
            s.push_str("minus ");
        }
        let int_words = if self.int.is_empty() {
            String::new()
        } else if self.int.len() > 1 && self.int.starts_with('0') && !self.grouped {
            numbers::digits(&self.int)
        } else if allow_year && !self.grouped && self.frac.is_none() && self.int.len() == 4 {
            let v = self.int_value().unwrap_or(0);
            if (1100..=2099).contains(&v) {
                numbers::year(v).unwrap_or_else(|| numbers::cardinal(v))
            } else {
                numbers::cardinal_str(&self.int)
            }
        } else {
            numbers::cardinal_str(&self.int)
        };
        s.push_str(&int_words);
        if let Some(frac) = self.frac {
            if !int_words.is_empty() {
                s.push(' ');
            }
            s.push_str("point ");
            s.push_str(&numbers::digits(frac));
        }
        s
    }
}

/// Parse `[-+]?digits[,ddd]*[.digits]` at the start of `s`.
fn parse_num(s: &str) -> Option<(Num<'_>, &str)> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut negative = false;
    if matches!(b.first(), Some(b'-')) && b.get(1).is_some_and(|c| c.is_ascii_digit() || *c == b'.') {
        negative = true;
        i = 1;
    }
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let mut int: String = s[int_start..i].to_string();
    let mut grouped = false;
    // Thousands separators: 1-3 leading digits, then ",ddd" groups.
    if (1..=3).contains(&(i - int_start)) {
        let mut j = i;
        let mut groups = 0;
        while j + 3 < b.len() && b[j] == b',' && b[j + 1..j + 4].iter().all(u8::is_ascii_digit) && !b.get(j + 4).is_some_and(u8::is_ascii_digit) {
            int.push_str(&s[j + 1..j + 4]);
            j += 4;
            groups += 1;
        }
        if groups > 0 {
            grouped = true;
            i = j;
        }
    }
    let mut frac = None;
    if i < b.len() && b[i] == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
        let fs = i + 1;
        let mut j = fs;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        frac = Some(&s[fs..j]);
        i = j;
    }
    if int.is_empty() && frac.is_none() {
        return None;
    }
    Some((Num { negative, int, grouped, frac }, &s[i..]))
}

/// Currency symbols: (symbol, singular, plural, sub-unit singular, sub-unit plural).
const CURRENCIES: &[(char, &str, &str, &str, &str)] = &[
    ('$', "dollar", "dollars", "cent", "cents"),
    ('£', "pound", "pounds", "penny", "pence"),
    ('€', "euro", "euros", "cent", "cents"),
    ('¥', "yen", "yen", "", ""),
    ('₹', "rupee", "rupees", "paisa", "paise"),
];

fn currency(c: char) -> Option<&'static (char, &'static str, &'static str, &'static str, &'static str)> {
    CURRENCIES.iter().find(|cur| cur.0 == c)
}

/// Scale words after a number ("$5 million", "5bn", "$3k").
fn scale_word(s: &str) -> Option<&'static str> {
    Some(match s {
        "k" | "K" | "thousand" => "thousand",
        "m" | "M" | "mn" | "million" => "million",
        "b" | "B" | "bn" | "billion" => "billion",
        "t" | "T" | "tn" | "trillion" => "trillion",
        _ => return None,
    })
}

/// "$3.50" -> "three dollars and fifty cents".
fn currency_words(cur: &(char, &str, &str, &str, &str), num: &Num<'_>, scale: Option<&str>) -> String {
    let (_, one, many, sub_one, sub_many) = *cur;
    let minus = if num.negative { "minus " } else { "" };
    if let Some(scale) = scale {
        let n = Num { negative: false, ..num.clone() };
        return format!("{minus}{} {scale} {many}", n.words(false));
    }
    let whole = num.int_value();
    let cents = match num.frac {
        Some(f) if f.len() == 1 => f.parse::<u64>().ok().map(|c| c * 10),
        Some(f) if f.len() == 2 => f.parse::<u64>().ok(),
        Some(_) => None,
        None => Some(0),
    };
    match (whole.or(num.int.is_empty().then_some(0)), cents) {
        (Some(w), Some(c)) if !sub_one.is_empty() || c == 0 => {
            let unit = if w == 1 { one } else { many };
            let sub = if c == 1 { sub_one } else { sub_many };
            if c == 0 {
                format!("{minus}{} {unit}", numbers::cardinal(w))
            } else if w == 0 {
                format!("{minus}{} {sub}", numbers::cardinal(c))
            } else {
                format!("{minus}{} {unit} and {} {sub}", numbers::cardinal(w), numbers::cardinal(c))
            }
        }
        _ => {
            // Odd precision ("$1.005") or huge: read the number, then the unit.
            let n = Num { negative: false, ..num.clone() };
            format!("{minus}{} {many}", n.words(false))
        }
    }
}

/// Units after a number: (written form, singular, plural). Matched case-sensitively.
const UNITS: &[(&str, &str, &str)] = &[
    ("km", "kilometer", "kilometers"),
    ("cm", "centimeter", "centimeters"),
    ("mm", "millimeter", "millimeters"),
    ("m", "meter", "meters"),
    ("kg", "kilogram", "kilograms"),
    ("g", "gram", "grams"),
    ("mg", "milligram", "milligrams"),
    ("lb", "pound", "pounds"),
    ("lbs", "pounds", "pounds"),
    ("oz", "ounce", "ounces"),
    ("ft", "foot", "feet"),
    ("mi", "mile", "miles"),
    ("mph", "mile per hour", "miles per hour"),
    ("km/h", "kilometer per hour", "kilometers per hour"),
    ("kph", "kilometer per hour", "kilometers per hour"),
    ("ml", "milliliter", "milliliters"),
    ("mL", "milliliter", "milliliters"),
    ("l", "liter", "liters"),
    ("L", "liter", "liters"),
    ("KB", "kilobyte", "kilobytes"),
    ("kB", "kilobyte", "kilobytes"),
    ("MB", "megabyte", "megabytes"),
    ("GB", "gigabyte", "gigabytes"),
    ("TB", "terabyte", "terabytes"),
    ("Hz", "hertz", "hertz"),
    ("kHz", "kilohertz", "kilohertz"),
    ("MHz", "megahertz", "megahertz"),
    ("GHz", "gigahertz", "gigahertz"),
    ("ms", "millisecond", "milliseconds"),
    ("sec", "second", "seconds"),
    ("secs", "seconds", "seconds"),
    ("min", "minute", "minutes"),
    ("mins", "minutes", "minutes"),
    ("hr", "hour", "hours"),
    ("hrs", "hours", "hours"),
    ("kW", "kilowatt", "kilowatts"),
    ("kWh", "kilowatt hour", "kilowatt hours"),
    ("°C", "degree Celsius", "degrees Celsius"),
    ("°F", "degree Fahrenheit", "degrees Fahrenheit"),
    ("°", "degree", "degrees"),
];

/// Units that are also common words or letters: only recognised attached to the number ("5m").
const ATTACHED_ONLY: &[&str] = &["m", "g", "l", "L", "mi", "min", "ms", "sec", "hr"];

fn unit(s: &str, attached: bool) -> Option<(&'static str, &'static str)> {
    if !attached && ATTACHED_ONLY.contains(&s) {
        return None;
    }
    UNITS.iter().find(|u| u.0 == s).map(|u| (u.1, u.2))
}

/// "am"/"pm" in its usual spellings -> the dotted form the lexicon spells out letter by letter.
fn meridiem(s: &str) -> Option<&'static str> {
    match s.to_ascii_lowercase().as_str() {
        "am" | "a.m." | "a.m" => Some("a.m."),
        "pm" | "p.m." | "p.m" => Some("p.m."),
        _ => None,
    }
}

/// "3:30" -> "three thirty"; "14:05" -> "fourteen oh five"; with a meridiem "3:00" -> "three".
fn time_words(h: u64, m: u64, s: Option<u64>, meridiem: bool) -> String {
    let hw = numbers::cardinal(h);
    let mut out = if m == 0 {
        if meridiem {
            hw
        } else if h <= 12 && h > 0 {
            format!("{hw} o'clock")
        } else {
            format!("{hw} hundred")
        }
    } else if m < 10 {
        format!("{hw} oh {}", numbers::cardinal(m))
    } else {
        format!("{hw} {}", numbers::cardinal(m))
    };
    if let Some(s) = s {
        let unit = if s == 1 { "second" } else { "seconds" };
        out = format!("{out} and {} {unit}", numbers::cardinal(s));
    }
    out
}

/// Parse "H:MM" or "H:MM:SS" right after the hours (`rest` starts at the ':').
fn parse_time(h: &Num<'_>, rest: &str) -> Option<(u64, u64, Option<u64>, usize)> {
    if !h.is_integer() || h.negative || h.int.len() > 2 {
        return None;
    }
    let hv = h.int_value()?;
    let b = rest.as_bytes();
    let two = |at: usize| -> Option<u64> {
        if b.get(at) == Some(&b':')
            && b.get(at + 1).is_some_and(u8::is_ascii_digit)
            && b.get(at + 2).is_some_and(u8::is_ascii_digit)
            && !b.get(at + 3).is_some_and(u8::is_ascii_digit)
        {
            rest[at + 1..at + 3].parse().ok()
        } else {
            None
        }
    };
    let m = two(0)?;
    if hv > 24 || m > 59 {
        return None;
    }
    match two(3) {
        Some(s) if s <= 59 => Some((hv, m, Some(s), 6)),
        _ => Some((hv, m, None, 3)),
    }
}

/// Expand one word core (no leading/trailing punctuation). May look at the next word
/// ("3 pm", "$5 million", "5 km"); returns the text and, if the next word was used, `Extra`.
fn expand_core(core: &str, trail: &str, next: Option<&str>, next_next: Option<&str>) -> (String, Option<Extra>) {
    // The next word is only joined when nothing (a comma, a period) separates the two.
    let joinable = trail.is_empty();
    let next_core = next.map(split_affixes).filter(|(l, _, _)| l.is_empty()).map(|(_, c, _)| c);
    let next_core = if joinable { next_core } else { None };
    let _ = next_next;

    // A free-standing dash is a pause.
    if core.chars().all(|c| matches!(c, '-' | '–' | '—')) {
        return ("—".into(), None);
    }
    // "U.S.", "Ph.D.": the lexicon spells these letter by letter.
    if is_dotted_acronym(core) {
        return (core.to_string(), None);
    }
    if let Some(s) = email_words(core) {
        return (s, None);
    }
    if let Some(s) = url_words(core) {
        return (s, None);
    }

    // Currency first: "$5", "-$5", "$3.50", "€2,000", "$5k", "$5 million".
    let (neg_cur, cur_rest) = match core.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, core),
    };
    if let Some(c) = cur_rest.chars().next().and_then(currency) {
        let after = &cur_rest[c.0.len_utf8()..];
        if let Some((mut num, rest)) = parse_num(after) {
            if num.negative {
                // "$-5": treat like "-$5".
                num.negative = false;
                return (join_tail(currency_words(c, &Num { negative: true, ..num }, None), &expand_generic(rest)), None);
            }
            num.negative = neg_cur;
            if let Some(scale) = scale_word(rest) {
                return (currency_words(c, &num, Some(scale)), None);
            }
            if rest.is_empty() {
                if let Some(scale) = next_core.and_then(scale_word).filter(|s| s.len() > 1) {
                    return (currency_words(c, &num, Some(scale)), Some(Extra { sentence_dot: false }));
                }
            }
            return (join_tail(currency_words(c, &num, None), &expand_generic(rest)), None);
        }
    }

    // Decades written with an apostrophe: "'90s", "’80s".
    if let Some(r) = core.strip_prefix(['\'', '’', '‘']) {
        let d = r.as_bytes();
        if d.len() == 3 && d[0].is_ascii_digit() && d[1].is_ascii_digit() && d[2] == b's' {
            let v: u64 = r[..2].parse().unwrap_or(0);
            return (numbers::pluralize(&numbers::cardinal(v)), None);
        }
    }

    if let Some(r) = core.strip_prefix('#') {
        if r.starts_with(|c: char| c.is_ascii_digit()) {
            let (s, extra) = expand_core(r, trail, next, next_next);
            return (format!("number {s}"), extra);
        }
        return (expand_generic(r), None);
    }
    if let Some(r) = core.strip_prefix('+') {
        if r.starts_with(|c: char| c.is_ascii_digit()) {
            let (s, extra) = expand_core(r, trail, next, next_next);
            return (format!("plus {s}"), extra);
        }
    }

    if let Some((num, rest)) = parse_num(core) {
        return expand_number(&num, rest, next_core);
    }
    match core {
        "&" | "&&" => return ("and".into(), None),
        "+" => return ("plus".into(), None),
        "=" | "==" => return ("equals".into(), None),
        "%" => return ("percent".into(), None),
        "@" => return ("at".into(), None),
        _ => {}
    }
    (expand_generic(core), None)
}

/// A word that starts with a number.
fn expand_number(num: &Num<'_>, rest: &str, next_core: Option<&str>) -> (String, Option<Extra>) {
    let lower_rest = rest.to_ascii_lowercase();

    if rest.is_empty() {
        // Look-ahead: "3 pm", "5 km", "5 million", "5 March", "20 °C", "5 %".
        if let Some(nc) = next_core {
            if let (Some(m), Some(h)) = (meridiem(nc), num.int_value()) {
                if num.is_integer() && (1..=12).contains(&h) {
                    return (format!("{} {m}", numbers::cardinal(h)), Some(Extra { sentence_dot: true }));
                }
            }
            if let Some((one, many)) = unit(nc, false) {
                let u = if num.is_integer() && num.int == "1" { one } else { many };
                return (format!("{} {u}", num.words(false)), Some(Extra { sentence_dot: false }));
            }
            if nc == "%" {
                return (format!("{} percent", num.words(false)), Some(Extra { sentence_dot: false }));
            }
            if let (Some(m), Some(d)) = (month_index(nc), num.int_value()) {
                if num.is_integer() && !num.negative && (1..=31).contains(&d) && !nc.ends_with('.') {
                    return (format!("the {} of {}", numbers::ordinal(d), MONTHS[m]), Some(Extra { sentence_dot: false }));
                }
            }
        }
        return (num.words(true), None);
    }

    // Percent.
    if rest == "%" {
        return (format!("{} percent", num.words(false)), None);
    }
    // Ordinals: "1st", "22nd", "103rd", "4th".
    if num.is_integer() && !num.negative {
        for suf in ["st", "nd", "rd", "th"] {
            if let Some(after) = lower_rest.strip_prefix(suf) {
                if !after.starts_with(|c: char| c.is_ascii_alphabetic()) {
                    let ord = numbers::ordinalize(&numbers::cardinal_str(&num.int));
                    let after_src = &rest[suf.len()..];
                    let tail = if after_src.is_empty() { String::new() } else { expand_generic(after_src) };
                    return (join_tail(ord, &tail), None);
                }
            }
        }
        // Decades and plurals: "1990s" -> "nineteen nineties", "5s" -> "fives".
        if lower_rest == "s" || lower_rest == "'s" || lower_rest == "’s" {
            return (numbers::pluralize(&num.words(true)), None);
        }
    }
    // Times: "3:30", "14:05", "3:30pm", "1:02:03".
    if rest.starts_with(':') {
        if let Some((h, m, s, used)) = parse_time(num, rest) {
            let after = &rest[used..];
            if let Some(mer) = meridiem(after) {
                return (format!("{} {mer}", time_words(h, m, s, true)), None);
            }
            if after.is_empty() {
                if let Some(mer) = next_core.and_then(meridiem) {
                    return (format!("{} {mer}", time_words(h, m, s, true)), Some(Extra { sentence_dot: true }));
                }
            }
            return (join_tail(time_words(h, m, s, false), &expand_generic(after)), None);
        }
        // A ratio or score: "3:2" -> "three to two".
        if let Some((n2, r2)) = rest.strip_prefix(':').and_then(parse_num) {
            if r2.is_empty() && !n2.negative {
                return (format!("{} to {}", num.words(false), n2.words(false)), None);
            }
        }
    }
    // "3pm", "11am".
    if let (Some(mer), Some(h)) = (meridiem(rest), num.int_value()) {
        if num.is_integer() && (1..=12).contains(&h) {
            return (format!("{} {mer}", numbers::cardinal(h)), None);
        }
    }
    // Units attached: "5km", "3.5GHz", "20°C", "100m".
    if let Some((one, many)) = unit(rest, true) {
        let u = if num.is_integer() && num.int == "1" { one } else { many };
        return (format!("{} {u}", num.words(false)), None);
    }
    // Currency written after the number: "5€", "10$".
    if let Some(c) = rest.chars().next().and_then(currency) {
        if rest.len() == c.0.len_utf8() {
            return (currency_words(c, num, None), None);
        }
    }
    if let Some(scale) = scale_word(rest) {
        if rest.len() == 1 || rest.len() == 2 {
            return (format!("{} {scale}", num.words(false)), None);
        }
    }
    // Dates, ranges, phone numbers: "2024-03-15", "5-10", "1990–1995", "555-1234".
    if rest.starts_with(['-', '–']) && num.is_integer() && !num.negative {
        if let Some(s) = dash_numbers(num, rest) {
            return (s, None);
        }
    }
    // Fractions and dates with slashes: "1/2", "3/4", "3/15/2024".
    if rest.starts_with('/') && num.is_integer() && !num.negative {
        if let Some(s) = slash_numbers(num, rest) {
            return (s, None);
        }
    }
    // Dimensions: "1920x1080", "4x4".
    if let Some(r) = rest.strip_prefix(['x', '×']) {
        if let Some((n2, r2)) = parse_num(r) {
            if !n2.negative {
                let (tail, _) = expand_number(&n2, r2, None);
                return (format!("{} by {tail}", num.words(false)), None);
            }
        }
    }
    // Plus between numbers: "2+2".
    if let Some(r) = rest.strip_prefix('+') {
        if let Some((n2, r2)) = parse_num(r) {
            let (tail, _) = expand_number(&n2, r2, None);
            return (format!("{} plus {tail}", num.words(false)), None);
        }
    }
    // A compound: "3-year-old" -> "three-year-old"; "mp3" handled in generic.
    if let Some(r) = rest.strip_prefix('-') {
        if r.starts_with(|c: char| c.is_alphabetic()) {
            return (format!("{}-{}", num.words(false), expand_generic(r)), None);
        }
    }
    // Anything else: the number, then the rest as text ("3D" -> "three D").
    (join_tail(num.words(true), &expand_generic(rest)), None)
}

fn join_tail(head: String, tail: &str) -> String {
    if tail.trim().is_empty() {
        head
    } else {
        format!("{head} {}", tail.trim())
    }
}

/// Digit groups joined by dashes: ISO dates, ranges, phone numbers.
fn dash_numbers(first: &Num<'_>, rest: &str) -> Option<String> {
    // Split the whole thing into groups of digits separated by single dashes.
    let mut groups: Vec<&str> = vec![];
    let mut r = rest;
    while let Some(after) = r.strip_prefix(['-', '–']) {
        let n = after.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            break;
        }
        groups.push(&after[..n]);
        r = &after[n..];
    }
    if groups.is_empty() {
        return None;
    }
    let first_digits = first.int.as_str();
    // The dash form used a valid structure only if nothing but a simple tail is left.
    let tail = if r.is_empty() { String::new() } else { expand_generic(r) };
    if groups.len() == 2 && first_digits.len() == 4 && groups[0].len() == 2 && groups[1].len() == 2 {
        let (y, m, d) = (first_digits.parse().ok()?, groups[0].parse().ok()?, groups[1].parse().ok()?);
        if let Some(s) = date_words(y, m, d) {
            return Some(join_tail(s, &tail));
        }
    }
    let phone_like = groups.len() >= 2
        || first_digits.starts_with('0')
        || groups[0].starts_with('0') && groups[0].len() > 1
        || (first_digits.len() == 3 && groups[0].len() == 4);
    if phone_like {
        let mut parts = vec![numbers::digits(first_digits)];
        parts.extend(groups.iter().map(|g| numbers::digits(g)));
        return Some(join_tail(parts.join(", "), &tail));
    }
    // A range: "5-10" -> "five to ten", "1990-1995" -> years. A trailing "%"/unit belongs to both.
    let second = Num { negative: false, int: groups[0].to_string(), grouped: false, frac: None };
    let (second_words, _) = expand_number(&second, r, None);
    Some(format!("{} to {second_words}", first.words(true)))
}

/// "1/2" -> "one half"; "3/15/2024" -> "March fifteenth, twenty twenty-four" (month first,
/// unless the first number cannot be a month); anything else "N slash M".
fn slash_numbers(first: &Num<'_>, rest: &str) -> Option<String> {
    let mut groups: Vec<&str> = vec![];
    let mut r = rest;
    while let Some(after) = r.strip_prefix('/') {
        let n = after.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            break;
        }
        groups.push(&after[..n]);
        r = &after[n..];
    }
    if groups.is_empty() {
        return None;
    }
    let tail = if r.is_empty() { String::new() } else { expand_generic(r) };
    let a: u64 = first.int_value()?;
    if groups.len() == 2 && groups[1].len() == 4 {
        let b: u64 = groups[0].parse().ok()?;
        let y: u64 = groups[1].parse().ok()?;
        let (m, d) = if a > 12 { (b, a) } else { (a, b) };
        if let Some(s) = date_words(y, m, d) {
            return Some(join_tail(s, &tail));
        }
    }
    if groups.len() == 1 {
        let b: u64 = groups[0].parse().ok()?;
        if let Some((one, many)) = numbers::fraction_denominator(b) {
            if a >= 1 && a < b {
                let d = if a == 1 { one } else { many };
                return Some(join_tail(format!("{} {d}", numbers::cardinal(a)), &tail));
            }
        }
    }
    let mut parts = vec![first.words(false)];
    parts.extend(groups.iter().map(|g| numbers::cardinal_str(g)));
    Some(join_tail(parts.join(" slash "), &tail))
}

// ---------------------------------------------------------------------------------------------
// URLs and e-mail

const TLDS: &[&str] = &[
    "com", "org", "net", "edu", "gov", "io", "ai", "co", "uk", "us", "de", "fr", "eu", "dev", "app", "info", "biz", "tv", "ca", "au", "jp", "cn",
    "ru", "nl", "es", "ch", "se", "fi", "xyz", "ly", "gg", "sh", "me", "ie", "nz", "in", "br", "mil", "int", "tech", "cloud", "online", "site",
];

fn email_words(core: &str) -> Option<String> {
    let (local, domain) = core.split_once('@')?;
    if local.is_empty() || !domain.contains('.') || domain.contains('@') {
        return None;
    }
    let ok = |s: &str| s.chars().all(|c| c.is_ascii_alphanumeric() || "._%+-".contains(c));
    if !ok(local) || !ok(domain) || domain.starts_with('.') || domain.ends_with('.') {
        return None;
    }
    Some(format!("{} at {}", spell_url_part(local), host_words(domain)))
}

fn url_words(core: &str) -> Option<String> {
    let lower = core.to_ascii_lowercase();
    let mut rest = core;
    let mut explicit = false;
    for scheme in ["https://", "http://", "ftp://"] {
        if lower.starts_with(scheme) {
            rest = &core[scheme.len()..];
            explicit = true;
            break;
        }
    }
    if rest.to_ascii_lowercase().starts_with("www.") {
        rest = &rest[4..];
        explicit = true;
    }
    let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (host, path) = rest.split_at(host_end);
    let host = host.split(':').next().unwrap_or(host); // drop a port
    if host.is_empty() || !host.contains('.') && !explicit {
        return None;
    }
    let labels_ok = host.split('.').all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    if !labels_ok {
        return None;
    }
    if !explicit {
        let tld = host.rsplit('.').next().unwrap_or("");
        let first = host.split('.').next().unwrap_or("");
        if !TLDS.contains(&tld) || !first.chars().any(|c| c.is_ascii_alphabetic()) {
            return None;
        }
    }
    let mut out = host_words(host);
    // The path is read segment by segment; query strings and fragments are not read.
    let path = path.split(['?', '#']).next().unwrap_or("");
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        out.push_str(" slash ");
        out.push_str(&spell_url_part(seg));
    }
    Some(out)
}

fn host_words(host: &str) -> String {
    host.split('.').map(spell_url_part).collect::<Vec<_>>().join(" dot ")
}

/// One URL/e-mail component: separators read out, digits as numbers.
fn spell_url_part(part: &str) -> String {
    let mut out = String::new();
    let mut digits = String::new();
    let flush = |digits: &mut String, out: &mut String| {
        if !digits.is_empty() {
            out.push(' ');
            out.push_str(&if digits.len() <= 4 && !digits.starts_with('0') { numbers::cardinal_str(digits) } else { numbers::digits(digits) });
            out.push(' ');
            digits.clear();
        }
    };
    for c in part.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        flush(&mut digits, &mut out);
        match c {
            '.' => out.push_str(" dot "),
            '_' => out.push_str(" underscore "),
            '-' => out.push_str(" dash "),
            '+' => out.push_str(" plus "),
            '%' | '=' | '&' | '~' => out.push(' '),
            c if c.is_ascii_alphabetic() => out.push(c),
            _ => out.push(' '),
        }
    }
    flush(&mut digits, &mut out);
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

// ---------------------------------------------------------------------------------------------
// Generic words

/// Latin letters (ASCII, Latin-1, Latin Extended A/B, IPA extensions, Latin Extended Additional).
fn is_latin_letter(c: char) -> bool {
    c.is_ascii_alphabetic() || matches!(c as u32, 0xC0..=0x24F | 0x250..=0x2AF | 0x1E00..=0x1EFF) && c != '×' && c != '÷'
}

/// Combining diacritics (a decomposed "é"): kept, espeak-ng reads them.
fn is_combining(c: char) -> bool {
    matches!(c as u32, 0x300..=0x36F)
}

/// Any other word: keep Latin letters, apostrophes, hyphens and prosody punctuation; expand
/// digit runs and a few symbols; drop the whole word if it has non-Latin letters; remove emoji
/// and other symbols.
fn expand_generic(word: &str) -> String {
    if word.chars().any(|c| c.is_alphabetic() && !is_latin_letter(c) && !is_combining(c)) {
        return String::new();
    }
    let chars: Vec<char> = word.chars().collect();
    let mut out = String::with_capacity(word.len() + 8);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_digit() {
            // A digit run (with inner separators) inside a word: "mp3", "COVID-19", "B2B".
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_digit() || (matches!(chars[i], ',' | '.') && chars.get(i + 1).is_some_and(char::is_ascii_digit)))
            {
                i += 1;
            }
            let run: String = chars[start..i].iter().collect();
            let words = parse_num(&run).map(|(n, _)| n.words(true)).unwrap_or_else(|| numbers::digits(&run));
            if out.ends_with(|c: char| c.is_alphabetic()) {
                out.push(' ');
            }
            out.push_str(&words);
            if chars.get(i).is_some_and(|c| c.is_alphabetic()) {
                out.push(' ');
            }
            continue;
        }
        let prev_letter = i > 0 && chars[i - 1].is_alphanumeric();
        let next_char = chars.get(i + 1).copied();
        match c {
            c if is_latin_letter(c) || is_combining(c) => out.push(c),
            '\'' | '’' | '‘' => out.push(c),
            '-' => {
                // "well-known" keeps its hyphen; "--" is a dash; a hyphen at an edge is dropped.
                if next_char == Some('-') {
                    out.push_str(" — ");
                    while chars.get(i + 1) == Some(&'-') {
                        i += 1;
                    }
                } else if prev_letter && next_char.is_some_and(char::is_alphanumeric) {
                    out.push('-');
                } else {
                    out.push(' ');
                }
            }
            '–' => out.push_str(if prev_letter && next_char.is_some_and(char::is_alphanumeric) { "-" } else { " — " }),
            '—' => out.push_str(" — "),
            '.' => {
                if chars.get(i + 1) == Some(&'.') {
                    out.push_str("… ");
                    while chars.get(i + 1) == Some(&'.') {
                        i += 1;
                    }
                } else if prev_letter && next_char.is_some_and(|c| c.is_lowercase()) {
                    // "Node.js", "file.txt": a dot read out.
                    out.push_str(" dot ");
                } else if prev_letter && next_char.is_some_and(char::is_alphanumeric) {
                    // "end.Next": a missing space after a sentence end.
                    out.push_str(". ");
                } else {
                    out.push('.');
                }
            }
            ',' | '!' | '?' | ';' | ':' | '…' => {
                out.push(c);
                out.push(' ');
            }
            '"' | '“' | '”' | '(' | ')' => {
                out.push(' ');
                out.push(c);
                out.push(' ');
            }
            '&' => out.push_str(" and "),
            '+' => out.push_str(" plus "),
            '@' => out.push_str(" at "),
            '%' => out.push_str(" percent "),
            '=' => out.push_str(" equals "),
            '/' | '\\' | '|' | '_' | '[' | ']' | '{' | '}' | '<' | '>' => out.push(' '),
            // Emoji, symbols, other punctuation: removed (a space keeps the neighbours apart).
            _ => out.push(' '),
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affixes() {
        assert_eq!(split_affixes("\"Hello,\""), ("\"", "Hello", ",\""));
        assert_eq!(split_affixes("Dr."), ("", "Dr.", ""));
        assert_eq!(split_affixes("U.S.,"), ("", "U.S.", ","));
        assert_eq!(split_affixes("end."), ("", "end", "."));
    }

    #[test]
    fn tags_and_links() {
        assert_eq!(normalize("<speak>Hello <b>there</b></speak>"), "Hello there");
        assert_eq!(normalize("a < b"), "a b");
        assert_eq!(normalize("see [the docs](https://x.org/a) now"), "see the docs now");
        assert_eq!(normalize("Tom &amp; Jerry"), "Tom and Jerry");
    }
}
