//! How `list` and `inspect` print what `shmlink::admin` found.

use shmlink::admin::{
    BufferInfo, BufferStatus, ChannelInfo, Inspection, Object, PoolInfo, PoolState, SlotState,
    Status,
};

/// Buffers `inspect` shows without `--all`.
const BUFFER_ROWS: usize = 64;

pub(crate) fn status(o: &Object) -> String {
    match &o.status {
        Status::Live => "live".into(),
        Status::Stale => "stale".into(),
        Status::Untouchable(why) => format!("untouchable ({why})"),
        _ => "?".into(),
    }
}

pub(crate) fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / f64::from(1u32 << 30)),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / f64::from(1u32 << 20)),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

fn alive(yes: bool) -> &'static str {
    if yes {
        "alive"
    } else {
        "dead"
    }
}

pub(crate) fn table(objects: &[Object]) {
    println!(
        "{:<48} {:<12} {:>8} {:>10}  status",
        "object", "kind", "owner", "size"
    );
    for o in objects {
        println!(
            "{:<48} {:<12} {:>8} {:>10}  {}",
            o.os_name,
            o.kind,
            o.owner_pid,
            size(o.size),
            status(o)
        );
    }
}

pub(crate) fn inspection(i: &Inspection, all: bool) {
    let name = &i.service;
    if i.objects.is_empty() && i.channel.is_none() && i.pool.is_none() && i.unreadable.is_empty() {
        println!("no objects of service {name:?}");
        return;
    }
    if !i.objects.is_empty() {
        table(&i.objects);
    }
    if let Some(c) = &i.channel {
        channel(c);
    }
    if let Some(p) = &i.pool {
        pool(p, all);
    }
    for why in &i.unreadable {
        println!("unreadable: {why}");
    }
}

fn channel(c: &ChannelInfo) {
    println!("channel (read without its lock):");
    let mut server = format!("pid {}, {}", c.server_pid, alive(c.server_alive));
    if c.closed {
        server += ", closed";
    } else if c.shutting_down {
        server += ", shutting down";
    }
    println!("  server:    {server}");
    println!(
        "  slots:     {} of {} connected, {} calls in flight; max message {}",
        c.clients.len(),
        c.slots,
        c.in_flight,
        size(c.max_message as u64)
    );
    if c.clients.is_empty() {
        return;
    }
    println!(
        "  {:>6} {:>8} {:<6} {:<15} {:>10} {:>10}",
        "slot", "client", "alive", "state", "connection", "calls"
    );
    for s in &c.clients {
        let state = match s.state {
            SlotState::Idle => "idle".into(),
            SlotState::Writing => "writing".into(),
            SlotState::RequestReady => "request ready".into(),
            SlotState::InService => "in service".into(),
            SlotState::ResponseReady => "response ready".into(),
            SlotState::Invalid(v) => format!("invalid {v:#x}"),
            _ => "?".into(),
        };
        println!(
            "  {:>6} {:>8} {:<6} {:<15} {:>10} {:>10}",
            s.slot,
            s.client_pid,
            if s.client_alive { "yes" } else { "no" },
            state,
            s.connection,
            s.calls
        );
    }
}

fn buffer_status(b: &BufferInfo) -> String {
    match b.status {
        BufferStatus::Free => "free".into(),
        BufferStatus::Allocated => "allocated".into(),
        BufferStatus::Queued => "queued".into(),
        BufferStatus::Received => "received".into(),
        BufferStatus::Disposed => "disposed".into(),
        BufferStatus::Invalid(v) => format!("invalid {v:#x}"),
        _ => "?".into(),
    }
}

fn pool(p: &PoolInfo, all: bool) {
    println!("pool (a snapshot read without the pool lock: counts may lag by a message):");
    let state = match p.state {
        PoolState::Open => "open".into(),
        PoolState::Parked => "parked (its Reader left queued messages to the next)".into(),
        PoolState::Retired => "retired".into(),
        PoolState::Invalid(v) => format!("invalid {v:#x}"),
        _ => "?".into(),
    };
    println!("  state:     {state}");
    println!(
        "  reader:    pid {}, {}",
        p.reader_pid,
        alive(p.reader_alive)
    );
    if let Some(pid) = p.lock_holder {
        println!("  lock:      held by pid {pid}");
    }
    let c = &p.config;
    println!(
        "  config:    buffers: {} at start, {} to {}, +{} when under {} free; \
         {} each, up to {}; idle ones swept after {:?}",
        c.start_buffers,
        c.min_buffers(),
        c.max_buffers,
        c.resize_increment(),
        c.resize_threshold,
        size(c.initial_buffer_size as u64),
        size(c.max_buffer_size as u64),
        c.sweep_timeout
    );
    let s = &p.stats;
    println!(
        "  lists:     free {}, allocated {}, queued {}, received {}, disposed {} \
         ({} buffers of at most {})",
        s.free, s.allocated, s.queued, s.received, s.disposed, s.buffers, s.max_buffers
    );
    println!(
        "  counters:  sent {}, delivered {}, redelivered {}, grown {}, swept {}, \
         reclaimed {}, repairs {}, adoptions {}",
        s.sent, s.delivered, s.redelivered, s.grown, s.swept, s.reclaimed, s.repairs, s.adoptions
    );
    if !p.queue.is_empty() {
        let q: Vec<String> = p.queue.iter().map(u32::to_string).collect();
        println!("  queue:     {} (buffers, in delivery order)", q.join(" "));
    }
    if p.buffers.is_empty() {
        return;
    }
    println!(
        "  {:>7} {:<12} {:>6} {:>10} {:>10} {:>8}",
        "buffer", "status", "gen", "capacity", "message", "writer"
    );
    let rows = if all { p.buffers.len() } else { BUFFER_ROWS };
    for b in p.buffers.iter().take(rows) {
        let mut status = buffer_status(b);
        if b.redelivered {
            status += "*";
        }
        let message = match b.status {
            BufferStatus::Queued | BufferStatus::Received => size(b.len),
            _ => "-".into(),
        };
        let writer = match (b.writer_pid, b.writer_alive) {
            (0, _) => "-".into(),
            (pid, Some(false)) => format!("{pid} (dead)"),
            (pid, _) => pid.to_string(),
        };
        println!(
            "  {:>7} {:<12} {:>6} {:>10} {:>10} {:>8}",
            b.index,
            status,
            b.generation,
            size(b.capacity),
            message,
            writer
        );
    }
    if p.buffers.len() > rows {
        println!("  ... {} more (--all shows them)", p.buffers.len() - rows);
    }
    if p.buffers.iter().any(|b| b.redelivered) {
        println!("  * delivered again after a Reader died holding it");
    }
}
