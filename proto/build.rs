//! Compiles `proto/**/*.proto` with the pure-Rust `protox` (no system `protoc`), then generates
//! prost messages, tonic service code and pbjson serde impls (the proto3 JSON mapping, used for
//! YAML files and field ownership).
use std::{env, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &[
    "proto/gloo/v1/resources.proto",
    "proto/gloo/v1/storage.proto",
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
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds_with_config(fds, config)?;

    let descriptors = std::fs::read(&descriptor_path)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .extern_path(".google.protobuf", "::pbjson_types")
        .build(&[".gloo"])?;
    Ok(())
}
