//! Protocols every gateway speaks on top of HTTP: gRPC-Web, translated to gRPC by
//! `envoy.filters.http.grpc_web` (as Gloo enables it by default) for routes to HTTP/2
//! upstreams. The filter only acts on gRPC-Web requests, so other traffic is untouched.
use envoy_types::pb::envoy::{
    config::route::v3::VirtualHost,
    extensions::filters::{
        http::grpc_web::v3::GrpcWeb,
        network::http_connection_manager::v3::{http_filter, HttpFilter},
    },
};

use super::{Plugin, Stage};
use crate::translate::upstreams::any;

pub const GRPC_WEB: &str = "envoy.filters.http.grpc_web";

pub struct Protocols;

impl Plugin for Protocols {
    fn name(&self) -> &'static str {
        "protocols"
    }

    fn vhost_filters(&self, vhost: &VirtualHost) -> Vec<(Stage, HttpFilter)> {
        if vhost.routes.is_empty() {
            return Vec::new();
        }
        vec![(
            Stage::Early,
            HttpFilter {
                name: GRPC_WEB.into(),
                config_type: Some(http_filter::ConfigType::TypedConfig(any(
                    &GrpcWeb::default(),
                ))),
                ..Default::default()
            },
        )]
    }
}
