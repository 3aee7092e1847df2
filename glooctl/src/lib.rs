//! glooctl: the command-line client of gloo-core's storage API.
//!
//! ```text
//!   files ──► docs (YAML documents → Resources, located errors) ──► commands ──► storage API
//!   storage API ──► commands ──► output (table | docs as YAML/JSON) ──► stdout
//! ```
//!
//! The binary is a shell over [`Args::parse_and_run`]; everything else lives here so tests
//! reach it.
#![forbid(unsafe_code)]

pub mod args;
pub mod commands;
pub mod docs;
pub mod error;
pub mod kinds;
pub mod output;

pub use args::Args;
pub use error::Error;
