//! The `tollgate` binary (filled in by the gateway issue).

fn main() {}
