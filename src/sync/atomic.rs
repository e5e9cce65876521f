//! The one place atomics are imported from, and cache-line prefetch hints for hand-offs
//! between CPUs.
//!
//! The algorithms on shared memory (the submission ring, the pool's lists, state words,
//! events) take their atomics from here, so that they can be checked on the heap:
//!
//! - **loom** (`--cfg loom`): `AtomicU32` / `AtomicU64` become handles to loom's atomics, as
//!   large as std's so that every `#[repr(C)]` layout and its size assertions hold;
//!   `AtomicBool` and `fence` are loom's. A loom atomic exists only if made by `new` in the
//!   running model, so code that casts a mapping to atomics compiles but is not run; models
//!   build their memory out of `new` atomics instead. `sys` models the futex sleep. The
//!   prefetch hints are no-ops.
//! - **Miri**: the prefetch hints (inline asm) are no-ops and `sys::current_cpu` is unknown.
//!   Unit tests that need shared-memory objects or processes are marked
//!   `#[cfg_attr(miri, ignore = "...")]` (most live in `tests/`, which this does not run).
//!
//! ```text
//! MIRIFLAGS=-Zmiri-disable-isolation cargo +nightly miri test --lib  # pool reads the clock
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test --lib --release loom
//! ```

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicBool, Ordering};
#[cfg(loom)]
pub(crate) use model::{AtomicU32, AtomicU64};
/// Bytes are copied, never synchronised on, so loom need not model them.
#[cfg(loom)]
pub(crate) use std::sync::atomic::AtomicU8;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};

/// Loom's atomics, behind handles as small as std's, so that every `#[repr(C)]` layout (and
/// its size assertions) stays the same under loom.
#[cfg(loom)]
mod model {
    use super::Ordering;
    use std::fmt;
    use std::sync::Mutex;

    macro_rules! model_atomic {
        ($name:ident, $int:ty, $cells:ident) => {
            loom::lazy_static! {
                /// This execution's atomics of the type, boxed so they never move.
                static ref $cells: Mutex<Vec<Box<loom::sync::atomic::$name>>> =
                    Mutex::new(Vec::new());
            }

            /// A handle to a loom atomic: its index in this execution's list, plus one
            /// (0: memory not made by `new`, e.g. a mapping, which loom cannot model).
            #[repr(transparent)]
            pub(crate) struct $name($int);

            #[allow(dead_code)] // not every width uses every operation
            impl $name {
                pub(crate) fn new(v: $int) -> Self {
                    let mut cells = $cells.lock().unwrap();
                    cells.push(Box::new(loom::sync::atomic::$name::new(v)));
                    $name(cells.len() as _)
                }

                fn get(&self) -> &loom::sync::atomic::$name {
                    let cells = $cells.lock().unwrap();
                    let cell: *const _ = &**cells
                        .get((self.0 as usize).wrapping_sub(1))
                        .expect("under loom, atomics must be made by `new`");
                    // SAFETY: the box is neither moved nor dropped before the execution
                    // ends, and nothing made in this execution outlives it.
                    unsafe { &*cell }
                }

                pub(crate) fn load(&self, o: Ordering) -> $int {
                    self.get().load(o)
                }
                pub(crate) fn store(&self, v: $int, o: Ordering) {
                    self.get().store(v, o)
                }
                pub(crate) fn swap(&self, v: $int, o: Ordering) -> $int {
                    self.get().swap(v, o)
                }
                pub(crate) fn fetch_add(&self, v: $int, o: Ordering) -> $int {
                    self.get().fetch_add(v, o)
                }
                pub(crate) fn fetch_sub(&self, v: $int, o: Ordering) -> $int {
                    self.get().fetch_sub(v, o)
                }
                pub(crate) fn fetch_or(&self, v: $int, o: Ordering) -> $int {
                    self.get().fetch_or(v, o)
                }
                pub(crate) fn compare_exchange(
                    &self,
                    c: $int,
                    n: $int,
                    s: Ordering,
                    f: Ordering,
                ) -> Result<$int, $int> {
                    self.get().compare_exchange(c, n, s, f)
                }
                pub(crate) fn compare_exchange_weak(
                    &self,
                    c: $int,
                    n: $int,
                    s: Ordering,
                    f: Ordering,
                ) -> Result<$int, $int> {
                    self.get().compare_exchange_weak(c, n, s, f)
                }
            }

            impl fmt::Debug for $name {
                fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.debug_tuple(stringify!($name)).field(&self.0).finish()
                }
            }
        };
    }
    model_atomic!(AtomicU32, u32, CELLS32);
    model_atomic!(AtomicU64, u64, CELLS64);

    const _: () = assert!(std::mem::size_of::<AtomicU32>() == 4);
    const _: () = assert!(std::mem::size_of::<AtomicU64>() == 8);
}

/// Asks the CPU to fetch the cache line at `p` for writing, without waiting for it.
///
/// A hand-off between processes moves several cache lines from one CPU to the other; each
/// costs a full cross-CPU round trip when touched one after the other. Prefetching the lines
/// a step will write (or read) lets those round trips overlap. Only a hint: it never faults,
/// whatever `p` is, and does nothing where the CPU has no such instruction.
#[inline(always)]
pub(crate) fn prefetch_write<T>(p: *const T) {
    #[cfg(all(target_arch = "x86_64", not(any(miri, loom))))]
    // SAFETY: `prefetchw` reads no memory architecturally and cannot fault; it only moves a
    // cache line. (CPUs older than Broadwell / K8 without it decode it as a NOP.) Written as
    // asm because `_mm_prefetch::<_MM_HINT_ET0>` becomes a read prefetch unless the crate is
    // compiled with the `prfchw` target feature.
    unsafe {
        std::arch::asm!("prefetchw [{}]", in(reg) p, options(nostack, preserves_flags, readonly));
    }
    #[cfg(all(target_arch = "aarch64", not(any(miri, loom))))]
    // SAFETY: `prfm` is a hint; it cannot fault.
    unsafe {
        std::arch::asm!("prfm pstl1keep, [{}]", in(reg) p, options(nostack, preserves_flags, readonly));
    }
    #[cfg(any(miri, loom, not(any(target_arch = "x86_64", target_arch = "aarch64"))))]
    let _ = p;
}

/// As [`prefetch_write`], for a line that will only be read.
#[inline(always)]
pub(crate) fn prefetch_read<T>(p: *const T) {
    #[cfg(all(target_arch = "x86_64", not(any(miri, loom))))]
    // SAFETY: as in `prefetch_write`: a hint that cannot fault.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(all(target_arch = "aarch64", not(any(miri, loom))))]
    // SAFETY: `prfm` is a hint; it cannot fault.
    unsafe {
        std::arch::asm!("prfm pldl1keep, [{}]", in(reg) p, options(nostack, preserves_flags, readonly));
    }
    #[cfg(any(miri, loom, not(any(target_arch = "x86_64", target_arch = "aarch64"))))]
    let _ = p;
}
