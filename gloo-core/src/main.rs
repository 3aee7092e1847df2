use clap::Parser;

fn main() -> std::process::ExitCode {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        limit_arenas();
        gloo_core::memory::set_releaser(trim);
    }
    gloo_core::args::Args::parse().run()
}

/// glibc's `malloc_trim(0)`: gives every arena's whole free pages back to the system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim() {
    // SAFETY: malloc_trim takes no pointers and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// One glibc malloc arena (unless `MALLOC_ARENA_MAX` says otherwise), set before any thread
/// starts. By default glibc gives each thread that allocates under contention an arena of its
/// own, up to 8 per core, and memory freed into one arena is not reused by another: with tokio's
/// workers, the store and the translator each touching a large configuration, the memory
/// benchmark settled at 118-124 MiB (peak 145) with them and at 106 MiB (peak 118) with one,
/// loading as fast (`docs/benchmarks.md`). Allocation is not what gloo-core's threads wait on.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn limit_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    // SAFETY: mallopt takes no pointers; it runs here before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}
