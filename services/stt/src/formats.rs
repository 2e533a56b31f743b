//! OpenAI's transcription response formats: json, text, srt, vtt, verbose_json.

use std::str::FromStr;

use serde_json::json;
use voice_whisper::Transcript;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFormat {
    Json,
    Text,
    Srt,
    Vtt,
    VerboseJson,
}

impl FromStr for ResponseFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "" | "json" => Ok(Self::Json),
            "text" => Ok(Self::Text),
            "srt" => Ok(Self::Srt),
            "vtt" => Ok(Self::Vtt),
            "verbose_json" => Ok(Self::VerboseJson),
            other => Err(format!("unknown response_format `{other}` (json, text, srt, vtt, verbose_json)")),
        }
    }
}

impl ResponseFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json | Self::VerboseJson => "application/json",
            Self::Text | Self::Srt => "text/plain; charset=utf-8",
            Self::Vtt => "text/vtt; charset=utf-8",
        }
    }

    pub fn render(self, t: &Transcript, task: &str) -> String {
        match self {
            Self::Json => json!({ "text": t.text }).to_string(),
            Self::Text => format!("{}\n", t.text),
            Self::Srt => srt(t),
            Self::Vtt => vtt(t),
            Self::VerboseJson => json!({
                "task": task,
                "language": language_name(&t.language),
                "duration": round3(t.duration),
                "text": t.text,
                "segments": t.segments.iter().map(|s| json!({
                    "id": s.id,
                    "seek": s.seek,
                    "start": round3(s.start),
                    "end": round3(s.end),
                    "text": s.text,
                    "tokens": s.tokens,
                    "temperature": s.temperature,
                    "avg_logprob": s.avg_logprob,
                    "compression_ratio": s.compression_ratio,
                    "no_speech_prob": s.no_speech_prob,
                })).collect::<Vec<_>>(),
            })
            .to_string(),
        }
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn timestamp(secs: f64, sep: char) -> String {
    let ms = (secs.max(0.0) * 1000.0).round() as u64;
    format!("{:02}:{:02}:{:02}{sep}{:03}", ms / 3_600_000, (ms / 60_000) % 60, (ms / 1000) % 60, ms % 1000)
}

fn srt(t: &Transcript) -> String {
    let mut out = String::new();
    for (i, s) in t.segments.iter().enumerate() {
        out.push_str(&format!("{}\n{} --> {}\n{}\n\n", i + 1, timestamp(s.start, ','), timestamp(s.end, ','), s.text.trim()));
    }
    out
}

fn vtt(t: &Transcript) -> String {
    let mut out = String::from("WEBVTT\n\n");
    for s in &t.segments {
        out.push_str(&format!("{} --> {}\n{}\n\n", timestamp(s.start, '.'), timestamp(s.end, '.'), s.text.trim()));
    }
    out
}

/// OpenAI reports the language by name in verbose_json.
pub fn language_name(code: &str) -> String {
    let name = match code {
        "en" => "english",
        "zh" => "chinese",
        "de" => "german",
        "es" => "spanish",
        "ru" => "russian",
        "ko" => "korean",
        "fr" => "french",
        "ja" => "japanese",
        "pt" => "portuguese",
        "tr" => "turkish",
        "pl" => "polish",
        "ca" => "catalan",
        "nl" => "dutch",
        "ar" => "arabic",
        "sv" => "swedish",
        "it" => "italian",
        "id" => "indonesian",
        "hi" => "hindi",
        "fi" => "finnish",
        "vi" => "vietnamese",
        "he" => "hebrew",
        "uk" => "ukrainian",
        "el" => "greek",
        "cs" => "czech",
        "ro" => "romanian",
        "da" => "danish",
        "hu" => "hungarian",
        "no" => "norwegian",
        "th" => "thai",
        other => other,
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use voice_whisper::Segment;

    fn t() -> Transcript {
        let seg = |id, start, end, text: &str| Segment {
            id,
            seek: 0,
            start,
            end,
            text: text.into(),
            tokens: vec![],
            temperature: 0.0,
            avg_logprob: -0.1,
            compression_ratio: 1.0,
            no_speech_prob: 0.0,
        };
        Transcript {
            text: "Hello there. General Kenobi.".into(),
            language: "en".into(),
            duration: 3725.5,
            segments: vec![seg(0, 0.0, 1.5, " Hello there."), seg(1, 3661.25, 3725.5, " General Kenobi.")],
            window_seconds: 30.0,
        }
    }

    #[test]
    fn subtitles() {
        let srt = ResponseFormat::Srt.render(&t(), "transcribe");
        assert!(srt.starts_with("1\n00:00:00,000 --> 00:00:01,500\nHello there.\n\n2\n01:01:01,250 --> 01:02:05,500\n"), "{srt}");
        let vtt = ResponseFormat::Vtt.render(&t(), "transcribe");
        assert!(vtt.starts_with("WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nHello there.\n"), "{vtt}");
        let v: serde_json::Value = serde_json::from_str(&ResponseFormat::VerboseJson.render(&t(), "transcribe")).unwrap();
        assert_eq!(v["language"], "english");
        assert_eq!(v["segments"][1]["start"], 3661.25);
        assert!("word".parse::<ResponseFormat>().is_err());
    }
}
