//! Parsing a service's API description into the operations REST Functions are made of.
//!
//! ```text
//!  bytes ─► JSON or YAML tree ──► every local $ref checked ─┬─ openapi: 3.0.x ─┐
//!                                                           ├─ openapi: 3.1.x ─┼─► value walker
//!                                                           └─ swagger: 2.0   ─┘       │
//!                                       Api { base_path, operations } ◄────────────────┘
//! ```
//!
//! The document is read into a [`Node`] tree that borrows its strings from the fetched bytes
//! and keeps objects sorted for binary-search lookups (see [`crate::tree`]); building and
//! dropping a `serde_json::Value` (an allocation per string and map entry) was most of the
//! time of a large spec. One walker over the tree reads all three flavours, since the parts routing needs
//! (servers or basePath, paths, operations, parameters, bodies) have the same shape in each;
//! Swagger 2.0 differs only in its body parameters. OpenAPI 3.0 went through `openapiv3` before:
//! typing every operation (responses, inline schemas, all `#[serde(flatten)]`, which buffers
//! each object) made it 2.8× slower than the walker and twice its memory, for fields nothing
//! reads, and `openapiv3` cannot read 3.1 at all. The walker checks what it reads: a path
//! item, operation or parameter of the wrong shape is an error naming where it is. Only local
//! `$ref`s (`#/...`) are followed; a `$ref` anywhere in the document that does not resolve
//! makes the whole document bad, so a half-read spec never replaces a good one.
use std::collections::HashMap;

use crate::tree::Node;

/// Where a parameter is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location {
    Path,
    Query,
    Header,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Param {
    pub name: String,
    pub location: Location,
    pub required: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    pub operation_id: Option<String>,
    /// Upper case, e.g. GET.
    pub method: String,
    /// The path template as written in the spec, e.g. `/pets/{id}`.
    pub path: String,
    pub parameters: Vec<Param>,
    pub has_body: bool,
}

/// What a spec describes, reduced to what routing needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Api {
    /// Which flavour the document was: "openapi 3.0.3", "swagger 2.0", ...
    pub flavour: String,
    /// The path prefix every operation's path is under (`servers[0].url`'s path, or Swagger's
    /// `basePath`), without a trailing slash; empty for none.
    pub base_path: String,
    pub operations: Vec<Operation>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("the spec is {size} bytes, more than the limit of {limit} (--max-spec-bytes)")]
    TooLarge { size: u64, limit: u64 },
    #[error("the spec does not parse: {0}")]
    Parse(String),
    #[error("not an OpenAPI 3.x or Swagger 2.0 document: {0}")]
    NotASpec(String),
    #[error("{at}: $ref {reference:?} does not resolve{why}")]
    UnresolvedRef {
        reference: String,
        at: String,
        why: String,
    },
    #[error("operationId {id:?} is used by both {first} and {second}")]
    DuplicateOperationId {
        id: String,
        first: String,
        second: String,
    },
}

impl SpecError {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            SpecError::TooLarge { .. } => "too_large",
            SpecError::Parse(_) => "parse",
            SpecError::NotASpec(_) => "not_a_spec",
            SpecError::UnresolvedRef { .. } => "unresolved_ref",
            SpecError::DuplicateOperationId { .. } => "duplicate_operation_id",
        }
    }
}

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Parses a JSON or YAML document (JSON when it starts with `{`).
pub fn parse(bytes: &[u8]) -> Result<Api, SpecError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    let root: Node = if first == Some(&b'{') {
        // Checking the UTF-8 once for the whole text is cheaper than per string.
        let text = std::str::from_utf8(bytes)
            .map_err(|e| SpecError::Parse(format!("JSON: not UTF-8: {e}")))?;
        serde_json::from_str(text).map_err(|e| SpecError::Parse(format!("JSON: {e}")))?
    } else {
        serde_yaml::from_slice(bytes).map_err(|e| SpecError::Parse(format!("YAML: {e}")))?
    };
    parse_tree(&root)
}

/// An already-read document.
pub fn parse_tree(root: &Node) -> Result<Api, SpecError> {
    if !root.is_object() {
        return Err(SpecError::NotASpec("the document is not an object".into()));
    }
    if !refs_resolve(root, root) {
        // Walk again, keeping track of where, only to name the place of the first bad one.
        check_refs(root, root, &mut String::from("#"))?;
    }
    let api = if let Some(v) = root.get("openapi") {
        let v = v.as_str().unwrap_or_default();
        if v.starts_with("3.") {
            walk(root, &format!("openapi {v}"), false)?
        } else {
            return Err(SpecError::NotASpec(format!(
                "openapi version {v:?} is not 3.x"
            )));
        }
    } else if let Some(v) = root.get("swagger") {
        if v.as_str() != Some("2.0") {
            return Err(SpecError::NotASpec(format!(
                "swagger version {v} is not 2.0"
            )));
        }
        walk(root, "swagger 2.0", true)?
    } else {
        return Err(SpecError::NotASpec(
            "neither an `openapi` nor a `swagger` field".into(),
        ));
    };
    check_duplicates(&api)?;
    Ok(api)
}

/// Whether every `$ref` in `v` is local and resolves (the fast check, with no bookkeeping).
fn refs_resolve(root: &Node, v: &Node) -> bool {
    match v {
        Node::Obj(m) => {
            if let Some(Node::Str(r)) = v.get("$ref") {
                if pointer(root, r).is_err() {
                    return false;
                }
            }
            m.iter().all(|(_, c)| refs_resolve(root, c))
        }
        Node::Arr(a) => a.iter().all(|c| refs_resolve(root, c)),
        _ => true,
    }
}

/// Every `$ref` in the document must be local and resolve; the error names the first that
/// does not, and where it is.
fn check_refs(root: &Node, v: &Node, at: &mut String) -> Result<(), SpecError> {
    match v {
        Node::Obj(m) => {
            if let Some(Node::Str(r)) = v.get("$ref") {
                pointer(root, r).map_err(|why| SpecError::UnresolvedRef {
                    reference: r.to_string(),
                    at: at.clone(),
                    why,
                })?;
            }
            for (k, child) in m {
                if child.is_object() || child.is_array() {
                    let len = at.len();
                    at.push('/');
                    at.push_str(&k.replace('~', "~0").replace('/', "~1"));
                    check_refs(root, child, at)?;
                    at.truncate(len);
                }
            }
        }
        Node::Arr(a) => {
            for (i, child) in a.iter().enumerate() {
                if child.is_object() || child.is_array() {
                    let len = at.len();
                    at.push('/');
                    at.push_str(&i.to_string());
                    check_refs(root, child, at)?;
                    at.truncate(len);
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Where in the document the walker is (`paths./pets/{id}.get.parameters[0]`), made into text
/// only for an error: formatting it for every operation was a tenth of a large spec's time.
enum At<'a> {
    Path(&'a str),
    Field(&'a At<'a>, &'a str),
    Index(&'a At<'a>, &'a str, usize),
}

impl std::fmt::Display for At<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            At::Path(p) => write!(f, "paths.{p}"),
            At::Field(at, field) => write!(f, "{at}.{field}"),
            At::Index(at, field, i) => write!(f, "{at}.{field}[{i}]"),
        }
    }
}

/// The value a local `$ref` points at.
fn pointer<'a>(root: &'a Node<'a>, r: &str) -> Result<&'a Node<'a>, String> {
    let Some(p) = r.strip_prefix('#') else {
        return Err(" (only local references, starting with #, are followed)".into());
    };
    root.pointer(p)
        .ok_or_else(|| " (nothing at that location)".into())
}

/// Follows `$ref`s (a reference may point at another reference) to the object itself.
fn deref<'a>(root: &'a Node<'a>, mut v: &'a Node<'a>, at: &At) -> Result<&'a Node<'a>, SpecError> {
    for _ in 0..32 {
        match v.get("$ref").and_then(Node::as_str) {
            Some(r) => {
                v = pointer(root, r).map_err(|why| SpecError::UnresolvedRef {
                    reference: r.into(),
                    at: at.to_string(),
                    why,
                })?
            }
            None => return Ok(v),
        }
    }
    Err(SpecError::UnresolvedRef {
        reference: v
            .get("$ref")
            .and_then(Node::as_str)
            .unwrap_or_default()
            .into(),
        at: at.to_string(),
        why: " (a chain of more than 32 references; a cycle?)".into(),
    })
}

/// An operation's parameter replaces a path item's parameter of the same name and location.
fn merge(params: &mut Vec<Option<Param>>, p: Option<Param>) {
    if let Some(new) = &p {
        params.retain(|old| {
            old.as_ref()
                .is_none_or(|o| o.name != new.name || o.location != new.location)
        });
    }
    params.push(p);
}

/// OpenAPI 3.1 and Swagger 2.0 from the raw value. In Swagger 2.0 a body is a parameter
/// `in: body` (or `formData`).
fn walk(root: &Node, flavour: &str, swagger: bool) -> Result<Api, SpecError> {
    let base_path = if swagger {
        root.get("basePath")
            .and_then(Node::as_str)
            .map(|p| p.trim_end_matches('/').to_string())
            .unwrap_or_default()
    } else {
        root.get("servers")
            .and_then(|s| s.at(0))
            .and_then(|s| {
                let url = s.get("url")?.as_str()?;
                let vars = s.get("variables").and_then(Node::as_object).map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| {
                            Some((k.to_string(), v.get("default")?.as_str()?.to_string()))
                        })
                        .collect()
                });
                Some(server_path(url, vars))
            })
            .unwrap_or_default()
    };
    let mut operations = Vec::new();
    let paths = match root.get("paths") {
        // Optional since 3.1 (a document may hold only webhooks or components).
        None if swagger || flavour.starts_with("openapi 3.0") => {
            return Err(SpecError::Parse("paths: required".into()))
        }
        None => None,
        Some(Node::Obj(m)) => Some(m),
        Some(_) => return Err(SpecError::Parse("paths: not an object".into())),
    };
    for (path, item) in paths.into_iter().flatten() {
        let at = At::Path(path);
        let item = deref(root, item, &at)?;
        if !item.is_object() {
            return Err(SpecError::Parse(format!("{at}: not an object")));
        }
        let mut shared = Vec::new();
        for (i, p) in array(item, "parameters").enumerate() {
            let at = At::Index(&at, "parameters", i);
            shared.push(param_value(root, p, &at)?);
        }
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            let at = At::Field(&at, method);
            if !op.is_object() {
                return Err(SpecError::Parse(format!("{at}: not an object")));
            }
            let mut params = shared.clone();
            for (i, p) in array(op, "parameters").enumerate() {
                let p = param_value(root, p, &At::Index(&at, "parameters", i))?;
                merge(&mut params, p);
            }
            let mut has_body = false;
            if swagger {
                params.retain(|p| match p {
                    Some(p) if p.location == Location::Path && p.name.is_empty() => {
                        has_body = true;
                        false
                    }
                    _ => true,
                });
            } else if let Some(b) = op.get("requestBody") {
                deref(root, b, &At::Field(&at, "requestBody"))?;
                has_body = true;
            }
            let operation_id = match op.get("operationId") {
                None => None,
                Some(Node::Str(s)) => Some(s.to_string()),
                Some(_) => return Err(SpecError::Parse(format!("{at}.operationId: not a string"))),
            };
            operations.push(Operation {
                operation_id,
                method: method.to_ascii_uppercase(),
                path: path.to_string(),
                parameters: params.into_iter().flatten().collect(),
                has_body,
            });
        }
    }
    Ok(Api {
        flavour: flavour.into(),
        base_path,
        operations,
    })
}

fn array<'a>(v: &'a Node<'a>, field: &str) -> impl Iterator<Item = &'a Node<'a>> {
    v.get(field).and_then(Node::as_array).into_iter().flatten()
}

/// A parameter from the raw value; body and form parameters (Swagger 2.0) come back as a path
/// parameter with an empty name, a marker `walk` turns into `has_body`. Cookies are dropped.
fn param_value(root: &Node, p: &Node, at: &At) -> Result<Option<Param>, SpecError> {
    let p = deref(root, p, at)?;
    let field = |f: &str| {
        p.get(f)
            .and_then(Node::as_str)
            .ok_or_else(|| SpecError::Parse(format!("{at}.{f}: required, a string")))
    };
    let location = match field("in")? {
        "path" => Location::Path,
        "query" => Location::Query,
        "header" => Location::Header,
        "body" | "formData" => {
            return Ok(Some(Param {
                name: String::new(),
                location: Location::Path,
                required: false,
            }))
        }
        _ => return Ok(None),
    };
    Ok(Some(Param {
        name: field("name")?.to_string(),
        location,
        required: location == Location::Path
            || p.get("required").and_then(Node::as_bool).unwrap_or(false),
    }))
}

/// The path of a server URL (`https://api.example.com/v1/` → `/v1`, `/v1` → `/v1`), with
/// server variables replaced by their defaults.
fn server_path(url: &str, vars: Option<HashMap<String, String>>) -> String {
    let mut url = url.to_string();
    for (k, v) in vars.into_iter().flatten() {
        url = url.replace(&format!("{{{k}}}"), &v);
    }
    let path = match url.find("://") {
        Some(i) => {
            let rest = &url[i + 3..];
            rest.find('/').map(|j| &rest[j..]).unwrap_or("")
        }
        None => url.as_str(),
    };
    let path = path.split(['?', '#']).next().unwrap_or_default();
    path.trim_end_matches('/').to_string()
}

fn check_duplicates(api: &Api) -> Result<(), SpecError> {
    let mut seen: HashMap<&str, &Operation> = HashMap::new();
    for op in &api.operations {
        if let Some(id) = &op.operation_id {
            if let Some(first) = seen.insert(id, op) {
                return Err(SpecError::DuplicateOperationId {
                    id: id.clone(),
                    first: format!("{} {}", first.method, first.path),
                    second: format!("{} {}", op.method, op.path),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The operation at `method path` (the raw-value walker visits paths in key order).
    fn op<'a>(api: &'a Api, method: &str, path: &str) -> &'a Operation {
        api.operations
            .iter()
            .find(|o| o.method == method && o.path == path)
            .unwrap_or_else(|| panic!("no {method} {path} in {api:?}"))
    }

    fn p(name: &str, location: Location, required: bool) -> Param {
        Param {
            name: name.into(),
            location,
            required,
        }
    }

    const OPENAPI30: &str = r##"{
      "openapi": "3.0.3",
      "info": {"title": "pets", "version": "1"},
      "servers": [{"url": "https://{host}/api/{v}/", "variables": {"host": {"default": "x"}, "v": {"default": "v1"}}}],
      "paths": {
        "/pets/{id}": {
          "parameters": [{"$ref": "#/components/parameters/Id"}],
          "get": {"operationId": "get_pet",
                  "parameters": [{"name": "verbose", "in": "query", "schema": {"type": "boolean"}},
                                 {"name": "x-trace", "in": "header", "required": true, "schema": {"type": "string"}},
                                 {"name": "session", "in": "cookie", "schema": {"type": "string"}}],
                  "responses": {"200": {"description": "ok"}}},
          "put": {"requestBody": {"$ref": "#/components/requestBodies/Pet"},
                  "responses": {"200": {"description": "ok"}}}
        },
        "/alias/{id}": {"$ref": "#/x-path-items/Alias"}
      },
      "x-path-items": {"Alias": {"parameters": [{"$ref": "#/components/parameters/Id"}],
                                 "delete": {"responses": {"204": {"description": "gone"}}}}},
      "components": {
        "parameters": {"Id": {"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}},
        "requestBodies": {"Pet": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Pet"}}}}},
        "schemas": {"Pet": {"type": "object"}}
      }
    }"##;

    #[test]
    fn openapi_30_operations_with_refs_resolved() {
        let api = parse(OPENAPI30.as_bytes()).unwrap();
        assert_eq!(api.flavour, "openapi 3.0.3");
        assert_eq!(api.base_path, "/api/v1");
        assert_eq!(api.operations.len(), 3);
        let get = op(&api, "GET", "/pets/{id}");
        assert_eq!(get.operation_id.as_deref(), Some("get_pet"));
        assert_eq!(
            (get.method.as_str(), get.path.as_str()),
            ("GET", "/pets/{id}")
        );
        assert_eq!(
            get.parameters,
            vec![
                p("id", Location::Path, true),
                p("verbose", Location::Query, false),
                p("x-trace", Location::Header, true)
            ]
        );
        assert!(!get.has_body);
        let put = op(&api, "PUT", "/pets/{id}");
        assert_eq!(
            (put.method.as_str(), put.operation_id.as_ref()),
            ("PUT", None)
        );
        assert!(put.has_body);
        // A path item $ref, with its own $ref'd parameter.
        let alias = op(&api, "DELETE", "/alias/{id}");
        assert_eq!(alias.parameters, vec![p("id", Location::Path, true)]);
    }

    const OPENAPI31_YAML: &str = r##"
openapi: 3.1.0
info: {title: pets, version: "1"}
servers: [{url: /v2}]
webhooks: {}
paths:
  /pets:
    get:
      operationId: listPets
      parameters:
        - {name: limit, in: query, schema: {type: [integer, "null"]}}
    post:
      operationId: createPet
      requestBody: {$ref: "#/components/requestBodies/Pet"}
components:
  requestBodies:
    Pet: {content: {application/json: {schema: {type: object}}}}
"##;

    #[test]
    fn openapi_31_yaml() {
        let api = parse(OPENAPI31_YAML.as_bytes()).unwrap();
        assert_eq!(api.flavour, "openapi 3.1.0");
        assert_eq!(api.base_path, "/v2");
        let ids: Vec<_> = api
            .operations
            .iter()
            .map(|o| {
                (
                    o.operation_id.clone().unwrap(),
                    o.method.clone(),
                    o.has_body,
                )
            })
            .collect();
        assert_eq!(
            ids,
            vec![
                ("listPets".into(), "GET".into(), false),
                ("createPet".into(), "POST".into(), true)
            ]
        );
        assert_eq!(
            api.operations[0].parameters,
            vec![p("limit", Location::Query, false)]
        );
    }

    const SWAGGER20: &str = r##"{
      "swagger": "2.0",
      "info": {"title": "pets", "version": "1"},
      "basePath": "/v1/",
      "parameters": {"Id": {"name": "petId", "in": "path", "required": true, "type": "integer"}},
      "paths": {
        "/pets/{petId}": {
          "get": {"operationId": "getPetById", "parameters": [{"$ref": "#/parameters/Id"}],
                  "responses": {"200": {"description": "ok"}}},
          "post": {"operationId": "updatePetWithForm",
                   "parameters": [{"$ref": "#/parameters/Id"},
                                  {"name": "name", "in": "formData", "type": "string"}],
                   "responses": {"200": {"description": "ok"}}}
        },
        "/pets": {
          "post": {"parameters": [{"in": "body", "name": "body", "schema": {"type": "object"}}],
                   "responses": {"200": {"description": "ok"}}}
        }
      }
    }"##;

    #[test]
    fn swagger_20_with_body_and_form_parameters() {
        let api = parse(SWAGGER20.as_bytes()).unwrap();
        assert_eq!(api.flavour, "swagger 2.0");
        assert_eq!(api.base_path, "/v1");
        let get = op(&api, "GET", "/pets/{petId}");
        assert_eq!(get.parameters, vec![p("petId", Location::Path, true)]);
        assert!(!get.has_body);
        let form = op(&api, "POST", "/pets/{petId}");
        assert_eq!(form.parameters, vec![p("petId", Location::Path, true)]);
        assert!(form.has_body);
        let body = op(&api, "POST", "/pets");
        assert_eq!(
            (body.method.as_str(), body.operation_id.as_ref()),
            ("POST", None)
        );
        assert!(body.has_body && body.parameters.is_empty());
    }

    #[test]
    fn unresolvable_refs_name_the_ref_and_where() {
        let bad = OPENAPI30.replace("#/components/parameters/Id", "#/components/parameters/Nope");
        let e = parse(bad.as_bytes()).unwrap_err();
        assert!(
            matches!(&e, SpecError::UnresolvedRef { reference, at, .. }
                if reference == "#/components/parameters/Nope" && at.contains("~1pets~1{id}")),
            "{e}"
        );
        let remote = SWAGGER20.replace("#/parameters/Id", "other.json#/parameters/Id");
        let e = parse(remote.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("only local references"), "{e}");
        // Schemas count too: a dangling schema reference is a broken document.
        let schema = OPENAPI30.replace("#/components/schemas/Pet", "#/components/schemas/Gone");
        assert_eq!(
            parse(schema.as_bytes()).unwrap_err().kind(),
            "unresolved_ref"
        );
    }

    #[test]
    fn duplicate_operation_ids_are_refused() {
        let dup = SWAGGER20.replace("updatePetWithForm", "getPetById");
        let e = parse(dup.as_bytes()).unwrap_err();
        assert_eq!(
            e,
            SpecError::DuplicateOperationId {
                id: "getPetById".into(),
                first: "GET /pets/{petId}".into(),
                second: "POST /pets/{petId}".into()
            }
        );
    }

    #[test]
    fn garbage_and_other_documents_are_errors_not_panics() {
        assert_eq!(parse(b"{not json").unwrap_err().kind(), "parse");
        assert_eq!(parse(b"key: [unclosed").unwrap_err().kind(), "parse");
        assert_eq!(parse(b"[1, 2]").unwrap_err().kind(), "not_a_spec");
        assert_eq!(
            parse(b"{\"swagger\": \"1.2\"}").unwrap_err().kind(),
            "not_a_spec"
        );
        assert_eq!(
            parse(b"{\"openapi\": \"3.0.0\"}").unwrap_err().kind(),
            "parse"
        );
        assert_eq!(parse(b"<html></html>").unwrap_err().kind(), "not_a_spec");
        let cycle = r##"{"swagger": "2.0", "parameters": {"A": {"$ref": "#/parameters/B"}, "B": {"$ref": "#/parameters/A"}},
            "paths": {"/x": {"get": {"parameters": [{"$ref": "#/parameters/A"}]}}}}"##;
        assert_eq!(
            parse(cycle.as_bytes()).unwrap_err().kind(),
            "unresolved_ref"
        );
    }

    #[test]
    fn server_paths() {
        assert_eq!(server_path("https://api.example.com/v1/", None), "/v1");
        assert_eq!(server_path("https://api.example.com", None), "");
        assert_eq!(server_path("/", None), "");
        assert_eq!(server_path("/base?x=1", None), "/base");
    }
}
