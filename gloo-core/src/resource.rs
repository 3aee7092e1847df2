//! Helpers over the generated resource types: an object's kind and key, name rules, the
//! JSON form of specs (the proto3 JSON mapping), and label selectors.
use std::{
    fmt,
    hash::{Hash, Hasher},
    sync::{Arc, OnceLock},
};

use proto::v1::{resource::Spec, Kind, Resource};

/// Where an object lives: kind, namespace, name. Ordered so a kind's objects sort together.
///
/// The names are shared (`Arc<str>`): the translator copies keys into its indexes, read sets
/// and reports many times per object, and a copy costs two reference counts, not two
/// allocations. Every key in the default namespace shares one copy of its name.
#[derive(Clone, Debug)]
pub struct Key {
    pub kind: Kind,
    pub namespace: Arc<str>,
    pub name: Arc<str>,
}

/// One shared copy of a namespace name: the default one, else a new one.
fn shared_namespace(namespace: &str) -> Arc<str> {
    static DEFAULT: OnceLock<Arc<str>> = OnceLock::new();
    if namespace == DEFAULT_NAMESPACE {
        DEFAULT.get_or_init(|| Arc::from(DEFAULT_NAMESPACE)).clone()
    } else {
        Arc::from(namespace)
    }
}

fn same(a: &Arc<str>, b: &Arc<str>) -> bool {
    Arc::ptr_eq(a, b) || **a == **b
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
            && same(&self.name, &other.name)
            && same(&self.namespace, &other.namespace)
    }
}

impl Eq for Key {}

impl Ord for Key {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let by = |a: &Arc<str>, b: &Arc<str>| {
            if Arc::ptr_eq(a, b) {
                std::cmp::Ordering::Equal
            } else {
                a.cmp(b)
            }
        };
        self.kind
            .cmp(&other.kind)
            .then_with(|| by(&self.namespace, &other.namespace))
            .then_with(|| by(&self.name, &other.name))
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.kind.hash(state);
        self.namespace.hash(state);
        self.name.hash(state);
    }
}

impl Key {
    pub fn new(kind: Kind, namespace: impl AsRef<str>, name: impl AsRef<str>) -> Self {
        Key {
            kind,
            namespace: shared_namespace(namespace.as_ref()),
            name: Arc::from(name.as_ref()),
        }
    }

    /// A key from names already shared (the translator's index keeps one copy of each).
    pub fn from_shared(kind: Kind, namespace: Arc<str>, name: Arc<str>) -> Self {
        Key {
            kind,
            namespace,
            name,
        }
    }

    /// The key of a resource; `None` when it has no spec (and so no kind) or no metadata.
    pub fn of(resource: &Resource) -> Option<Key> {
        let kind = kind_of(resource)?;
        let meta = resource.metadata.as_ref()?;
        Some(Key::new(kind, &meta.namespace, &meta.name))
    }

    /// The form used as the store's primary key: `Upstream/default/petstore`.
    pub fn encode(&self) -> String {
        format!("{}/{}/{}", kind_name(self.kind), self.namespace, self.name)
    }

    pub fn decode(s: &str) -> Option<Key> {
        let mut parts = s.splitn(3, '/');
        let kind = parse_kind(parts.next()?)?;
        Some(Key::new(kind, parts.next()?, parts.next()?))
    }

    pub fn to_proto(&self) -> proto::v1::ObjectKey {
        proto::v1::ObjectKey {
            kind: self.kind as i32,
            namespace: self.namespace.to_string(),
            name: self.name.to_string(),
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}/{}",
            kind_name(self.kind),
            self.namespace,
            self.name
        )
    }
}

pub const DEFAULT_NAMESPACE: &str = "default";

/// Annotations `discovery.solo.io/warning.<discovery owner>` carry a problem a discovery
/// service found with an object it reads but does not own (say, the spec an Upstream serves
/// does not parse). A discovery identity may set its own such annotation on any object it may
/// read, and nothing else of it (`storage::apply`); the translator reports each one as a
/// Warning on the object, and the object is Accepted again once the annotation is removed.
pub const WARNING_ANNOTATION_PREFIX: &str = "discovery.solo.io/warning.";

/// Every kind, in the order resources are listed and translated.
pub const KINDS: [Kind; 7] = [
    Kind::Secret,
    Kind::Upstream,
    Kind::Endpoints,
    Kind::Function,
    Kind::UpstreamGroup,
    Kind::VirtualService,
    Kind::Gateway,
];

pub fn kind_of(resource: &Resource) -> Option<Kind> {
    resource.spec.as_ref().map(spec_kind)
}

pub fn spec_kind(spec: &Spec) -> Kind {
    match spec {
        Spec::Upstream(_) => Kind::Upstream,
        Spec::Function(_) => Kind::Function,
        Spec::Endpoints(_) => Kind::Endpoints,
        Spec::VirtualService(_) => Kind::VirtualService,
        Spec::UpstreamGroup(_) => Kind::UpstreamGroup,
        Spec::Gateway(_) => Kind::Gateway,
        Spec::Secret(_) => Kind::Secret,
    }
}

/// The name a kind has in files and messages (`kind: VirtualService`).
pub fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Unspecified => "Unspecified",
        Kind::Upstream => "Upstream",
        Kind::Function => "Function",
        Kind::Endpoints => "Endpoints",
        Kind::VirtualService => "VirtualService",
        Kind::UpstreamGroup => "UpstreamGroup",
        Kind::Gateway => "Gateway",
        Kind::Secret => "Secret",
    }
}

/// Accepts `VirtualService`, `virtualservice`, `virtualservices`, `vs`, and the like.
pub fn parse_kind(s: &str) -> Option<Kind> {
    let lower = s.to_ascii_lowercase().replace(['-', '_'], "");
    let kind = match lower.as_str() {
        "upstream" | "upstreams" | "us" => Kind::Upstream,
        "function" | "functions" | "fn" => Kind::Function,
        "endpoints" | "endpoint" | "ep" => Kind::Endpoints,
        "virtualservice" | "virtualservices" | "vs" => Kind::VirtualService,
        "upstreamgroup" | "upstreamgroups" | "ug" => Kind::UpstreamGroup,
        "gateway" | "gateways" | "gw" => Kind::Gateway,
        "secret" | "secrets" => Kind::Secret,
        _ => return None,
    };
    Some(kind)
}

/// Checks a DNS-1123 label: 1 to 63 of `[a-z0-9-]`, starting and ending alphanumeric.
pub fn check_dns_label(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.len() > 63 {
        return Err(format!(
            "{value:?} is {} characters long; at most 63 are allowed",
            value.len()
        ));
    }
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !value.chars().all(ok_char) || !value.starts_with(alnum) || !value.ends_with(alnum) {
        return Err(format!(
            "{value:?} is not a valid DNS-1123 label (lower-case letters, digits and '-', \
             starting and ending with a letter or digit)"
        ));
    }
    Ok(())
}

/// The spec's own message as proto3 JSON, e.g. `{"static": {"hosts": [...]}, "useHttp2": true}`.
pub fn spec_to_json(spec: &Spec) -> serde_json::Value {
    let v = match spec {
        Spec::Upstream(s) => serde_json::to_value(s),
        Spec::Function(s) => serde_json::to_value(s),
        Spec::Endpoints(s) => serde_json::to_value(s),
        Spec::VirtualService(s) => serde_json::to_value(s),
        Spec::UpstreamGroup(s) => serde_json::to_value(s),
        Spec::Gateway(s) => serde_json::to_value(s),
        Spec::Secret(s) => serde_json::to_value(s),
    };
    // Serializing generated messages to a JSON value cannot fail: no map has non-string keys.
    v.unwrap_or(serde_json::Value::Null)
}

/// The inverse of [`spec_to_json`]; the error says which field is wrong.
pub fn spec_from_json(kind: Kind, value: serde_json::Value) -> Result<Spec, String> {
    fn de<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, String> {
        serde_json::from_value(v).map_err(|e| e.to_string())
    }
    Ok(match kind {
        Kind::Upstream => Spec::Upstream(de(value)?),
        Kind::Function => Spec::Function(de(value)?),
        Kind::Endpoints => Spec::Endpoints(de(value)?),
        Kind::VirtualService => Spec::VirtualService(de(value)?),
        Kind::UpstreamGroup => Spec::UpstreamGroup(de(value)?),
        Kind::Gateway => Spec::Gateway(de(value)?),
        Kind::Secret => Spec::Secret(de(value)?),
        Kind::Unspecified => return Err("no kind".into()),
    })
}

/// A Kubernetes-style equality-based label selector: `a=b,c!=d,e,!f` (also `a==b`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LabelSelector {
    terms: Vec<Term>,
}

#[derive(Clone, Debug, PartialEq)]
enum Term {
    Eq(String, String),
    NotEq(String, String),
    Exists(String),
    NotExists(String),
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut terms = Vec::new();
        for raw in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let term = if let Some((k, v)) = raw.split_once("!=") {
                Term::NotEq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = raw.split_once("==").or_else(|| raw.split_once('=')) {
                Term::Eq(k.trim().into(), v.trim().into())
            } else if let Some(k) = raw.strip_prefix('!') {
                Term::NotExists(k.trim().into())
            } else {
                Term::Exists(raw.into())
            };
            let key = match &term {
                Term::Eq(k, _) | Term::NotEq(k, _) | Term::Exists(k) | Term::NotExists(k) => k,
            };
            if key.is_empty() || key.contains(char::is_whitespace) {
                return Err(format!("label selector term {raw:?} has no valid key"));
            }
            terms.push(term);
        }
        Ok(LabelSelector { terms })
    }

    pub fn matches(&self, labels: &std::collections::HashMap<String, String>) -> bool {
        self.terms.iter().all(|t| match t {
            Term::Eq(k, v) => labels.get(k) == Some(v),
            Term::NotEq(k, v) => labels.get(k) != Some(v),
            Term::Exists(k) => labels.contains_key(k),
            Term::NotExists(k) => !labels.contains_key(k),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        assert!(check_dns_label("default-petstore-8080").is_ok());
        assert!(check_dns_label("a").is_ok());
        for bad in ["", "Petstore", "-a", "a-", "a_b", "a.b", &"x".repeat(64)] {
            assert!(check_dns_label(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn key_round_trips() {
        let k = Key::new(Kind::VirtualService, "default", "pets");
        assert_eq!(k.encode(), "VirtualService/default/pets");
        assert_eq!(Key::decode(&k.encode()), Some(k));
    }

    #[test]
    fn selectors() {
        let labels = [("app", "pets"), ("tier", "web")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let sel = |s| LabelSelector::parse(s).unwrap().matches(&labels);
        assert!(sel("app=pets"));
        assert!(sel("app==pets,tier"));
        assert!(sel("app!=db,!missing"));
        assert!(!sel("app=db"));
        assert!(!sel("tier,missing"));
        assert!(sel(""));
        assert!(LabelSelector::parse("=x").is_err());
    }

    #[test]
    fn kinds_parse_in_many_spellings() {
        assert_eq!(parse_kind("vs"), Some(Kind::VirtualService));
        assert_eq!(parse_kind("VirtualServices"), Some(Kind::VirtualService));
        assert_eq!(parse_kind("upstream-groups"), Some(Kind::UpstreamGroup));
        assert_eq!(parse_kind("nope"), None);
        for k in KINDS {
            assert_eq!(parse_kind(kind_name(k)), Some(k));
        }
    }
}
