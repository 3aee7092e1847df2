//! What a Gateway adds to its listener besides routes: TLS termination with one certificate per
//! server name (SNI), served over SDS so a Secret's rotation never touches the listener and
//! never drains its connections; optional client-certificate checks; a plain TCP proxy to an
//! upstream instead of HTTP; access logs; WebSocket upgrades.
//!
//! ```text
//!  Gateway.tls.certificates[i] ─► FilterChain { server_names, DownstreamTlsContext ─► SDS "<secret>_<ns>" }
//!  Secret (tls)                ─► SDS Secret  "<secret>_<ns>" (cert + key), "<secret>_<ns>-ca" (CA)
//! ```
use std::collections::BTreeMap;

use envoy_types::pb::envoy::{
    config::{
        accesslog::v3::{access_log, AccessLog as EnvoyAccessLog},
        core::v3::{
            substitution_format_string::Format, transport_socket, SubstitutionFormatString,
            TransportSocket,
        },
        listener::v3::{listener_filter, FilterChainMatch, ListenerFilter},
    },
    extensions::{
        access_loggers::{
            file::v3::{file_access_log, FileAccessLog},
            stream::v3::{stdout_access_log, StdoutAccessLog},
        },
        filters::{
            listener::tls_inspector::v3::TlsInspector,
            network::tcp_proxy::v3::{tcp_proxy, TcpProxy},
        },
        transport_sockets::tls::v3::{
            common_tls_context::ValidationContextType, secret, CertificateValidationContext,
            CommonTlsContext, DownstreamTlsContext, SdsSecretConfig, Secret, TlsCertificate,
        },
    },
};
use envoy_types::pb::google::protobuf::BoolValue;
use proto::v1::{secret_spec, AccessLog, GatewaySpec, Kind, ResourceRef, TlsSecret};

use crate::{
    resource::Key,
    translate::{
        names,
        upstreams::{ads, any, inline_body},
        Context, Reporter,
    },
    xds::XdsResource,
};

/// The TLS side of a gateway: one (server names, transport socket) per certificate, the SDS
/// secrets they name, and the Secret objects read.
#[derive(Default)]
pub struct GatewayTls {
    pub chains: Vec<(Vec<String>, TransportSocket)>,
    pub secrets: BTreeMap<String, XdsResource>,
    pub origins: Vec<(String, Key)>,
}

fn tls_secret<'a>(
    ctx: &Context<'a>,
    namespace: &str,
    field: &str,
    r: &ResourceRef,
) -> Result<(Key, &'a TlsSecret), String> {
    if r.name.is_empty() {
        return Err(format!("{field}.name: required"));
    }
    let (ns, secret) = ctx.secret_ref(field, namespace, r)?;
    match &secret.kind {
        Some(secret_spec::Kind::Tls(t)) => Ok((Key::new(Kind::Secret, ns, &r.name), t)),
        _ => Err(format!(
            "{field}: Secret {ns}/{} is not a tls secret",
            r.name
        )),
    }
}

fn sds(name: &str) -> SdsSecretConfig {
    SdsSecretConfig {
        name: name.into(),
        sds_config: Some(ads()),
    }
}

pub fn tls(ctx: &Context<'_>, key: &Key, gw: &GatewaySpec) -> Result<GatewayTls, String> {
    let mut out = GatewayTls::default();
    let Some(tls) = &gw.tls else {
        return Ok(out);
    };
    if tls.certificates.is_empty() {
        return Err("tls.certificates: at least one certificate is required".into());
    }
    let mut validation = None;
    if let Some(r) = tls.client_ca_secret_ref.as_ref() {
        let (skey, t) = tls_secret(ctx, &key.namespace, "tls.clientCaSecretRef", r)?;
        if t.root_ca.is_empty() {
            return Err(format!(
                "tls.clientCaSecretRef: Secret {}/{} has no rootCa",
                skey.namespace, skey.name
            ));
        }
        let name = format!("{}-ca", names::cluster(&skey.namespace, &skey.name));
        let s = Secret {
            name: name.clone(),
            r#type: Some(secret::Type::ValidationContext(
                CertificateValidationContext {
                    trusted_ca: Some(inline_body(&t.root_ca)),
                    ..Default::default()
                },
            )),
        };
        out.secrets
            .insert(name.clone(), XdsResource::new(name.clone(), &s));
        out.origins.push((name.clone(), skey));
        validation = Some(ValidationContextType::ValidationContextSdsSecretConfig(
            sds(&name),
        ));
    }
    let mut seen_names: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, c) in tls.certificates.iter().enumerate() {
        let field = format!("tls.certificates[{i}]");
        let r = c
            .secret_ref
            .as_ref()
            .ok_or_else(|| format!("{field}.secretRef: required"))?;
        let (skey, t) = tls_secret(ctx, &key.namespace, &format!("{field}.secretRef"), r)?;
        if t.cert_chain.is_empty() || t.private_key.is_empty() {
            return Err(format!(
                "{field}.secretRef: Secret {}/{} needs certChain and privateKey",
                skey.namespace, skey.name
            ));
        }
        if i > 0 && c.server_names.is_empty() {
            return Err(format!(
                "{field}.serverNames: only the first certificate may have no server names"
            ));
        }
        for n in &c.server_names {
            if let Some(j) = seen_names.insert(n, i) {
                return Err(format!(
                    "{field}.serverNames: {n:?} is also in tls.certificates[{j}]"
                ));
            }
        }
        let name = names::cluster(&skey.namespace, &skey.name);
        let s = Secret {
            name: name.clone(),
            r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
                certificate_chain: Some(inline_body(&t.cert_chain)),
                private_key: Some(inline_body(&t.private_key)),
                ..Default::default()
            })),
        };
        out.secrets
            .insert(name.clone(), XdsResource::new(name.clone(), &s));
        out.origins.push((name.clone(), skey));
        let ctx = DownstreamTlsContext {
            common_tls_context: Some(CommonTlsContext {
                tls_certificate_sds_secret_configs: vec![sds(&name)],
                validation_context_type: validation.clone(),
                alpn_protocols: vec!["h2".into(), "http/1.1".into()],
                ..Default::default()
            }),
            require_client_certificate: validation.is_some().then_some(BoolValue { value: true }),
            ..Default::default()
        };
        out.chains.push((
            c.server_names.clone(),
            TransportSocket {
                name: "envoy.transport_sockets.tls".into(),
                config_type: Some(transport_socket::ConfigType::TypedConfig(any(&ctx))),
            },
        ));
    }
    Ok(out)
}

/// The match of a TLS filter chain: its server names, or none for the default chain.
pub fn chain_match(server_names: &[String]) -> Option<FilterChainMatch> {
    (!server_names.is_empty()).then(|| FilterChainMatch {
        server_names: server_names.to_vec(),
        ..Default::default()
    })
}

/// The listener filter that reads the SNI, so filter chains can match on it.
pub fn tls_inspector() -> ListenerFilter {
    ListenerFilter {
        name: "envoy.filters.listener.tls_inspector".into(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(any(
            &TlsInspector::default(),
        ))),
        ..Default::default()
    }
}

pub fn access_logs(gw: &GatewaySpec) -> Result<Vec<EnvoyAccessLog>, String> {
    let Some(AccessLog { path, format }) = gw.access_log.as_deref() else {
        return Ok(Vec::new());
    };
    if !path.is_empty() && !path.starts_with('/') {
        return Err(format!("accessLog.path: {path:?} is not an absolute path"));
    }
    let log_format = (!format.is_empty()).then(|| {
        let mut f = format.clone();
        if !f.ends_with('\n') {
            f.push('\n');
        }
        SubstitutionFormatString {
            format: Some(Format::TextFormatSource(inline_body(&f))),
            ..Default::default()
        }
    });
    let (name, config) = if path.is_empty() {
        (
            "envoy.access_loggers.stdout",
            any(&StdoutAccessLog {
                access_log_format: log_format.map(stdout_access_log::AccessLogFormat::LogFormat),
            }),
        )
    } else {
        (
            "envoy.access_loggers.file",
            any(&FileAccessLog {
                path: path.clone(),
                access_log_format: log_format.map(file_access_log::AccessLogFormat::LogFormat),
            }),
        )
    };
    Ok(vec![EnvoyAccessLog {
        name: name.into(),
        config_type: Some(access_log::ConfigType::TypedConfig(config)),
        ..Default::default()
    }])
}

/// The TCP proxy of a gateway with a `tcpUpstream`, checking that the upstream translated.
pub fn tcp_proxy(
    ctx: &Context<'_>,
    reporter: &Reporter,
    key: &Key,
    gw: &GatewaySpec,
    stat_prefix: &str,
) -> Result<Option<TcpProxy>, String> {
    let Some(r) = &gw.tcp_upstream else {
        return Ok(None);
    };
    if r.name.is_empty() {
        return Err("tcpUpstream.name: required".into());
    }
    let ns: &str = if r.namespace.is_empty() {
        &key.namespace
    } else {
        &r.namespace
    };
    if ctx.get(Kind::Upstream, ns, &r.name).is_none() {
        return Err(format!("tcpUpstream: upstream {ns}/{} not found", r.name));
    }
    if reporter.is_rejected(&Key::new(Kind::Upstream, ns, &r.name)) {
        return Err(format!("tcpUpstream: upstream {ns}/{} is Rejected", r.name));
    }
    Ok(Some(TcpProxy {
        stat_prefix: stat_prefix.into(),
        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(names::cluster(
            ns, &r.name,
        ))),
        access_log: access_logs(gw)?,
        ..Default::default()
    }))
}
