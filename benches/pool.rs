//! Benchmarks: pool (placeholder).
fn main() {}
