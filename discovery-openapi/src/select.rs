//! Which upstreams are asked for a spec, and where.
//!
//! Like Gloo's `fdsMode`: in **whitelist** mode only upstreams labelled
//! `discovery.solo.io/function_discovery=enabled` are probed; in **blacklist** mode every
//! upstream but those labelled `disabled`. The store has no Namespace objects, so a
//! namespace's setting is given on the command line (`--enabled-namespace`,
//! `--disabled-namespace`); an upstream's own label always wins over its namespace's.
use proto::v1::{resource::Spec, upstream_spec::UpstreamType, Kind, Resource};

use discovery_runtime::reflect::StoreView;

pub const DISCOVERY_LABEL: &str = "discovery.solo.io/function_discovery";
/// An absolute URL (`https://docs.example.com/petstore.json`) or a path on the upstream
/// (`/api/openapi.yaml`): the only place this upstream's spec is fetched from.
pub const URL_ANNOTATION: &str = "discovery.solo.io/openapi-url";

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Only upstreams (or namespaces) with function discovery enabled.
    Whitelist,
    /// Every upstream but those (or those in namespaces) with function discovery disabled.
    Blacklist,
}

#[derive(Clone, Debug)]
pub struct Selection {
    pub mode: Mode,
    pub enabled_namespaces: Vec<String>,
    pub disabled_namespaces: Vec<String>,
}

impl Selection {
    pub fn selects(&self, upstream: &Resource) -> bool {
        let Some(m) = &upstream.metadata else {
            return false;
        };
        match m.labels.get(DISCOVERY_LABEL).map(String::as_str) {
            Some("enabled") => return true,
            Some("disabled") => return false,
            _ => {}
        }
        let ns = if m.namespace.is_empty() {
            "default"
        } else {
            &m.namespace
        };
        if self.enabled_namespaces.iter().any(|n| n == ns) {
            return true;
        }
        if self.disabled_namespaces.iter().any(|n| n == ns) {
            return false;
        }
        self.mode == Mode::Blacklist
    }
}

/// The URLs a spec may be at, in the order they are tried; `None` when the upstream's address
/// is not known (an aws or gcp upstream, or a kube upstream without Endpoints yet).
pub fn candidate_urls(
    upstream: &Resource,
    view: &StoreView,
    paths: &[String],
) -> Option<Vec<String>> {
    let m = upstream.metadata.as_ref()?;
    let annotated = m.annotations.get(URL_ANNOTATION).map(|s| s.trim());
    if let Some(url) = annotated.filter(|u| u.starts_with("http://") || u.starts_with("https://")) {
        return Some(vec![url.to_string()]);
    }
    let Some(Spec::Upstream(spec)) = &upstream.spec else {
        return None;
    };
    let scheme = if spec.tls.is_some() { "https" } else { "http" };
    let (host, port) = match spec.upstream_type.as_ref()? {
        UpstreamType::Static(s) => {
            let h = s.hosts.first()?;
            (h.addr.clone(), h.port)
        }
        UpstreamType::Kube(_) => view.of_kind(Kind::Endpoints).find_map(|r| {
            let em = r.metadata.as_ref()?;
            let Some(Spec::Endpoints(e)) = &r.spec else {
                return None;
            };
            if em.namespace != m.namespace || e.upstream != m.name {
                return None;
            }
            let ep = e.endpoints.first()?;
            Some((ep.address.clone(), ep.port))
        })?,
        _ => return None,
    };
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host
    };
    let base = format!("{scheme}://{host}:{port}");
    match annotated {
        Some(p) if p.starts_with('/') => Some(vec![format!("{base}{p}")]),
        _ => Some(paths.iter().map(|p| format!("{base}{p}")).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::v1::{
        static_upstream::Host, Endpoint, EndpointsSpec, KubeUpstream, Metadata, StaticUpstream,
        UpstreamSpec,
    };

    fn upstream(ns: &str, label: Option<&str>, t: UpstreamType) -> Resource {
        let mut m = Metadata {
            name: "petstore".into(),
            namespace: ns.into(),
            ..Default::default()
        };
        if let Some(l) = label {
            m.labels.insert(DISCOVERY_LABEL.into(), l.into());
        }
        Resource {
            metadata: Some(m),
            status: None,
            spec: Some(Spec::Upstream(UpstreamSpec {
                upstream_type: Some(t),
                ..Default::default()
            })),
        }
    }

    fn stat() -> UpstreamType {
        UpstreamType::Static(StaticUpstream {
            hosts: vec![Host {
                addr: "10.0.0.1".into(),
                port: 8080,
                sni: String::new(),
            }],
        })
    }

    #[test]
    fn whitelist_and_blacklist_by_label_and_namespace() {
        let sel = |mode, en: &[&str], dis: &[&str]| Selection {
            mode,
            enabled_namespaces: en.iter().map(|s| s.to_string()).collect(),
            disabled_namespaces: dis.iter().map(|s| s.to_string()).collect(),
        };
        let w = sel(Mode::Whitelist, &["team"], &[]);
        assert!(!w.selects(&upstream("default", None, stat())));
        assert!(w.selects(&upstream("default", Some("enabled"), stat())));
        assert!(w.selects(&upstream("team", None, stat())));
        assert!(!w.selects(&upstream("team", Some("disabled"), stat())));
        let b = sel(Mode::Blacklist, &[], &["legacy"]);
        assert!(b.selects(&upstream("default", None, stat())));
        assert!(!b.selects(&upstream("default", Some("disabled"), stat())));
        assert!(!b.selects(&upstream("legacy", None, stat())));
        assert!(b.selects(&upstream("legacy", Some("enabled"), stat())));
    }

    #[test]
    fn urls_for_static_kube_and_annotated_upstreams() {
        let paths = vec!["/openapi.json".to_string(), "/swagger.json".to_string()];
        let view = StoreView::default();
        assert_eq!(
            candidate_urls(&upstream("default", None, stat()), &view, &paths).unwrap(),
            [
                "http://10.0.0.1:8080/openapi.json",
                "http://10.0.0.1:8080/swagger.json"
            ]
        );
        let mut tls = upstream("default", None, stat());
        if let Some(Spec::Upstream(u)) = &mut tls.spec {
            u.tls = Some(Box::default());
        }
        tls.metadata
            .as_mut()
            .unwrap()
            .annotations
            .insert(URL_ANNOTATION.into(), "/docs/api.yaml".into());
        assert_eq!(
            candidate_urls(&tls, &view, &paths).unwrap(),
            ["https://10.0.0.1:8080/docs/api.yaml"]
        );

        let kube = upstream("default", None, UpstreamType::Kube(KubeUpstream::default()));
        assert_eq!(candidate_urls(&kube, &view, &paths), None);
        let mut view = StoreView::default();
        view.objects.insert(
            (Kind::Endpoints as i32, "default".into(), "petstore".into()),
            Resource {
                metadata: Some(Metadata {
                    name: "petstore".into(),
                    namespace: "default".into(),
                    ..Default::default()
                }),
                status: None,
                spec: Some(Spec::Endpoints(EndpointsSpec {
                    upstream: "petstore".into(),
                    endpoints: vec![Endpoint {
                        address: "10.1.2.3".into(),
                        port: 9000,
                        ..Default::default()
                    }],
                })),
            },
        );
        assert_eq!(
            candidate_urls(&kube, &view, &paths[..1]).unwrap(),
            ["http://10.1.2.3:9000/openapi.json"]
        );
    }
}
