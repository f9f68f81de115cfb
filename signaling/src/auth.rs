//! Tokens: HS256 (or HS384/HS512) JWTs that carry identity, display name, room, role and
//! validity. Every way a token can be wrong has its own [`ErrorCode`].

use crate::error::{AppError, ErrorCode};
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// Longest token accepted (bytes).
pub const MAX_TOKEN_BYTES: usize = 4096;
/// Longest identity, room name and display name (bytes).
pub const MAX_IDENTITY_BYTES: usize = 128;
pub const MAX_ROOM_BYTES: usize = 128;
pub const MAX_NAME_BYTES: usize = 128;

/// What a participant may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Starts and ends the room, publishes.
    Host,
    /// Publishes on stage.
    Cohost,
    /// Watches and moderates chat.
    Moderator,
    /// Watches.
    Viewer,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "host" => Some(Role::Host),
            "cohost" => Some(Role::Cohost),
            "moderator" => Some(Role::Moderator),
            "viewer" => Some(Role::Viewer),
            _ => None,
        }
    }

    /// The wire form (`host`, `cohost`, `moderator`, `viewer`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Host => "host",
            Role::Cohost => "cohost",
            Role::Moderator => "moderator",
            Role::Viewer => "viewer",
        }
    }

    pub fn may_publish(self) -> bool {
        matches!(self, Role::Host | Role::Cohost)
    }
}

/// Validated claims.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    pub identity: String,
    pub name: String,
    pub room: String,
    pub role: Role,
    pub exp: u64,
    /// The live profile a host's token asks for (`room.profiles`); checked when the host joins.
    pub profile: Option<String>,
}

/// The wire form of the claims.
#[derive(Debug, Serialize, Deserialize)]
struct RawClaims {
    sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    room: String,
    role: String,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    profile: Option<String>,
}

pub fn parse_algorithm(name: &str) -> anyhow::Result<Algorithm> {
    match name {
        "HS256" => Ok(Algorithm::HS256),
        "HS384" => Ok(Algorithm::HS384),
        "HS512" => Ok(Algorithm::HS512),
        other => anyhow::bail!("auth.algorithm {other:?} is not supported (HS256, HS384, HS512)"),
    }
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Signs and verifies tokens with one secret and algorithm.
#[derive(Clone)]
pub struct Authenticator {
    algorithm: Algorithm,
    encoding: EncodingKey,
    decoding: DecodingKey,
    leeway: u64,
}

impl Authenticator {
    pub fn new(secret: &str, algorithm: &str, leeway: u64) -> anyhow::Result<Self> {
        Ok(Self {
            algorithm: parse_algorithm(algorithm)?,
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            leeway,
        })
    }

    /// A token valid from now for `ttl_secs`.
    pub fn mint(&self, room: &str, identity: &str, name: Option<&str>, role: Role, ttl_secs: u64) -> Result<String, AppError> {
        self.mint_with_profile(room, identity, name, role, ttl_secs, None)
    }

    /// A token that also names the live profile (for a host: the live it starts uses it).
    pub fn mint_with_profile(
        &self,
        room: &str,
        identity: &str,
        name: Option<&str>,
        role: Role,
        ttl_secs: u64,
        profile: Option<&str>,
    ) -> Result<String, AppError> {
        let now = now_secs();
        let role = role.as_str().to_owned();
        let claims = RawClaims {
            sub: identity.to_owned(),
            name: name.map(str::to_owned),
            room: room.to_owned(),
            role,
            exp: now + ttl_secs,
            nbf: Some(now.saturating_sub(1)),
            iat: Some(now),
            profile: profile.map(str::to_owned),
        };
        jsonwebtoken::encode(&Header::new(self.algorithm), &claims, &self.encoding)
            .map_err(|e| AppError::internal("could not sign the token", e))
    }

    /// Check a token; `room`, when given, must match the token's.
    pub fn verify(&self, token: &str, room: Option<&str>) -> Result<Claims, AppError> {
        use ErrorCode::*;
        let fail = |code, msg: &str| Err(AppError::new(code, msg));
        if token.is_empty() {
            return fail(TokenMissing, "a token is required");
        }
        if token.len() > MAX_TOKEN_BYTES {
            return fail(TokenMalformed, "the token is too long");
        }
        // Look at the header ourselves first, so `alg: none` (which jsonwebtoken cannot even
        // represent) gets the algorithm error it deserves rather than a parse error.
        let mut parts = token.split('.');
        let (Some(head), Some(_), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return fail(TokenMalformed, "a token has three dot-separated parts");
        };
        let Ok(head) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(head) else {
            return fail(TokenMalformed, "the token header is not base64url");
        };
        let Ok(head) = serde_json::from_slice::<serde_json::Value>(&head) else {
            return fail(TokenMalformed, "the token header is not JSON");
        };
        let alg = head.get("alg").and_then(|a| a.as_str()).unwrap_or("");
        let expected = format!("{:?}", self.algorithm);
        if alg != expected {
            return fail(TokenAlgorithm, &format!("tokens must be signed with {expected}"));
        }
        let mut validation = Validation::new(self.algorithm);
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        // Claims of the issuing platform's own (`aud`, `iss`, `jti`, …) are ignored, not
        // refused: jsonwebtoken would otherwise refuse any token with an `aud` (docs/protocol.md §4).
        validation.validate_aud = false;
        let data = jsonwebtoken::decode::<RawClaims>(token, &self.decoding, &validation).map_err(|e| {
            let (code, msg) = match e.kind() {
                ErrorKind::InvalidSignature => (TokenBadSignature, "the token signature is not valid"),
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName | ErrorKind::UnsupportedAlgorithm => {
                    (TokenAlgorithm, "the token algorithm is not accepted")
                }
                ErrorKind::ExpiredSignature => (TokenExpired, "the token has expired"),
                ErrorKind::ImmatureSignature => (TokenNotYetValid, "the token is not valid yet"),
                ErrorKind::MissingRequiredClaim(_) | ErrorKind::InvalidClaimFormat(_) => {
                    (TokenInvalidClaims, "the token lacks a required claim")
                }
                ErrorKind::Json(_) => (TokenInvalidClaims, "the token claims are missing or of the wrong type"),
                _ => (TokenMalformed, "the token could not be decoded"),
            };
            AppError::new(code, msg)
        })?;
        let c = data.claims;
        let Some(role) = Role::parse(&c.role) else {
            return fail(TokenInvalidRole, "role must be host, cohost, moderator or viewer");
        };
        let bad = |s: &str, max: usize| s.trim().is_empty() || s.len() > max || s.chars().any(char::is_control);
        if bad(&c.sub, MAX_IDENTITY_BYTES) {
            return fail(TokenInvalidClaims, "identity (sub) must be 1-128 bytes of printable text");
        }
        if bad(&c.room, MAX_ROOM_BYTES) {
            return fail(TokenInvalidClaims, "room must be 1-128 bytes of printable text");
        }
        if let Some(name) = &c.name
            && (name.len() > MAX_NAME_BYTES || name.chars().any(char::is_control))
        {
            return fail(TokenInvalidClaims, "name must be at most 128 bytes of printable text");
        }
        if let Some(room) = room
            && room != c.room
        {
            return fail(TokenWrongRoom, "the token is for another room");
        }
        if let Some(p) = &c.profile
            && (p.is_empty() || p.len() > 64 || !p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
        {
            return fail(TokenInvalidClaims, "profile must be 1-64 letters, digits, '-' or '_'");
        }
        Ok(Claims {
            name: c.name.filter(|n| !n.trim().is_empty()).unwrap_or_else(|| c.sub.clone()),
            identity: c.sub,
            room: c.room,
            role,
            exp: c.exp,
            profile: c.profile,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mint_and_verify() {
        let a = Authenticator::new("s3cret", "HS256", 0).unwrap();
        let t = a.mint("r1", "alice", Some("Alice"), Role::Cohost, 60).unwrap();
        let c = a.verify(&t, Some("r1")).unwrap();
        assert_eq!((c.identity.as_str(), c.name.as_str(), c.role), ("alice", "Alice", Role::Cohost));
        assert_eq!(a.verify(&t, Some("r2")).unwrap_err().code, ErrorCode::TokenWrongRoom);
        let other = Authenticator::new("other", "HS256", 0).unwrap();
        assert_eq!(other.verify(&t, None).unwrap_err().code, ErrorCode::TokenBadSignature);
        let hs512 = Authenticator::new("s3cret", "HS512", 0).unwrap();
        assert_eq!(hs512.verify(&t, None).unwrap_err().code, ErrorCode::TokenAlgorithm);
    }

    #[test]
    fn unknown_and_platform_claims_are_ignored() {
        let a = Authenticator::new("s3cret", "HS256", 0).unwrap();
        let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 60;
        let claims = serde_json::json!({
            "sub": "alice", "room": "r1", "role": "viewer", "exp": exp,
            "aud": "some-platform", "iss": "https://platform.example", "jti": "abc123",
            "tier": {"level": 3}, "scopes": ["watch", "chat"],
        });
        let t = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(b"s3cret")).unwrap();
        let c = a.verify(&t, Some("r1")).expect("extra claims do not invalidate a token");
        assert_eq!((c.identity.as_str(), c.role), ("alice", Role::Viewer));
        // An audience list too.
        let mut claims = claims;
        claims["aud"] = serde_json::json!(["a", "b"]);
        let t = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(b"s3cret")).unwrap();
        assert!(a.verify(&t, Some("r1")).is_ok());
    }
}
