//! The `tollgate-loadtest` binary: parses arguments, runs, prints the report.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let args = tollgate_loadtest::Args::parse();
    let json = args.json;
    // The load generator gets its own two workers; the server it starts has its own.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(tollgate_loadtest::GENERATOR_THREAD)
        .enable_all()
        .build()?;
    let results = rt.block_on(tollgate_loadtest::run(args))?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&tollgate_loadtest::report_json(&results))?
        );
    } else {
        print!("{}", tollgate_loadtest::report_table(&results));
    }
    Ok(())
}
