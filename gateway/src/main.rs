//! The `tollgate` binary; everything it does lives in `tollgate_gateway::cli`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tollgate_gateway::cli::run().await
}
