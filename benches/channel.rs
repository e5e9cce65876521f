//! Benchmarks: channel (placeholder).
fn main() {}
