//! Structural checks every write passes before it reaches the store: names, required fields,
//! ports. Each error names the object and the field (`Upstream default/pets: spec.static.hosts[0].port: ...`).
//! Checks that need the rest of the configuration (does the upstream exist?) belong to the
//! translator's validation, not here.
use proto::v1::{
    function_spec::Function, resource::Spec, route::Action, route_action::Destination as Dest,
    secret_spec::Kind as SecretKind, upstream_spec::UpstreamType, Resource,
};

use crate::resource::{check_dns_label, kind_name, spec_kind, Key, DEFAULT_NAMESPACE};

/// Fills defaults (namespace) and checks the object; returns its key.
pub fn normalize_and_check(r: &mut Resource) -> Result<Key, String> {
    let meta = r.metadata.get_or_insert_with(Default::default);
    if meta.namespace.is_empty() {
        meta.namespace = DEFAULT_NAMESPACE.into();
    }
    let kind = r.spec.as_ref().map(spec_kind);
    let what = format!(
        "{} {}/{}",
        kind.map_or("object", kind_name),
        meta.namespace,
        meta.name
    );
    let fail = |field: &str, msg: String| Err(format!("{what}: {field}: {msg}"));
    if let Err(e) = check_dns_label(&meta.name) {
        return fail("metadata.name", e);
    }
    if let Err(e) = check_dns_label(&meta.namespace) {
        return fail("metadata.namespace", e);
    }
    let Some(spec) = &r.spec else {
        return fail("spec", "required (it says which kind the object is)".into());
    };
    if let Err((field, msg)) = check_spec(spec) {
        return fail(&field, msg);
    }
    Ok(Key::new(spec_kind(spec), &meta.namespace, &meta.name))
}

type Check = Result<(), (String, String)>;

fn bad(field: impl Into<String>, msg: impl Into<String>) -> Check {
    Err((field.into(), msg.into()))
}

fn port(field: String, p: u32) -> Check {
    if (1..=65535).contains(&p) {
        Ok(())
    } else {
        bad(field, format!("{p} is not a port (1-65535)"))
    }
}

fn required(field: impl Into<String>, value: &str) -> Check {
    if value.trim().is_empty() {
        bad(field, "required")
    } else {
        Ok(())
    }
}

fn check_spec(spec: &Spec) -> Check {
    match spec {
        Spec::Upstream(u) => match &u.upstream_type {
            None => bad("spec", "one of static, kube, aws or gcp is required"),
            Some(UpstreamType::Static(s)) => {
                if s.hosts.is_empty() {
                    return bad("spec.static.hosts", "at least one host is required");
                }
                for (i, h) in s.hosts.iter().enumerate() {
                    required(format!("spec.static.hosts[{i}].addr"), &h.addr)?;
                    port(format!("spec.static.hosts[{i}].port"), h.port)?;
                }
                Ok(())
            }
            Some(UpstreamType::Kube(k)) => {
                required("spec.kube.serviceName", &k.service_name)?;
                port("spec.kube.servicePort".into(), k.service_port)
            }
            Some(UpstreamType::Aws(a)) => required("spec.aws.region", &a.region),
            Some(UpstreamType::Gcp(g)) => required("spec.gcp.project", &g.project),
        },
        Spec::Function(f) => {
            required("spec.upstream", &f.upstream)?;
            match &f.function {
                None => bad("spec", "one of lambda, gcf or rest is required"),
                Some(Function::Lambda(l)) => {
                    if l.function_name.is_empty() && l.arn.is_empty() {
                        bad("spec.lambda.functionName", "required (or arn)")
                    } else {
                        Ok(())
                    }
                }
                Some(Function::Gcf(g)) => required("spec.gcf.url", &g.url),
                Some(Function::Rest(r)) => {
                    const METHODS: [&str; 8] = [
                        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE",
                    ];
                    if !METHODS.contains(&r.method.as_str()) {
                        return bad(
                            "spec.rest.method",
                            format!(
                                "{:?} is not an HTTP method (upper case, e.g. GET)",
                                r.method
                            ),
                        );
                    }
                    if !r.path_template.starts_with('/') {
                        return bad("spec.rest.pathTemplate", "must start with '/'");
                    }
                    Ok(())
                }
            }
        }
        Spec::Endpoints(e) => {
            required("spec.upstream", &e.upstream)?;
            for (i, ep) in e.endpoints.iter().enumerate() {
                required(format!("spec.endpoints[{i}].address"), &ep.address)?;
                port(format!("spec.endpoints[{i}].port"), ep.port)?;
            }
            Ok(())
        }
        Spec::VirtualService(vs) => {
            for (i, r) in vs.routes.iter().enumerate() {
                let at = format!("spec.routes[{i}]");
                match &r.action {
                    None => {
                        return bad(
                            at,
                            "an action is required (routeAction, redirect or directResponse)",
                        )
                    }
                    Some(Action::RouteAction(a)) => match &a.destination {
                        None => {
                            return bad(
                                format!("{at}.routeAction"),
                                "one of single, multi or upstreamGroup is required",
                            )
                        }
                        Some(Dest::Single(d)) => {
                            let name = d.upstream.as_ref().map_or("", |u| u.name.as_str());
                            required(format!("{at}.routeAction.single.upstream.name"), name)?;
                        }
                        Some(Dest::Multi(m)) => {
                            if m.destinations.is_empty() {
                                return bad(
                                    format!("{at}.routeAction.multi.destinations"),
                                    "at least one destination is required",
                                );
                            }
                            if m.destinations.iter().all(|d| d.weight == 0) {
                                return bad(
                                    format!("{at}.routeAction.multi.destinations"),
                                    "the weights add up to 0",
                                );
                            }
                        }
                        Some(Dest::UpstreamGroup(g)) => {
                            required(format!("{at}.routeAction.upstreamGroup.name"), &g.name)?;
                        }
                    },
                    Some(Action::DirectResponse(d)) => {
                        if !(200..=599).contains(&d.status) {
                            return bad(
                                format!("{at}.directResponse.status"),
                                format!("{} is not an HTTP status (200-599)", d.status),
                            );
                        }
                    }
                    Some(Action::Redirect(_)) => {}
                }
            }
            Ok(())
        }
        Spec::UpstreamGroup(g) => {
            if g.destinations.is_empty() {
                bad("spec.destinations", "at least one destination is required")
            } else {
                Ok(())
            }
        }
        Spec::Gateway(g) => port("spec.bindPort".into(), g.bind_port),
        Spec::Secret(s) => match &s.kind {
            None => bad("spec", "one of tls, aws, gcp or opaque is required"),
            Some(SecretKind::Tls(t)) if t.cert_chain.is_empty() && t.root_ca.is_empty() => {
                bad("spec.tls", "certChain or rootCa is required")
            }
            Some(_) => Ok(()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::v1::{static_upstream::Host, Metadata, StaticUpstream, UpstreamSpec};

    fn upstream(name: &str, port: u32) -> Resource {
        Resource {
            metadata: Some(Metadata {
                name: name.into(),
                ..Default::default()
            }),
            status: None,
            spec: Some(Spec::Upstream(UpstreamSpec {
                upstream_type: Some(UpstreamType::Static(StaticUpstream {
                    hosts: vec![Host {
                        addr: "127.0.0.1".into(),
                        port,
                        sni: String::new(),
                    }],
                })),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn errors_name_the_object_and_the_field() {
        let e = normalize_and_check(&mut upstream("pets", 0)).unwrap_err();
        assert_eq!(
            e,
            "Upstream default/pets: spec.static.hosts[0].port: 0 is not a port (1-65535)"
        );
        let e = normalize_and_check(&mut upstream("Pets_1", 80)).unwrap_err();
        assert!(
            e.starts_with("Upstream default/Pets_1: metadata.name:"),
            "{e}"
        );
        let mut ok = upstream("pets", 80);
        let key = normalize_and_check(&mut ok).unwrap();
        assert_eq!(key.encode(), "Upstream/default/pets");
    }
}
