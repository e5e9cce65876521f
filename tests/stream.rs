//! Files streamed through a pool between real processes, checksummed, and a peer that
//! scribbles on a chunk after the receiver checked it. Runs on Linux and Windows (under
//! Wine in CI).

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{child_exit, child_role, hear_parent, spawn, tell_parent, watchdog, TestName};
use shmlink::{
    checksum, recv_file, recv_stream, send_file, send_stream, Checksum, PoolConfig, Reader, Writer,
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
                    // Past the segment header and the 32-byte chunk header: the chunk's bytes.
                    let at = common::HEADER_SIZE + 32;
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
