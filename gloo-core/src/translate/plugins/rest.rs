//! REST functions: a route whose destination names a REST Function sends the request to the
//! function's method and path, with stock Envoy only.
//!
//! ```text
//!  matcher                          Envoy route(s)
//!  exact "/store/pets/{id}"   ─►  1. uri_template match /store/pets/{id}, :method == GET
//!  (a URI template)                  rewrite uri_template → <base_path>/pets/{id}
//!                                 2. same match, any other method → 405 (Allow: GET)
//!  prefix "/petstore"         ─►  the function's own template under the prefix:
//!                                   /petstore/pets/{id}, then as above
//! ```
//!
//! Path parameters are filled from the captures of the route's URI template
//! (`envoy.path.match.uri_template` + `envoy.path.rewrite.uri_template`); the rewrite keeps
//! the query string, so query parameters pass through unchanged. Every path parameter of the
//! function must be captured by a variable of the same name (names are compared after
//! replacing characters Envoy does not allow in variable names, anything but letters, digits
//! and `_`, with `_`). A path template is written as an `exact` matcher containing `{var}`
//! (`{var=*}`/`{var=**}` as in Envoy); a `prefix` matcher exposes the function's own template
//! under that prefix; a `regex` matcher cannot feed path parameters and is refused for a
//! function that has any. Parameters are not taken from headers: stock Envoy cannot build a
//! path from header values without a Lua filter, which this gateway does not use.
//!
//! Method: the function's route matches only its method; a second route with the same match
//! answers every other method with 405 and an `Allow` header.
use envoy_types::pb::envoy::{
    config::{
        core::v3::{
            header_value_option::HeaderAppendAction, HeaderValue, HeaderValueOption,
            TypedExtensionConfig,
        },
        route::v3::{
            header_matcher::HeaderMatchSpecifier, route::Action as EnvoyAction,
            route_match::PathSpecifier, DirectResponseAction, HeaderMatcher, Route as EnvoyRoute,
        },
    },
    extensions::path::{
        r#match::uri_template::v3::UriTemplateMatchConfig,
        rewrite::uri_template::v3::UriTemplateRewriteConfig,
    },
    r#type::matcher::v3::{string_matcher::MatchPattern, StringMatcher},
};
use proto::v1::{
    function_spec::Function, route::Action, route_action::Destination as Dest, RestFunction,
};

use super::{Plugin, RouteContext};
use crate::translate::{
    routes::destination_function,
    upstreams::{any, inline_body},
    Context,
};

pub struct Rest;

impl Plugin for Rest {
    fn name(&self) -> &'static str {
        "rest"
    }

    fn matched(
        &self,
        ctx: &Context<'_>,
        rc: &RouteContext<'_>,
        out: &mut Vec<EnvoyRoute>,
        start: usize,
    ) -> Result<(), String> {
        let Some(Action::RouteAction(ra)) = &rc.route.action else {
            return Ok(());
        };
        let Some(Dest::Single(d)) = &ra.destination else {
            return Ok(());
        };
        let Ok(Some(f)) = destination_function(ctx, rc.namespace, d) else {
            return Ok(());
        };
        let Some(Function::Rest(rest)) = &f.function else {
            return Ok(());
        };
        let routes = out.split_off(start);
        for r in routes {
            if !matches!(r.action, Some(EnvoyAction::Route(_))) {
                out.push(r);
                continue;
            }
            let (ok, not_allowed) = rest_routes(&d.function, rest, r)?;
            out.push(ok);
            out.push(not_allowed);
        }
        Ok(())
    }
}

/// The route to the function and the 405 route after it.
fn rest_routes(
    name: &str,
    rest: &RestFunction,
    mut r: EnvoyRoute,
) -> Result<(EnvoyRoute, EnvoyRoute), String> {
    let method = rest.method.to_ascii_uppercase();
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(format!(
            "function {name}: method {:?} is not an HTTP method",
            rest.method
        ));
    }
    let target = variables_sanitized(&join(&rest.base_path, &rest.path_template));
    let needed = variables(&target);
    let m = r.r#match.as_mut().ok_or("route without a match")?;
    let template = match &m.path_specifier {
        Some(PathSpecifier::Path(p)) => variables_sanitized(p),
        Some(PathSpecifier::Prefix(p)) => {
            variables_sanitized(&join(p.trim_end_matches('/'), &rest.path_template))
        }
        _ => {
            return Err(format!(
                "function {name} takes its path parameters from a URI template: match it with \
                 an exact path such as {:?} or a prefix, not a regex",
                rest.path_template
            ))
        }
    };
    let captured = variables(&template);
    if let Some(missing) = needed.iter().find(|v| !captured.contains(v)) {
        return Err(format!(
            "function {name} needs path parameter {{{missing}}}, which the matcher's template \
             {template:?} does not capture"
        ));
    }
    let Some(EnvoyAction::Route(ra)) = r.action.as_mut() else {
        unreachable!("checked by the caller");
    };
    if !ra.prefix_rewrite.is_empty() || ra.regex_rewrite.is_some() {
        return Err(format!(
            "function {name}: options.prefixRewrite and options.regexRewrite cannot be used on a \
             route to a REST function (the function decides the path)"
        ));
    }
    ra.path_rewrite_policy = Some(TypedExtensionConfig {
        name: "envoy.path.rewrite.uri_template".into(),
        typed_config: Some(any(&UriTemplateRewriteConfig {
            path_template_rewrite: target,
        })),
    });
    m.path_specifier = Some(PathSpecifier::PathMatchPolicy(TypedExtensionConfig {
        name: "envoy.path.match.uri_template".into(),
        typed_config: Some(any(&UriTemplateMatchConfig {
            path_template: template,
        })),
    }));

    let mut not_allowed = EnvoyRoute {
        name: format!("{}-405", r.name),
        r#match: r.r#match.clone(),
        action: Some(EnvoyAction::DirectResponse(DirectResponseAction {
            status: 405,
            body: Some(inline_body(&format!(
                "method not allowed: function {name} takes {method}\n"
            ))),
            ..Default::default()
        })),
        response_headers_to_add: vec![HeaderValueOption {
            header: Some(HeaderValue {
                key: "allow".into(),
                value: method.clone(),
                ..Default::default()
            }),
            append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
            ..Default::default()
        }],
        ..Default::default()
    };
    not_allowed
        .response_headers_to_add
        .extend(r.response_headers_to_add.iter().cloned());
    if let Some(m) = r.r#match.as_mut() {
        m.headers.push(HeaderMatcher {
            name: ":method".into(),
            header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(StringMatcher {
                match_pattern: Some(MatchPattern::Exact(method)),
                ..Default::default()
            })),
            ..Default::default()
        });
    }
    Ok((r, not_allowed))
}

/// `base` + `path`, with exactly one `/` between them.
fn join(base: &str, path: &str) -> String {
    let base = base.trim_end_matches('/');
    let path = path.trim_start_matches('/');
    format!("{base}/{path}")
}

/// The variable names of a template (`{id}`, `{rest=**}` → `id`, `rest`).
fn variables(template: &str) -> Vec<String> {
    template
        .split('{')
        .skip(1)
        .filter_map(|s| s.split_once('}'))
        .map(|(v, _)| v.split('=').next().unwrap_or(v).to_string())
        .collect()
}

/// OpenAPI allows any name for a path parameter (`{pet-id}`); Envoy's templates only letters,
/// digits and `_`. Both sides go through this, so they agree.
fn variables_sanitized(template: &str) -> String {
    let mut out = String::with_capacity(template.len());
    let mut in_var = false;
    let mut in_name = false;
    for c in template.chars() {
        match c {
            '{' => {
                in_var = true;
                in_name = true;
                out.push(c);
            }
            '}' => {
                in_var = false;
                in_name = false;
                out.push(c);
            }
            '=' if in_var => {
                in_name = false;
                out.push(c);
            }
            c if in_name && !(c.is_ascii_alphanumeric() || c == '_') => out.push('_'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::route::v3::{RouteAction, RouteMatch};
    use prost::Message;

    fn rest(method: &str, path: &str, base: &str) -> RestFunction {
        RestFunction {
            method: method.into(),
            path_template: path.into(),
            base_path: base.into(),
            ..Default::default()
        }
    }

    fn route(path: PathSpecifier) -> EnvoyRoute {
        EnvoyRoute {
            name: "default-vs-0".into(),
            r#match: Some(RouteMatch {
                path_specifier: Some(path),
                ..Default::default()
            }),
            action: Some(EnvoyAction::Route(RouteAction::default())),
            ..Default::default()
        }
    }

    fn match_template(r: &EnvoyRoute) -> String {
        let Some(PathSpecifier::PathMatchPolicy(p)) = &r.r#match.as_ref().unwrap().path_specifier
        else {
            panic!("no template match: {r:?}")
        };
        assert_eq!(p.name, "envoy.path.match.uri_template");
        UriTemplateMatchConfig::decode(p.typed_config.as_ref().unwrap().value.as_slice())
            .unwrap()
            .path_template
    }

    fn rewrite(r: &EnvoyRoute) -> String {
        let Some(EnvoyAction::Route(ra)) = &r.action else {
            panic!()
        };
        let p = ra.path_rewrite_policy.as_ref().unwrap();
        assert_eq!(p.name, "envoy.path.rewrite.uri_template");
        UriTemplateRewriteConfig::decode(p.typed_config.as_ref().unwrap().value.as_slice())
            .unwrap()
            .path_template_rewrite
    }

    #[test]
    fn a_template_matcher_rewrites_to_the_functions_path_and_checks_the_method() {
        let (ok, na) = rest_routes(
            "get-pet",
            &rest("get", "/pets/{id}", "/api/"),
            route(PathSpecifier::Path("/store/pets/{id}".into())),
        )
        .unwrap();
        assert_eq!(match_template(&ok), "/store/pets/{id}");
        assert_eq!(rewrite(&ok), "/api/pets/{id}");
        let method = &ok.r#match.as_ref().unwrap().headers[0];
        assert_eq!(method.name, ":method");
        assert_eq!(
            method.header_match_specifier,
            Some(HeaderMatchSpecifier::StringMatch(StringMatcher {
                match_pattern: Some(MatchPattern::Exact("GET".into())),
                ..Default::default()
            }))
        );
        // The 405 route: same path match, no method condition, comes second.
        assert_eq!(match_template(&na), "/store/pets/{id}");
        assert!(na.r#match.as_ref().unwrap().headers.is_empty());
        let Some(EnvoyAction::DirectResponse(d)) = &na.action else {
            panic!()
        };
        assert_eq!(d.status, 405);
        assert_eq!(
            na.response_headers_to_add[0].header.as_ref().unwrap().value,
            "GET"
        );
    }

    #[test]
    fn a_prefix_exposes_the_functions_template_under_it() {
        let (ok, _) = rest_routes(
            "get-pet",
            &rest("GET", "/pets/{pet-id}", ""),
            route(PathSpecifier::Prefix("/petstore/".into())),
        )
        .unwrap();
        assert_eq!(match_template(&ok), "/petstore/pets/{pet_id}");
        assert_eq!(rewrite(&ok), "/pets/{pet_id}");
    }

    #[test]
    fn uncaptured_parameters_and_regex_matchers_are_errors_naming_the_function() {
        let e = rest_routes(
            "get-pet",
            &rest("GET", "/pets/{id}", ""),
            route(PathSpecifier::Path("/store/pets/{name}".into())),
        )
        .unwrap_err();
        assert!(e.contains("get-pet") && e.contains("{id}"), "{e}");
        let e = rest_routes(
            "get-pet",
            &rest("GET", "/pets/{id}", ""),
            route(PathSpecifier::SafeRegex(Default::default())),
        )
        .unwrap_err();
        assert!(e.contains("regex"), "{e}");
        let e = rest_routes(
            "f",
            &rest("", "/x", ""),
            route(PathSpecifier::Prefix("/".into())),
        )
        .unwrap_err();
        assert!(e.contains("method"), "{e}");
    }

    #[test]
    fn variable_helpers() {
        assert_eq!(variables("/a/{x}/b/{rest=**}"), ["x", "rest"]);
        assert_eq!(
            variables_sanitized("/a/{pet-id}/{p.q=**}"),
            "/a/{pet_id}/{p_q=**}"
        );
        assert_eq!(join("/api/", "/pets"), "/api/pets");
        assert_eq!(join("", "/pets"), "/pets");
    }

    /// Through the whole translator: a VirtualService with a route to a REST function.
    #[test]
    fn a_virtual_service_route_to_a_rest_function_translates_to_two_envoy_routes() {
        use crate::translate::{translate, Input};
        use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
        use proto::v1::{
            matcher::Path, resource::Spec, route_action::Destination as D, status::State,
            upstream_spec::UpstreamType, Destination, FunctionSpec, GatewaySpec, Matcher, Metadata,
            Resource, ResourceRef, Route, RouteAction as RA, StaticUpstream, UpstreamSpec,
            VirtualServiceSpec,
        };
        use std::sync::Arc;
        let res = |name: &str, spec: Spec| Resource {
            metadata: Some(Metadata {
                name: name.into(),
                namespace: "default".into(),
                ..Default::default()
            }),
            status: None,
            spec: Some(spec),
        };
        let to = |path: Path| Route {
            matchers: vec![Matcher {
                path: Some(path),
                ..Default::default()
            }],
            action: Some(Action::RouteAction(RA {
                destination: Some(D::Single(Destination {
                    upstream: Some(ResourceRef {
                        name: "petstore".into(),
                        namespace: String::new(),
                    }),
                    function: "get-pet".into(),
                    ..Default::default()
                })),
            })),
            ..Default::default()
        };
        let objects = |routes: Vec<Route>| {
            vec![
                res(
                    "petstore",
                    Spec::Upstream(UpstreamSpec {
                        upstream_type: Some(UpstreamType::Static(StaticUpstream::default())),
                        ..Default::default()
                    }),
                ),
                res(
                    "get-pet",
                    Spec::Function(FunctionSpec {
                        upstream: "petstore".into(),
                        function: Some(Function::Rest(rest("GET", "/store/pets/{id}", ""))),
                    }),
                ),
                res(
                    "pets",
                    Spec::VirtualService(VirtualServiceSpec {
                        routes,
                        ..Default::default()
                    }),
                ),
                res(
                    "gw",
                    Spec::Gateway(GatewaySpec {
                        bind_address: "127.0.0.1".into(),
                        bind_port: 8080,
                        ..Default::default()
                    }),
                ),
            ]
        };
        let input = |objects: Vec<Resource>| Input {
            objects: objects
                .into_iter()
                .map(|r| (crate::resource::Key::of(&r).unwrap(), Arc::new(r)))
                .collect(),
        };
        let vs_key = crate::resource::Key::new(proto::v1::Kind::VirtualService, "default", "pets");

        // The Envoy routes of an Accepted VirtualService with these routes.
        let served = |routes: Vec<Route>| {
            let t = translate(&input(objects(routes)));
            assert_eq!(
                t.reports[&vs_key].state,
                State::Accepted,
                "{:?}",
                t.reports[&vs_key]
            );
            let rc = t
                .snapshot
                .of_type(crate::xds::ROUTE)
                .and_then(|m| m.get("gw_default-routes"))
                .unwrap();
            let rc = RouteConfiguration::decode(rc.value.as_slice()).unwrap();
            rc.virtual_hosts[0].routes.clone()
        };
        let routes = served(vec![to(Path::Exact("/pets/{id}".into()))]);
        assert_eq!(routes.len(), 2);
        assert_eq!(match_template(&routes[0]), "/pets/{id}");
        assert_eq!(rewrite(&routes[0]), "/store/pets/{id}");
        assert!(
            matches!(&routes[1].action, Some(EnvoyAction::DirectResponse(d)) if d.status == 405)
        );

        let t = translate(&input(objects(vec![to(Path::Exact(
            "/pets/{name}".into(),
        ))])));
        let r = &t.reports[&vs_key];
        assert_eq!(r.state, State::Rejected);
        assert!(
            r.reason
                .contains("rest: function get-pet needs path parameter {id}"),
            "{r:?}"
        );

        // After a plain route, and with two matchers: the plain route is left as it is, and
        // each matcher's route to the function is followed by its own 405 route.
        let mut plain = to(Path::Prefix("/health".into()));
        plain.name = "health".into();
        if let Some(Action::RouteAction(RA {
            destination: Some(D::Single(d)),
        })) = &mut plain.action
        {
            d.function.clear();
        }
        let mut two = to(Path::Exact("/pets/{id}".into()));
        two.matchers.push(Matcher {
            path: Some(Path::Exact("/animals/{id}".into())),
            ..Default::default()
        });
        let routes = served(vec![plain, two]);
        let shape: Vec<(&str, bool)> = routes
            .iter()
            .map(|r| {
                let is_405 =
                    matches!(&r.action, Some(EnvoyAction::DirectResponse(d)) if d.status == 405);
                (r.name.as_str(), is_405)
            })
            .collect();
        assert_eq!(shape.len(), 5, "{shape:?}");
        assert!(shape[0].0.contains("health") && !shape[0].1, "{shape:?}");
        assert_eq!(
            shape[1..].iter().map(|s| s.1).collect::<Vec<_>>(),
            [false, true, false, true],
            "{shape:?}"
        );
        assert_eq!(match_template(&routes[1]), "/pets/{id}");
        assert_eq!(match_template(&routes[3]), "/animals/{id}");
        assert!(
            routes[1].name.ends_with("-0") && routes[3].name.ends_with("-1"),
            "{shape:?}"
        );
    }
}
