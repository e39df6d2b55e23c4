//! `mamori`: the one binary. Each subcommand is a thin shell over a library crate; policy
//! that belongs to the process (where data lives, what is printed, exit codes) lives here.

mod datadir;
mod quarantine_cmd;
mod scan_cmd;
mod units;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "mamori", version, about = "mamori (守り): security platform for hospitals and clinics")]
struct Cli {
    /// Where mamori keeps its state (quarantine, caches). Default: /var/lib/mamori as root,
    /// else $XDG_DATA_HOME/mamori or ~/.local/share/mamori.
    #[arg(long, global = true, env = "MAMORI_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Scan files and directories for malware (YARA rules, hash lists, built-in EICAR).
    ///
    /// Exit code: 0 nothing found, 1 something found, 2 an error kept part of the content
    /// from being scanned (what was found is still reported).
    Scan(scan_cmd::ScanArgs),
    /// List, restore or delete quarantined files.
    Quarantine {
        #[command(subcommand)]
        action: quarantine_cmd::QuarantineAction,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let data_dir = match datadir::resolve(cli.data_dir) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("mamori: {e:#}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Scan(args) => scan_cmd::run(args, &data_dir),
        Command::Quarantine { action } => quarantine_cmd::run(action, &data_dir),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("mamori: {e:#}");
            ExitCode::from(2)
        }
    }
}
