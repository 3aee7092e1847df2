//! Compiles `proto/**/*.proto` with the pure-Rust `protox` (no system `protoc`), then generates
//! prost messages, tonic service code and pbjson serde impls (the proto3 JSON mapping, used for
//! YAML files and field ownership).
use std::{env, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &[
    "proto/gloo/v1/resources.proto",
    "proto/gloo/v1/storage.proto",
];

/// Fields wrapped in a `Box`: optional messages that most objects leave unset.
const BOXED: &[&str] = &[
    ".gloo.v1.UpstreamSpec.upstream_type.aws",
    ".gloo.v1.UpstreamSpec.upstream_type.gcp",
    ".gloo.v1.UpstreamSpec.tls",
    ".gloo.v1.UpstreamSpec.circuit_breakers",
    ".gloo.v1.UpstreamSpec.outlier_detection",
    ".gloo.v1.UpstreamSpec.load_balancer",
    ".gloo.v1.VirtualServiceSpec.options",
    ".gloo.v1.RouteOptions.retries",
    ".gloo.v1.RouteOptions.regex_rewrite",
    ".gloo.v1.RouteOptions.headers",
    ".gloo.v1.RouteOptions.cors",
    ".gloo.v1.RouteOptions.shadowing",
    ".gloo.v1.RouteOptions.faults",
    ".gloo.v1.RouteOptions.rate_limit",
    ".gloo.v1.RouteOptions.lambda",
    ".gloo.v1.GatewaySpec.tls",
    ".gloo.v1.GatewaySpec.access_log",
];

/// Maps held as `BTreeMap`: ones that are mostly empty and sit in every endpoint, kube
/// Upstream and route destination. An empty `BTreeMap` is 24 bytes inline against a
/// `HashMap`'s 48. (pbjson chooses the map type per message, not per field, so Metadata's
/// maps stay `HashMap`s: its `field_managers` is set on every object, and one small hash table
/// is smaller than one B-tree node.)
const BTREE_MAPS: &[&str] = &[
    ".gloo.v1.KubeUpstream.selector",
    ".gloo.v1.Endpoint.labels",
    ".gloo.v1.Destination.subset",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for p in PROTOS {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let descriptor_path = out.join("gloo_descriptor.bin");
    std::fs::write(&descriptor_path, fds.encode_to_vec())?;

    let mut config = prost_build::Config::new();
    config
        .compile_well_known_types()
        .extern_path(".google.protobuf", "::pbjson_types")
        // Secret payloads get a hand-written Debug that redacts them.
        .skip_debug([
            ".gloo.v1.TlsSecret",
            ".gloo.v1.AwsSecret",
            ".gloo.v1.GcpSecret",
            ".gloo.v1.OpaqueSecret",
        ]);
    // Options that most objects leave unset are boxed: a message field is otherwise held inline,
    // at its full size, in every object whether set or not, and the store and the translator
    // hold tens of thousands of objects (an unboxed `Resource` was 768 bytes, mostly such
    // options; see docs/benchmarks.md).
    for field in BOXED {
        config.boxed(field);
    }
    config.btree_map(BTREE_MAPS);
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds_with_config(fds, config)?;

    let descriptors = std::fs::read(&descriptor_path)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .extern_path(".google.protobuf", "::pbjson_types")
        // pbjson takes the messages holding them.
        .btree_map(
            BTREE_MAPS
                .iter()
                .map(|f| &f[..f.rfind('.').unwrap_or(f.len())]),
        )
        .build(&[".gloo"])?;
    Ok(())
}
