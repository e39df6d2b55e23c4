//! `mamori console user …` and `mamori audit verify`: the local admin's tools on the manager's
//! data directory (they open the store directly, so they work when nobody can log in).

use std::io::BufRead;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use mamori_manager::LocalUserCommand;

use crate::manage_cmd::manager_dir;

#[derive(Subcommand)]
pub enum ConsoleAction {
    /// Console accounts.
    User {
        #[command(subcommand)]
        action: UserAction,
    },
}

#[derive(Subcommand)]
pub enum UserAction {
    /// Create an account. The password is read from MAMORI_CONSOLE_PASSWORD or the first line of
    /// standard input; the first login sets up the authenticator app.
    Add {
        username: String,
        /// admin, operator or auditor.
        #[arg(long, default_value = "operator")]
        role: String,
        /// The manager's data directory. Default: <data-dir>/manager.
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
    },
    /// Set a new password (read like `add`'s) and clear the lockout.
    Passwd {
        username: String,
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
    },
    /// Forget the account's second factor: the next login sets up a new one.
    ResetTotp {
        username: String,
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum AuditAction {
    /// Verify the audit log's hash chain and signed checkpoints.
    ///
    /// Exit code: 0 intact, 1 altered (the first bad record is named), 2 could not be read.
    Verify {
        /// The manager's data directory. Default: <data-dir>/manager.
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
        /// The checkpoint public key (hex) as pinned elsewhere; default: `audit.pub`.
        #[arg(long, value_name = "HEX")]
        key: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn read_password() -> anyhow::Result<String> {
    if let Ok(p) = std::env::var("MAMORI_CONSOLE_PASSWORD") {
        return Ok(p);
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).context("cannot read the password from standard input")?;
    let password = line.trim_end_matches(['\r', '\n']).to_string();
    anyhow::ensure!(!password.is_empty(), "no password given (MAMORI_CONSOLE_PASSWORD or standard input)");
    Ok(password)
}

pub fn console(action: ConsoleAction, data_dir: &Path) -> anyhow::Result<u8> {
    let ConsoleAction::User { action } = action;
    match action {
        UserAction::Add { username, role, data } => {
            let password = read_password()?;
            let command = LocalUserCommand::Add { username: &username, role: &role, password: &password };
            mamori_manager::local_user_command(&manager_dir(data.as_deref(), data_dir), command)?;
            println!("created {username} ({role}); the first login sets up the authenticator app");
        }
        UserAction::Passwd { username, data } => {
            let password = read_password()?;
            let command = LocalUserCommand::Password { username: &username, password: &password };
            mamori_manager::local_user_command(&manager_dir(data.as_deref(), data_dir), command)?;
            println!("password of {username} changed");
        }
        UserAction::ResetTotp { username, data } => {
            let command = LocalUserCommand::ResetTotp { username: &username };
            mamori_manager::local_user_command(&manager_dir(data.as_deref(), data_dir), command)?;
            println!("{username} sets up a new authenticator at the next login");
        }
    }
    Ok(0)
}

pub fn audit(action: AuditAction, data_dir: &Path) -> anyhow::Result<u8> {
    let AuditAction::Verify { data, key, json } = action;
    let report = mamori_manager::verify_audit_log(&manager_dir(data.as_deref(), data_dir), key.as_deref())?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else if report.ok {
        println!(
            "audit log intact: {} records, {} signed checkpoints ({} records after the last checkpoint)",
            report.records, report.checkpoints, report.unsigned_tail
        );
    } else {
        println!(
            "AUDIT LOG ALTERED at record {}: {}",
            report.first_bad_seq.map_or("?".to_string(), |s| s.to_string()),
            report.reason.as_deref().unwrap_or("unknown reason")
        );
    }
    Ok(if report.ok { 0 } else { 1 })
}
