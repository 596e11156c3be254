//! The join token: one opaque string a volunteer pastes into `tamizdat-mirror run --join`.
//!
//! Layout: `tzj2.` followed by URL-safe base64 (no padding) of the UTF-8 text
//! `url \n name \n secret \n site-id-hex \n key-fingerprint-hex`. It carries everything a
//! mirror needs to find and authenticate to its distributor, and to know the site's signing
//! key when it first sees it; the distributor keeps only a hash of the secret.

use crate::message::SiteId;
use crate::sign::Fingerprint;
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};

const PREFIX: &str = "tzj2.";
const OLD_PREFIX: &str = "tzj1.";

#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// Where the distributor's stream listens (`ws://` or `wss://`).
    pub url: String,
    /// The mirror's enrolled name.
    pub name: String,
    /// The shared secret.
    pub secret: String,
    /// The site the token enrols into.
    pub site: SiteId,
    /// The fingerprint of the site's signing key: the mirror pins the key that matches it.
    pub key: Fingerprint,
}

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinToken")
            .field("url", &self.url)
            .field("name", &self.name)
            .field("secret", &"<redacted>")
            .field("key", &self.key)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a tamizdat join token (it should start with '{PREFIX}')")]
    Prefix,
    #[error("this join token is from a version without signed changesets; ask the site's operator for a new one")]
    Old,
    #[error("join token is damaged (bad base64); copy it again, whole")]
    Encoding,
    #[error("join token is damaged (missing fields); copy it again, whole")]
    Fields,
}

impl JoinToken {
    pub fn encode(&self) -> String {
        let text = format!(
            "{}\n{}\n{}\n{}\n{}",
            self.url,
            self.name,
            self.secret,
            self.site.to_hex(),
            self.key.to_hex()
        );
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(text))
    }

    pub fn decode(s: &str) -> Result<Self, TokenError> {
        let s = s.trim();
        if s.starts_with(OLD_PREFIX) {
            return Err(TokenError::Old);
        }
        let body = s.strip_prefix(PREFIX).ok_or(TokenError::Prefix)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| TokenError::Encoding)?;
        let text = String::from_utf8(bytes).map_err(|_| TokenError::Encoding)?;
        let mut it = text.split('\n');
        let (Some(url), Some(name), Some(secret), Some(site), Some(key), None) = (
            it.next(),
            it.next(),
            it.next(),
            it.next(),
            it.next(),
            it.next(),
        ) else {
            return Err(TokenError::Fields);
        };
        let site = SiteId::from_hex(site).ok_or(TokenError::Fields)?;
        let key = Fingerprint::from_hex(key).ok_or(TokenError::Fields)?;
        if url.is_empty() || name.is_empty() || secret.is_empty() {
            return Err(TokenError::Fields);
        }
        Ok(Self {
            url: url.into(),
            name: name.into(),
            secret: secret.into(),
            site,
            key,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let t = JoinToken {
            url: "ws://127.0.0.1:7300".into(),
            name: "berlin-1".into(),
            secret: "s3cr3t".into(),
            site: SiteId([7; 16]),
            key: Fingerprint([9; 16]),
        };
        let s = t.encode();
        assert_eq!(JoinToken::decode(&s).unwrap(), t);
        assert_eq!(JoinToken::decode("hello"), Err(TokenError::Prefix));
        assert_eq!(JoinToken::decode("tzj2.!!!"), Err(TokenError::Encoding));
        assert_eq!(JoinToken::decode("tzj1.abc"), Err(TokenError::Old));
        assert_eq!(
            JoinToken::decode(&format!("tzj2.{}", URL_SAFE_NO_PAD.encode("a\nb"))),
            Err(TokenError::Fields)
        );
        assert!(!format!("{t:?}").contains("s3cr3t"));
    }
}
