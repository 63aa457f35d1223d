//! How the webhook gateway authenticates a source's requests.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// Where a shared token travels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenLocation {
    /// In a header (an optional `Bearer ` prefix is ignored).
    Header(String),
    /// In a query parameter of the hook URL.
    Query(String),
    /// In a form field of the body (bracket syntax, e.g. Bitrix24's `auth[application_token]`).
    FormField(String),
}

/// A source's request check; the secret itself is read by the gateway from `secret_env`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    /// A shared token that must equal the secret.
    Token {
        /// The environment variable holding the secret.
        secret_env: String,
        /// Where the request carries it.
        location: TokenLocation,
    },
    /// Twilio's `X-Twilio-Signature`: base64 HMAC-SHA1, keyed with the auth token, of the full
    /// public URL followed by every form parameter's name and value, sorted by name.
    TwilioSignature {
        /// The environment variable holding the account's auth token.
        secret_env: String,
    },
}

impl Auth {
    pub(crate) fn from_spec(
        scheme: String,
        secret_env: String,
        header: Option<String>,
        query: Option<String>,
        form_field: Option<String>,
    ) -> Result<Auth, String> {
        if secret_env.trim().is_empty() {
            return Err("secret_env must name an environment variable".into());
        }
        match scheme.as_str() {
            "twilio_signature" if header.is_none() && query.is_none() && form_field.is_none() => {
                Ok(Auth::TwilioSignature { secret_env })
            }
            "twilio_signature" => Err("twilio_signature takes only secret_env".into()),
            "token" => {
                let location = match (header, query, form_field) {
                    (Some(h), None, None) => TokenLocation::Header(h),
                    (None, Some(q), None) => TokenLocation::Query(q),
                    (None, None, Some(f)) => TokenLocation::FormField(f),
                    _ => return Err("token needs exactly one of header, query, form_field".into()),
                };
                Ok(Auth::Token { secret_env, location })
            }
            other => Err(format!("unknown scheme {other:?} (token, twilio_signature)")),
        }
    }

    /// The environment variable holding the secret.
    pub fn secret_env(&self) -> &str {
        match self {
            Auth::Token { secret_env, .. } | Auth::TwilioSignature { secret_env } => secret_env,
        }
    }
}

/// Twilio's request signature for `url` and the POSTed form `params`.
pub fn twilio_signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut data = String::from(url);
    for (name, value) in sorted {
        data.push_str(name);
        data.push_str(value);
    }
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()).expect("HMAC takes any key length");
    mac.update(data.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Compares a presented token with the secret in time independent of where they differ.
pub fn verify_token(secret: &str, presented: &str) -> bool {
    let presented = presented.strip_prefix("Bearer ").unwrap_or(presented);
    let (a, b) = (secret.as_bytes(), presented.as_bytes());
    if a.len() != b.len() || a.is_empty() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twilio_signature_matches_an_independent_computation() {
        // Computed with Python's hmac/hashlib/base64 (see docs/sources/twilio.md):
        // base64(hmac.new(b"12345", (url + "".join(k + v for k, v in sorted(params))).encode(), sha1).digest())
        let params: Vec<(String, String)> = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        assert_eq!(twilio_signature("12345", url, &params), "0/KCTR6DLpKmkAf8muzZqo1nDgQ=");
        assert_ne!(twilio_signature("12346", url, &params), "0/KCTR6DLpKmkAf8muzZqo1nDgQ=");
    }

    #[test]
    fn tokens() {
        assert!(verify_token("s3cret", "s3cret"));
        assert!(verify_token("s3cret", "Bearer s3cret"));
        assert!(!verify_token("s3cret", "s3cre"));
        assert!(!verify_token("s3cret", "s3creT"));
        assert!(!verify_token("", ""));
    }
}
