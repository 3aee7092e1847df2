//! What every discovery service (and glooctl) shares to talk to gloo-core.
#![forbid(unsafe_code)]

pub mod client;
