//! Numbers to English words (the part of `num2words` that misaki uses, without "and").
//!
//! misaki drops the "and" of British cardinals ("one hundred and five" -> "one hundred five")
//! unless asked otherwise, so we never produce it.

const ONES: [&str; 20] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
];
const TENS: [&str; 10] = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"];
const SCALES: [&str; 7] = ["", "thousand", "million", "billion", "trillion", "quadrillion", "quintillion"];

/// Words of one digit.
pub fn digit_word(d: u8) -> &'static str {
    ONES[(d % 10) as usize]
}

/// "1 2 3" read digit by digit: "one two three".
pub fn digits(s: &str) -> String {
    let words: Vec<&str> = s.bytes().filter(u8::is_ascii_digit).map(|b| digit_word(b - b'0')).collect();
    words.join(" ")
}

fn below_hundred(n: u64, out: &mut Vec<String>) {
    debug_assert!(n < 100);
    if n < 20 {
        out.push(ONES[n as usize].to_string());
    } else if n.is_multiple_of(10) {
        out.push(TENS[(n / 10) as usize].to_string());
    } else {
        out.push(format!("{}-{}", TENS[(n / 10) as usize], ONES[(n % 10) as usize]));
    }
}

fn below_thousand(n: u64, out: &mut Vec<String>) {
    debug_assert!(n < 1000);
    if n >= 100 {
        out.push(ONES[(n / 100) as usize].to_string());
        out.push("hundred".to_string());
        if !n.is_multiple_of(100) {
            below_hundred(n % 100, out);
        }
    } else {
        below_hundred(n, out);
    }
}

/// Cardinal words: 1234 -> "one thousand two hundred thirty-four".
pub fn cardinal(n: u64) -> String {
    if n == 0 {
        return "zero".into();
    }
    let mut groups = Vec::new();
    let mut rest = n;
    while rest > 0 {
        groups.push(rest % 1000);
        rest /= 1000;
    }
    let mut out = Vec::new();
    for (i, &g) in groups.iter().enumerate().rev() {
        if g == 0 {
            continue;
        }
        below_thousand(g, &mut out);
        if i > 0 {
            out.push(SCALES[i].to_string());
        }
    }
    out.join(" ")
}

/// Cardinal of a digit string of any length: numbers too long for `u64` (or with more than 18
/// digits, past "quintillion") are read digit by digit.
pub fn cardinal_str(digits_str: &str) -> String {
    let d: String = digits_str.chars().filter(char::is_ascii_digit).collect();
    if d.is_empty() {
        return String::new();
    }
    if d.len() > 18 {
        return digits(&d);
    }
    match d.parse::<u64>() {
        Ok(n) => cardinal(n),
        Err(_) => digits(&d),
    }
}

/// Turn the last word of a cardinal into its ordinal: "twenty-one" -> "twenty-first".
pub fn ordinalize(words: &str) -> String {
    // Only the last word (after the last space or hyphen) changes.
    let cut = words.rfind([' ', '-']).map(|i| i + 1).unwrap_or(0);
    let (head, last) = words.split_at(cut);
    let last = match last {
        "one" => "first".to_string(),
        "two" => "second".to_string(),
        "three" => "third".to_string(),
        "five" => "fifth".to_string(),
        "eight" => "eighth".to_string(),
        "nine" => "ninth".to_string(),
        "twelve" => "twelfth".to_string(),
        w if w.ends_with('y') => format!("{}ieth", &w[..w.len() - 1]),
        w => format!("{w}th"),
    };
    format!("{head}{last}")
}

/// Ordinal words: 22 -> "twenty-second".
pub fn ordinal(n: u64) -> String {
    ordinalize(&cardinal(n))
}

/// Plural of a number reading ("nineteen nineties", "the eighties", "sixes").
pub fn pluralize(words: &str) -> String {
    if let Some(stem) = words.strip_suffix('y') {
        format!("{stem}ies")
    } else if words.ends_with('x') || words.ends_with('s') {
        format!("{words}es")
    } else {
        format!("{words}s")
    }
}

/// Year reading for 1000..=2099 style years: 1999 "nineteen ninety-nine", 1900 "nineteen hundred",
/// 1905 "nineteen oh five", 2005 "two thousand five", 2024 "twenty twenty-four".
/// Returns `None` outside 1000..=9999.
pub fn year(n: u64) -> Option<String> {
    if !(1000..=9999).contains(&n) {
        return None;
    }
    let hi = n / 100;
    let lo = n % 100;
    // 2000-2009 and x000-x009: "two thousand five" is how these are said.
    if hi.is_multiple_of(10) && lo < 10 {
        return Some(cardinal(n));
    }
    let mut out = Vec::new();
    below_hundred(hi, &mut out);
    if lo == 0 {
        out.push("hundred".into());
    } else if lo < 10 {
        out.push("oh".into());
        out.push(ONES[lo as usize].into());
    } else {
        below_hundred(lo, &mut out);
    }
    Some(out.join(" "))
}

/// Denominator words for simple fractions (singular, plural).
pub fn fraction_denominator(d: u64) -> Option<(&'static str, &'static str)> {
    Some(match d {
        2 => ("half", "halves"),
        3 => ("third", "thirds"),
        4 => ("quarter", "quarters"),
        5 => ("fifth", "fifths"),
        6 => ("sixth", "sixths"),
        7 => ("seventh", "sevenths"),
        8 => ("eighth", "eighths"),
        9 => ("ninth", "ninths"),
        10 => ("tenth", "tenths"),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cardinals() {
        assert_eq!(cardinal(0), "zero");
        assert_eq!(cardinal(13), "thirteen");
        assert_eq!(cardinal(40), "forty");
        assert_eq!(cardinal(99), "ninety-nine");
        assert_eq!(cardinal(100), "one hundred");
        assert_eq!(cardinal(105), "one hundred five");
        assert_eq!(cardinal(1234), "one thousand two hundred thirty-four");
        assert_eq!(cardinal(1_000_000), "one million");
        assert_eq!(cardinal(2_000_001), "two million one");
        assert_eq!(cardinal_str("1234567890123456789012"), digits("1234567890123456789012"));
    }

    #[test]
    fn ordinals() {
        assert_eq!(ordinal(1), "first");
        assert_eq!(ordinal(22), "twenty-second");
        assert_eq!(ordinal(103), "one hundred third");
        assert_eq!(ordinal(20), "twentieth");
        assert_eq!(ordinal(12), "twelfth");
        assert_eq!(ordinal(1000), "one thousandth");
    }

    #[test]
    fn years() {
        assert_eq!(year(1999).unwrap(), "nineteen ninety-nine");
        assert_eq!(year(2005).unwrap(), "two thousand five");
        assert_eq!(year(2000).unwrap(), "two thousand");
        assert_eq!(year(2024).unwrap(), "twenty twenty-four");
        assert_eq!(year(2010).unwrap(), "twenty ten");
        assert_eq!(year(1900).unwrap(), "nineteen hundred");
        assert_eq!(year(1905).unwrap(), "nineteen oh five");
        assert_eq!(year(1100).unwrap(), "eleven hundred");
        assert_eq!(pluralize("nineteen ninety"), "nineteen nineties");
        assert_eq!(pluralize("six"), "sixes");
    }
}
