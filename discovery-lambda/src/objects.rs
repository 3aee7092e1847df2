//! Callables become Function objects: `<upstream>-<function>[-<qualifier>]` in the upstream's
//! namespace (through `names::object_name`, so always a valid, stable name). Two callables
//! whose names would clash (function `a-1` and version 1 of `a`) both keep a distinct name:
//! the later one gets a hashed suffix.
use std::collections::HashSet;

use discovery_runtime::names::object_name;
use proto::v1::{function_spec, resource::Spec, FunctionSpec, LambdaFunction, Metadata, Resource};

use crate::aws::Callable;

pub fn functions(namespace: &str, upstream: &str, callables: &[Callable]) -> Vec<Resource> {
    let mut taken = HashSet::new();
    let mut out = Vec::with_capacity(callables.len());
    for c in callables {
        let mut parts = vec![upstream, c.function.as_str()];
        if !c.qualifier.is_empty() {
            parts.push(&c.qualifier);
        }
        let mut name = object_name(&parts);
        if !taken.insert(name.clone()) {
            // Upper case makes object_name add a hash of the whole input.
            let raw = format!("{upstream}/{}:{}", c.function, c.qualifier).to_uppercase();
            name = object_name(&[&raw]);
            taken.insert(name.clone());
        }
        out.push(Resource {
            metadata: Some(Metadata {
                name,
                namespace: namespace.to_string(),
                ..Default::default()
            }),
            status: None,
            spec: Some(Spec::Function(FunctionSpec {
                upstream: upstream.to_string(),
                function: Some(function_spec::Function::Lambda(LambdaFunction {
                    function_name: c.function.clone(),
                    qualifier: c.qualifier.clone(),
                    arn: c.arn.clone(),
                })),
            })),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(f: &str, q: &str) -> Callable {
        Callable {
            function: f.into(),
            qualifier: q.into(),
            arn: format!("arn:aws:lambda:us-east-1:123456789012:function:{f}:{q}"),
        }
    }

    fn name(r: &Resource) -> &str {
        &r.metadata.as_ref().unwrap().name
    }

    #[test]
    fn one_function_per_callable_named_after_upstream_function_and_qualifier() {
        let out = functions("team", "aws", &[c("Hello_World", ""), c("hello", "live")]);
        assert_eq!(name(&out[1]), "aws-hello-live");
        assert!(
            name(&out[0]).starts_with("aws-hello-world-"),
            "{}",
            name(&out[0])
        );
        assert_eq!(out[1].metadata.as_ref().unwrap().namespace, "team");
        let Some(Spec::Function(f)) = &out[1].spec else {
            panic!()
        };
        assert_eq!(f.upstream, "aws");
        let Some(function_spec::Function::Lambda(l)) = &f.function else {
            panic!()
        };
        assert_eq!(
            (l.function_name.as_str(), l.qualifier.as_str()),
            ("hello", "live")
        );
    }

    #[test]
    fn clashing_names_stay_distinct() {
        let out = functions("d", "aws", &[c("a-1", ""), c("a", "1")]);
        assert_ne!(name(&out[0]), name(&out[1]));
        assert_eq!(name(&out[0]), "aws-a-1");
    }
}
