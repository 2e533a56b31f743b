//! Text normalisation: one exact expectation per category.

use voice_g2p::normalize;

fn check(cases: &[(&str, &str)]) {
    let mut failures = Vec::new();
    for (input, expected) in cases {
        let got = normalize(input);
        if got != *expected {
            failures.push(format!("{input:?}\n   expected {expected:?}\n   got      {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn cardinals() {
    check(&[
        ("I have 3 cats", "I have three cats"),
        ("0", "zero"),
        ("42", "forty-two"),
        ("1,234 people", "one thousand two hundred thirty-four people"),
        ("1,000,000", "one million"),
        ("12345", "twelve thousand three hundred forty-five"),
        ("It is -5 outside", "It is minus five outside"),
        ("pi is 3.14", "pi is three point one four"),
        ("0.5", "zero point five"),
        (".5", "point five"),
        ("agent 007", "agent zero zero seven"),
        ("1, 2, 3.", "one, two, three."),
    ]);
}

#[test]
fn ordinals() {
    check(&[
        ("1st", "first"),
        ("the 22nd time", "the twenty-second time"),
        ("103rd", "one hundred third"),
        ("4th", "fourth"),
        ("11th and 12th", "eleventh and twelfth"),
        ("the 20th century", "the twentieth century"),
    ]);
}

#[test]
fn years_and_decades() {
    check(&[
        ("In 1999 we met", "In nineteen ninety-nine we met"),
        ("2005", "two thousand five"),
        ("2024", "twenty twenty-four"),
        ("1905", "nineteen oh five"),
        ("1900", "nineteen hundred"),
        ("2000", "two thousand"),
        ("2010", "twenty ten"),
        ("2100", "two thousand one hundred"),
        ("1099", "one thousand ninety-nine"),
        ("the 1990s", "the nineteen nineties"),
        ("the '80s", "the eighties"),
        ("from 1990-1995", "from nineteen ninety to nineteen ninety-five"),
    ]);
}

#[test]
fn currency() {
    check(&[
        ("$5", "five dollars"),
        ("$1", "one dollar"),
        ("$3.50", "three dollars and fifty cents"),
        ("$0.50", "fifty cents"),
        ("$1.01", "one dollar and one cent"),
        ("$5.00", "five dollars"),
        ("It cost $3.50.", "It cost three dollars and fifty cents."),
        ("£3.50", "three pounds and fifty pence"),
        ("£1", "one pound"),
        ("€2,000", "two thousand euros"),
        ("5€", "five euros"),
        ("$5 million", "five million dollars"),
        ("$2.5bn", "two point five billion dollars"),
        ("$10k", "ten thousand dollars"),
        ("-$5", "minus five dollars"),
    ]);
}

#[test]
fn percentages() {
    check(&[
        ("50%", "fifty percent"),
        ("3.5%", "three point five percent"),
        ("-2%", "minus two percent"),
        ("5 %", "five percent"),
        ("5-10%", "five to ten percent"),
    ]);
}

#[test]
fn times() {
    check(&[
        ("3:30 pm", "three thirty p.m."),
        // The abbreviation dot and the sentence end are both kept.
        ("at 3:30pm.", "at three thirty p.m.."),
        ("14:05", "fourteen oh five"),
        ("14:00", "fourteen hundred"),
        ("3:00", "three o'clock"),
        ("3:00 PM", "three p.m."),
        ("3pm", "three p.m."),
        ("11 a.m. today", "eleven a.m. today"),
        ("Meet at 7 pm. Then", "Meet at seven p.m.. Then"),
        ("1:02:03", "one oh two and three seconds"),
        ("a 3:2 win", "a three to two win"),
    ]);
}

#[test]
fn dates() {
    check(&[
        ("2024-03-15", "March fifteenth, twenty twenty-four"),
        ("March 5th", "March fifth"),
        ("on March 5, 2024.", "on March fifth, twenty twenty-four."),
        ("Jan. 1", "January first"),
        ("in Sept. we", "in September we"),
        ("5 May", "the fifth of May"),
        ("3/15/2024", "March fifteenth, twenty twenty-four"),
        ("15/3/2024", "March fifteenth, twenty twenty-four"),
    ]);
}

#[test]
fn abbreviations() {
    check(&[
        ("Mr. Smith", "Mister Smith"),
        ("Mrs. Smith", "Missus Smith"),
        ("Dr. Who", "Doctor Who"),
        ("St. Louis", "Saint Louis"),
        ("Elm St. is", "Elm Street is"),
        ("on Elm St.", "on Elm Street."),
        ("cats vs. dogs", "cats versus dogs"),
        ("apples, pears, etc.", "apples, pears, et cetera."),
        ("fruit, e.g. apples", "fruit, for example apples"),
        ("one, i.e. this", "one, that is this"),
        ("approx. 5 km", "approximately five kilometers"),
        ("No. 5", "number five"),
        ("#1 fan", "number one fan"),
        ("the U.S. army", "the U.S. army"),
        ("I said no.", "I said no."),
    ]);
}

#[test]
fn units() {
    check(&[
        ("5 km", "five kilometers"),
        ("5km", "five kilometers"),
        ("1 kg", "one kilogram"),
        ("10kg", "ten kilograms"),
        ("100m", "one hundred meters"),
        ("20°C", "twenty degrees Celsius"),
        ("60 mph", "sixty miles per hour"),
        ("3.5GHz", "three point five gigahertz"),
        ("16 GB", "sixteen gigabytes"),
    ]);
}

#[test]
fn urls_and_emails() {
    check(&[
        ("example.com", "example dot com"),
        ("Visit https://www.example.com/docs/intro?x=1 now", "Visit example dot com slash docs slash intro now"),
        ("http://github.com", "github dot com"),
        ("a@b.org", "a at b dot org"),
        ("mail john.doe@example.co.uk.", "mail john dot doe at example dot co dot uk."),
        ("Node.js", "Node dot js"),
    ]);
}

#[test]
fn symbols() {
    check(&[
        ("Tom & Jerry", "Tom and Jerry"),
        ("AT&T", "AT and T"),
        ("2+2", "two plus two"),
        ("2 + 2 = 4", "two plus two equals four"),
        ("and/or", "and or"),
        ("1/2 cup", "one half cup"),
        ("3/4", "three quarters"),
        ("1920x1080", "one thousand nine hundred twenty by one thousand eighty"),
        ("a 3-year-old", "a three-year-old"),
        ("COVID-19", "COVID-nineteen"),
        ("mp3", "mp three"),
        ("Call 555-1234", "Call five five five, one two three four"),
    ]);
}

#[test]
fn punctuation_and_dashes() {
    check(&[
        ("Wait -- what?", "Wait — what?"),
        ("Wait - what?", "Wait — what?"),
        ("Wait – what?", "Wait — what?"),
        ("Wait—what?", "Wait — what?"),
        ("Well...", "Well…"),
        ("Well… ok", "Well… ok"),
        ("«Bonjour»", "“Bonjour”"),
        ("hello , world", "hello, world"),
        ("[note]", "(note)"),
        ("**bold** and _it_", "bold and it"),
    ]);
}

#[test]
fn markup_control_emoji_and_scripts() {
    check(&[
        ("<speak>Hello <break time=\"1s\"/> world</speak>", "Hello world"),
        ("<p>One</p><p>Two</p>", "One Two"),
        ("a < b", "a b"),
        ("Tom &amp; Jerry", "Tom and Jerry"),
        ("see [the docs](https://x.org/a)", "see the docs"),
        ("hello\u{0}\u{7}world", "helloworld"),
        ("zero\u{200B}width", "zerowidth"),
        ("I love it 😀!", "I love it!"),
        ("Привет, world", "world"),
        ("hello 你好 world", "hello world"),
        ("Ｆｕｌｌ ｗｉｄｔｈ", "Full width"),
        ("café naïve", "café naïve"),
        ("  lots   of\t\tspace  ", "lots of space"),
        ("Title\n\nBody text", "Title. Body text"),
        ("a wrapped\nline", "a wrapped line"),
        ("Item one\nItem two", "Item one. Item two"),
    ]);
}
