//! Tollgate's end-to-end test suite: one binary, a module per area.

mod admin;
mod cli;
mod crash;
mod dashboard;
mod datadir;
mod engine;
mod expiry;
mod gateway;
mod hostile;
mod leaks;
mod reliability;
mod schemathesis;
mod webhooks;
