//! Who may call the storage API and what they may do.
//!
//! The tokens file (`--tokens-file`, YAML) maps bearer tokens to identities:
//!
//! ```yaml
//! tokens:
//!   - name: admin              # the identity; also the field manager of its writes
//!     token: "s3cr3t"          # or tokenSha256: <hex of sha256(token)>
//!     role: admin              # admin | editor | viewer | discovery | reporter
//!   - name: discovery-k8s
//!     tokenSha256: "9f86d0..."
//!     role: discovery
//!     owner: discovery-k8s     # discovery: may write only objects it owns (default: name)
//!     kinds: [Upstream, Endpoints]   # kinds it may write (default: all but Secret)
//!     readSecrets: false       # grant reading Secrets (e.g. to find cloud credentials)
//! ```
//!
//! Roles: `admin` does everything; `editor` reads and writes every kind but Secret; `viewer`
//! reads every kind but Secret; `discovery` reads every kind but Secret and writes its own
//! objects of its kinds, plus its own warning annotation
//! (`discovery.solo.io/warning.<owner>`, see [`crate::resource::WARNING_ANNOTATION_PREFIX`]) on
//! any object it may read; `reporter` reads every kind but Secret and sets statuses.
//! Tokens are kept only as SHA-256 digests in memory and never logged.
use std::{collections::HashMap, path::Path, sync::Arc};

use proto::v1::Kind;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::resource::{kind_name, parse_kind, KINDS, WARNING_ANNOTATION_PREFIX};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Editor,
    Viewer,
    Discovery,
    Reporter,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Read,
    Write,
    Sync,
    UpdateStatus,
}

/// A caller, as established by its token.
#[derive(Clone, Debug)]
pub struct Identity {
    pub name: String,
    pub role: Role,
    /// For `discovery`: the only owner whose objects it may write.
    pub owner: Option<String>,
    pub write_kinds: Vec<Kind>,
    pub read_secrets: bool,
}

impl Identity {
    pub fn can_read(&self, kind: Kind) -> bool {
        kind != Kind::Secret || self.read_secrets
    }

    /// Whether it may write an object of `kind` owned by `owner` (its owner before and after).
    pub fn can_write(&self, kind: Kind, owner: &str) -> Result<(), String> {
        let who = &self.name;
        let kind_s = kind_name(kind);
        match self.role {
            Role::Viewer | Role::Reporter => Err(format!("{who} may not write {kind_s} objects")),
            _ if !self.write_kinds.contains(&kind) => {
                Err(format!("{who} may not write {kind_s} objects"))
            }
            Role::Discovery => match &self.owner {
                Some(mine) if mine == owner => Ok(()),
                Some(mine) => Err(format!(
                    "{who} may write only objects owned by {mine:?}; this one is owned by {owner:?}"
                )),
                None => Err(format!("{who} has no owner to write as")),
            },
            _ => Ok(()),
        }
    }

    pub fn can_update_status(&self) -> bool {
        matches!(self.role, Role::Admin | Role::Reporter)
    }

    /// The one annotation a discovery identity may set on objects it may read but not write:
    /// `discovery.solo.io/warning.<owner>`. `None` for other roles (they write what they may).
    pub fn warning_annotation(&self) -> Option<String> {
        match (self.role, &self.owner) {
            (Role::Discovery, Some(owner)) => Some(format!("{WARNING_ANNOTATION_PREFIX}{owner}")),
            _ => None,
        }
    }

    /// The field manager its writes are recorded under.
    pub fn manager(&self) -> &str {
        self.owner.as_deref().unwrap_or(&self.name)
    }

    /// An identity with every right, for in-process callers (the core's own reporter).
    pub fn internal(name: &str) -> Arc<Identity> {
        Arc::new(Identity {
            name: name.into(),
            role: Role::Admin,
            owner: None,
            write_kinds: KINDS.to_vec(),
            read_secrets: true,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    tokens: Vec<TokenEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TokenEntry {
    name: String,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    token_sha256: Option<String>,
    role: Role,
    #[serde(default)]
    owner: Option<String>,
    #[serde(default)]
    kinds: Option<Vec<String>>,
    #[serde(default)]
    read_secrets: bool,
}

/// Token digest → identity.
#[derive(Default)]
pub struct Tokens {
    by_digest: HashMap<[u8; 32], Arc<Identity>>,
}

#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error("reading tokens file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("tokens file {path}: {message}")]
    Invalid { path: String, message: String },
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Tokens {
    pub fn load(path: &Path) -> Result<Tokens, TokensError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokensError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Tokens::parse(&text).map_err(|message| TokensError::Invalid {
            path: path.display().to_string(),
            message,
        })
    }

    pub fn parse(text: &str) -> Result<Tokens, String> {
        let file: TokensFile = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        let mut tokens = Tokens::default();
        for (i, e) in file.tokens.into_iter().enumerate() {
            let at = format!("tokens[{i}] ({})", e.name);
            let d = match (&e.token, &e.token_sha256) {
                (Some(t), None) if !t.is_empty() => digest(t),
                (None, Some(h)) => parse_hex32(h)
                    .ok_or_else(|| format!("{at}: tokenSha256 must be 64 hex digits"))?,
                _ => return Err(format!("{at}: give exactly one of token or tokenSha256")),
            };
            let write_kinds = match (&e.kinds, e.role) {
                (_, Role::Viewer | Role::Reporter) => vec![],
                (Some(names), _) => names
                    .iter()
                    .map(|n| {
                        parse_kind(n).ok_or_else(|| format!("{at}: kinds: unknown kind {n:?}"))
                    })
                    .collect::<Result<_, _>>()?,
                (None, Role::Admin) => KINDS.to_vec(),
                (None, _) => KINDS.into_iter().filter(|k| *k != Kind::Secret).collect(),
            };
            let owner = match e.role {
                Role::Discovery => Some(e.owner.clone().unwrap_or_else(|| e.name.clone())),
                _ => e.owner.clone(),
            };
            let identity = Identity {
                name: e.name,
                role: e.role,
                owner,
                write_kinds,
                read_secrets: e.read_secrets || e.role == Role::Admin,
            };
            if tokens.by_digest.insert(d, Arc::new(identity)).is_some() {
                return Err(format!("{at}: the same token is listed twice"));
            }
        }
        Ok(tokens)
    }

    /// The identity behind an `authorization` header value.
    pub fn authenticate(&self, header: Option<&str>) -> Result<Arc<Identity>, &'static str> {
        let header = header.ok_or("missing bearer token (authorization: Bearer <token>)")?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or("the authorization header is not a bearer token")?;
        self.by_digest
            .get(&digest(token.trim()))
            .cloned()
            .ok_or("unknown bearer token")
    }

    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        let hex = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(hex, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
tokens:
  - name: admin
    token: admin-token
    role: admin
  - name: discovery-k8s
    tokenSha256: "f0e7b0cb0ab6b0e4a9b1b7d25df6b2f1e4ee8b1d1c0f6f3d5e2b1f4a0c9d8e7f"
    role: discovery
    kinds: [Upstream, Endpoints]
  - name: viewer
    token: view
    role: viewer
"#;

    #[test]
    fn roles_and_rights() {
        let t = Tokens::parse(FILE).unwrap();
        assert_eq!(t.len(), 3);
        let admin = t.authenticate(Some("Bearer admin-token")).unwrap();
        assert!(admin.can_read(Kind::Secret));
        assert!(admin.can_write(Kind::Secret, "anyone").is_ok());
        let viewer = t.authenticate(Some("Bearer view")).unwrap();
        assert!(!viewer.can_read(Kind::Secret));
        assert!(viewer.can_write(Kind::Upstream, "").is_err());
        assert!(t.authenticate(Some("Bearer nope")).is_err());
        assert!(t.authenticate(None).is_err());
        assert!(t.authenticate(Some("Basic abc")).is_err());
    }

    #[test]
    fn discovery_writes_only_its_own_kinds_and_objects() {
        let t = Tokens::parse("tokens: [{name: d, token: x, role: discovery, kinds: [Upstream]}]")
            .unwrap();
        let d = t.authenticate(Some("Bearer x")).unwrap();
        assert_eq!(d.manager(), "d");
        assert!(d.can_write(Kind::Upstream, "d").is_ok());
        assert!(d.can_write(Kind::Upstream, "other").is_err());
        assert!(d.can_write(Kind::Upstream, "").is_err());
        assert!(d.can_write(Kind::Function, "d").is_err());
        assert!(!d.can_read(Kind::Secret));
        assert_eq!(
            d.warning_annotation().as_deref(),
            Some("discovery.solo.io/warning.d")
        );
        let admin = Tokens::parse("tokens: [{name: a, token: x, role: admin}]").unwrap();
        let admin = admin.authenticate(Some("Bearer x")).unwrap();
        assert_eq!(admin.warning_annotation(), None);
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let e = Tokens::parse("tokens: [{name: a, role: admin}]")
            .err()
            .unwrap();
        assert!(e.contains("tokens[0] (a)"), "{e}");
        let e = Tokens::parse("tokens: [{name: a, token: x, role: root}]")
            .err()
            .unwrap();
        assert!(e.contains("role"), "{e}");
        let e = Tokens::parse("tokens: [{name: a, token: x, role: editor, kinds: [Pod]}]")
            .err()
            .unwrap();
        assert!(e.contains("Pod"), "{e}");
    }
}
