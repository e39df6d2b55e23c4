//! `mamori quarantine list|restore|delete`.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use mamori_quarantine::{Record, Store};

#[derive(Subcommand)]
pub enum QuarantineAction {
    /// Show quarantined files.
    List {
        /// One JSON object per quarantined file.
        #[arg(long)]
        json: bool,
    },
    /// Put a file back where it was, bit-exact with its mode and owner. Refuses to overwrite
    /// a file that has appeared there since.
    Restore {
        /// The quarantine ID (or a unique prefix of it, at least 4 characters).
        id: String,
        /// Restore to this path instead of the original one.
        #[arg(long, value_name = "PATH")]
        to: Option<PathBuf>,
    },
    /// Delete a quarantined file for good.
    Delete {
        /// The quarantine ID (or a unique prefix of it).
        id: String,
    },
}

pub fn run(action: QuarantineAction, data_dir: &Path) -> anyhow::Result<u8> {
    let dir = data_dir.join("quarantine");
    let open = || Store::open(&dir).map_err(|e| anyhow::anyhow!("quarantine store {}: {e}", dir.display()));
    match action {
        QuarantineAction::List { json } => {
            if !dir.exists() {
                if !json {
                    println!("The quarantine is empty.");
                }
                return Ok(0);
            }
            let (records, problems) = open()?.list_with_problems();
            for problem in &problems {
                eprintln!("warning: unreadable quarantine record: {problem}");
            }
            if json {
                for r in &records {
                    println!("{}", serde_json::to_string(r)?);
                }
            } else if records.is_empty() {
                println!("The quarantine is empty.");
            } else {
                println!(
                    "{:<16}  {:<20}  {:>10}  {:<28}  ORIGINAL PATH",
                    "ID", "QUARANTINED", "SIZE", "RULE"
                );
                for r in &records {
                    println!(
                        "{:<16}  {:<20}  {:>10}  {:<28}  {}",
                        r.id,
                        r.quarantined_at,
                        r.size,
                        r.rule,
                        r.original_path.display()
                    );
                }
            }
            Ok(if problems.is_empty() { 0 } else { 2 })
        }
        QuarantineAction::Restore { id, to } => {
            let store = open()?;
            let record: Record = match &to {
                Some(target) => store.restore_to(&id, target),
                None => store.restore(&id),
            }
            .map_err(|e| anyhow::anyhow!("restore {id}: {e}"))?;
            let target = to.unwrap_or_else(|| record.original_path.clone());
            println!("Restored {} to {} (sha256 {})", record.id, target.display(), record.sha256);
            Ok(0)
        }
        QuarantineAction::Delete { id } => {
            let record = open()?.delete(&id).map_err(|e| anyhow::anyhow!("delete {id}: {e}"))?;
            println!("Deleted {} ({})", record.id, record.original_path.display());
            Ok(0)
        }
    }
}
