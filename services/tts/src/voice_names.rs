//! OpenAI's voice names, mapped to Kokoro voices, so clients that send `voice="alloy"` (the
//! openai SDK's examples, LiveKit's and Pipecat's OpenAI TTS plugins) work unchanged. Kokoro v1.0
//! ships five voices named after OpenAI's (af_alloy, am_echo, bm_fable, af_nova, am_onyx); the
//! others go to a Kokoro voice of the same gender, American unless OpenAI's is British-sounding.

/// (OpenAI name, Kokoro voice).
pub const OPENAI_VOICES: &[(&str, &str)] = &[
    ("alloy", "af_alloy"),
    ("ash", "am_adam"),
    ("ballad", "bm_george"),
    ("cedar", "am_michael"),
    ("coral", "af_heart"),
    ("echo", "am_echo"),
    ("fable", "bm_fable"),
    ("marin", "af_bella"),
    ("nova", "af_nova"),
    ("onyx", "am_onyx"),
    ("sage", "af_sarah"),
    ("shimmer", "af_sky"),
    ("verse", "am_puck"),
];

/// The Kokoro voice for an OpenAI voice name (any case), or `spec` itself.
pub fn kokoro_voice(spec: &str) -> &str {
    OPENAI_VOICES.iter().find(|(name, _)| name.eq_ignore_ascii_case(spec)).map(|(_, id)| *id).unwrap_or(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_and_anything_else_passes_through() {
        assert_eq!(kokoro_voice("alloy"), "af_alloy");
        assert_eq!(kokoro_voice("Onyx"), "am_onyx");
        assert_eq!(kokoro_voice("af_heart"), "af_heart");
        assert_eq!(kokoro_voice("af_heart:0.5+am_adam:0.5"), "af_heart:0.5+am_adam:0.5");
        let mut names: Vec<&str> = OPENAI_VOICES.iter().map(|(n, _)| *n).collect();
        names.dedup();
        assert_eq!(names.len(), OPENAI_VOICES.len());
    }
}
