//! The lists through the directory: doubly linked by entry index, with checked unlinking.

use super::{Corruption, Entry, Index, ListHead, DISPOSED, FREE, NIL, QUEUED};
use crate::sync::atomic::Ordering::Relaxed;

/// Which list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum List {
    Free,
    Queued,
    Disposed,
}

impl List {
    /// The status of the list's members.
    pub(super) fn status(self) -> u32 {
        match self {
            List::Free => FREE,
            List::Queued => QUEUED,
            List::Disposed => DISPOSED,
        }
    }
}

impl<'a> Index<'a> {
    pub(super) fn n(&self) -> u32 {
        self.dir.len() as u32
    }

    pub(super) fn head(&self, list: List) -> &'a ListHead {
        match list {
            List::Free => &self.hdr.free,
            List::Queued => &self.hdr.queued,
            List::Disposed => &self.hdr.disposed,
        }
    }

    /// The entry `i`, if in range.
    pub(crate) fn entry(&self, i: u32) -> Option<&'a Entry> {
        self.dir.get(i as usize)
    }

    /// Number of entries on `list` (as recorded; clamped to the directory size).
    pub(crate) fn count(&self, list: List) -> u32 {
        self.head(list).count.load(Relaxed).min(self.n())
    }

    /// Buffers that exist (not disposed).
    pub(crate) fn buffers(&self) -> u32 {
        self.n() - self.count(List::Disposed)
    }

    /// Links `i` (already given its status) at the tail of `list`.
    pub(super) fn push_back(&self, list: List, i: u32) {
        let l = self.head(list);
        let e = &self.dir[i as usize];
        let tail = l.tail.load(Relaxed);
        e.prev.store(tail, Relaxed);
        e.next.store(NIL, Relaxed);
        match self.entry(tail) {
            Some(t) => t.next.store(i, Relaxed),
            None => l.head.store(i, Relaxed),
        }
        l.tail.store(i, Relaxed);
        l.count.fetch_add(1, Relaxed);
    }

    /// Links `i` (already given its status) at the head of `list`.
    pub(super) fn push_front(&self, list: List, i: u32) {
        let l = self.head(list);
        let e = &self.dir[i as usize];
        let head = l.head.load(Relaxed);
        e.prev.store(NIL, Relaxed);
        e.next.store(head, Relaxed);
        match self.entry(head) {
            Some(h) => h.prev.store(i, Relaxed),
            None => l.tail.store(i, Relaxed),
        }
        l.head.store(i, Relaxed);
        l.count.fetch_add(1, Relaxed);
    }

    /// Unlinks `i` from `list`, checking the links it touches.
    pub(super) fn unlink(&self, list: List, i: u32) -> Result<(), Corruption> {
        let l = self.head(list);
        let e = self
            .entry(i)
            .ok_or_else(|| Corruption(format!("{list:?} list names entry {i}, out of range")))?;
        let status = e.status.load(Relaxed);
        if status != list.status() {
            return Err(Corruption(format!(
                "entry {i} on the {list:?} list has status {status}"
            )));
        }
        let (prev, next) = (e.prev.load(Relaxed), e.next.load(Relaxed));
        let p = if prev == NIL {
            None
        } else {
            Some(
                self.entry(prev)
                    .ok_or_else(|| Corruption(format!("entry {i}: prev {prev} out of range")))?,
            )
        };
        let nx = if next == NIL {
            None
        } else {
            Some(
                self.entry(next)
                    .ok_or_else(|| Corruption(format!("entry {i}: next {next} out of range")))?,
            )
        };
        match p {
            Some(p) if p.next.load(Relaxed) != i => {
                return Err(Corruption(format!(
                    "entry {prev}.next does not point back to {i}"
                )))
            }
            None if l.head.load(Relaxed) != i => {
                return Err(Corruption(format!(
                    "entry {i} has no prev but is not the {list:?} head"
                )))
            }
            _ => {}
        }
        match nx {
            Some(n) if n.prev.load(Relaxed) != i => {
                return Err(Corruption(format!(
                    "entry {next}.prev does not point back to {i}"
                )))
            }
            None if l.tail.load(Relaxed) != i => {
                return Err(Corruption(format!(
                    "entry {i} has no next but is not the {list:?} tail"
                )))
            }
            _ => {}
        }
        let count = l.count.load(Relaxed);
        if count == 0 {
            return Err(Corruption(format!(
                "{list:?} list count is 0 but holds entry {i}"
            )));
        }
        match p {
            Some(p) => p.next.store(next, Relaxed),
            None => l.head.store(next, Relaxed),
        }
        match nx {
            Some(n) => n.prev.store(prev, Relaxed),
            None => l.tail.store(prev, Relaxed),
        }
        l.count.store(count - 1, Relaxed);
        e.prev.store(NIL, Relaxed);
        e.next.store(NIL, Relaxed);
        Ok(())
    }

    /// Unlinks and returns the head of `list` (`None` if empty).
    #[cfg(test)]
    pub(super) fn pop_front(&self, list: List) -> Result<Option<u32>, Corruption> {
        let head = self.head(list).head.load(Relaxed);
        if head == NIL {
            return Ok(None);
        }
        self.unlink(list, head)?;
        Ok(Some(head))
    }

    /// The head of `list` (`None` if empty), cross-checked with its count: a head written
    /// away (or a count written to 0) is found here, not by a message never delivered.
    pub(crate) fn front(&self, list: List) -> Result<Option<u32>, Corruption> {
        let l = self.head(list);
        let count = l.count.load(Relaxed);
        match l.head.load(Relaxed) {
            NIL if count == 0 => Ok(None),
            NIL => Err(Corruption(format!(
                "{list:?} list has no head but a count of {count}"
            ))),
            h if count == 0 => Err(Corruption(format!(
                "{list:?} list has head {h} but a count of 0"
            ))),
            h if h < self.n() => Ok(Some(h)),
            h => Err(Corruption(format!("{list:?} list head {h} out of range"))),
        }
    }

    /// The tail of `list` (its longest-waiting member on the free list).
    pub(crate) fn back(&self, list: List) -> Option<u32> {
        let t = self.head(list).tail.load(Relaxed);
        (t < self.n()).then_some(t)
    }
}
