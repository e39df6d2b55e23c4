//! `mamori`: the one binary. Each subcommand is a thin shell over a library crate; policy
//! that belongs to the process (where data lives, what is printed, exit codes) lives here.

mod admin;
mod agent_cmd;
mod backup_cmd;
mod bench_cmd;
mod bench_syslog;
mod console_cmd;
mod datadir;
mod hunt_cmd;
mod logs_cmd;
mod manage_cmd;
mod quarantine_cmd;
mod scan_cmd;
mod units;
mod vault_cmd;

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
    /// Run Sigma rules over EVTX files and text logs (offline, for incident response):
    /// detections on a timeline, then a summary.
    ///
    /// Exit code: 0 nothing detected, 1 detections, 2 an input could not be read (what was
    /// detected in the rest is still printed).
    Hunt(hunt_cmd::HuntArgs),
    /// List, restore or delete quarantined files.
    Quarantine {
        #[command(subcommand)]
        action: quarantine_cmd::QuarantineAction,
    },
    /// Start everything on this machine: a manager on an embedded store and a local agent
    /// enrolled with it. Prints where the API listens.
    Up(agent_cmd::UpArgs),
    /// Run the manager: device CA, enrollment, mTLS agent API, event store, admin API.
    Server(manage_cmd::ServerArgs),
    /// Enrollment tokens (run where the manager is).
    Token {
        #[command(subcommand)]
        action: manage_cmd::TokenAction,
    },
    /// This host's agent: enroll, run, status; and managing agents: revoke, release, isolate,
    /// commands.
    Agent {
        #[command(subcommand)]
        action: agent_cmd::AgentAction,
    },
    /// Enrolled agents (run where the manager is).
    Agents {
        #[command(subcommand)]
        action: manage_cmd::AgentsAction,
    },
    /// Events agents delivered (run where the manager is).
    Events {
        #[command(subcommand)]
        action: manage_cmd::EventsAction,
    },
    /// Logs received from firewalls and servers, and the Sigma detections (run where the
    /// manager is).
    Logs {
        #[command(subcommand)]
        action: logs_cmd::LogsAction,
    },
    /// Benchmarks that need a running manager (see BENCHMARKS.md).
    Bench {
        #[command(subcommand)]
        action: bench_cmd::BenchAction,
    },
    /// This host's backups in the vault: run, snapshots, versions, diff, restore.
    Backup {
        #[command(subcommand)]
        action: backup_cmd::BackupAction,
    },
    /// The backup vault (run on the vault host): init, sign (where the manager is), serve,
    /// check, snapshots, restore.
    Vault {
        #[command(subcommand)]
        action: vault_cmd::VaultAction,
    },
    /// Web console accounts (run where the manager is, with access to its data directory).
    Console {
        #[command(subcommand)]
        action: console_cmd::ConsoleAction,
    },
    /// The tamper-evident audit log of console and API actions.
    Audit {
        #[command(subcommand)]
        action: console_cmd::AuditAction,
    },
    /// The policy agents run: scheduled scans, watched paths.
    Policy {
        #[command(subcommand)]
        action: manage_cmd::PolicyAction,
    },
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    let data_dir = match datadir::resolve(cli.data_dir) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("mamori: {e:#}");
            return ExitCode::from(2);
        }
    };
    if matches!(
        cli.command,
        Command::Up(_) | Command::Server(_) | Command::Agent { .. } | Command::Vault { .. }
    ) {
        // Long-running services log to stderr; MAMORI_LOG (e.g. `debug`) changes the level.
        let filter = tracing_subscriber::EnvFilter::try_from_env("MAMORI_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    }
    if matches!(cli.command, Command::Up(_) | Command::Server(_) | Command::Bench { .. }) {
        raise_open_file_limit();
    }
    let result = match cli.command {
        Command::Scan(args) => scan_cmd::run(args, &data_dir),
        Command::Hunt(args) => hunt_cmd::run(args),
        Command::Quarantine { action } => quarantine_cmd::run(action, &data_dir),
        Command::Up(args) => agent_cmd::up(args, &data_dir),
        Command::Server(args) => manage_cmd::server(args, &data_dir),
        Command::Token { action } => manage_cmd::token(action, &data_dir),
        Command::Agent { action } => agent_cmd::run(action, &data_dir),
        Command::Agents { action } => manage_cmd::agents(action, &data_dir),
        Command::Events { action } => manage_cmd::events(action, &data_dir),
        Command::Policy { action } => manage_cmd::policy(action, &data_dir),
        Command::Logs { action } => logs_cmd::run(action, &data_dir),
        Command::Bench { action } => bench_cmd::run(action),
        Command::Backup { action } => backup_cmd::run(action, &data_dir),
        Command::Vault { action } => vault_cmd::run(action, &data_dir),
        Command::Console { action } => console_cmd::console(action, &data_dir),
        Command::Audit { action } => console_cmd::audit(action, &data_dir),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("mamori: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// glibc gives every thread that allocates its own arena and keeps freed memory there; with
/// the megabyte-sized buffers of backups and scans moving between runtime threads that held
/// twice the memory in use (measured: the vault client's peak RSS, see BENCHMARKS.md).
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt is called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        // Buffers of a megabyte and more (chunks, batches, packs) come from mmap and go back
        // to the system when freed, instead of glibc raising the threshold and keeping them.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1024 * 1024);
    }
}

/// A manager holds one socket per connected agent; the usual soft limit of 1,024 open files would
/// cap a site at about a thousand agents, so use whatever the hard limit allows.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
