//! Giving freed memory back to the system after a large change.
//!
//! A big Sync (10,000 Upstreams and their Endpoints, say) is decoded, validated, stored and
//! translated on several threads, and the copies it replaces are freed on others. glibc keeps
//! what was freed in each thread's arena for reuse, so after settling gloo-core's RSS was ~60 MiB
//! above what it actually held (heap profile in `docs/benchmarks.md`). After a pass that changed
//! many objects, the controller asks the allocator to return whole free pages
//! (`malloc_trim`). The call itself lives in the binary (the library has no unsafe code); a
//! process that sets no releaser (tests, other allocators) just skips it.
use std::sync::OnceLock;

static RELEASER: OnceLock<fn()> = OnceLock::new();

/// Passes or status writes touching at least this many objects are followed by a release.
pub const LARGE_CHANGE: usize = 1000;

/// Sets what [`release`] calls (once; later calls are ignored).
pub fn set_releaser(f: fn()) {
    let _ = RELEASER.set(f);
}

/// Returns freed memory to the system, if the process set a way to.
pub fn release() {
    if let Some(f) = RELEASER.get() {
        f();
    }
}
