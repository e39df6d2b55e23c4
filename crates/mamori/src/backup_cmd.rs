//! `mamori backup`: this host's backups in the vault, with the agent's device certificate.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use mamori_backup::restore;
use mamori_backup::{BackupOptions, Connection, Identity};

use crate::agent_cmd::AgentDir;

#[derive(Subcommand)]
pub enum BackupAction {
    /// Back up paths (local disks or mounted CIFS/NFS shares) to the vault.
    ///
    /// Exit code: 0 done, 1 the vault flagged the snapshot as suspicious (ransomware signs),
    /// 2 failed, or some paths could not be read (the snapshot holds the rest; they are listed).
    Run {
        #[command(flatten)]
        vault: VaultTarget,
        /// A file or directory to back up (repeatable).
        #[arg(long = "source", value_name = "PATH", required = true)]
        sources: Vec<PathBuf>,
        /// Leave out paths matching this glob (repeatable; matched against the full path,
        /// e.g. `*.tmp` or `/srv/share/cache/**`).
        #[arg(long = "exclude", value_name = "GLOB")]
        excludes: Vec<String>,
        #[arg(long)]
        json: bool,
        /// No progress display.
        #[arg(long)]
        quiet: bool,
    },
    /// This host's snapshots in the vault, oldest first, with their flags.
    Snapshots {
        #[command(flatten)]
        vault: VaultTarget,
        #[arg(long)]
        json: bool,
    },
    /// The versions of one file across this host's snapshots.
    Versions {
        #[command(flatten)]
        vault: VaultTarget,
        /// The file's full path as it was backed up.
        file: String,
        #[arg(long)]
        json: bool,
    },
    /// What changed between two snapshots (names or unique prefixes; `latest` for the newest).
    Diff {
        #[command(flatten)]
        vault: VaultTarget,
        a: String,
        b: String,
        #[arg(long)]
        json: bool,
    },
    /// Restore a snapshot, or one path of it, into a new or empty directory.
    Restore {
        #[command(flatten)]
        vault: VaultTarget,
        /// Snapshot name, a unique prefix, or `latest`.
        #[arg(long, conflicts_with = "before_attack")]
        snapshot: Option<String>,
        /// The last clean snapshot before the first one the vault flagged as an attack.
        #[arg(long)]
        before_attack: bool,
        /// Only this path (as it was backed up, e.g. /srv/share/ward3).
        #[arg(long)]
        path: Option<String>,
        /// Where to restore; paths are recreated below it as they were backed up.
        #[arg(long, value_name = "DIR")]
        target: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Clone)]
pub struct VaultTarget {
    /// The vault's URL, e.g. https://vault.hospital.local:8444.
    #[arg(long, env = "MAMORI_VAULT", value_name = "URL")]
    pub vault: String,
    #[command(flatten)]
    pub agent: AgentDir,
}

impl VaultTarget {
    fn connect(&self, data_dir: &Path) -> anyhow::Result<(Connection, Identity)> {
        let dir = self.agent.resolve(data_dir);
        let id = mamori_agent::device_identity(&dir)
            .with_context(|| format!("the backup uses this host's enrolled identity in {}", dir.display()))?;
        let identity = Identity {
            key_pem: id.key_pem,
            cert_pem: id.cert_pem,
            ca_fingerprint: id.ca_fingerprint,
            hostname: id.hostname,
        };
        Ok((Connection::new(&self.vault, &identity)?, identity))
    }
}

pub fn run(action: BackupAction, data_dir: &Path) -> anyhow::Result<u8> {
    let runtime = crate::manage_cmd::runtime()?;
    runtime.block_on(run_async(action, data_dir))
}

async fn run_async(action: BackupAction, data_dir: &Path) -> anyhow::Result<u8> {
    match action {
        BackupAction::Run { vault, sources, excludes, json, quiet } => {
            let (conn, identity) = vault.connect(data_dir)?;
            let progress = !quiet && !json && std::io::IsTerminal::is_terminal(&std::io::stderr());
            let options = BackupOptions { sources, excludes, hostname: identity.hostname, progress };
            let summary = mamori_backup::backup(&conn, &options).await?;
            if json {
                println!("{}", serde_json::to_string(&summary)?);
            } else {
                let name = summary.snapshot.as_ref().map(|s| s.name.as_str()).unwrap_or_default();
                println!(
                    "snapshot {name}: {} files ({} unchanged), {} dirs, {} in files, {} uploaded in {:.1}s",
                    summary.files,
                    summary.files_unchanged,
                    summary.dirs,
                    indicatif::HumanBytes(summary.bytes),
                    indicatif::HumanBytes(summary.bytes_uploaded),
                    summary.seconds
                );
                if summary.excluded > 0 {
                    println!("{} entries excluded", summary.excluded);
                }
                for p in &summary.problems {
                    eprintln!("could not back up: {p}");
                }
                if let Some(s) = summary.snapshot.as_ref().filter(|s| s.suspicious) {
                    eprintln!("THE VAULT FLAGGED THIS SNAPSHOT AS SUSPICIOUS: {}", s.reasons.join("; "));
                    eprintln!("the last clean versions are kept; restore them with `mamori backup restore --before-attack`");
                }
            }
            Ok(if summary.suspicious {
                1
            } else if !summary.problems.is_empty() {
                2
            } else {
                0
            })
        }
        BackupAction::Snapshots { vault, json } => {
            let (conn, _) = vault.connect(data_dir)?;
            let snapshots = conn.snapshots().await?;
            if json {
                println!("{}", serde_json::to_string(&snapshots)?);
            } else if snapshots.is_empty() {
                println!("no snapshots of this host in the vault");
            } else {
                for s in &snapshots {
                    let flag = match (s.suspicious, s.cleared) {
                        (true, false) => "SUSPICIOUS",
                        (true, true) => "cleared",
                        _ => "clean",
                    };
                    println!(
                        "{}  {}  {:<10} {}  {}",
                        &s.name[..12],
                        crate::units::rfc3339_ms(s.time_ms),
                        flag,
                        s.paths.join(" "),
                        s.reasons.join("; ")
                    );
                }
            }
            Ok(0)
        }
        BackupAction::Versions { vault, file, json } => {
            let (conn, _) = vault.connect(data_dir)?;
            let id_key = mamori_backup::id_key(&conn).await?;
            let snapshots = conn.snapshots().await?;
            let versions = restore::versions(&conn, id_key, &snapshots, &file).await?;
            if json {
                println!("{}", serde_json::to_string(&versions)?);
            } else if versions.is_empty() {
                println!("{file} is in no snapshot of this host");
            } else {
                for v in &versions {
                    println!(
                        "{}  {}  {:>12} bytes  modified {}  content {}{}",
                        &v.snapshot[..12],
                        crate::units::rfc3339_ms(v.time_ms),
                        v.size,
                        crate::units::rfc3339_ms(v.mtime_ns / 1_000_000),
                        v.content,
                        if v.suspicious { "  (suspicious snapshot)" } else { "" }
                    );
                }
            }
            Ok(0)
        }
        BackupAction::Diff { vault, a, b, json } => {
            let (conn, _) = vault.connect(data_dir)?;
            let id_key = mamori_backup::id_key(&conn).await?;
            let snapshots = conn.snapshots().await?;
            let sa = restore::choose(&snapshots, Some(&a), false)?;
            let sb = restore::choose(&snapshots, Some(&b), false)?;
            let diff = restore::diff(&conn, id_key, sa, sb).await?;
            if json {
                println!("{}", serde_json::to_string(&diff)?);
            } else {
                for (mark, list) in
                    [("+", &diff.added), ("-", &diff.removed), ("M", &diff.modified), ("m", &diff.metadata)]
                {
                    for p in list {
                        println!("{mark} {p}");
                    }
                }
                println!(
                    "{} added, {} removed, {} modified, {} metadata only",
                    diff.added.len(),
                    diff.removed.len(),
                    diff.modified.len(),
                    diff.metadata.len()
                );
            }
            Ok(0)
        }
        BackupAction::Restore { vault, snapshot, before_attack, path, target, json } => {
            let (conn, _) = vault.connect(data_dir)?;
            let id_key = mamori_backup::id_key(&conn).await?;
            let snapshots = conn.snapshots().await?;
            let chosen = restore::choose(&snapshots, snapshot.as_deref(), before_attack)?;
            let summary = restore::restore(&conn, id_key, chosen, path.as_deref(), &target).await?;
            if json {
                println!("{}", serde_json::to_string(&summary)?);
            } else {
                println!(
                    "restored snapshot {} ({}) into {}: {} files, {} directories, {} symlinks, {}",
                    &chosen.name[..12],
                    crate::units::rfc3339_ms(chosen.time_ms),
                    target.display(),
                    summary.files,
                    summary.dirs,
                    summary.symlinks,
                    indicatif::HumanBytes(summary.bytes)
                );
            }
            Ok(0)
        }
    }
}
