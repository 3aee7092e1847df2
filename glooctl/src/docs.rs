//! The document format of glooctl's files and output: Kubernetes-style objects whose `spec` is
//! the proto3 JSON mapping of the kind's spec message.
//!
//! ```yaml
//! apiVersion: gloo.solo.io/v1
//! kind: Upstream
//! metadata: { name: petstore, namespace: default, labels: {app: pets} }
//! spec: { static: { hosts: [ { addr: 127.0.0.1, port: 8080 } ] }, connectTimeout: 2s }
//! status: { state: ACCEPTED }      # written by the core; ignored when read
//! ```
//!
//! Reading keeps serde_yaml's error locations, so every mistake is reported as
//! `FILE:LINE:COLUMN: document N: field.path: what is wrong`. That works only if each
//! document is deserialized straight from the text into a typed struct (a detour through
//! `serde_yaml::Value` loses the locations), and the struct depends on the kind. So a file is
//! read in three passes over the same text:
//!
//! ```text
//!   1. syntax:  each document → Value        stops at the first YAML syntax error
//!   2. head:    each document → {apiVersion, kind}     (other fields ignored)
//!   3. body:    document i    → Doc<SpecOf(kind i)>    (unknown fields refused)
//! ```
//!
//! serde_yaml's parser runs once over the whole input, so its lines count from the top of the
//! file, not of the document.
use std::{collections::BTreeMap, fmt};

use proto::v1::{resource::Spec, status::State, Kind, Metadata, Resource};
use serde::{
    de::{DeserializeOwned, IgnoredAny},
    Deserialize, Deserializer, Serialize,
};

use crate::kinds;

pub const API_VERSION: &str = "gloo.solo.io/v1";

/// One object read from a file.
#[derive(Clone, Debug, PartialEq)]
pub struct Parsed {
    pub file: String,
    /// 1-based position among the file's documents.
    pub document: usize,
    pub resource: Resource,
}

/// A mistake in a file, located as precisely as the YAML parser allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub file: String,
    pub document: Option<usize>,
    /// 1-based.
    pub line: Option<usize>,
    /// 1-based.
    pub column: Option<usize>,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let (Some(line), Some(column)) = (self.line, self.column) {
            write!(f, ":{line}:{column}")?;
        }
        f.write_str(": ")?;
        if let Some(n) = self.document {
            write!(f, "document {n}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ParseError {}

impl ParseError {
    fn from_yaml(file: &str, document: usize, e: &serde_yaml::Error) -> ParseError {
        let mut message = e.to_string();
        let (line, column) = match e.location() {
            Some(l) => {
                // The location moves to the front; don't say it twice.
                let suffix = format!(" at line {} column {}", l.line(), l.column());
                message = message.replacen(&suffix, "", 1);
                (Some(l.line()), Some(l.column()))
            }
            None => (None, None),
        };
        if message.contains("missing field `apiVersion`") {
            message.push_str(&format!(
                " (every document starts with apiVersion: {API_VERSION})"
            ));
        }
        ParseError {
            file: file.into(),
            document: Some(document),
            line,
            column,
            message,
        }
    }
}

/// The first two fields of a document: enough to choose the type of the rest.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Head {
    #[serde(rename = "apiVersion")]
    _api_version: ApiVersion,
    kind: DocKind,
}

/// Reads a string and checks it inside the visitor: serde_yaml attaches the scalar's location
/// only to errors raised there, not to errors raised after `deserialize` returned.
struct CheckedStr<F>(&'static str, F);

impl<'de, T, F: FnOnce(&str) -> Result<T, String>> serde::de::Visitor<'de> for CheckedStr<F> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
        (self.1)(v).map_err(E::custom)
    }
}

/// Checks `apiVersion` where it is read, so the error points at it.
struct ApiVersion;

impl<'de> Deserialize<'de> for ApiVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(CheckedStr("an apiVersion string", |s: &str| {
            if s == API_VERSION {
                Ok(ApiVersion)
            } else {
                Err(format!(
                    "{s:?} is not supported; glooctl reads {API_VERSION}"
                ))
            }
        }))
    }
}

/// A kind, checked where it is read so the error points at it.
struct DocKind(Kind);

impl<'de> Deserialize<'de> for DocKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(CheckedStr("a kind name", |s: &str| {
            if let Some(k) = kinds::from_doc_name(s) {
                return Ok(DocKind(k));
            }
            let hint = match kinds::from_cli_name(s) {
                Some(k) => format!("; did you mean {:?}?", kinds::name(k)),
                None => String::new(),
            };
            Err(format!(
                "unknown kind {s:?} (known: {}){hint}",
                kinds::known_doc_names()
            ))
        }))
    }
}

/// A whole document as read. `apiVersion` and `kind` were checked by [`Head`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InDoc<S> {
    #[serde(rename = "apiVersion")]
    _api_version: IgnoredAny,
    #[serde(rename = "kind")]
    _kind: IgnoredAny,
    metadata: DocMetadata,
    spec: S,
    /// Written by the core, so output can be applied again; never sent.
    #[serde(default, rename = "status")]
    _status: Option<IgnoredAny>,
}

/// `metadata`, in and out. The store sets `resourceVersion`, `generation`, `uid` and
/// `fieldManagers`; they are accepted on input so that `get -o yaml` output applies again.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DocMetadata {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub resource_version: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub field_managers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub uid: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl DocMetadata {
    fn into_proto(self) -> Metadata {
        Metadata {
            name: self.name,
            namespace: self.namespace,
            labels: self.labels.into_iter().collect(),
            annotations: self.annotations.into_iter().collect(),
            resource_version: self.resource_version,
            generation: self.generation,
            owner: self.owner,
            field_managers: self.field_managers.into_iter().collect(),
            uid: self.uid,
        }
    }

    fn from_proto(m: &Metadata) -> DocMetadata {
        DocMetadata {
            name: m.name.clone(),
            namespace: m.namespace.clone(),
            labels: m.labels.clone().into_iter().collect(),
            annotations: m.annotations.clone().into_iter().collect(),
            resource_version: m.resource_version,
            generation: m.generation,
            owner: m.owner.clone(),
            field_managers: m.field_managers.clone().into_iter().collect(),
            uid: m.uid,
        }
    }
}

/// `status` as printed.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DocStatus {
    pub state: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reported_by: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub observed_generation: u64,
}

/// A document as printed by `get -o yaml|json`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutDoc {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub metadata: DocMetadata,
    /// As a JSON value, so that maps print in a stable (sorted) order.
    pub spec: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<DocStatus>,
}

/// Reads every document of one file. Either all of them, or every mistake found.
pub fn parse(file: &str, text: &str) -> Result<Vec<Parsed>, Vec<ParseError>> {
    let mut errors = Vec::new();

    // Pass 1: after a syntax error the parser yields that error forever, so count the
    // documents that parse and stop there.
    let mut documents = 0;
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        match serde_yaml::Value::deserialize(de) {
            Ok(_) => documents += 1,
            Err(e) => {
                errors.push(ParseError::from_yaml(file, i + 1, &e));
                break;
            }
        }
    }

    // Pass 2: the kind of each document; `None` for empty documents and failed heads.
    let mut heads: Vec<Option<Kind>> = Vec::with_capacity(documents);
    for (i, de) in serde_yaml::Deserializer::from_str(text)
        .take(documents)
        .enumerate()
    {
        match Option::<Head>::deserialize(de) {
            Ok(head) => heads.push(head.map(|h| h.kind.0)),
            Err(e) => {
                errors.push(ParseError::from_yaml(file, i + 1, &e));
                heads.push(None);
            }
        }
    }

    // Pass 3: each document as its kind.
    let mut parsed = Vec::new();
    for (i, de) in serde_yaml::Deserializer::from_str(text)
        .take(documents)
        .enumerate()
    {
        let Some(kind) = heads[i] else { continue };
        match read_document(kind, de) {
            Ok(resource) => parsed.push(Parsed {
                file: file.into(),
                document: i + 1,
                resource,
            }),
            Err(e) => errors.push(ParseError::from_yaml(file, i + 1, &e)),
        }
    }

    // Errors are found pass by pass; report them in file order.
    errors.sort_by_key(|e| (e.document, e.line, e.column));
    if errors.is_empty() {
        Ok(parsed)
    } else {
        Err(errors)
    }
}

fn read_document(
    kind: Kind,
    de: serde_yaml::Deserializer<'_>,
) -> Result<Resource, serde_yaml::Error> {
    fn read<S: DeserializeOwned>(
        de: serde_yaml::Deserializer<'_>,
        wrap: fn(S) -> Spec,
    ) -> Result<Resource, serde_yaml::Error> {
        let doc = InDoc::<S>::deserialize(de)?;
        Ok(Resource {
            metadata: Some(doc.metadata.into_proto()),
            status: None,
            spec: Some(wrap(doc.spec)),
        })
    }
    match kind {
        Kind::Upstream => read(de, Spec::Upstream),
        Kind::Function => read(de, Spec::Function),
        Kind::Endpoints => read(de, Spec::Endpoints),
        Kind::VirtualService => read(de, Spec::VirtualService),
        Kind::UpstreamGroup => read(de, Spec::UpstreamGroup),
        Kind::Gateway => read(de, Spec::Gateway),
        Kind::Secret => read(de, Spec::Secret),
        // `DocKind` never yields it.
        Kind::Unspecified => Err(serde::de::Error::custom("kind: required")),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("{0} has no spec, so its kind is unknown")]
    NoSpec(String),
    #[error("{what}: {message}")]
    Spec { what: String, message: String },
}

/// The printed form of a stored object.
pub fn to_doc(r: &Resource) -> Result<OutDoc, RenderError> {
    let metadata = r
        .metadata
        .as_ref()
        .map(DocMetadata::from_proto)
        .unwrap_or_default();
    let what = format!("{}/{}", metadata.namespace, metadata.name);
    let spec = r
        .spec
        .as_ref()
        .ok_or_else(|| RenderError::NoSpec(what.clone()))?;
    let value = match spec {
        Spec::Upstream(s) => serde_json::to_value(s),
        Spec::Function(s) => serde_json::to_value(s),
        Spec::Endpoints(s) => serde_json::to_value(s),
        Spec::VirtualService(s) => serde_json::to_value(s),
        Spec::UpstreamGroup(s) => serde_json::to_value(s),
        Spec::Gateway(s) => serde_json::to_value(s),
        Spec::Secret(s) => serde_json::to_value(s),
    }
    // Only a malformed duration (mixed signs) can fail here.
    .map_err(|e| RenderError::Spec {
        what,
        message: e.to_string(),
    })?;
    Ok(OutDoc {
        api_version: API_VERSION,
        kind: kinds::name(kinds::of_spec(spec)),
        metadata,
        spec: value,
        status: r.status.as_ref().map(|s| DocStatus {
            state: state_name(s.state),
            reason: s.reason.clone(),
            reported_by: s.reported_by.clone(),
            observed_generation: s.observed_generation,
        }),
    })
}

/// `PENDING`, `ACCEPTED`, ...; `UNKNOWN` for a state this glooctl does not know.
pub fn state_name(state: i32) -> &'static str {
    State::try_from(state).map_or("UNKNOWN", |s| s.as_str_name())
}

/// Objects as YAML documents separated by `---`.
pub fn to_yaml(resources: &[Resource]) -> Result<String, RenderError> {
    let mut out = String::new();
    for (i, r) in resources.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        let doc = to_doc(r)?;
        // Serializing these types to YAML cannot fail: every map has string keys.
        out.push_str(&serde_yaml::to_string(&doc).map_err(|e| RenderError::Spec {
            what: format!("{}/{}", doc.metadata.namespace, doc.metadata.name),
            message: e.to_string(),
        })?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::v1::{
        health_check::Check, static_upstream::Host, upstream_spec::UpstreamType, HealthCheck,
        HttpHealthCheck, StaticUpstream, Status, UpstreamSpec,
    };

    const GOOD: &str = "\
apiVersion: gloo.solo.io/v1
kind: Upstream
metadata:
  name: petstore
  namespace: default
  labels: {app: pets}
spec:
  static:
    hosts:
      - addr: 127.0.0.1
        port: 8080
  connectTimeout: 1.5s
  healthChecks:
    - timeout: 1s
      interval: 5s
      http: {path: /healthz}
---
apiVersion: gloo.solo.io/v1
kind: VirtualService
metadata: {name: pets}
spec:
  domains: ['*']
  routes:
    - matchers: [{prefix: /}]
      routeAction: {single: {upstream: {name: petstore}}}
";

    fn errors(text: &str) -> Vec<ParseError> {
        parse("f.yaml", text).expect_err("should not parse")
    }

    fn petstore() -> UpstreamSpec {
        UpstreamSpec {
            upstream_type: Some(UpstreamType::Static(StaticUpstream {
                hosts: vec![Host {
                    addr: "127.0.0.1".into(),
                    port: 8080,
                    sni: String::new(),
                }],
            })),
            connect_timeout: Some(pbjson_types::Duration {
                seconds: 1,
                nanos: 500_000_000,
            }),
            health_checks: vec![HealthCheck {
                timeout: Some(pbjson_types::Duration {
                    seconds: 1,
                    nanos: 0,
                }),
                interval: Some(pbjson_types::Duration {
                    seconds: 5,
                    nanos: 0,
                }),
                check: Some(Check::Http(HttpHealthCheck {
                    path: "/healthz".into(),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn multi_document_file_reads_every_object_as_its_kind() {
        let parsed = parse("f.yaml", GOOD).unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].document, 1);
        assert_eq!(parsed[1].document, 2);
        let us = &parsed[0].resource;
        assert_eq!(us.spec, Some(Spec::Upstream(petstore())));
        let meta = us.metadata.as_ref().unwrap();
        assert_eq!(
            (meta.name.as_str(), meta.namespace.as_str()),
            ("petstore", "default")
        );
        assert_eq!(meta.labels.get("app").map(String::as_str), Some("pets"));
        let vs = &parsed[1].resource;
        assert!(matches!(&vs.spec, Some(Spec::VirtualService(v)) if v.routes.len() == 1));
        assert_eq!(
            vs.metadata.as_ref().unwrap().namespace,
            "",
            "defaults are the caller's"
        );
    }

    #[test]
    fn empty_documents_and_separators_are_skipped() {
        let text = format!("---\n{GOOD}---\n");
        assert_eq!(parse("f.yaml", &text).unwrap().len(), 2);
        assert_eq!(parse("f.yaml", "").unwrap(), vec![]);
        assert_eq!(parse("f.yaml", "# only a comment\n").unwrap(), vec![]);
    }

    #[test]
    fn lines_count_from_the_top_of_the_file_not_the_document() {
        // Document 2 starts at line 18; `prefx` is on line 24, column 19.
        let text = GOOD.replace("prefix: /", "prefx: /");
        let e = errors(&text);
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].document, Some(2));
        assert_eq!((e[0].line, e[0].column), (Some(24), Some(19)), "{}", e[0]);
        let shown = e[0].to_string();
        assert!(shown.starts_with("f.yaml:24:19: document 2: "), "{shown}");
        assert!(shown.contains("prefx"), "{shown}");
        assert!(
            !shown.contains("at line"),
            "the location is said once: {shown}"
        );
    }

    #[test]
    fn syntax_errors_give_file_line_and_column() {
        let text = "\
apiVersion: gloo.solo.io/v1
kind: Upstream
metadata: {name: a
spec: {}
";
        let e = errors(text);
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].file, "f.yaml");
        assert!(e[0].line.is_some() && e[0].column.is_some(), "{e:?}");
        assert!(e[0].to_string().starts_with("f.yaml:"), "{}", e[0]);
    }

    #[test]
    fn a_syntax_error_after_good_documents_still_stops_the_file() {
        let text = format!("{GOOD}---\nkind: [unclosed\n");
        let e = errors(&text);
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].document, Some(3));
        assert_eq!(e[0].line.map(|l| l > 25), Some(true), "{}", e[0]);
    }

    #[test]
    fn unknown_kind_lists_the_known_ones() {
        let text = "apiVersion: gloo.solo.io/v1\nkind: Foo\nmetadata: {name: a}\nspec: {}\n";
        let e = errors(text);
        let shown = e[0].to_string();
        assert!(shown.starts_with("f.yaml:2:7: document 1: "), "{shown}");
        assert!(
            shown.contains(r#"unknown kind "Foo" (known: Upstream, Function, Endpoints, VirtualService, UpstreamGroup, Gateway, Secret)"#),
            "{shown}"
        );
        let e = errors(&text.replace("Foo", "upstream"));
        assert!(
            e[0].message.contains(r#"did you mean "Upstream"?"#),
            "{}",
            e[0]
        );
    }

    #[test]
    fn unknown_fields_are_named_at_every_level() {
        // In the spec (refused by pbjson's generated code).
        let e = errors(&GOOD.replace("connectTimeout", "connectTimout"));
        assert_eq!((e[0].line, e[0].column), (Some(12), Some(3)), "{}", e[0]);
        assert!(e[0].message.contains("connectTimout"), "{}", e[0]);
        // In the envelope and in metadata.
        let e = errors(&GOOD.replace("spec:\n  domains", "specs:\n  domains"));
        assert!(e[0].message.contains("unknown field `specs`"), "{}", e[0]);
        let e = errors(&GOOD.replace("  labels:", "  label:"));
        assert!(
            e[0].message.contains("metadata: unknown field `label`"),
            "{}",
            e[0]
        );
    }

    #[test]
    fn api_version_is_required_and_checked() {
        let e = errors(&GOOD.replacen("apiVersion: gloo.solo.io/v1\n", "", 1));
        assert!(
            e[0].message.contains("missing field `apiVersion`"),
            "{}",
            e[0]
        );
        assert!(e[0].message.contains(API_VERSION), "{}", e[0]);
        let e = errors(&GOOD.replacen("gloo.solo.io/v1", "v1", 1));
        assert_eq!((e[0].line, e[0].column), (Some(1), Some(13)), "{}", e[0]);
        assert!(
            e[0].message.contains(r#""v1" is not supported"#),
            "{}",
            e[0]
        );
    }

    #[test]
    fn every_mistake_in_a_file_is_reported_in_order() {
        let text = GOOD
            .replace("kind: VirtualService", "kind: Nope")
            .replace("port: 8080", "port: many");
        let e = errors(&text);
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(e[0].document, Some(1));
        assert_eq!(e[1].document, Some(2));
    }

    #[test]
    fn round_trip_doc_to_resource_to_doc() {
        let parsed = parse("f.yaml", GOOD).unwrap();
        let mut resources: Vec<Resource> = parsed.into_iter().map(|p| p.resource).collect();
        // As the store would return them.
        for r in &mut resources {
            let m = r.metadata.as_mut().unwrap();
            m.resource_version = 7;
            m.generation = 2;
            m.owner = "someone".into();
            m.field_managers
                .insert("spec.static".into(), "admin".into());
            r.status = Some(Status {
                state: State::Rejected as i32,
                reason: "no such upstream".into(),
                reported_by: "gloo-core".into(),
                observed_generation: 2,
            });
        }
        let yaml = to_yaml(&resources).unwrap();
        assert!(yaml.contains("state: REJECTED"), "{yaml}");
        assert!(yaml.contains("resourceVersion: 7"), "{yaml}");
        assert!(yaml.contains("connectTimeout: 1.500s"), "{yaml}");
        let again = parse("out.yaml", &yaml).unwrap();
        assert_eq!(again.len(), 2);
        for (before, after) in resources.iter().zip(&again) {
            // Status is output only; everything else survives.
            let mut expected = before.clone();
            expected.status = None;
            assert_eq!(after.resource, expected);
        }
        // And printing the re-read objects gives the same documents, status aside.
        for (before, after) in resources.iter().zip(&again) {
            let mut printed = to_doc(before).unwrap();
            printed.status = None;
            assert_eq!(to_doc(&after.resource).unwrap(), printed);
        }
    }

    #[test]
    fn maps_print_in_a_stable_order() {
        let text = "apiVersion: gloo.solo.io/v1\nkind: Upstream\nmetadata: {name: a}\n\
                    spec: {kube: {serviceName: a, servicePort: 80, selector: {zeta: x, alpha: x, mid: x, beta: x}}}\n";
        let r = parse("f.yaml", text).unwrap().remove(0).resource;
        let first = to_yaml(std::slice::from_ref(&r)).unwrap();
        for _ in 0..5 {
            // A fresh HashMap each time, with its own iteration order.
            let copy = parse("f.yaml", text).unwrap().remove(0).resource;
            assert_eq!(to_yaml(&[copy]).unwrap(), first);
        }
        let (a, z) = (first.find("alpha").unwrap(), first.find("zeta").unwrap());
        assert!(a < z, "{first}");
    }
}
