//! OAuth 2.0 access tokens for the Cloud Functions API, from one of two places:
//!
//! ```text
//!  service-account key (Secret `gcp`) ── RS256-signed JWT ──POST token_uri──► access token
//!  metadata server ──GET …/service-accounts/default/token (Metadata-Flavor: Google)──► access token
//! ```
//!
//! A [`TokenSource`] caches its token and fetches a new one shortly before it expires (a fifth
//! of its lifetime early, at most a minute), so a long poll never sends an expired token. The
//! key and the tokens never appear in `Debug` output, logs or errors.
use std::{
    fmt,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use base64::{engine::general_purpose::STANDARD, engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use ring::{
    rand::SystemRandom,
    signature::{RsaKeyPair, RSA_PKCS1_SHA256},
};
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::error::Error;

/// The scope the Cloud Functions API needs.
pub const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
pub const DEFAULT_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
pub const DEFAULT_METADATA_BASE: &str = "http://metadata.google.internal";
const METADATA_TOKEN_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/token";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// A service-account key file (the JSON Google hands out), parsed and checked.
pub struct ServiceAccountKey {
    pub client_email: String,
    pub private_key_id: String,
    pub token_uri: String,
    key: Arc<RsaKeyPair>,
}

impl fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("client_email", &self.client_email)
            .field("private_key_id", &self.private_key_id)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct KeyFile {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    client_email: String,
    #[serde(default)]
    private_key_id: String,
    #[serde(default)]
    private_key: String,
    #[serde(default)]
    token_uri: String,
}

impl ServiceAccountKey {
    /// Parses a key file; errors name the field at fault and never quote the key.
    pub fn parse(json: &str) -> Result<ServiceAccountKey, String> {
        let f: KeyFile = serde_json::from_str(json).map_err(|e| {
            format!(
                "not a service-account key file (JSON at line {}, column {})",
                e.line(),
                e.column()
            )
        })?;
        if !f.kind.is_empty() && f.kind != "service_account" {
            return Err(format!("type is {:?}, want \"service_account\"", f.kind));
        }
        if f.client_email.is_empty() {
            return Err("client_email is missing".into());
        }
        let der = pem_to_der(&f.private_key).ok_or("private_key is not a PEM \"PRIVATE KEY\"")?;
        let key = RsaKeyPair::from_pkcs8(&der)
            .map_err(|e| format!("private_key is not a PKCS#8 RSA key: {e}"))?;
        Ok(ServiceAccountKey {
            client_email: f.client_email,
            private_key_id: f.private_key_id,
            token_uri: f.token_uri,
            key: Arc::new(key),
        })
    }

    /// The signed JWT assertion for the token endpoint `aud`, valid for an hour from `now`.
    pub fn assertion(&self, aud: &str, now: u64) -> Result<String, String> {
        let mut header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
        if !self.private_key_id.is_empty() {
            header["kid"] = self.private_key_id.clone().into();
        }
        let claims = serde_json::json!({
            "iss": self.client_email,
            "scope": SCOPE,
            "aud": aud,
            "iat": now,
            "exp": now + 3600,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut sig = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signing_input.as_bytes(),
                &mut sig,
            )
            .map_err(|_| "signing the token request failed".to_string())?;
        Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }
}

/// The DER body of the first `-----BEGIN PRIVATE KEY-----` block.
fn pem_to_der(pem: &str) -> Option<Vec<u8>> {
    let start = pem.find("-----BEGIN PRIVATE KEY-----")? + "-----BEGIN PRIVATE KEY-----".len();
    let end = start + pem[start..].find("-----END PRIVATE KEY-----")?;
    let b64: String = pem[start..end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    STANDARD.decode(b64).ok()
}

/// Where tokens come from.
pub enum Credentials {
    /// A service-account key; tokens from `token_url` (the key's `token_uri` unless overridden).
    ServiceAccount {
        key: ServiceAccountKey,
        token_url: String,
    },
    /// The metadata server at `base` (the instance's default service account).
    Metadata { base: String },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::ServiceAccount { key, token_url } => f
                .debug_struct("ServiceAccount")
                .field("client_email", &key.client_email)
                .field("token_url", token_url)
                .finish(),
            Credentials::Metadata { base } => {
                f.debug_struct("Metadata").field("base", base).finish()
            }
        }
    }
}

struct Token {
    value: String,
    refresh_at: Instant,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// A cached access token, fetched again shortly before it expires.
pub struct TokenSource {
    creds: Credentials,
    http: reqwest::Client,
    cached: Mutex<Option<Token>>,
}

impl TokenSource {
    pub fn new(creds: Credentials, http: reqwest::Client) -> Self {
        TokenSource {
            creds,
            http,
            cached: Mutex::new(None),
        }
    }

    pub fn credentials(&self) -> &Credentials {
        &self.creds
    }

    /// A valid access token: the cached one, or a new one.
    pub async fn token(&self) -> Result<String, Error> {
        let mut cached = self.cached.lock().await;
        if let Some(t) = cached.as_ref().filter(|t| Instant::now() < t.refresh_at) {
            return Ok(t.value.clone());
        }
        let fetched_at = Instant::now();
        let r = self.fetch().await?;
        let lifetime = Duration::from_secs(r.expires_in.unwrap_or(3600));
        let early = (lifetime / 5).min(Duration::from_secs(60));
        *cached = Some(Token {
            value: r.access_token.clone(),
            refresh_at: fetched_at + lifetime - early,
        });
        Ok(r.access_token)
    }

    /// Forgets the cached token (the API refused it).
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }

    async fn fetch(&self) -> Result<TokenResponse, Error> {
        let (what, req) = match &self.creds {
            Credentials::ServiceAccount { key, token_url } => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs();
                let jwt = key.assertion(token_url, now).map_err(Error::Credentials)?;
                let body = format!(
                    "grant_type={}&assertion={jwt}",
                    JWT_BEARER.replace(':', "%3A")
                );
                (
                    format!("token endpoint {token_url}"),
                    self.http
                        .post(token_url)
                        .header("content-type", "application/x-www-form-urlencoded")
                        .body(body),
                )
            }
            Credentials::Metadata { base } => {
                let url = format!("{}{METADATA_TOKEN_PATH}", base.trim_end_matches('/'));
                (
                    format!("metadata server {url}"),
                    self.http.get(url).header("Metadata-Flavor", "Google"),
                )
            }
        };
        let resp = req.send().await.map_err(|e| Error::http(&what, e))?;
        let resp = crate::error::check(&what, resp).await?;
        let r: TokenResponse = resp.json().await.map_err(|e| Error::http(&what, e))?;
        if r.access_token.is_empty() {
            return Err(Error::Invalid(format!(
                "{what}: answer has no access_token"
            )));
        }
        Ok(r)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ring::signature::{KeyPair, UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};

    /// A 2048-bit test key (generated with `openssl genpkey -algorithm RSA`), only for tests.
    pub const TEST_KEY: &str = include_str!("../tests/data/test-key.pem");

    pub fn key_json(token_uri: &str) -> String {
        serde_json::json!({
            "type": "service_account",
            "project_id": "p",
            "private_key_id": "kid-1",
            "private_key": TEST_KEY,
            "client_email": "discovery@p.iam.gserviceaccount.com",
            "token_uri": token_uri,
        })
        .to_string()
    }

    #[test]
    fn assertion_is_an_rs256_jwt_with_googles_claims() {
        let key = ServiceAccountKey::parse(&key_json("https://oauth2.example/token")).unwrap();
        let jwt = key.assertion("https://oauth2.example/token", 1000).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["alg"], "RS256");
        assert_eq!(header["kid"], "kid-1");
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["iss"], "discovery@p.iam.gserviceaccount.com");
        assert_eq!(claims["aud"], "https://oauth2.example/token");
        assert_eq!(claims["scope"], SCOPE);
        assert_eq!(claims["iat"], 1000);
        assert_eq!(claims["exp"], 4600);
        // The signature verifies with the key's public half.
        let public = key.key.public_key().as_ref().to_vec();
        let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, public)
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
            .expect("signature verifies");
    }

    #[test]
    fn bad_keys_are_refused_without_quoting_them() {
        let e = ServiceAccountKey::parse(
            "{\"client_email\": \"a@b\", \"private_key\": \"secret-stuff\"}",
        )
        .unwrap_err();
        assert!(e.contains("private_key"), "{e}");
        assert!(!e.contains("secret-stuff"), "{e}");
        let e = ServiceAccountKey::parse("not json secret-stuff").unwrap_err();
        assert!(!e.contains("secret-stuff"), "{e}");
        let e = ServiceAccountKey::parse("{\"private_key\": \"x\"}").unwrap_err();
        assert!(e.contains("client_email"), "{e}");
    }

    #[test]
    fn debug_output_never_shows_the_key() {
        let key = ServiceAccountKey::parse(&key_json("https://t")).unwrap();
        let creds = Credentials::ServiceAccount {
            key,
            token_url: "https://t".into(),
        };
        let s = format!("{creds:?}");
        assert!(!s.contains("PRIVATE KEY") && !s.contains("MII"), "{s}");
    }
}
