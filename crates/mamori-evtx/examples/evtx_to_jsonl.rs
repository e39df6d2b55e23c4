//! Print every record of the given EVTX files/directories as one flat JSON event per line
//! (stdout), and each file's problems on stderr. Used to check the mapping by eye and to feed
//! other tools the same events.
//!
//! `cargo run --release -p mamori-evtx --example evtx_to_jsonl -- PATH...`

use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use mamori_evtx::{read_paths, ReadOptions};

fn main() {
    let paths: Vec<PathBuf> = std::env::args().skip(1).map(PathBuf::from).collect();
    let stdout = Mutex::new(std::io::BufWriter::new(std::io::stdout()));
    let summary = read_paths(&paths, &ReadOptions::default(), 0, |_, record| {
        if let Ok(line) = serde_json::to_string(&record.event) {
            if let Ok(mut out) = stdout.lock() {
                let _ = writeln!(out, "{line}");
            }
        }
    });
    if let Ok(mut out) = stdout.lock() {
        let _ = out.flush();
    }
    for problem in &summary.path_problems {
        eprintln!("{}: {}", problem.path.display(), problem.reason);
    }
    for file in summary.files.iter().filter(|f| f.has_problems()) {
        eprintln!(
            "{}: fatal={:?} errors={} {:?}",
            file.path.display(),
            file.fatal,
            file.error_count,
            file.errors
        );
    }
    eprintln!(
        "{} records, {} record errors, {} files",
        summary.records(),
        summary.record_errors(),
        summary.files.len()
    );
}
