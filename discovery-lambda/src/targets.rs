//! What to list: one target per aws Upstream in the store (selected by the common namespace and
//! label flags), plus one per `--region`. A target says where to call (region, endpoint), as
//! whom (credentials), and where its Functions go (namespace, upstream).
use std::fmt;

use discovery_runtime::{reflect::StoreView, selector::Selector, CommonArgs};
use proto::v1::{resource::Spec, secret_spec, upstream_spec::UpstreamType, Kind};

/// A `--region` from the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionTarget {
    pub region: String,
    pub namespace: String,
    pub upstream: String,
}

/// Static keys from a Secret. Debug never shows them.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct StaticKeys {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
}

impl fmt::Debug for StaticKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StaticKeys(<redacted>)")
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CredentialSource {
    /// The standard AWS chain (environment, profile, web identity, container, IMDS).
    Chain,
    /// A role assumed with the standard chain's credentials.
    Role(String),
    /// The keys of the upstream's Secret.
    Static(StaticKeys),
}

/// How to reach one account/region, and where its Functions go.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    pub namespace: String,
    pub upstream: String,
    pub region: String,
    pub endpoint: Option<String>,
    pub credentials: CredentialSource,
}

impl Target {
    /// The part of the desired set this target fills.
    pub fn key(&self) -> (String, String) {
        (self.namespace.clone(), self.upstream.clone())
    }
}

/// A target that cannot be listed (its Secret is missing): its Functions are kept as they are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocked {
    pub namespace: String,
    pub upstream: String,
    pub reason: String,
}

/// The targets of the current store view and the command line. An Upstream named by a
/// `--region` that is itself an aws Upstream is listed once, as the Upstream.
pub fn targets(
    view: &StoreView,
    common: &CommonArgs,
    selector: &Selector,
    regions: &[RegionTarget],
    endpoint_url: Option<&str>,
    role_arn: Option<&str>,
) -> (Vec<Target>, Vec<Blocked>) {
    let mut out = Vec::new();
    let mut blocked = Vec::new();
    for r in view.of_kind(Kind::Upstream) {
        let (Some(m), Some(Spec::Upstream(u))) = (&r.metadata, &r.spec) else {
            continue;
        };
        let Some(UpstreamType::Aws(aws)) = &u.upstream_type else {
            continue;
        };
        if !common.namespace_selected(&m.namespace) || !selector.matches(&m.labels) {
            continue;
        }
        if aws.region.is_empty() {
            blocked.push(Blocked {
                namespace: m.namespace.clone(),
                upstream: m.name.clone(),
                reason: "aws.region is empty".into(),
            });
            continue;
        }
        let credentials = match aws.secret_ref.as_ref().filter(|s| !s.name.is_empty()) {
            Some(s) => {
                let ns = if s.namespace.is_empty() {
                    &m.namespace
                } else {
                    &s.namespace
                };
                match view
                    .get(Kind::Secret, ns, &s.name)
                    .and_then(|r| r.spec.as_ref())
                {
                    Some(Spec::Secret(proto::v1::SecretSpec {
                        kind: Some(secret_spec::Kind::Aws(a)),
                    })) => CredentialSource::Static(StaticKeys {
                        access_key_id: a.access_key_id.clone(),
                        secret_access_key: a.secret_access_key.clone(),
                        session_token: a.session_token.clone(),
                    }),
                    _ => {
                        blocked.push(Blocked {
                            namespace: m.namespace.clone(),
                            upstream: m.name.clone(),
                            reason: format!(
                                "aws.secretRef: Secret {ns}/{} not found or not an aws secret",
                                s.name
                            ),
                        });
                        continue;
                    }
                }
            }
            None if !aws.role_arn.is_empty() => CredentialSource::Role(aws.role_arn.clone()),
            None => CredentialSource::Chain,
        };
        out.push(Target {
            namespace: m.namespace.clone(),
            upstream: m.name.clone(),
            region: aws.region.clone(),
            endpoint: (!aws.endpoint.is_empty()).then(|| aws.endpoint.clone()),
            credentials,
        });
    }
    for r in regions {
        if out
            .iter()
            .any(|t| t.namespace == r.namespace && t.upstream == r.upstream)
        {
            continue;
        }
        out.push(Target {
            namespace: r.namespace.clone(),
            upstream: r.upstream.clone(),
            region: r.region.clone(),
            endpoint: endpoint_url.map(str::to_string),
            credentials: match role_arn {
                Some(a) => CredentialSource::Role(a.to_string()),
                None => CredentialSource::Chain,
            },
        });
    }
    (out, blocked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use proto::v1::{
        AwsSecret, AwsUpstream, Metadata, Resource, ResourceRef, SecretSpec, UpstreamSpec,
    };

    #[derive(clap::Parser)]
    struct A {
        #[command(flatten)]
        common: CommonArgs,
    }

    fn obj(kind: Kind, name: &str, spec: Spec) -> ((i32, String, String), Resource) {
        (
            (kind as i32, "default".into(), name.into()),
            Resource {
                metadata: Some(Metadata {
                    name: name.into(),
                    namespace: "default".into(),
                    ..Default::default()
                }),
                status: None,
                spec: Some(spec),
            },
        )
    }

    fn aws(name: &str, secret: &str) -> ((i32, String, String), Resource) {
        obj(
            Kind::Upstream,
            name,
            Spec::Upstream(UpstreamSpec {
                upstream_type: Some(UpstreamType::Aws(Box::new(AwsUpstream {
                    region: "us-east-1".into(),
                    secret_ref: (!secret.is_empty()).then(|| ResourceRef {
                        name: secret.into(),
                        namespace: String::new(),
                    }),
                    endpoint: "http://127.0.0.1:5000".into(),
                    ..Default::default()
                }))),
                ..Default::default()
            }),
        )
    }

    #[test]
    fn upstreams_with_secrets_regions_and_missing_secrets() {
        let view = StoreView {
            objects: [
                aws("with-keys", "creds"),
                aws("no-secret", ""),
                aws("missing", "gone"),
                obj(
                    Kind::Secret,
                    "creds",
                    Spec::Secret(SecretSpec {
                        kind: Some(secret_spec::Kind::Aws(AwsSecret {
                            access_key_id: "AK".into(),
                            secret_access_key: "SK".into(),
                            session_token: String::new(),
                        })),
                    }),
                ),
            ]
            .into_iter()
            .collect(),
            revision: 1,
        };
        let a = A::parse_from(["x"]);
        let regions = [
            RegionTarget {
                region: "eu-west-1".into(),
                namespace: "default".into(),
                upstream: "aws-eu-west-1".into(),
            },
            RegionTarget {
                region: "us-east-1".into(),
                namespace: "default".into(),
                upstream: "no-secret".into(),
            },
        ];
        let (t, blocked) = targets(&view, &a.common, &Selector::default(), &regions, None, None);
        let names: Vec<_> = t.iter().map(|t| t.upstream.as_str()).collect();
        assert_eq!(names, ["no-secret", "with-keys", "aws-eu-west-1"]);
        assert_eq!(t[0].credentials, CredentialSource::Chain);
        assert!(
            matches!(t[1].credentials, CredentialSource::Static(ref k) if k.access_key_id == "AK")
        );
        assert_eq!(t[1].endpoint.as_deref(), Some("http://127.0.0.1:5000"));
        assert_eq!(blocked.len(), 1);
        assert!(
            blocked[0].reason.contains("Secret default/gone"),
            "{blocked:?}"
        );
        assert!(!format!("{t:?}").contains("SK"));
    }
}
