//! Files streamed through a pool between real processes, checksummed; streams sharing a
//! pool with each other and with ordinary messages; a sender's failing source and a killed
//! sender, each reported to the receiver; and a peer that scribbles on a chunk after the
//! receiver checked it. Runs on Linux and Windows (under Wine in CI).

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{child_exit, child_role, hear_parent, spawn, tell_parent, watchdog, TestName};
use shmlink::{
    checksum, recv_file, recv_stream, send_file, send_stream, Checksum, PoolConfig, Reader,
    Received, StreamError, StreamId, StreamReceiver, Writer,
};

fn file_role(args: &[String]) -> ! {
    let w = Writer::connect(&args[0]).unwrap();
    tell_parent("ready");
    let summary = send_file(&w, &args[1], Duration::from_secs(30)).unwrap();
    tell_parent(&format!("sent {} {}", summary.bytes, summary.checksum));
    hear_parent();
    child_exit(0)
}

/// Writes `size` pseudo-random bytes to `path`; returns their checksum.
fn make_file(path: &std::path::Path, size: u64) -> u64 {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut sum = Checksum::new();
    let mut x = size | 1;
    let mut block = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for w in block.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(block.len() as u64) as usize;
        sum.update(&block[..n]);
        f.write_all(&block[..n]).unwrap();
        left -= n as u64;
    }
    f.flush().unwrap();
    sum.finish()
}

fn file_checksum(path: &std::path::Path) -> u64 {
    let mut f = std::fs::File::open(path).unwrap();
    let mut sum = Checksum::new();
    let mut block = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut block).unwrap();
        if n == 0 {
            return sum.finish();
        }
        sum.update(&block[..n]);
    }
}

fn stream_file(test: &str, size: u64) {
    let name = TestName::new("pool-file");
    let dir = std::env::temp_dir();
    let (src, dst) = (
        dir.join(format!("{}.src", name.as_str())),
        dir.join(format!("{}.dst", name.as_str())),
    );
    let want = make_file(&src, size);
    // Ragged sizes too: the file is not a multiple of the chunk size.
    let config = PoolConfig {
        initial_buffer_size: 1 << 20,
        max_buffer_size: 1 << 20,
        start_buffers: 4,
        max_buffers: 4,
        min_buffers: Some(4),
        resize_increment: Some(1),
        resize_threshold: 0,
        sweep_timeout: Duration::from_secs(60),
    };
    let reader = Reader::create(&name, config).unwrap();
    let mut child = spawn(test, "sender", &[&name, src.to_str().unwrap()]);
    child.expect("ready");
    let got = recv_file(&reader, &dst, Duration::from_secs(30)).unwrap();
    assert_eq!(child.expect_line(), format!("sent {size} {want}"));
    assert_eq!((got.bytes, got.checksum), (size, want));
    assert_eq!(std::fs::metadata(&dst).unwrap().len(), size);
    assert_eq!(file_checksum(&dst), want, "the written file differs");
    child.send("exit");
    child.wait_ok();
    let _ = std::fs::remove_file(&src);
    let _ = std::fs::remove_file(&dst);
    drop(reader);
    name.assert_no_leftovers();
}

#[test]
fn a_64_mib_file_streams_through_four_1_mib_buffers_intact() {
    if let Some((_, args)) = child_role() {
        file_role(&args);
    }
    let _w = watchdog("file 64 MiB", Duration::from_secs(60));
    stream_file(
        "a_64_mib_file_streams_through_four_1_mib_buffers_intact",
        (64 << 20) + 12345,
    );
}

#[test]
fn a_1_gib_file_streams_through_four_1_mib_buffers_intact() {
    if let Some((_, args)) = child_role() {
        file_role(&args);
    }
    let _w = watchdog("file 1 GiB", Duration::from_secs(600));
    stream_file(
        "a_1_gib_file_streams_through_four_1_mib_buffers_intact",
        (1 << 30) + 777,
    );
}

/// A sink that, before it copies each write, overwrites the payload of every buffer of the
/// pool `name` through the objects' files, as a peer scribbling on shared memory would.
struct Scribbler {
    name: String,
    out: Vec<u8>,
}

impl Write for Scribbler {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        // Buffer objects are "pool.b<i>.g<generation>" (src/pool/conn.rs); Windows cannot
        // list them, so try the first generations of the pool's 4 buffers.
        let mut found = 0;
        for i in 0..4 {
            for g in 0..4 {
                let tag = format!("pool.b{i}.g{g}");
                if let Ok(obj) = common::RawObject::try_open(&common::os_name(&self.name, &tag)) {
                    // Past the segment header and the 40-byte chunk header: the chunk's bytes.
                    let at = common::HEADER_SIZE + 40;
                    obj.write(at, &vec![0xEE; 4096.min(obj.len() - at)]);
                    found += 1;
                }
            }
        }
        assert!(found > 0, "no buffer object found to scribble on");
        self.out.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_peer_changing_a_chunk_after_it_was_checksummed_cannot_change_what_is_written() {
    let _w = watchdog("scribbled chunk", Duration::from_secs(60));
    let name = TestName::new("stream-scribble");
    let config = PoolConfig {
        initial_buffer_size: 4096,
        max_buffer_size: 4096,
        start_buffers: 4,
        max_buffers: 4,
        min_buffers: Some(4),
        resize_threshold: 0,
        ..PoolConfig::default()
    };
    let reader = Reader::create(&name, config).unwrap();
    let writer = Writer::connect(&name).unwrap();
    // START, one DATA chunk and END are queued before the receiver starts, so scribbling
    // can only reach what the receiver has (or had) in hand, never what the sender sums.
    let data: Vec<u8> = (0..3000u32).map(|i| (i % 253) as u8).collect();
    let sent = send_stream(
        &writer,
        &data[..],
        data.len() as u64,
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!((sent.chunks, sent.checksum), (1, checksum(&data)));
    let mut sink = Scribbler {
        name: name.as_str().to_owned(),
        out: Vec::new(),
    };
    let got = recv_stream(&reader, &mut sink, Duration::from_secs(5)).unwrap();
    assert_eq!(got, sent);
    assert!(
        sink.out == data,
        "bytes other than the checksummed ones were written"
    );
    drop(writer);
    drop(reader);
    name.assert_no_leftovers();
}

/// The `send_stream` doc example as a test, repeated: Reader and Writer in one process, the
/// sender on another thread, 300 000 bytes through the default pool.
#[test]
fn a_stream_between_two_threads_of_one_process_arrives_in_order() {
    let _w = watchdog("stream in one process", Duration::from_secs(120));
    for round in 0..5 {
        let name = TestName::new("stream-threads");
        let reader = Reader::create(&name, PoolConfig::default()).unwrap();
        let writer = Writer::connect(&name).unwrap();
        let idle = Duration::from_secs(5);
        let data = vec![7u8; 300_000];
        let sender = std::thread::spawn(move || send_stream(&writer, &data[..], 300_000, idle));
        let mut out = Vec::new();
        let got = recv_stream(&reader, &mut out, idle)
            .unwrap_or_else(|e| panic!("round {round}: {e} ({:?})", reader.stats()));
        assert_eq!(got, sender.join().unwrap().unwrap());
        assert_eq!(out, vec![7u8; 300_000]);
        drop(reader);
        name.assert_no_leftovers();
    }
}

/// Pools of 64 KiB buffers, growing to 64 of them.
fn small_pool() -> PoolConfig {
    PoolConfig {
        initial_buffer_size: 64 << 10,
        max_buffer_size: 64 << 10,
        start_buffers: 8,
        max_buffers: 64,
        sweep_timeout: Duration::from_secs(60),
        ..PoolConfig::default()
    }
}

/// How long a receiver or sender waits for each message or buffer: far longer than any
/// report the tests below expect, so that a report that comes is not this timeout.
const IDLE: Duration = Duration::from_secs(30);

/// Ordinary message `k`: some as short as the one in the original report (6 bytes), some
/// starting like a stream chunk's magic, some like a chunk of a format version the receiver
/// does not speak (handed over, not misread), some longer than a chunk header.
fn message(k: usize) -> Vec<u8> {
    let like = |magic: &[u8]| {
        let mut m = magic.to_vec();
        m.extend(std::iter::repeat_n(k as u8, 40 + k));
        m
    };
    match k % 4 {
        0 => format!("hi {k:03}").into_bytes(),
        1 => like(b"shmlstr"),
        2 => like(b"shmlstrm\x77\x77"),
        _ => format!("message {k}, ").repeat(1 + k % 7).into_bytes(),
    }
}

/// A file as a source that stops once `pause_at` bytes are read: it tells the parent
/// "paused" and goes on when the parent says so.
struct Pausing {
    file: std::fs::File,
    read: u64,
    pause_at: u64,
}

impl Read for Pausing {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.read >= self.pause_at && self.pause_at > 0 {
            tell_parent("paused");
            hear_parent();
            self.pause_at = 0;
        }
        let n = self.file.read(out)?;
        self.read += n as u64;
        Ok(n)
    }
}

fn sharing_role(role: &str, args: &[String]) -> ! {
    let w = Writer::connect(&args[0]).unwrap();
    tell_parent("ready");
    hear_parent(); // "go"
    if role == "messenger" {
        let count: usize = args[1].parse().unwrap();
        for k in 0..count {
            let mut buf = w.acquire_timeout(IDLE).unwrap();
            buf.extend_from_slice(&message(k)).unwrap();
            w.send(buf).unwrap();
        }
        tell_parent("sent");
    } else {
        let file = std::fs::File::open(&args[1]).unwrap();
        let size = file.metadata().unwrap().len();
        let source = Pausing {
            file,
            read: 0,
            pause_at: args[2].parse().unwrap(),
        };
        let s = send_stream(&w, source, size, IDLE).unwrap();
        tell_parent(&format!("sent {} {} {}", s.stream, s.bytes, s.checksum));
    }
    hear_parent();
    child_exit(0)
}

#[test]
fn two_file_transfers_and_ordinary_messages_from_three_writer_processes_share_one_pool() {
    const TEST: &str =
        "two_file_transfers_and_ordinary_messages_from_three_writer_processes_share_one_pool";
    if let Some((role, args)) = child_role() {
        sharing_role(&role, &args);
    }
    let _w = watchdog("shared pool", Duration::from_secs(120));
    let name = TestName::new("stream-shared");
    let dir = std::env::temp_dir();
    let sizes = [(3 << 20) + 12345, (2 << 20) + 777];
    let srcs: Vec<_> = (0..2)
        .map(|i| dir.join(format!("{}.{i}.src", name.as_str())))
        .collect();
    let wants: Vec<u64> = (0..2).map(|i| make_file(&srcs[i], sizes[i])).collect();
    let reader = Reader::create(&name, small_pool()).unwrap();
    const MESSAGES: usize = 30;
    let mut senders: Vec<_> = srcs
        .iter()
        .map(|src| spawn(TEST, "sender", &[&name, src.to_str().unwrap(), "100000"]))
        .collect();
    let mut messenger = spawn(TEST, "messenger", &[&name, &MESSAGES.to_string()]);
    for c in senders.iter_mut().chain([&mut messenger]) {
        c.expect("ready");
    }
    // Both streams start and pause a few chunks in; the messages are queued behind those
    // chunks, and the rest of both streams behind the messages: all interleaved.
    for c in &mut senders {
        c.send("go");
        c.expect("paused");
    }
    messenger.send("go");
    messenger.expect("sent");
    for c in &mut senders {
        c.send("on");
    }

    let mut rx = StreamReceiver::new(&reader);
    let mut events = Vec::new(); // 'S'tarted, 'M'essage, 'F'inished, in order
    let (mut got, mut dsts, mut ended) = (Vec::new(), HashMap::new(), HashMap::new());
    while ended.len() < 2 || got.len() < MESSAGES {
        match rx.recv_timeout(IDLE).unwrap() {
            Received::Message(m) => {
                events.push('M');
                got.push(m.copy_to_vec());
            }
            Received::Started(s) => {
                events.push('S');
                let dst = dir.join(format!("{}.{}.dst", name.as_str(), s.id));
                let file = std::fs::File::create(&dst).unwrap();
                rx.accept(s.id, std::io::BufWriter::new(file));
                dsts.insert(s.id, dst);
            }
            Received::Finished { id, result, sink } => {
                drop(sink); // closes the file
                events.push('F');
                let summary = result.unwrap_or_else(|e| panic!("stream {id}: {e}"));
                assert!(ended.insert(id, summary).is_none(), "{id} ended twice");
            }
        }
    }
    drop(rx);
    let events: String = events.into_iter().collect();
    assert_eq!(
        events,
        format!("SS{}FF", "M".repeat(MESSAGES)),
        "the streams' events and the messages, in order"
    );
    assert!(
        got.iter().enumerate().all(|(k, m)| *m == message(k)),
        "ordinary messages lost, changed or reordered"
    );
    for (i, c) in senders.iter_mut().enumerate() {
        let line = c.expect_line();
        let said: Vec<&str> = line.split(' ').collect();
        assert_eq!(said[0], "sent", "{line}");
        let id = ended
            .keys()
            .copied()
            .find(|id: &StreamId| id.to_string() == said[1])
            .unwrap_or_else(|| panic!("sender {i}'s stream {} never ended", said[1]));
        let s = ended[&id];
        assert_eq!((s.bytes, s.checksum), (sizes[i], wants[i]));
        assert_eq!(line, format!("sent {id} {} {}", sizes[i], wants[i]));
        assert_eq!(
            file_checksum(&dsts[&id]),
            wants[i],
            "the written file differs"
        );
    }
    for c in senders.iter_mut().chain([&mut messenger]) {
        c.send("exit");
        c.wait_ok();
    }
    for f in srcs.iter().chain(dsts.values()) {
        let _ = std::fs::remove_file(f);
    }
    drop(reader);
    name.assert_no_leftovers();
}

/// A source of `good` bytes that then says "blocked" and waits for the parent's word:
/// "fail" makes it fail; a parent that kills this process instead leaves it there.
struct Blocking {
    good: usize,
}

impl Read for Blocking {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.good > 0 {
            let n = out.len().min(self.good);
            out[..n].fill(0x5A);
            self.good -= n;
            return Ok(n);
        }
        tell_parent("blocked");
        hear_parent();
        Err(std::io::Error::other("the disk is on fire"))
    }
}

fn blocked_role(args: &[String]) -> ! {
    let w = Writer::connect(&args[0]).unwrap();
    let e = send_stream(&w, Blocking { good: 150_000 }, 1 << 20, IDLE).unwrap_err();
    tell_parent(&format!("failed: {e}"));
    hear_parent();
    child_exit(0)
}

/// Starts a blocked sender of `test` and receives its stream; `stop` makes the sender stop
/// where it blocks, while the receiver waits for its next chunk. Returns how the stream
/// ended and how long after `stop` began the receiver knew.
fn stopped_stream(
    test: &str,
    stop: impl FnOnce(&mut common::Child) + Send + 'static,
) -> (
    Result<shmlink::FileSummary, StreamError>,
    Duration,
    common::Child,
    TestName,
) {
    let name = TestName::new("stream-stop");
    let reader = Reader::create(&name, small_pool()).unwrap();
    let mut child = spawn(test, "sender", &[&name]);
    let mut rx = StreamReceiver::new(&reader);
    let Received::Started(start) = rx.recv_timeout(IDLE).unwrap() else {
        panic!("the stream did not start first");
    };
    rx.accept(start.id, Vec::new());
    let stopper = std::thread::spawn(move || {
        child.expect("blocked");
        let t0 = Instant::now();
        stop(&mut child);
        (t0, child)
    });
    let (ended, sink) = match rx.recv_timeout(IDLE).unwrap() {
        Received::Finished { id, result, sink } if id == start.id => (result, sink),
        other => panic!("unexpected {other:?}"),
    };
    let reported = Instant::now();
    let (t0, child) = stopper.join().unwrap();
    drop(rx);
    assert!(
        sink.len() >= 130_000,
        "the chunks before the stop were lost"
    );
    assert!(sink.iter().all(|&b| b == 0x5A));
    drop(reader);
    (ended, reported.saturating_duration_since(t0), child, name)
}

#[test]
fn a_senders_source_failing_mid_file_is_reported_to_the_receiver_as_aborted() {
    const TEST: &str = "a_senders_source_failing_mid_file_is_reported_to_the_receiver_as_aborted";
    if let Some((_, args)) = child_role() {
        blocked_role(&args);
    }
    let _w = watchdog("aborted stream", Duration::from_secs(60));
    let (ended, latency, mut child, name) = stopped_stream(TEST, |c| c.send("fail"));
    // Reported by the abort, not after IDLE.
    match ended {
        Err(StreamError::Aborted { reason }) => assert_eq!(
            reason, "reading the source failed: the disk is on fire",
            "the sender's reason"
        ),
        other => panic!("expected Aborted, got {other:?}"),
    }
    eprintln!("the receiver reported the abort {latency:?} after the source failed");
    assert_eq!(
        child.expect_line(),
        "failed: reading the source failed",
        "the sender's own error"
    );
    child.send("exit");
    child.wait_ok();
    name.assert_no_leftovers();
}

#[test]
fn a_sending_writer_killed_mid_file_is_reported_to_the_receiver_as_gone() {
    const TEST: &str = "a_sending_writer_killed_mid_file_is_reported_to_the_receiver_as_gone";
    if let Some((_, args)) = child_role() {
        blocked_role(&args);
    }
    let _w = watchdog("killed sender", Duration::from_secs(60));
    let (ended, latency, child, name) = stopped_stream(TEST, |c| c.kill());
    // Reported by the Writer's proof of life, not after IDLE.
    match ended {
        Err(StreamError::WriterGone { pid }) => assert_eq!(pid, child.pid()),
        other => panic!("expected WriterGone, got {other:?}"),
    }
    eprintln!("the receiver reported the killed Writer {latency:?} after the kill");
    name.assert_no_leftovers();
}

fn quick_role(args: &[String]) -> ! {
    let w = Writer::connect(&args[0]).unwrap();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let s = send_stream(&w, &data[..], data.len() as u64, IDLE).unwrap();
    tell_parent(&format!("sent {} {}", s.stream, s.checksum));
    child_exit(0)
}

/// The Writer is gone before the receiver looks, but everything it sent is queued: no
/// `WriterGone` for a stream that is all there.
#[test]
fn a_stream_whose_writer_exited_right_after_sending_it_arrives_whole() {
    const TEST: &str = "a_stream_whose_writer_exited_right_after_sending_it_arrives_whole";
    if let Some((_, args)) = child_role() {
        quick_role(&args);
    }
    let _w = watchdog("writer exited", Duration::from_secs(60));
    let name = TestName::new("stream-exited");
    let reader = Reader::create(&name, small_pool()).unwrap();
    let mut child = spawn(TEST, "sender", &[&name]);
    let line = child.expect_line();
    child.wait_ok();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let mut out = Vec::new();
    let got = recv_stream(&reader, &mut out, IDLE).unwrap();
    assert_eq!(line, format!("sent {} {}", got.stream, checksum(&data)));
    assert!(out == data, "the stream arrived changed");
    drop(reader);
    name.assert_no_leftovers();
}

/// The case of the original report: an ordinary message on the pool while `recv_stream`
/// waits is refused by name, pointing at `StreamReceiver`, not taken for a broken chunk.
#[test]
fn recv_stream_refuses_an_ordinary_message_by_name() {
    let _w = watchdog("recv_stream and a message", Duration::from_secs(60));
    let name = TestName::new("stream-refuse");
    let reader = Reader::create(&name, small_pool()).unwrap();
    let writer = Writer::connect(&name).unwrap();
    let mut buf = writer.acquire().unwrap();
    buf.extend_from_slice(b"hello!").unwrap();
    writer.send(buf).unwrap();
    let e = recv_stream(&reader, std::io::sink(), IDLE).unwrap_err();
    assert!(matches!(e, StreamError::Unexpected(_)), "{e:?}");
    assert!(e.to_string().contains("StreamReceiver"), "{e}");
    drop(writer);
    drop(reader);
    name.assert_no_leftovers();
}
