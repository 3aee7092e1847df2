//! What every discovery service shares: the storage client, common flags, the sync loop that
//! turns a source's desired sets into owner-scoped Syncs, backoff and polling intervals, a
//! reflector of gloo-core's store, object naming, and the health/metrics server.
//!
//! A discovery binary is a few lines:
//!
//! ```ignore
//! let rt = Runtime::new("discovery-x", args.common, &[Kind::Function])?;
//! rt.run(|ctx| async move { /* read source; ctx.publisher.publish(full_set); */ Ok(()) }).await
//! ```
#![forbid(unsafe_code)]

pub mod args;
pub mod backoff;
pub mod client;
pub mod metrics;
pub mod names;
pub mod partitions;
pub mod reflect;
pub mod runtime;
pub mod selector;
mod server;
mod set;
pub mod sync;

pub use args::CommonArgs;
pub use runtime::{exit_code, Context, Runtime};
