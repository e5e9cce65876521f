//! The one door to shared memory: the only module that turns an offset into a mapping into
//! a typed view.
//!
//! Mapped memory is shared with processes this one does not control. Rust's rules for
//! references (`&T` means nobody writes `T`, `&mut T` means nobody else reads or writes it)
//! cannot hold for memory a peer may write at any time, so the crate reaches shared memory
//! in three ways only, all defined here:
//!
//! * **Atomics** ([`Region::at`], [`Region::slice`]): types made only of atomics
//!   ([`ShmAtomic`]). A shared reference to an atomic stays sound while a peer stores to it;
//!   a scribbling peer can only make the value wrong, and every reader validates the value it
//!   loaded.
//! * **Copies** ([`Region::copy_out`]): byte runs copied through relaxed atomic loads into
//!   private memory, each byte read once; the caller validates the copy, never the shared
//!   original.
//! * **Protocol-owned bytes** ([`Region::bytes`], [`Region::bytes_mut`]): the zero-copy
//!   views of payloads. These are `unsafe`: the caller states why the protocol gives this
//!   process the bytes for the view's lifetime (a slot in `IN_SERVICE` belongs to its
//!   worker, a received pool buffer to the Reader). A peer that breaks the protocol can
//!   change payload bytes under such a view; that corrupts only data it could already
//!   write, which the crate's trust model allows (docs/ARCHITECTURE.md, "Trust model").
//!
//! Every offset and length is checked against the region's bounds here; a layout computed
//! from untrusted values can therefore not reach outside the mapping.

use std::marker::PhantomData;
use std::mem::{align_of, size_of};
use std::ptr::NonNull;

use crate::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};

/// A type that may be viewed in place in shared memory through a shared reference.
///
/// # Safety
/// Implementors consist only of atomics (or of other `ShmAtomic` types and padding that is
/// never read), so a concurrent store by another process is never a data race; every bit
/// pattern is a valid value; the alignment is at most 64 (segments are 64-aligned).
pub(crate) unsafe trait ShmAtomic: Sync + 'static {}

// SAFETY: an atomic integer: valid for every bit pattern, accessed only atomically.
unsafe impl ShmAtomic for AtomicU8 {}
// SAFETY: as for AtomicU8.
unsafe impl ShmAtomic for AtomicU32 {}
// SAFETY: as for AtomicU8.
unsafe impl ShmAtomic for AtomicU64 {}
// SAFETY: an array of ShmAtomic types is made of atomics too.
unsafe impl<T: ShmAtomic, const N: usize> ShmAtomic for [T; N] {}

/// A bounded view of mapped shared memory, valid for `'a`.
///
/// `Copy` and cheap: a base pointer and a length. Views derived from it (references to
/// atomics, protocol-owned byte slices) carry the same lifetime.
#[derive(Clone, Copy)]
pub(crate) struct Region<'a> {
    base: NonNull<u8>,
    len: usize,
    _memory: PhantomData<&'a [AtomicU8]>,
}

// SAFETY: a Region only hands out atomics (Sync), copies, and unsafe protocol-owned views;
// the memory is shared memory meant to be used from any thread.
unsafe impl Send for Region<'_> {}
// SAFETY: as for Send.
unsafe impl Sync for Region<'_> {}

impl std::fmt::Debug for Region<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region")
            .field("base", &self.base)
            .field("len", &self.len)
            .finish()
    }
}

impl<'a> Region<'a> {
    /// A view of `len` bytes at `base`.
    ///
    /// # Safety
    /// `base..base + len` is mapped readable and writable for all of `'a`, and `base` is
    /// 64-aligned. Nothing in this process creates a `&mut` over those bytes during `'a`
    /// except through this module.
    #[inline]
    pub(crate) unsafe fn new(base: *mut u8, len: usize) -> Region<'a> {
        debug_assert!(base as usize % 64 == 0, "regions start 64-aligned");
        Region {
            base: NonNull::new(base).expect("a mapping is never at address 0"),
            len,
            _memory: PhantomData,
        }
    }

    /// The same view with its lifetime detached, for structures that keep the mapping alive
    /// themselves (a struct holding both the segment and views into it).
    ///
    /// # Safety
    /// The caller keeps the mapping alive for as long as the returned region, and everything
    /// derived from it, is used.
    #[inline]
    pub(crate) unsafe fn detach(self) -> Region<'static> {
        Region {
            base: self.base,
            len: self.len,
            _memory: PhantomData,
        }
    }

    /// The first byte's address (for prefetch hints; dereferencing it is this module's job).
    #[inline]
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// Length in bytes.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Checks that `offset..offset + len` lies inside the region.
    #[inline]
    fn check(&self, offset: usize, len: usize) -> Option<*mut u8> {
        let end = offset.checked_add(len)?;
        if end > self.len {
            return None;
        }
        // SAFETY: offset <= end <= self.len, so the result stays inside (or one past) the
        // mapping that `base` starts.
        Some(unsafe { self.base.as_ptr().add(offset) })
    }

    /// The sub-region `offset..offset + len`, or `None` if it does not fit.
    #[inline]
    pub(crate) fn sub(&self, offset: usize, len: usize) -> Option<Region<'a>> {
        let p = self.check(offset, len)?;
        Some(Region {
            // SAFETY: inside the mapping, which is never at address 0.
            base: unsafe { NonNull::new_unchecked(p) },
            len,
            _memory: PhantomData,
        })
    }

    /// The atomics-only `T` at `offset`, or `None` if it does not fit or is misaligned.
    #[inline]
    pub(crate) fn get<T: ShmAtomic>(&self, offset: usize) -> Option<&'a T> {
        let p = self.check(offset, size_of::<T>())?;
        if p as usize % align_of::<T>() != 0 {
            return None;
        }
        // SAFETY: in bounds and aligned (checked above), mapped for 'a (`new`); T is made of
        // atomics only, so other processes' stores through the same memory are not data
        // races, and every bit pattern is a valid T (`ShmAtomic`).
        Some(unsafe { &*p.cast::<T>() })
    }

    /// As [`get`](Self::get), for offsets from the crate's own layout computations.
    ///
    /// # Panics
    /// If `T` does not fit at `offset`: a bug in a layout, never a value read from shared
    /// memory.
    #[inline]
    #[track_caller]
    pub(crate) fn at<T: ShmAtomic>(&self, offset: usize) -> &'a T {
        match self.get(offset) {
            Some(t) => t,
            None => layout_bug(offset, size_of::<T>(), self.len),
        }
    }

    /// `n` consecutive atomics-only `T`s starting at `offset`, or `None` if they do not fit or
    /// are misaligned.
    #[inline]
    pub(crate) fn slice<T: ShmAtomic>(&self, offset: usize, n: usize) -> Option<&'a [T]> {
        let p = self.check(offset, size_of::<T>().checked_mul(n)?)?;
        if p as usize % align_of::<T>() != 0 {
            return None;
        }
        // SAFETY: as in `get`, for `n` elements laid out contiguously (checked above).
        Some(unsafe { std::slice::from_raw_parts(p.cast::<T>(), n) })
    }

    /// Copies `dst.len()` bytes starting at `offset` into `dst` (`None` if they do not fit).
    ///
    /// Each byte is read exactly once, through relaxed atomic loads (8 bytes at a time where
    /// aligned), so the result is a snapshot a peer cannot change afterwards.
    pub(crate) fn copy_out(&self, offset: usize, dst: &mut [u8]) -> Option<()> {
        let src = self.check(offset, dst.len())?;
        let mut i = 0;
        let n = dst.len();
        while i < n && (src as usize + i) % 8 != 0 {
            // SAFETY: src + i is inside the checked range; AtomicU8 has alignment 1.
            dst[i] = unsafe { &*src.add(i).cast::<AtomicU8>() }.load(Relaxed);
            i += 1;
        }
        while i + 8 <= n {
            // SAFETY: inside the checked range and 8-aligned (the loop above aligned it).
            let word = unsafe { &*src.add(i).cast::<AtomicU64>() }.load(Relaxed);
            dst[i..i + 8].copy_from_slice(&word.to_ne_bytes());
            i += 8;
        }
        while i < n {
            // SAFETY: as in the first loop.
            dst[i] = unsafe { &*src.add(i).cast::<AtomicU8>() }.load(Relaxed);
            i += 1;
        }
        Some(())
    }

    /// Address of `offset`, checked to lie inside the region (for prefetch hints and for
    /// caching a hot address). `None` if `offset..offset + len` does not fit.
    #[inline]
    pub(crate) fn ptr(&self, offset: usize, len: usize) -> Option<*mut u8> {
        self.check(offset, len)
    }

    /// The payload bytes `offset..offset + len` as a slice, without copying.
    ///
    /// # Safety
    /// The channel or pool protocol gives this process these bytes for all of `'b`: no
    /// process that follows the protocol writes them meanwhile. (A peer that breaks it can
    /// change them under the slice; the crate's trust model lets it corrupt only data it
    /// could already write.)
    #[inline]
    pub(crate) unsafe fn bytes<'b>(&self, offset: usize, len: usize) -> Option<&'b [u8]>
    where
        'a: 'b,
    {
        let p = self.check(offset, len)?;
        // SAFETY: in bounds (checked), mapped for 'a: 'b; exclusive by protocol (the
        // caller's contract).
        Some(unsafe { std::slice::from_raw_parts(p, len) })
    }

    /// As [`bytes`](Self::bytes), writable.
    ///
    /// # Safety
    /// As for [`bytes`](Self::bytes), and no other view of these bytes exists in this
    /// process during `'b`.
    #[inline]
    #[allow(clippy::mut_from_ref)] // the exclusivity is the caller's contract
    pub(crate) unsafe fn bytes_mut<'b>(&self, offset: usize, len: usize) -> Option<&'b mut [u8]>
    where
        'a: 'b,
    {
        let p = self.check(offset, len)?;
        // SAFETY: as in `bytes`, and exclusive in this process (the caller's contract).
        Some(unsafe { std::slice::from_raw_parts_mut(p, len) })
    }
}

#[cold]
#[track_caller]
fn layout_bug(offset: usize, size: usize, len: usize) -> ! {
    panic!("layout bug: {size} bytes at offset {offset} do not fit a {len}-byte region")
}

/// A heap buffer laid out like a mapping (64-aligned, zero-filled), for unit tests of the
/// algorithms that run on shared memory.
#[cfg(test)]
pub(crate) struct HeapRegion {
    words: Vec<AtomicU64Cell>,
}

#[cfg(test)]
#[repr(C, align(64))]
struct AtomicU64Cell([AtomicU64; 8]);

#[cfg(test)]
impl HeapRegion {
    /// `len` zero bytes (rounded up to 64).
    pub(crate) fn new(len: usize) -> HeapRegion {
        let cells = len.div_ceil(64).max(1);
        HeapRegion {
            words: (0..cells)
                .map(|_| AtomicU64Cell(std::array::from_fn(|_| AtomicU64::new(0))))
                .collect(),
        }
    }

    /// The whole buffer as a region.
    pub(crate) fn region(&self) -> Region<'_> {
        // SAFETY: the Vec's cells are 64-aligned, initialised, live as long as the borrow of
        // self, and are only ever accessed as atomics (they are atomics).
        unsafe { Region::new(self.words.as_ptr() as *mut u8, self.words.len() * 64) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_checked() {
        let heap = HeapRegion::new(128);
        let r = heap.region();
        assert_eq!(r.len(), 128);
        assert!(r.get::<AtomicU64>(120).is_some());
        assert!(r.get::<AtomicU64>(121).is_none(), "misaligned");
        assert!(r.get::<AtomicU64>(128).is_none(), "past the end");
        assert!(r.get::<AtomicU32>(usize::MAX - 1).is_none(), "overflow");
        assert!(r.slice::<AtomicU32>(0, 32).is_some());
        assert!(r.slice::<AtomicU32>(4, 32).is_none());
        assert!(r.slice::<AtomicU32>(0, usize::MAX / 2).is_none());
        assert!(r.sub(64, 64).is_some() && r.sub(65, 64).is_none());
        let mut big = [0u8; 129];
        assert!(r.copy_out(0, &mut big).is_none());
        assert!(r.ptr(0, 129).is_none());
        // SAFETY: nothing else uses the heap region.
        assert!(unsafe { r.bytes(1, 128) }.is_none());
    }

    #[test]
    fn copies_see_every_byte_at_every_alignment() {
        let heap = HeapRegion::new(256);
        let r = heap.region();
        {
            // SAFETY: nothing else uses the heap region; the view ends in this block.
            let fill = unsafe { r.bytes_mut(0, 256) }.unwrap();
            fill.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
        }
        for offset in 0..16 {
            for len in [0, 1, 7, 8, 9, 63, 100] {
                let mut dst = vec![0xAA; len];
                r.copy_out(offset, &mut dst).unwrap();
                let want: Vec<u8> = (offset..offset + len).map(|b| b as u8).collect();
                assert_eq!(dst, want, "offset {offset} len {len}");
            }
        }
        // SAFETY: nothing else uses the heap region.
        let view = unsafe { r.bytes(8, 4) }.unwrap();
        assert_eq!(view, [8, 9, 10, 11]);
    }

    #[test]
    #[should_panic(expected = "layout bug")]
    fn at_out_of_bounds_is_a_layout_bug() {
        let heap = HeapRegion::new(64);
        let _ = heap.region().at::<AtomicU64>(64);
    }
}
