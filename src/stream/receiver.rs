//! The receiving side: [`StreamReceiver`] sorts what a Reader receives into streams and
//! ordinary messages; [`recv_stream`] / [`recv_file`] take one stream.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use super::wire::{ChunkHeader, ABORT, DATA, END, HEADER, MAX_REASON, START, STREAM_VERSION};
use super::{io_error, Checksum, FileSummary, StreamError, StreamId};
use crate::{PoolError, ReadBuf, Reader, WriterId};

#[cfg(doc)]
use super::{send_file, send_stream};

/// How often a receiver checks that the Writers of its open streams are alive.
const LIVENESS_EVERY: Duration = Duration::from_millis(100);

/// A stream that started, as [`Received::Started`] announces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamStart {
    /// The stream's id (also in the sender's [`FileSummary`]).
    pub id: StreamId,
    /// The bytes the sender announced.
    pub size: u64,
    /// The Writer sending it.
    pub writer: WriterId,
}

/// What a [`StreamReceiver`] received; `W` is the type of its sinks.
#[must_use = "an ordinary message or a stream's end may be in it"]
pub enum Received<W> {
    /// An ordinary message (anything that is not a chunk of this stream format), in place
    /// in the pool: it holds its buffer until dropped.
    Message(ReadBuf),
    /// A stream started. Accept it with [`StreamReceiver::accept`] before the next receive;
    /// otherwise it is skipped: its chunks are released unread and nothing more is said of
    /// it.
    Started(StreamStart),
    /// An accepted stream ended: `Ok` after its END checked out (the sink was flushed), or
    /// why it failed. Either way its sink comes back.
    Finished {
        /// The stream.
        id: StreamId,
        /// What it moved, or why it failed.
        result: Result<FileSummary, StreamError>,
        /// The sink given to [`StreamReceiver::accept`], with what was written to it.
        sink: W,
    },
}

impl<W> fmt::Debug for Received<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Received::Message(m) => f.debug_tuple("Message").field(m).finish(),
            Received::Started(s) => f.debug_tuple("Started").field(s).finish(),
            Received::Finished { id, result, .. } => f
                .debug_struct("Finished")
                .field("id", id)
                .field("result", result)
                .finish_non_exhaustive(),
        }
    }
}

/// Receives streams and ordinary messages from one [`Reader`]: any number of streams at
/// once, from any Writers, mixed with ordinary messages, on one pool.
///
/// Each call to [`recv_timeout`](Self::recv_timeout) returns the next thing you need to
/// know: an ordinary message, a stream that started (accept it to give it a sink of type
/// `W`), or an accepted stream that ended (its sink comes back). Chunks of accepted streams
/// are checked and written to their sinks in passing, in their order, without buffering.
/// Nothing is lost or reordered: ordinary messages come in the pool's order (each Writer's
/// in its send order), and every accepted stream ends with exactly one
/// [`Received::Finished`].
///
/// It takes everything its Reader receives: receive from the Reader through it only.
/// Chunks of a stream that started before the receiver did are released unread. A slow
/// sink slows every stream and message behind it (they wait in the pool). Sinks of
/// different types: `W = Box<dyn Write>`.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use shmlink::{send_stream, PoolConfig, Reader, Received, StreamReceiver, Writer};
/// # let name = format!("doc-receiver-{}", std::process::id());
/// let reader = Reader::create(&name, PoolConfig::default())?;
/// let writer = Writer::connect(&name)?;              // usually in other processes
/// let idle = Duration::from_secs(5);
/// let sender = std::thread::spawn(move || -> Result<_, shmlink::StreamError> {
///     let mut hello = writer.acquire()?;             // an ordinary message ...
///     hello.extend_from_slice(b"hello")?;
///     writer.send(hello).map_err(shmlink::PoolError::from)?;
///     send_stream(&writer, &[1u8; 100_000][..], 100_000, idle) // ... and a stream
/// });
///
/// let mut rx = StreamReceiver::new(&reader);
/// let mut messages = Vec::new();
/// let (summary, file) = loop {
///     match rx.recv_timeout(idle)? {
///         Received::Message(m) => messages.push(m.copy_to_vec()),
///         Received::Started(start) => rx.accept(start.id, Vec::new()), // or a File, ...
///         Received::Finished { result, sink, .. } => break (result?, sink),
///     }
/// };
/// assert_eq!(summary, sender.join().unwrap()?);
/// assert_eq!(file, [1u8; 100_000]);
/// assert_eq!(messages, [b"hello"]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct StreamReceiver<'r, W> {
    reader: &'r Reader,
    streams: HashMap<StreamId, Stream<W>>,
    /// The stream the last call announced, until the next call: the one `accept` takes.
    offered: Option<StreamId>,
    /// The chunk being handled, in private memory.
    copy: Vec<u8>,
    /// When the Writers of the open streams are checked next.
    next_check: Instant,
}

impl<W> fmt::Debug for StreamReceiver<'_, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamReceiver")
            .field("reader", &self.reader)
            .field("streams", &self.streams.len())
            .finish_non_exhaustive()
    }
}

/// A stream the receiver follows.
struct Stream<W> {
    writer: WriterId,
    size: u64,
    /// The sequence number the next chunk must carry.
    next_seq: u64,
    got: u64,
    chunks: u64,
    sum: Checksum,
    /// When its last chunk arrived.
    heard: Instant,
    /// Its Writer was seen gone: how many of the messages queued then are still to
    /// receive. At 0, everything it sent was received.
    gone: Option<u32>,
    /// `None`: skipped (not accepted, or failed): its chunks are dropped until it ends.
    sink: Option<W>,
}

impl<W> Stream<W> {
    fn new(writer: WriterId, size: u64) -> Stream<W> {
        Stream {
            writer,
            size,
            next_seq: 1,
            got: 0,
            chunks: 0,
            sum: Checksum::new(),
            heard: Instant::now(),
            gone: None,
            sink: None,
        }
    }
}

impl<'r, W: Write> StreamReceiver<'r, W> {
    /// A receiver of everything `reader` receives.
    pub fn new(reader: &'r Reader) -> StreamReceiver<'r, W> {
        StreamReceiver {
            reader,
            streams: HashMap::new(),
            offered: None,
            copy: Vec::new(),
            next_check: Instant::now(),
        }
    }

    /// Gives the stream that the last call announced ([`Received::Started`]) its sink: its
    /// bytes are written there, in order; the sink is flushed at the stream's END and comes
    /// back in its [`Received::Finished`].
    ///
    /// # Examples
    /// Into a file (see [`StreamReceiver`] for the whole loop):
    /// ```no_run
    /// # use std::{fs::File, io::BufWriter, time::Duration};
    /// # use shmlink::{PoolConfig, Reader, Received, StreamReceiver};
    /// # let reader = Reader::create("doc-accept", PoolConfig::default())?;
    /// let mut rx = StreamReceiver::new(&reader);
    /// if let Received::Started(s) = rx.recv_timeout(Duration::from_secs(5))? {
    ///     let file = File::create(format!("{}.part", s.id))?;
    ///     rx.accept(s.id, BufWriter::new(file));
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Panics
    /// If `id` is not the stream the last call announced (a stream is accepted right after
    /// it is announced, or skipped).
    pub fn accept(&mut self, id: StreamId, sink: W) {
        assert_eq!(
            self.offered.take(),
            Some(id),
            "accept takes the stream the last receive announced"
        );
        if let Some(s) = self.streams.get_mut(&id) {
            s.sink = Some(sink);
        }
    }

    /// The streams accepted and not ended yet.
    pub fn open_streams(&self) -> usize {
        self.streams.values().filter(|s| s.sink.is_some()).count()
    }

    /// Waits as long as it takes for the next ordinary message, stream start or stream end,
    /// writing accepted streams' chunks to their sinks meanwhile. Streams end only by their
    /// END, an ABORT, or their Writer going away.
    ///
    /// # Errors
    /// As [`recv_timeout`](Self::recv_timeout), never `Timeout`.
    pub fn recv(&mut self) -> Result<Received<W>, StreamError> {
        self.recv_deadline(None)
    }

    /// Receives the next ordinary message, stream start or stream end, writing accepted
    /// streams' chunks to their sinks meanwhile. An accepted stream that receives nothing
    /// for `idle` while nothing is queued ends with [`PoolError::Timeout`].
    ///
    /// What goes wrong with one stream (a bad chunk, an abort, its Writer gone, its sink
    /// failing) is that stream's [`Received::Finished`]; the receiver goes on.
    ///
    /// # Errors
    /// [`StreamError::Pool`] with [`PoolError::Timeout`] if no message at all arrives for
    /// `idle`, or another [`PoolError`] of [`Reader::recv_timeout`] or [`Reader::stats`].
    pub fn recv_timeout(&mut self, idle: Duration) -> Result<Received<W>, StreamError> {
        self.recv_deadline(Some(idle))
    }

    fn recv_deadline(&mut self, idle: Option<Duration>) -> Result<Received<W>, StreamError> {
        // A stream announced by the last call and not accepted stays skipped.
        self.offered = None;
        let called = Instant::now();
        let mut active = called;
        loop {
            if let Some(done) = self.gone_writers()? {
                return Ok(done);
            }
            let now = Instant::now();
            let deadline = idle.and_then(|i| active.checked_add(i));
            let mut until = deadline;
            if !self.streams.is_empty() {
                until = Some(until.map_or(self.next_check, |d| d.min(self.next_check)));
            }
            let got = match until {
                Some(u) => self.reader.recv_timeout(u.saturating_duration_since(now)),
                None => self.reader.recv(),
            };
            match got {
                Ok(m) => {
                    active = Instant::now();
                    if let Some(r) = self.handle(m) {
                        return Ok(r);
                    }
                }
                Err(PoolError::Timeout) => {
                    let Some(idle) = idle else { continue };
                    // Nothing queued: a stream silent for `idle` since this call began
                    // (earlier silence may be ours) is stalled.
                    let now = Instant::now();
                    let stalled = self.ids(|s| now.duration_since(s.heard.max(called)) >= idle);
                    if let Some(r) = self.end_all(stalled, |_| PoolError::Timeout.into()) {
                        return Ok(r);
                    }
                    if deadline.is_some_and(|d| now >= d) {
                        return Err(PoolError::Timeout.into());
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The streams for which `pick` holds.
    fn ids(&self, pick: impl Fn(&Stream<W>) -> bool) -> Vec<StreamId> {
        let picked = self.streams.iter().filter(|(_, s)| pick(s));
        picked.map(|(&id, _)| id).collect()
    }

    /// Checks, when due, whether the Writers of the open streams are alive, and ends a
    /// stream whose Writer is gone once everything it sent was received.
    fn gone_writers(&mut self) -> Result<Option<Received<W>>, StreamError> {
        if self.streams.is_empty() {
            return Ok(None);
        }
        if Instant::now() >= self.next_check {
            self.next_check = Instant::now() + LIVENESS_EVERY;
            let mut queued = None;
            for s in self.streams.values_mut() {
                if s.gone.is_none() && !self.reader.writer_alive(s.writer) {
                    // It sends nothing more: what it sent is among what is queued now.
                    let q = match queued {
                        Some(q) => q,
                        None => *queued.insert(self.reader.stats()?.queued),
                    };
                    s.gone = Some(q);
                }
            }
        }
        let done = self.ids(|s| s.gone == Some(0));
        Ok(self.end_all(done, |s| StreamError::WriterGone {
            pid: s.writer.pid(),
        }))
    }

    /// Ends the streams `ids` with `error`: what the caller hears first, if anything (the
    /// others, still open, are ended by the next look).
    fn end_all(
        &mut self,
        ids: Vec<StreamId>,
        error: impl Fn(&Stream<W>) -> StreamError,
    ) -> Option<Received<W>> {
        for id in ids {
            let Some(s) = self.streams.get(&id) else {
                continue;
            };
            let e = error(s);
            if let Some(r) = self.end(id, Err(e)) {
                return Some(r);
            }
        }
        None
    }

    /// Handles one message: what the caller must hear of it, if anything.
    fn handle(&mut self, m: ReadBuf) -> Option<Received<W>> {
        for s in self.streams.values_mut() {
            if let Some(n) = &mut s.gone {
                *n = n.saturating_sub(1);
            }
        }
        // Not a chunk, or one of a format this receiver does not speak: the caller's.
        match ChunkHeader::read(&m) {
            Some(h) if h.version == STREAM_VERSION => {}
            _ => return Some(Received::Message(m)),
        }
        let writer = m.writer();
        // Copied once, released at once (before the slower write); the copy is what is
        // checked and written.
        let mut copy = std::mem::take(&mut self.copy);
        copy.resize(m.len(), 0);
        m.copy_to(&mut copy);
        drop(m);
        let r = self.chunk(&copy, writer);
        self.copy = copy;
        r
    }

    /// Handles a chunk (in private memory) that `writer` sent.
    fn chunk(&mut self, copy: &[u8], writer: WriterId) -> Option<Received<W>> {
        // Changed between the look and the copy: a peer scribbling. Nothing to trust.
        let h = ChunkHeader::read(copy).filter(|h| h.version == STREAM_VERSION)?;
        let id = StreamId(h.stream);
        if h.kind == START {
            if self.streams.contains_key(&id) {
                return self.fail(id, "the stream started twice".into());
            }
            let mut s = Stream::new(writer, h.value);
            if h.seq != 0 {
                // Never announced: skipped until its end.
                s.next_seq = 0;
                self.streams.insert(id, s);
                return None;
            }
            self.streams.insert(id, s);
            self.offered = Some(id);
            return Some(Received::Started(StreamStart {
                id,
                size: h.value,
                writer,
            }));
        }
        let Some(s) = self.streams.get_mut(&id) else {
            // Its start came before this receiver did: skipped until its end.
            if !matches!(h.kind, END | ABORT) {
                self.streams.insert(id, Stream::new(writer, 0));
            }
            return None;
        };
        s.heard = Instant::now();
        if s.sink.is_none() {
            // Skipped: only its end matters.
            if matches!(h.kind, END | ABORT) {
                self.streams.remove(&id);
            }
            return None;
        }
        if writer != s.writer {
            return self.fail(id, "a chunk from another Writer".into());
        }
        if h.kind == ABORT {
            // Whatever its sequence number: the sender gave up.
            let body = &copy[HEADER..];
            let n = usize::try_from(h.value).map_or(body.len(), |n| n.min(body.len()));
            let reason = String::from_utf8_lossy(&body[..n.min(MAX_REASON)]).into_owned();
            return self.end(id, Err(StreamError::Aborted { reason }));
        }
        if h.seq != s.next_seq {
            let why = format!("chunk {} arrived, expected {}", h.seq, s.next_seq);
            return self.fail(id, why);
        }
        s.next_seq += 1;
        match h.kind {
            DATA => {
                let data = &copy[HEADER..];
                if data.len() as u64 != h.value {
                    let why = format!(
                        "chunk {} holds {} bytes, its header says {}",
                        h.seq,
                        data.len(),
                        h.value
                    );
                    return self.fail(id, why);
                }
                if s.got + data.len() as u64 > s.size {
                    let why = format!("more than the {} bytes announced", s.size);
                    return self.fail(id, why);
                }
                s.sum.update(data);
                let written = s.sink.as_mut().map_or(Ok(()), |w| w.write_all(data));
                if let Err(e) = written {
                    return self.end(id, Err(io_error("writing the sink")(e)));
                }
                s.got += data.len() as u64;
                s.chunks += 1;
                None
            }
            END => {
                let checksum = s.sum.finish();
                let result = if s.got != s.size {
                    Err(StreamError::Invalid(format!(
                        "received {} bytes, the sender announced {}",
                        s.got, s.size
                    )))
                } else if checksum != h.value {
                    Err(StreamError::Invalid(format!(
                        "checksum mismatch: computed {checksum:#018x}, sender says {:#018x}",
                        h.value
                    )))
                } else {
                    let flushed = s.sink.as_mut().map_or(Ok(()), |w| w.flush());
                    let summary = FileSummary {
                        stream: id,
                        bytes: s.got,
                        chunks: s.chunks,
                        checksum,
                    };
                    flushed
                        .map_err(io_error("writing the sink"))
                        .map(|()| summary)
                };
                self.end(id, result)
            }
            k => self.fail(id, format!("unknown chunk kind {k}")),
        }
    }

    /// Stream `id` is over: forgets it; what the caller hears if it was accepted.
    fn end(
        &mut self,
        id: StreamId,
        result: Result<FileSummary, StreamError>,
    ) -> Option<Received<W>> {
        let sink = self.streams.remove(&id)?.sink?;
        Some(Received::Finished { id, result, sink })
    }

    /// Stream `id`, accepted or skipped, broke the format: an accepted one ends with `why`.
    /// Either way its further chunks are dropped until its end.
    fn fail(&mut self, id: StreamId, why: String) -> Option<Received<W>> {
        let s = self.streams.get_mut(&id)?;
        let sink = s.sink.take()?;
        Some(Received::Finished {
            id,
            result: Err(StreamError::Invalid(why)),
            sink,
        })
    }
}

/// Receives one stream sent by [`send_file`] / [`send_stream`] into the file at `path`
/// (created or truncated); see [`recv_stream`], and [`send_file`] for an example.
///
/// # Errors
/// As [`recv_stream`]; [`StreamError::Io`] creating or writing the file.
pub fn recv_file(
    reader: &Reader,
    path: impl AsRef<Path>,
    idle: Duration,
) -> Result<FileSummary, StreamError> {
    let file = File::create(path).map_err(io_error("creating the destination file"))?;
    recv_stream(reader, BufWriter::with_capacity(1 << 20, file), idle)
}

/// Receives the next stream that starts on `reader`, sent by [`send_stream`] /
/// [`send_file`], into `sink`, checking order, size and checksum; waits at most `idle` for
/// each message. For a pool that carries nothing but this stream meanwhile; on a pool
/// shared with other streams or ordinary messages use a [`StreamReceiver`], which hands
/// them to you. See [`send_stream`] for an example.
///
/// Chunks of streams that started before this call are released unread.
///
/// # Errors
/// [`StreamError::Unexpected`] for an ordinary message or another stream's start (taken
/// from the pool, not handed to you); [`StreamError::Aborted`] if the sender gave up;
/// [`StreamError::WriterGone`] if the sending Writer went away mid-stream;
/// [`StreamError::Pool`] with [`PoolError::Timeout`] if no message arrives within `idle`;
/// [`StreamError::Invalid`] for a chunk out of order, a size or checksum mismatch;
/// [`StreamError::Io`] writing.
pub fn recv_stream(
    reader: &Reader,
    sink: impl Write,
    idle: Duration,
) -> Result<FileSummary, StreamError> {
    let mut rx = StreamReceiver::new(reader);
    let mut sink = Some(sink);
    loop {
        match rx.recv_timeout(idle)? {
            Received::Started(start) => match sink.take() {
                Some(sink) => rx.accept(start.id, sink),
                None => return Err(StreamError::Unexpected(format!("stream {}", start.id))),
            },
            Received::Finished { result, .. } => return result,
            Received::Message(m) => {
                return Err(StreamError::Unexpected(format!(
                    "an ordinary {}-byte message",
                    m.len()
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{self, Read};

    use super::*;
    use crate::{send_stream, Writer};

    fn pool(what: &str) -> (String, Reader) {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "u{}-{what}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let config = crate::PoolConfig {
            initial_buffer_size: 16 * 1024,
            max_buffer_size: 16 * 1024,
            ..crate::PoolConfig::default()
        };
        let reader = Reader::create(&name, config).unwrap();
        (name, reader)
    }

    fn bytes(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
    }

    /// A source that fails after `good` bytes.
    struct Failing {
        good: usize,
    }

    impl Read for Failing {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.good == 0 {
                return Err(io::Error::other("the disk is on fire"));
            }
            let n = out.len().min(self.good);
            out[..n].fill(5);
            self.good -= n;
            Ok(n)
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "real shared memory (shm_open)")]
    fn streams_aborts_and_messages_from_three_writers_share_one_pool() {
        let (name, reader) = pool("mixed");
        let idle = Duration::from_secs(10);
        let (a, b) = (bytes(200_000, 1), bytes(150_001, 2));
        let spawn_stream = |data: Vec<u8>| {
            let w = Writer::connect(&name).unwrap();
            std::thread::spawn(move || send_stream(&w, &data[..], data.len() as u64, idle))
        };
        let (ta, tb) = (spawn_stream(a.clone()), spawn_stream(b.clone()));
        let w = Writer::connect(&name).unwrap();
        let failing =
            std::thread::spawn(move || send_stream(&w, Failing { good: 40_000 }, 100_000, idle));
        let w = Writer::connect(&name).unwrap();
        let messages = std::thread::spawn(move || {
            for k in 0..200u32 {
                let mut buf = w.acquire().unwrap();
                buf.extend_from_slice(format!("msg {k}").as_bytes())
                    .unwrap();
                w.send(buf).unwrap();
            }
        });

        let mut rx = StreamReceiver::new(&reader);
        let mut ended = HashMap::new();
        let mut got = Vec::new();
        let mut started = Vec::new();
        while ended.len() < 3 || got.len() < 200 {
            match rx.recv_timeout(idle).unwrap() {
                Received::Message(m) => got.push(String::from_utf8(m.copy_to_vec()).unwrap()),
                Received::Started(s) => {
                    started.push(s.id);
                    rx.accept(s.id, Vec::new());
                }
                Received::Finished { id, result, sink } => {
                    assert!(
                        ended.insert(id, (result, sink)).is_none(),
                        "{id} ended twice"
                    );
                }
            }
        }
        let want: Vec<String> = (0..200).map(|k| format!("msg {k}")).collect();
        assert_eq!(got, want, "ordinary messages lost or reordered");
        let sa = ta.join().unwrap().unwrap();
        let sb = tb.join().unwrap().unwrap();
        assert!(matches!(
            failing.join().unwrap(),
            Err(StreamError::Io {
                op: "reading the source",
                ..
            })
        ));
        messages.join().unwrap();
        let (got_a, sink_a) = ended.remove(&sa.stream).unwrap();
        assert_eq!((got_a.unwrap(), sink_a == a), (sa, true));
        let (got_b, sink_b) = ended.remove(&sb.stream).unwrap();
        assert_eq!((got_b.unwrap(), sink_b == b), (sb, true));
        let (_, (aborted, _)) = ended.into_iter().next().unwrap();
        match aborted {
            Err(StreamError::Aborted { reason }) => {
                assert!(reason.contains("the disk is on fire"), "{reason}")
            }
            other => panic!("expected an abort, got {other:?}"),
        }
        assert_eq!(started.len(), 3);
    }
}
