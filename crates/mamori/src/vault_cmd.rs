//! `mamori vault`: the backup vault's host side (issue 6). `init` creates the repository and
//! the vault's key and CSR, `sign` (where the manager runs) signs the CSR with the mamori CA,
//! `serve` runs the service; `check`, `snapshots`, `clear`, `prune` and `restore` are the
//! administrator's tools on the vault host, with the passphrase, and nothing reachable over
//! the network can do what they do.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use mamori_vault::{retention, Repository};
use mamori_vault_server::Layout;

use crate::units::{parse_duration, parse_size};

#[derive(Subcommand)]
pub enum VaultAction {
    /// Create a vault in --data: the repository (keys sealed by the passphrase), the vault's
    /// TLS key (made here, never sent) and a certificate request to sign with `mamori vault sign`.
    Init {
        #[command(flatten)]
        data: VaultData,
        /// A DNS name or IP address clients use to reach the vault (repeatable).
        #[arg(long = "name", value_name = "NAME", required = true)]
        names: Vec<String>,
    },
    /// Sign a vault's certificate request with the mamori CA (run where the manager is).
    Sign {
        /// The manager's data directory (holds the CA). Default: <data-dir>/manager.
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
        #[arg(long, value_name = "FILE")]
        csr: PathBuf,
        /// Where to write the certificate (followed by the CA certificate).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Names to certify instead of those in the request (repeatable).
        #[arg(long = "name", value_name = "NAME")]
        names: Vec<String>,
        #[arg(long, value_name = "AGE", default_value = "365d", value_parser = parse_duration)]
        validity: Duration,
    },
    /// Run the vault service.
    Serve {
        #[command(flatten)]
        data: VaultData,
        #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8444")]
        listen: SocketAddr,
        /// Stored bytes each device may add in all (e.g. 500G); default: no quota.
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        quota: Option<u64>,
        /// Snapshots each device may commit per hour.
        #[arg(long, value_name = "N", default_value_t = 12)]
        snapshots_per_hour: u32,
        /// Requests per second each device may make.
        #[arg(long, value_name = "N", default_value_t = 200)]
        requests_per_second: u32,
        /// Forward security events (suspicious snapshots, refused attempts) to the manager's
        /// syslog TLS receiver at HOST:PORT (`mamori server --syslog-tls`).
        #[arg(long, value_name = "HOST:PORT")]
        manager_syslog: Option<String>,
    },
    /// Verify the repository: pack names, headers, snapshots and the blobs they need; with
    /// --read-data every blob is decrypted and checked against its id.
    ///
    /// Exit code: 0 intact, 1 something is damaged or missing.
    Check {
        #[command(flatten)]
        data: VaultData,
        #[arg(long)]
        read_data: bool,
        #[arg(long)]
        json: bool,
    },
    /// Every snapshot in the vault, of every device, with its flags.
    Snapshots {
        #[command(flatten)]
        data: VaultData,
        #[arg(long)]
        json: bool,
    },
    /// Clear the alert of a snapshot the vault flagged (a false alarm, or the incident is
    /// handled): it then counts as clean and the pinned versions before it may age out.
    Clear {
        #[command(flatten)]
        data: VaultData,
        /// Snapshot name (or a unique prefix).
        #[arg(long)]
        snapshot: String,
        /// Why; kept in the ledger.
        #[arg(long)]
        note: String,
        /// Who clears it. Default: $SUDO_USER, then $USER.
        #[arg(long)]
        by: Option<String>,
    },
    /// Retention: show what the policy keeps and why; --schedule a deletion of the rest (it
    /// happens no sooner than --delay later); --execute the deletions that are due (stop
    /// `mamori vault serve` first); --cancel one. Suspicious snapshots never count towards
    /// "keep", and the last clean snapshot before one stays pinned until its alert is cleared.
    Prune {
        #[command(flatten)]
        data: VaultData,
        /// Keep every snapshot of the last N days.
        #[arg(long, default_value_t = 7)]
        keep_within_days: u32,
        /// Keep the last clean snapshot of each of the last N days that have one.
        #[arg(long, default_value_t = 30)]
        keep_daily: u32,
        #[arg(long, default_value_t = 12)]
        keep_weekly: u32,
        #[arg(long, default_value_t = 12)]
        keep_monthly: u32,
        /// Time between scheduling a deletion and carrying it out.
        #[arg(long, value_name = "AGE", default_value = "7d", value_parser = parse_duration)]
        delay: Duration,
        #[arg(long, conflicts_with_all = ["execute", "cancel"])]
        schedule: bool,
        #[arg(long, conflicts_with = "cancel")]
        execute: bool,
        #[arg(long, value_name = "ID")]
        cancel: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Restore a snapshot on the vault host (e.g. for a rebuilt machine).
    Restore {
        #[command(flatten)]
        data: VaultData,
        /// Snapshot name (or a unique prefix).
        #[arg(long)]
        snapshot: String,
        /// Into this new or empty directory.
        #[arg(long, value_name = "DIR")]
        target: PathBuf,
    },
}

#[derive(Args, Clone)]
pub struct VaultData {
    /// The vault's data directory. Default: <data-dir>/vault.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// A file holding the repository passphrase (else MAMORI_VAULT_PASSPHRASE).
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
}

impl VaultData {
    fn dir(&self, data_dir: &Path) -> PathBuf {
        self.data.clone().unwrap_or_else(|| data_dir.join("vault"))
    }

    fn passphrase(&self) -> anyhow::Result<String> {
        let text = match &self.passphrase_file {
            Some(path) => mamori_pki::fsutil::read_private(path)
                .with_context(|| format!("passphrase file {}", path.display()))?,
            None => std::env::var("MAMORI_VAULT_PASSPHRASE").map_err(|_| {
                anyhow::anyhow!("give the vault passphrase with --passphrase-file FILE (mode 0600) or MAMORI_VAULT_PASSPHRASE")
            })?,
        };
        let text = text.trim_end_matches(['\r', '\n']).to_string();
        if text.is_empty() {
            bail!("the vault passphrase is empty");
        }
        Ok(text)
    }
}

pub fn run(action: VaultAction, data_dir: &Path) -> anyhow::Result<u8> {
    match action {
        VaultAction::Init { data, names } => init(&data.dir(data_dir), &data.passphrase()?, &names),
        VaultAction::Sign { data, csr, out, names, validity } => {
            let manager = crate::manage_cmd::manager_dir(data.as_deref(), data_dir);
            sign(&manager, &csr, &out, names, validity)
        }
        VaultAction::Serve {
            data,
            listen,
            quota,
            snapshots_per_hour,
            requests_per_second,
            manager_syslog,
        } => {
            let options = mamori_vault_server::ServeOptions {
                data: data.dir(data_dir),
                listen,
                passphrase: data.passphrase()?,
                limits: mamori_vault_server::Limits {
                    quota_bytes: quota,
                    snapshots_per_hour,
                    requests_per_second,
                },
                manager_syslog,
            };
            let runtime = crate::manage_cmd::runtime()?;
            runtime.block_on(async move {
                let (stop, stopped) = tokio::sync::watch::channel(false);
                tokio::spawn(async move {
                    crate::manage_cmd::stop_requested().await;
                    let _ = stop.send(true);
                });
                mamori_vault_server::serve(options, stopped).await
            })?;
            Ok(0)
        }
        VaultAction::Check { data, read_data, json } => {
            let mut repo = open(&data, data_dir)?;
            let report = repo.check(read_data)?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "ok": report.is_ok(),
                        "packs": report.packs,
                        "blobs": report.blobs,
                        "damaged_packs": report.damaged_packs,
                        "damaged_blobs": report.damaged_blobs,
                        "missing_blobs": report.missing_blobs,
                        "damaged_snapshots": report.damaged_snapshots,
                    })
                );
            } else {
                println!(
                    "{} packs, {} blobs checked{}",
                    report.packs,
                    report.blobs,
                    if read_data { " (data read)" } else { "" }
                );
                for (what, list) in [
                    ("damaged pack", &report.damaged_packs),
                    ("damaged blob", &report.damaged_blobs),
                    ("missing blob", &report.missing_blobs),
                    ("damaged snapshot", &report.damaged_snapshots),
                ] {
                    for item in list {
                        println!("{what}: {item}");
                    }
                }
                println!(
                    "{}",
                    if report.is_ok() { "the repository is intact" } else { "THE REPOSITORY IS DAMAGED" }
                );
            }
            Ok(if report.is_ok() { 0 } else { 1 })
        }
        VaultAction::Snapshots { data, json } => {
            let dir = data.dir(data_dir);
            let repo = open(&data, data_dir)?;
            let ledger = mamori_vault::ledger::read_records(&Layout::new(&dir).repo())?;
            for problem in &ledger.problems {
                eprintln!("damaged ledger record {}: {}", problem.path.display(), problem.error);
            }
            let records = ledger.records;
            let mut rows = Vec::new();
            for (name, s) in repo.snapshots()? {
                let record = records.iter().find(|(r, _)| r.snapshot == name);
                rows.push(serde_json::json!({
                    "name": name,
                    "time": crate::units::rfc3339_ms(s.time_ms),
                    "device_id": s.device_id,
                    "hostname": s.hostname,
                    "paths": s.paths,
                    "suspicious": record.is_some_and(|(r, _)| r.suspicious),
                    "cleared": record.is_some_and(|(_, c)| c.is_some()),
                    "reasons": record.map(|(r, _)| r.reasons.clone()).unwrap_or_default(),
                    "added_raw": s.added_raw,
                    "added_stored": s.added_stored,
                }));
            }
            if json {
                println!("{}", serde_json::Value::Array(rows));
            } else {
                for r in rows {
                    let flag = match (r["suspicious"].as_bool(), r["cleared"].as_bool()) {
                        (Some(true), Some(false)) => "SUSPICIOUS",
                        (Some(true), Some(true)) => "cleared",
                        _ => "clean",
                    };
                    println!(
                        "{}  {}  {:<20} {:<10} {}",
                        &r["name"].as_str().unwrap_or_default()[..12],
                        r["time"].as_str().unwrap_or_default(),
                        r["hostname"].as_str().unwrap_or_default(),
                        flag,
                        r["reasons"]
                            .as_array()
                            .map(|a| a.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>().join("; "))
                            .unwrap_or_default()
                    );
                }
            }
            Ok(0)
        }
        VaultAction::Clear { data, snapshot, note, by } => {
            let repo = open(&data, data_dir)?;
            let name = find_snapshot(&repo, &snapshot)?;
            let by = by
                .or_else(|| std::env::var("SUDO_USER").ok())
                .or_else(|| std::env::var("USER").ok())
                .unwrap_or_else(|| "administrator".into());
            mamori_vault::ledger::clear(
                &Layout::new(&data.dir(data_dir)).repo(),
                &name,
                &note,
                &by,
                now_ms(),
            )?;
            println!("cleared the alert of snapshot {name}");
            Ok(0)
        }
        VaultAction::Prune {
            data,
            keep_within_days,
            keep_daily,
            keep_weekly,
            keep_monthly,
            delay,
            schedule,
            execute,
            cancel,
            json,
        } => {
            let root = Layout::new(&data.dir(data_dir)).repo();
            let policy = retention::Policy {
                keep_within_days,
                keep_daily,
                keep_weekly,
                keep_monthly,
                delete_delay_ms: delay.as_millis() as i64,
            };
            policy.validate()?;
            if let Some(id) = cancel {
                retention::cancel(&root, &id)?;
                println!("cancelled deletion {id}");
                return Ok(0);
            }
            let mut repo = open(&data, data_dir)?;
            if execute {
                let done = retention::execute_due(&mut repo, &policy, now_ms())?;
                for s in &done.skipped {
                    println!("kept {}: {}", s.snapshot, s.why);
                }
                for p in &done.ledger_problems {
                    eprintln!("damaged ledger record {}: {}", p.path.display(), p.error);
                }
                println!(
                    "{} deletions done, {} not yet due; {} snapshots removed",
                    done.executed.len(),
                    done.not_due.len(),
                    done.removed.len()
                );
                if let Some(gc) = &done.gc {
                    println!(
                        "garbage collection: {} packs removed, {} written, {} reclaimed",
                        gc.packs_removed,
                        gc.packs_written,
                        indicatif::HumanBytes(gc.bytes_reclaimed)
                    );
                }
                return Ok(0);
            }
            let (candidates, problems) = retention::candidates(&repo)?;
            for p in &problems {
                eprintln!("damaged ledger record {}: {}", p.path.display(), p.error);
            }
            let plan = retention::plan(&candidates, &policy, now_ms());
            if schedule {
                let scheduled = retention::schedule(&root, &plan, now_ms(), policy.delete_delay_ms)?;
                println!(
                    "deletion {} of {} snapshots scheduled for {} (cancel with --cancel {})",
                    scheduled.id,
                    scheduled.snapshots.len(),
                    crate::units::rfc3339_ms(scheduled.due_ms),
                    scheduled.id
                );
                return Ok(0);
            }
            let pending = retention::pending(&root)?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "keep": plan.keep.iter().map(|k| serde_json::json!({
                            "name": k.name, "device_id": k.device_id, "time_ms": k.time_ms,
                            "reasons": k.reasons.iter().map(ToString::to_string).collect::<Vec<_>>(),
                        })).collect::<Vec<_>>(),
                        "forget": plan.forget,
                        "pending": pending.iter().map(|p| serde_json::json!({
                            "id": p.id, "due_ms": p.due_ms, "snapshots": p.snapshots,
                        })).collect::<Vec<_>>(),
                    })
                );
            } else {
                for k in &plan.keep {
                    let reasons: Vec<String> = k.reasons.iter().map(ToString::to_string).collect();
                    println!(
                        "keep    {}  {}  {}",
                        &k.name[..12],
                        crate::units::rfc3339_ms(k.time_ms),
                        reasons.join(", ")
                    );
                }
                for name in &plan.forget {
                    println!("forget  {}", &name[..12.min(name.len())]);
                }
                for p in &pending {
                    println!(
                        "pending deletion {}: {} snapshots, due {}",
                        p.id,
                        p.snapshots.len(),
                        crate::units::rfc3339_ms(p.due_ms)
                    );
                }
            }
            Ok(0)
        }
        VaultAction::Restore { data, snapshot, target } => {
            let mut repo = open(&data, data_dir)?;
            let name = find_snapshot(&repo, &snapshot)?;
            let s = repo.read_snapshot(&name)?;
            if target.exists() && std::fs::read_dir(&target)?.next().is_some() {
                bail!("{} is not empty; restore into a new or empty directory", target.display());
            }
            mamori_vault::tree::restore(&mut repo, &s.tree, &target)?;
            println!("restored snapshot {name} into {}", target.display());
            Ok(0)
        }
    }
}

fn find_snapshot(repo: &Repository, prefix: &str) -> anyhow::Result<String> {
    let all = repo.snapshots()?;
    let found: Vec<_> = all.iter().filter(|(n, _)| n.starts_with(prefix)).collect();
    match found.as_slice() {
        [one] => Ok(one.0.clone()),
        [] => bail!("no snapshot starts with `{prefix}`"),
        _ => bail!("`{prefix}` names {} snapshots; give more of the name", found.len()),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn open(data: &VaultData, data_dir: &Path) -> anyhow::Result<Repository> {
    let repo = Layout::new(&data.dir(data_dir)).repo();
    Repository::open(&repo, &data.passphrase()?)
        .with_context(|| format!("opening the vault repository {}", repo.display()))
}

fn init(dir: &Path, passphrase: &str, names: &[String]) -> anyhow::Result<u8> {
    if passphrase.chars().count() < 12 {
        bail!(
            "choose a passphrase of at least 12 characters: it is all that protects the keys of every backup"
        );
    }
    let layout = Layout::new(dir);
    if layout.repo().exists() || layout.key().exists() {
        bail!("{} already holds a vault", dir.display());
    }
    mamori_pki::fsutil::create_private_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
    mamori_pki::fsutil::create_private_dir(&layout.tls_dir())?;
    Repository::init(&layout.repo(), passphrase, mamori_vault::chunk::ChunkerConfig::default())?;
    let key = mamori_pki::DeviceKey::generate()?;
    key.save(&layout.key())?;
    let csr = key.service_csr_pem(names)?;
    std::fs::write(layout.csr(), &csr).with_context(|| format!("writing {}", layout.csr().display()))?;
    println!("Created a vault in {}", dir.display());
    println!("Its key stays here; sign its certificate request where the manager runs:");
    println!("  mamori vault sign --csr {} --out vault.crt", layout.csr().display());
    println!("then put vault.crt at {} and start `mamori vault serve`.", layout.cert().display());
    Ok(0)
}

fn sign(
    manager: &Path,
    csr: &Path,
    out: &Path,
    names: Vec<String>,
    validity: Duration,
) -> anyhow::Result<u8> {
    let ca_dir = manager.join("ca");
    if !ca_dir.join("ca.key").exists() {
        bail!(
            "{} holds no mamori CA; run this where the manager runs, with --data <manager dir>",
            manager.display()
        );
    }
    let (ca, _) = mamori_pki::Ca::load_or_create(&ca_dir, "mamori device CA")?;
    let csr_pem = std::fs::read_to_string(csr).with_context(|| format!("reading {}", csr.display()))?;
    let names = if names.is_empty() { mamori_pki::Ca::csr_names(&csr_pem)? } else { names };
    if names.is_empty() {
        bail!("the request names no host; give --name");
    }
    let issued = ca.sign_service_csr(&csr_pem, &names, validity)?;
    let bundle = format!("{}{}", issued.cert_pem, ca.cert_pem());
    if out.exists() {
        bail!("{} exists; not replacing it", out.display());
    }
    std::fs::write(out, bundle).with_context(|| format!("writing {}", out.display()))?;
    println!(
        "Signed a vault certificate for {} (valid until {}), written to {}",
        names.join(", "),
        crate::units::rfc3339_ms(system_ms(issued.info.not_after)),
        out.display()
    );
    Ok(0)
}

fn system_ms(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
