//! Benchmarks: sys (placeholder).
fn main() {}
