//! Process-wide allocator settings for long numeric runs (the `gatt` binary and the
//! benchmarks call [`tune`] first thing).

/// Keeps freed memory in the process for reuse. By default glibc serves large blocks
/// (such as a model's activations) with fresh mappings and returns them on free, so every
/// training step pays for zeroing new pages again; with these settings `gatt train` ran
/// about 10% faster on 2 cores at the same peak memory. Freed memory up to 2 GiB stays
/// with the process until it exits.
///
/// All threads share one arena: glibc gives each thread that allocates (here the
/// thread pool's workers, where candle and the kernels allocate outputs) an arena of its
/// own, made of 64 MiB heaps that are unmapped whenever they empty, which the trim
/// threshold above does not prevent. With its own arenas a LoRA step of 2,048 tokens
/// faulted in about 740,000 fresh pages (2.9 GB, about 9% of its CPU time); with one
/// arena, none after the second step (`perf stat -e page-faults`, 2 against 5 steps).
/// The threads allocate a few large blocks per operation, so sharing one lock costs
/// nothing measurable. Call it first thing in `main`, before other threads exist.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before other threads
    // exist.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}
