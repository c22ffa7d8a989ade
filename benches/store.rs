//! Store benchmarks (filled in with the store).
fn main() {}
