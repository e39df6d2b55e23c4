//! Benchmark driver for `bench/fim.sh`.
//!
//! ```text
//! fim_bench build <db> <path>... [--share X] [--threads N]
//! fim_bench check <db> <path>... [--share X] [--threads N] [--paranoid] [--update]
//! ```
//!
//! Prints one line of JSON: the walk statistics, the number of changes and problems.

use std::path::PathBuf;
use std::process::ExitCode;

use mamori_fim::{Baseline, Budget, Config};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!(
            "usage: fim_bench build|check <db> <path>... [--share X] [--threads N] [--paranoid] [--update]"
        );
        return ExitCode::from(2);
    }
    let mode = args[0].as_str();
    let db = PathBuf::from(&args[1]);
    let mut paths = Vec::new();
    let mut budget = Budget::unthrottled();
    let mut paranoid = false;
    let mut update = false;
    let mut it = args[2..].iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--share" => budget = Budget::share(it.next().and_then(|v| v.parse().ok()).unwrap_or(0.25)),
            "--threads" => budget.threads = it.next().and_then(|v| v.parse().ok()).unwrap_or(0),
            "--paranoid" => paranoid = true,
            "--update" => update = true,
            p => paths.push(PathBuf::from(p)),
        }
    }
    let mut cfg = Config::new(paths);
    cfg.paranoid = paranoid;
    let mut baseline = match Baseline::open(&db) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("fim_bench: {e}");
            return ExitCode::from(2);
        }
    };
    let (stats, changes, problems) = match mode {
        "build" => match baseline.build(&cfg, &budget) {
            Ok(r) => (r.stats, 0, r.problems.len()),
            Err(e) => {
                eprintln!("fim_bench: {e}");
                return ExitCode::from(2);
            }
        },
        "check" => match baseline.check(&cfg, &budget, update) {
            Ok(r) => (r.stats, r.changes.len(), r.problems.len()),
            Err(e) => {
                eprintln!("fim_bench: {e}");
                return ExitCode::from(2);
            }
        },
        _ => {
            eprintln!("fim_bench: unknown mode {mode}");
            return ExitCode::from(2);
        }
    };
    println!(
        "{{\"mode\":\"{mode}\",\"files\":{},\"dirs\":{},\"symlinks\":{},\"other\":{},\"hashed\":{},\
         \"bytes_hashed\":{},\"changes\":{changes},\"problems\":{problems},\"elapsed_s\":{:.3}}}",
        stats.files,
        stats.dirs,
        stats.symlinks,
        stats.other,
        stats.hashed,
        stats.bytes_hashed,
        stats.elapsed.as_secs_f64()
    );
    ExitCode::SUCCESS
}
