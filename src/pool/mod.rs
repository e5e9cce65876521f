//! The Reader-owned, resizable buffer pool.
//!
//! One [`Reader`] owns a pool of buffers; any number of [`Writer`]s (in any process) acquire
//! a free buffer, write in place and send it to the Reader's FIFO queue; the Reader reads
//! it in place and its drop puts the buffer back on the free list. Nothing is copied.
//!
//! ```text
//!  index segment "pool"                              buffer segments "pool.b<i>.g<gen>"
//!  +--------------------------------------------+    +-------------------+
//!  | header: signature, version, config, lists, |    | bytes of buffer 0 |
//!  |   counters, Reader identity, grow request  |    +-------------------+
//!  | mutex | alive lock | 3 events              |    | bytes of buffer 1 |
//!  | directory: entry 0 | entry 1 | ...         |    +-------------------+
//!  +--------------------------------------------+     (mapped lazily, cached per process)
//! ```
//!
//! Each buffer lives in a segment of its own so that the pool grows and shrinks one buffer
//! at a time without remapping anything, and a Writer can grow the buffer it holds (a new,
//! bigger segment under the next generation's name) without disturbing the others. Every
//! list operation takes the pool's owner-death-safe mutex once; a process that dies holding it leaves
//! lists that the next locker rebuilds from the entries' statuses.
//!
//! The Reader's service thread holds the *alive lock* for the Reader's whole life, so any
//! process learns whether a Reader is alive without taking it (Linux: one `F_OFD_GETLK` on
//! the holder's tag byte, valid across PID namespaces; no `/proc`): a free lock, or one whose
//! holder is gone, means the Reader is gone. A Writer holding a buffer is recorded in its
//! directory entry by its pid (for messages) and its liveness token, which the Reader checks
//! before taking the buffer back.
//!
//! **Invariants.** Each buffer has one directory entry whose *status* says who may touch its
//! bytes: nobody (FREE, DISPOSED), the Writer holding it (ALLOCATED), the Reader (QUEUED
//! messages wait for it, RECEIVED ones it reads). Statuses change only under the pool mutex,
//! through the transitions in `index.rs`, in an order that lets the lists be rebuilt from
//! the entries alone after a crash. Queued messages are delivered in send order; a Reader
//! that adopts a dead one's index delivers again, marked, what the dead one had received but
//! not released. Blocking calls sleep on an event, notice within 100 ms that the Reader is
//! gone, and each has a `_timeout` form.
//!
//! **Stopping, and who removes what.** A Reader's graceful stop (dropping it) finishes once
//! its last [`ReadBuf`] is dropped too, so a message the application holds is released
//! normally, never delivered again. Then, still holding the alive lock and under the pool
//! mutex, it looks at the directory:
//!
//! - a message is *pending* (queued, or received and never released): it **parks** the index
//!   (header state PARKED). Index and buffers stay; Writers go on queueing into it; the next
//!   Reader of the name adopts it as after a crash, even while the stopped Reader's process
//!   lives on, and delivers what is queued, in order, unmarked;
//! - nothing is pending: it **retires** the index and removes the index and every buffer
//!   segment. A Writer's held buffer then fails to send with `NoReader` (handed back), or is
//!   copied into the next Reader's fresh pool.
//!
//! Writers never remove anything: a parked pool holds messages whose send returned `Ok`, and
//! only a Reader can take them. So when the last process leaves a pool with nothing queued,
//! nothing is left; a pool left with messages queued stays until a Reader of the name comes
//! back (or someone removes it). The Reader's handle on the index never removes it when
//! dropped, and its buffer handles are disowned when it parks: removal is a decision of the
//! stop, never a side effect of a drop. (On
//! Windows, where a named object lives only while a process holds it open, a parked pool's
//! objects survive only as far as connected Writers hold them.)
//!
//! | file | what |
//! |---|---|
//! | `index.rs`, `index/` | the index layout, the entry states and every transition, the lists |
//! | `config.rs` | [`PoolConfig`] |
//! | `error.rs` | [`PoolError`], [`SendError`] |
//! | `conn.rs` | one process's attachment: index segment, locks, events, mapped buffers |
//! | `reader.rs` | [`Reader`]: create or adopt a pool, receive |
//! | `service.rs` | the Reader's service thread: grow, sweep, reclaim; the graceful stop |
//! | `writer.rs` | [`Writer`]: connect, acquire, send, copy-on-send |
//! | `buf.rs` | [`ReadBuf`], [`WriteBuf`], [`WriterId`] |
//! | `inspect.rs` | the index read as a snapshot, for `shmlink::admin::inspect` |

mod buf;
mod config;
mod conn;
mod error;
mod index;
pub(crate) mod inspect;
mod reader;
mod service;
mod writer;

pub use buf::{ReadBuf, WriteBuf, WriterId};
pub use config::PoolConfig;
pub use conn::PoolStats;
pub use error::{PoolError, SendError};
pub use reader::Reader;
pub use writer::Writer;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_cross_threads() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<Reader>();
        send_sync::<Writer>();
        send::<ReadBuf>();
        send::<WriteBuf>();
        send::<SendError>();
    }
}
