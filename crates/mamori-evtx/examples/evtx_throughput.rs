//! Records per second over a directory of EVTX files, for two ways of using 2+ cores:
//! files in parallel (one file per thread) and files in sequence with the `evtx` crate's
//! own chunk threads.
//!
//! `cargo run --release -p mamori-evtx --example evtx_throughput -- DIR [THREADS] [ROUNDS]`

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use mamori_evtx::{discover, read_file, read_files, ReadOptions};

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next() else {
        eprintln!("usage: evtx_throughput DIR [THREADS] [ROUNDS]");
        std::process::exit(2);
    };
    let threads: usize = args.next().and_then(|t| t.parse().ok()).unwrap_or(2);
    let rounds: usize = args.next().and_then(|t| t.parse().ok()).unwrap_or(3);
    let discovery = discover(&[PathBuf::from(dir)]);
    println!(
        "{} files, {} bytes, {} path problems",
        discovery.files.len(),
        discovery.total_bytes(),
        discovery.problems.len()
    );
    for round in 0..rounds {
        let fields = AtomicU64::new(0);
        let start = Instant::now();
        let reports = read_files(&discovery.files, &ReadOptions::default(), threads, |_, record| {
            fields.fetch_add(record.event.len() as u64, Ordering::Relaxed);
        });
        let elapsed = start.elapsed().as_secs_f64();
        let records: u64 = reports.iter().map(|r| r.records).sum();
        let errors: u64 = reports.iter().map(|r| r.error_count).sum();
        println!(
            "round {round} files-in-parallel ({threads} threads): {records} records, {errors} errors, {:.3}s, {:.0} records/s",
            elapsed,
            records as f64 / elapsed
        );

        let options = ReadOptions { chunk_threads: threads, ..ReadOptions::default() };
        let start = Instant::now();
        let mut records = 0u64;
        for file in &discovery.files {
            let report = read_file(&file.path, &options, &mut |record| {
                fields.fetch_add(record.event.len() as u64, Ordering::Relaxed);
            });
            records += report.records;
        }
        let elapsed = start.elapsed().as_secs_f64();
        println!(
            "round {round} chunk-threads ({threads} evtx threads, files in sequence): {records} records, {:.3}s, {:.0} records/s",
            elapsed,
            records as f64 / elapsed
        );
    }
}
