//! The one place atomics are imported from, so that a model checker (loom) can replace them;
//! and cache-line prefetch hints for hand-offs between CPUs.

pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};

/// Asks the CPU to fetch the cache line at `p` for writing, without waiting for it.
///
/// A hand-off between processes moves several cache lines from one CPU to the other; each
/// costs a full cross-CPU round trip when touched one after the other. Prefetching the lines
/// a step will write (or read) lets those round trips overlap. Only a hint: it never faults,
/// whatever `p` is, and does nothing where the CPU has no such instruction.
#[inline(always)]
pub(crate) fn prefetch_write<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `prefetchw` reads no memory architecturally and cannot fault; it only moves a
    // cache line. (CPUs older than Broadwell / K8 without it decode it as a NOP.) Written as
    // asm because `_mm_prefetch::<_MM_HINT_ET0>` becomes a read prefetch unless the crate is
    // compiled with the `prfchw` target feature.
    unsafe {
        std::arch::asm!("prefetchw [{}]", in(reg) p, options(nostack, preserves_flags, readonly));
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: `prfm` is a hint; it cannot fault.
    unsafe {
        std::arch::asm!("prfm pstl1keep, [{}]", in(reg) p, options(nostack, preserves_flags, readonly));
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = p;
}

/// As [`prefetch_write`], for a line that will only be read.
#[inline(always)]
pub(crate) fn prefetch_read<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: as in `prefetch_write`: a hint that cannot fault.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: `prfm` is a hint; it cannot fault.
    unsafe {
        std::arch::asm!("prfm pldl1keep, [{}]", in(reg) p, options(nostack, preserves_flags, readonly));
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = p;
}
