//! The `tollgate` command line, built inside the test crate so that tests can run it
//! as a child process (`CARGO_BIN_EXE_*` exists only for a package's own binaries).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tollgate_gateway::cli::run().await
}
