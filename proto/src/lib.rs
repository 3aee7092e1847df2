//! The gateway's API: resource kinds, the storage service, and their generated Rust.
//!
//! Messages come from prost, the `Storage` client and server from tonic, and serde impls from
//! pbjson (the proto3 JSON mapping: camelCase names, enums by name, durations as "1.5s").
#![forbid(unsafe_code)]

pub mod gloo {
    pub mod v1 {
        #![allow(clippy::all, clippy::pedantic)]
        include!(concat!(env!("OUT_DIR"), "/gloo.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/gloo.v1.serde.rs"));
    }
}

pub use gloo::v1;

mod redact;
