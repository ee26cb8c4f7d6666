//! Logout tokens (OIDC Back-Channel Logout 1.0, section 2.6), verified with
//! the provider's keys ([`OidcClient`]'s JWKS, refetched once for an
//! unknown key) and the same algorithm allow-list as ID tokens: `iss`,
//! `aud`, the `iat` window, `exp`, the `events` claim, no `nonce`, and
//! `sid` or `sub`. The caller enforces `jti` single use.

use crate::jws::{verify_compact, JwsError};
use crate::oidc::{decode_part, OidcClient, OidcError};

/// What a verified logout token asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutRequest {
    pub issuer: String,
    pub subject: Option<String>,
    pub sid: Option<String>,
    pub jti: String,
    /// Unix seconds until which the token could be accepted (for replay
    /// bookkeeping).
    pub accept_until: i64,
}

/// The `events` member a logout token must carry.
pub const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
/// How old (by `iat`) a logout token may be.
pub const LOGOUT_TOKEN_MAX_AGE_SECS: i64 = 300;

impl OidcClient {
    /// Verify a back-channel logout token (OIDC Back-Channel Logout 1.0,
    /// section 2.6). Replay (`jti`) is the caller's to check.
    pub async fn verify_logout_token(&self, token: &str) -> Result<LogoutRequest, OidcError> {
        let m = self.metadata().await?;
        match verify_compact(m.jwks().keys(), token) {
            Err(JwsError::NoKey) => {
                let m = self.refresh_jwks().await?;
                verify_compact(m.jwks().keys(), token)
            }
            other => other,
        }
        .map_err(|e| OidcError::invalid("signature", e.to_string()))?;
        let claims = decode_part(token, 1)
            .ok_or_else(|| OidcError::invalid("invalid_token", "unreadable claims"))?;
        let skew = i64::try_from(self.settings().clock_skew.as_secs()).unwrap_or(60);
        logout_claims(
            &claims,
            m.issuer().as_str(),
            &self.settings().client_id,
            chrono::Utc::now().timestamp(),
            skew,
        )
        .map_err(|detail| OidcError::invalid("logout_token", detail))
    }
}

/// The claim checks of a logout token (section 2.6, steps 3 to 6).
fn logout_claims(
    c: &serde_json::Value,
    issuer: &str,
    client_id: &str,
    now: i64,
    skew: i64,
) -> Result<LogoutRequest, String> {
    let text = |name: &str| c.get(name).and_then(|v| v.as_str()).map(str::to_owned);
    if text("iss").as_deref() != Some(issuer) {
        return Err("issuer mismatch".into());
    }
    let aud_ok = match c.get("aud") {
        Some(serde_json::Value::String(a)) => a == client_id,
        Some(serde_json::Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(client_id)),
        _ => false,
    };
    if !aud_ok {
        return Err("audience mismatch".into());
    }
    let iat = c
        .get("iat")
        .and_then(|v| v.as_i64())
        .ok_or("iat is missing")?;
    if iat > now + skew || iat < now - LOGOUT_TOKEN_MAX_AGE_SECS - skew {
        return Err("iat outside the accepted window".into());
    }
    let exp = c.get("exp").and_then(|v| v.as_i64());
    if exp.is_some_and(|exp| exp < now - skew) {
        return Err("expired".into());
    }
    let event = c
        .get("events")
        .and_then(|e| e.get(BACKCHANNEL_LOGOUT_EVENT));
    if !event.is_some_and(|e| e.is_object()) {
        return Err("events lacks the back-channel logout event".into());
    }
    if c.get("nonce").is_some() {
        return Err("a logout token must not carry a nonce".into());
    }
    let jti = text("jti")
        .filter(|j| !j.is_empty())
        .ok_or("jti is missing")?;
    let (subject, sid) = (text("sub"), text("sid"));
    if subject.is_none() && sid.is_none() {
        return Err("neither sub nor sid".into());
    }
    Ok(LogoutRequest {
        issuer: issuer.to_owned(),
        subject,
        sid,
        jti,
        accept_until: exp
            .unwrap_or(iat + LOGOUT_TOKEN_MAX_AGE_SECS)
            .max(iat + LOGOUT_TOKEN_MAX_AGE_SECS)
            + skew,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn good(now: i64) -> serde_json::Value {
        json!({
            "iss": "https://idp", "aud": ["x", "client"], "iat": now, "exp": now + 120,
            "jti": "j1", "sid": "s1", "sub": "alice",
            "events": { BACKCHANNEL_LOGOUT_EVENT: {} }
        })
    }

    #[test]
    fn logout_token_claims_are_checked_one_by_one() {
        let now = 1_000_000;
        let ok = logout_claims(&good(now), "https://idp", "client", now, 60).unwrap();
        assert_eq!(
            (ok.sid.as_deref(), ok.subject.as_deref()),
            (Some("s1"), Some("alice"))
        );
        assert!(ok.accept_until >= now + LOGOUT_TOKEN_MAX_AGE_SECS);
        type Spoil = Box<dyn Fn(&mut serde_json::Value)>;
        let cases: Vec<(&str, Spoil)> = vec![
            ("iss", Box::new(|c| c["iss"] = json!("https://evil"))),
            ("aud", Box::new(|c| c["aud"] = json!("other"))),
            ("old iat", Box::new(move |c| c["iat"] = json!(now - 3600))),
            (
                "future iat",
                Box::new(move |c| c["iat"] = json!(now + 3600)),
            ),
            (
                "no iat",
                Box::new(|c| {
                    c.as_object_mut().map(|o| o.remove("iat"));
                }),
            ),
            ("expired", Box::new(move |c| c["exp"] = json!(now - 3600))),
            ("events", Box::new(|c| c["events"] = json!({ "other": {} }))),
            (
                "event not object",
                Box::new(|c| c["events"] = json!({ BACKCHANNEL_LOGOUT_EVENT: "x" })),
            ),
            ("nonce", Box::new(|c| c["nonce"] = json!("n"))),
            (
                "jti",
                Box::new(|c| {
                    c.as_object_mut().map(|o| o.remove("jti"));
                }),
            ),
            (
                "no sub or sid",
                Box::new(|c| {
                    let o = c.as_object_mut().unwrap();
                    o.remove("sub");
                    o.remove("sid");
                }),
            ),
        ];
        for (what, spoil) in cases {
            let mut c = good(now);
            spoil(&mut c);
            assert!(
                logout_claims(&c, "https://idp", "client", now, 60).is_err(),
                "{what} accepted"
            );
        }
    }
}
