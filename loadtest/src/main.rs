//! The Tollgate load generator (filled in by the load-test issue).

fn main() {}
