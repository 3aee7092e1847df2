//! gloo-core: the gateway's control plane.
//!
//! ```text
//!  storage gRPC API ──► storage (auth, validation, field ownership) ──► store ──► redb file
//!                                                                        │
//!                                                     watch ◄── events ◄─┘
//! ```
#![forbid(unsafe_code)]

pub mod admin;
pub mod args;
pub mod auth;
pub mod controller;
pub mod memory;
pub mod metrics;
pub mod resource;
pub mod storage;
pub mod store;
pub mod translate;
pub mod xds;
