//! Operations of a parsed spec become REST Function objects of an upstream.
use std::collections::HashSet;

use discovery_runtime::names::object_name;
use proto::v1::{
    resource::Spec, rest_function::parameter::Location as PbLocation, rest_function::Parameter,
    FunctionSpec, Metadata, Resource, RestFunction,
};

use crate::spec::{Api, Location};

/// The label naming the upstream a discovered Function belongs to (also in its spec; the
/// label lets `glooctl get function -l` find them).
pub const UPSTREAM_LABEL: &str = "discovery.solo.io/upstream";
/// On Functions kept from an upstream's last good spec while its current spec is bad: the
/// URL and the problem.
pub const PROBLEM_ANNOTATION: &str = "discovery.solo.io/openapi-problem";

/// One Function per operation: named after its operationId, else method and path
/// (`GET /pets/{id}` → `get-pets-id`); names that would collide within the spec get a number.
pub fn functions(api: &Api, namespace: &str, upstream: &str) -> Vec<Resource> {
    let mut taken = HashSet::new();
    let mut out = Vec::with_capacity(api.operations.len());
    for op in &api.operations {
        let base = match &op.operation_id {
            Some(id) if !id.trim().is_empty() => object_name(&[id]),
            _ => object_name(&[&op.method.to_ascii_lowercase(), &op.path]),
        };
        let mut name = base.clone();
        let mut n = 2;
        while !taken.insert(name.clone()) {
            name = object_name(&[&base, &n.to_string()]);
            n += 1;
        }
        let parameters = op
            .parameters
            .iter()
            .map(|p| Parameter {
                name: p.name.clone(),
                location: match p.location {
                    Location::Path => PbLocation::Path,
                    Location::Query => PbLocation::Query,
                    Location::Header => PbLocation::Header,
                } as i32,
                required: p.required,
            })
            .collect();
        out.push(Resource {
            metadata: Some(Metadata {
                name,
                namespace: namespace.into(),
                labels: [(UPSTREAM_LABEL.to_string(), upstream.to_string())].into(),
                ..Default::default()
            }),
            status: None,
            spec: Some(Spec::Function(FunctionSpec {
                upstream: upstream.into(),
                function: Some(proto::v1::function_spec::Function::Rest(RestFunction {
                    method: op.method.clone(),
                    path_template: op.path.clone(),
                    parameters,
                    has_body: op.has_body,
                    base_path: api.base_path.clone(),
                })),
            })),
        });
    }
    out
}

/// Function names are per namespace, but two upstreams may both have, say, `get_health`: the
/// first (in namespace/upstream order, the order of `desired`) keeps the plain name, the later
/// one is renamed `<upstream>-<name>`.
pub fn dedupe_across_upstreams(desired: &mut [Resource]) {
    let mut seen = HashSet::new();
    for r in desired.iter_mut() {
        let Some(m) = r.metadata.as_mut() else {
            continue;
        };
        if !seen.insert((m.namespace.clone(), m.name.clone())) {
            let upstream = m.labels.get(UPSTREAM_LABEL).cloned().unwrap_or_default();
            m.name = object_name(&[&upstream, &m.name]);
            seen.insert((m.namespace.clone(), m.name.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Operation, Param};

    fn op(id: Option<&str>, method: &str, path: &str) -> Operation {
        Operation {
            operation_id: id.map(Into::into),
            method: method.into(),
            path: path.into(),
            parameters: vec![Param {
                name: "id".into(),
                location: Location::Path,
                required: true,
            }],
            has_body: method == "POST",
        }
    }

    fn names(rs: &[Resource]) -> Vec<String> {
        rs.iter()
            .map(|r| r.metadata.as_ref().unwrap().name.clone())
            .collect()
    }

    #[test]
    fn names_come_from_operation_ids_else_method_and_path() {
        let api = Api {
            flavour: "t".into(),
            base_path: "/api".into(),
            operations: vec![
                op(Some("get_pet"), "GET", "/pets/{id}"),
                op(None, "POST", "/pets/{id}"),
                op(None, "POST", "/pets/{id}/"),
            ],
        };
        let fs = functions(&api, "default", "petstore");
        assert_eq!(names(&fs), ["get-pet", "post-pets-id", "post-pets-id-2"]);
        let Some(Spec::Function(f)) = &fs[0].spec else {
            panic!()
        };
        assert_eq!(f.upstream, "petstore");
        let Some(proto::v1::function_spec::Function::Rest(rest)) = &f.function else {
            panic!()
        };
        assert_eq!(rest.method, "GET");
        assert_eq!(rest.path_template, "/pets/{id}");
        assert_eq!(rest.base_path, "/api");
        assert_eq!(rest.parameters[0].name, "id");
        assert!(!rest.has_body);
    }

    #[test]
    fn a_name_two_upstreams_share_is_qualified_for_the_second() {
        let api = Api {
            flavour: "t".into(),
            base_path: String::new(),
            operations: vec![op(Some("health"), "GET", "/health")],
        };
        let mut all = functions(&api, "default", "a");
        all.extend(functions(&api, "default", "b"));
        all.extend(functions(&api, "other", "c"));
        dedupe_across_upstreams(&mut all);
        assert_eq!(names(&all), ["health", "b-health", "health"]);
    }
}
