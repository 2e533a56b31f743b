//! LiveKit access tokens (JWT signed with the API secret), through LiveKit's own `livekit-api`.

use std::time::Duration;

use anyhow::{Context, Result};
use livekit_api::access_token::{AccessToken, VideoGrants};

#[derive(Clone)]
pub struct LiveKitKeys {
    pub api_key: String,
    pub api_secret: voice_runtime::auth::Secret,
}

impl std::fmt::Debug for LiveKitKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveKitKeys").field("api_key", &self.api_key).field("api_secret", &"<redacted>").finish()
    }
}

/// A token to join `room` as `identity`, publishing and subscribing audio and data.
pub fn mint(keys: &LiveKitKeys, room: &str, identity: &str, name: &str, ttl: Duration) -> Result<String> {
    AccessToken::with_api_key(&keys.api_key, keys.api_secret.expose())
        .with_identity(identity)
        .with_name(name)
        .with_ttl(ttl)
        .with_grants(VideoGrants {
            room_join: true,
            room: room.to_string(),
            can_publish: Some(true),
            can_subscribe: Some(true),
            can_publish_data: Some(true),
            ..Default::default()
        })
        .to_jwt()
        .context("signing the LiveKit access token")
}

/// Room names and identities we accept from the outside: short, URL- and log-safe.
pub fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

pub fn random_name(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::random::<u32>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_carry_the_room_grant_and_verify_with_the_secret() {
        let keys = LiveKitKeys { api_key: "devkey".into(), api_secret: "secret".parse().unwrap() };
        let jwt = mint(&keys, "room-1", "user-1", "User", Duration::from_secs(600)).unwrap();
        let claims = livekit_api::access_token::TokenVerifier::with_api_key("devkey", "secret").verify(&jwt).unwrap();
        assert_eq!(claims.sub, "user-1");
        assert_eq!(claims.video.room, "room-1");
        assert!(claims.video.room_join && claims.video.can_publish == Some(true) && claims.video.can_subscribe == Some(true));
        assert!(livekit_api::access_token::TokenVerifier::with_api_key("devkey", "other").verify(&jwt).is_err());
        assert!(!jwt.contains("secret"));
    }

    #[test]
    fn names() {
        assert!(valid_name("voice-1a2b"));
        for bad in ["", "a b", "x/../y", &"a".repeat(65), "é"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        assert!(valid_name(&random_name("voice")));
    }
}
