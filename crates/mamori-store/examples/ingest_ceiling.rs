//! Measures the raw ingest ceiling of the store on this machine:
//! `cargo run --release -p mamori-store --example ingest_ceiling -- [agents] [events] [batch]`
//! (default 100 agents, 1 000 000 events, batches of 500). Uses a temporary directory.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: u64| -> Result<u64, String> {
        args.get(i).map_or(Ok(default), |s| s.parse().map_err(|e| format!("argument {}: {s:?}: {e}", i + 1)))
    };
    let parsed = (|| Ok::<_, String>((arg(0, 100)?, arg(1, 1_000_000)?, arg(2, 500)?)))();
    let (agents, events, batch) = match parsed {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("cannot create a temporary directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    let path = dir.path().join("ceiling.sqlite");
    match mamori_store::raw_ingest_ceiling(&path, agents as usize, events, batch as usize) {
        Ok(c) => {
            println!(
                "{} events from {agents} agents in batches of {batch}: {:.2} s, {:.0} events/s",
                c.events, c.seconds, c.events_per_sec
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
