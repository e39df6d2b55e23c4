//! `mamori agent enroll|run|status|revoke|release|isolate|scan|restore|commands` and `mamori up`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use mamori_proto::{self as proto, path};

use crate::admin::AdminClient;
use crate::manage_cmd::{self, ManagerAccess};
use crate::units::{parse_duration, parse_size};

#[derive(Subcommand)]
pub enum AgentAction {
    /// Enroll this host with a manager: creates the key here (it never leaves this host), sends a
    /// certificate request with the one-time token, and keeps the certificate it gets back.
    Enroll {
        /// The manager, e.g. https://manager.example:8443
        #[arg(long, value_name = "URL")]
        server: String,
        #[arg(long, value_name = "TOKEN")]
        token: String,
        /// SHA-256 fingerprint of the manager's CA, as `mamori server` printed it. The manager
        /// is trusted only if its CA has exactly this fingerprint.
        #[arg(long, value_name = "SHA256")]
        ca_fingerprint: String,
        /// Enroll again under a new identity (new key); the old one is marked replaced.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        dir: AgentDir,
    },
    /// Run the agent: heartbeats, policy, scheduled scans, event delivery (Ctrl-C to stop).
    Run {
        /// Most disk space for undelivered events; when full the oldest are dropped and counted.
        #[arg(long, value_name = "SIZE", default_value = "256M", value_parser = parse_size)]
        spool_max_size: u64,
        #[command(flatten)]
        dir: AgentDir,
    },
    /// Show this host's enrollment and delivery state.
    Status {
        #[command(flatten)]
        dir: AgentDir,
    },
    /// Revoke an agent (run where the manager is): it is refused at once, open connections too.
    Revoke {
        id: String,
        #[command(flatten)]
        manager: ManagerAccess,
    },
    /// Lift an agent's host isolation (run where the manager is). The command reaches the agent
    /// at its next heartbeat.
    ///
    /// Exit code with --wait: 0 the agent reports success, 1 it reports failure, 2 no result in
    /// time (the command stays queued) or an error.
    Release(CommandArgs),
    /// Isolate an agent's host from the network now (run where the manager is); the policy's
    /// isolation allow-list applies. Exit codes as for `release`.
    Isolate(CommandArgs),
    /// Run a full scan on an agent now (run where the manager is): the isolation policy's
    /// clean-scan paths, else the scheduled scans' paths. Exit codes as for `release`.
    Scan(CommandArgs),
    /// Restore one of an agent's backup snapshots on that host (run where the manager is): into
    /// a new directory under the policy's `backup.restore_dir` (default `<agent dir>/restores`),
    /// never over existing files. Exit codes as for `release`.
    Restore {
        #[command(flatten)]
        args: CommandArgs,
        /// The snapshot's full name (64 hexadecimal characters: `mamori backup snapshots --json`
        /// on the host, or the console's backups page).
        #[arg(long, value_name = "NAME")]
        snapshot: String,
    },
    /// The commands queued for an agent and their results, newest first.
    Commands {
        id: String,
        /// One JSON object per command.
        #[arg(long)]
        json: bool,
        /// At most this many commands.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[command(flatten)]
        manager: ManagerAccess,
    },
}

#[derive(Args)]
pub struct CommandArgs {
    /// The agent's id (see `mamori agents list`).
    pub id: String,
    /// Why, for the audit trail and the agent's `response.action` event.
    #[arg(long, default_value = "")]
    pub reason: String,
    /// Wait up to SECS for the agent to report the result.
    #[arg(long, value_name = "SECS")]
    pub wait: Option<u64>,
    #[command(flatten)]
    pub manager: ManagerAccess,
}

#[derive(Args, Clone)]
pub struct AgentDir {
    /// The agent's state directory (key, certificate, spool). Default: <data-dir>/agent.
    #[arg(long = "agent-dir", value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

impl AgentDir {
    pub(crate) fn resolve(&self, data_dir: &Path) -> PathBuf {
        self.dir.clone().unwrap_or_else(|| data_dir.join("agent"))
    }
}

/// Test and fleet-imaging hook: an explicit machine id instead of /etc/machine-id.
fn machine_id_override() -> Option<String> {
    std::env::var("MAMORI_MACHINE_ID").ok().filter(|v| !v.is_empty())
}

pub fn run(action: AgentAction, data_dir: &Path) -> anyhow::Result<u8> {
    match action {
        AgentAction::Enroll { server, token, ca_fingerprint, force, dir } => {
            let dir = dir.resolve(data_dir);
            manage_cmd::runtime()?.block_on(async move {
                let options = mamori_agent::EnrollOptions {
                    server_url: server,
                    token,
                    ca_fingerprint,
                    force,
                    machine_id: machine_id_override(),
                    hostname: None,
                };
                let enrolled = mamori_agent::enroll(&dir, options).await?;
                println!("Enrolled as agent {}.", enrolled.device_id);
                for old in &enrolled.replaced {
                    println!("Replaced the earlier identity {old}.");
                }
                println!("Start it with `mamori agent run`.");
                Ok(0)
            })
        }
        AgentAction::Run { spool_max_size, dir } => {
            let dir = dir.resolve(data_dir);
            let mut options =
                mamori_agent::RunOptions { machine_id: machine_id_override(), ..Default::default() };
            options.spool.max_bytes = spool_max_size;
            // A small spool still needs a few segments so the oldest can be dropped one at a time.
            options.spool.segment_bytes = options.spool.segment_bytes.min((spool_max_size / 4).max(1024));
            manage_cmd::runtime()?.block_on(async move {
                let (stop, stopped) = tokio::sync::watch::channel(false);
                tokio::spawn(async move {
                    manage_cmd::stop_requested().await;
                    let _ = stop.send(true);
                });
                mamori_agent::run(&dir, options, stopped).await?;
                Ok(0)
            })
        }
        AgentAction::Status { dir } => {
            let status = mamori_agent::status(&dir.resolve(data_dir))?;
            println!("{}", serde_json::to_string_pretty(&status)?);
            Ok(0)
        }
        AgentAction::Revoke { id, manager } => manage_cmd::revoke(&id, &manager, data_dir),
        AgentAction::Release(args) => manage_cmd::command(proto::CommandAction::Release, args, data_dir),
        AgentAction::Isolate(args) => manage_cmd::command(proto::CommandAction::Isolate, args, data_dir),
        AgentAction::Scan(args) => manage_cmd::command(proto::CommandAction::Scan, args, data_dir),
        AgentAction::Restore { args, snapshot } => {
            if !proto::is_snapshot_name(&snapshot) {
                anyhow::bail!(
                    "--snapshot {snapshot:?} is not a snapshot name: give the full name ({} lowercase hexadecimal characters)",
                    proto::SNAPSHOT_NAME_LEN
                );
            }
            manage_cmd::command_on(proto::CommandAction::BackupRestore, &snapshot, args, data_dir)
        }
        AgentAction::Commands { id, json, limit, manager } => {
            manage_cmd::list_commands(&id, json, limit, &manager, data_dir)
        }
    }
}

#[derive(Args)]
pub struct UpArgs {
    /// Address the manager listens on.
    #[arg(long, value_name = "ADDR", default_value = manage_cmd::DEFAULT_LISTEN)]
    pub listen: std::net::SocketAddr,
    /// Delete events older than this.
    #[arg(long, value_name = "AGE", default_value = "400d", value_parser = parse_duration)]
    pub retention: Duration,
    #[command(flatten)]
    pub logs: manage_cmd::LogInputArgs,
    #[command(flatten)]
    pub console: manage_cmd::ConsoleArgs,
}

/// The all-in-one main job: a manager on an embedded store plus a local agent enrolled with it.
pub fn up(args: UpArgs, data_dir: &Path) -> anyhow::Result<u8> {
    crate::datadir::ensure_private_dir(data_dir)?;
    let server_args = manage_cmd::ServerArgs {
        data: None,
        listen: args.listen,
        names: Vec::new(),
        retention: args.retention,
        cert_validity: mamori_pki::DEFAULT_CLIENT_VALIDITY,
        logs: args.logs,
        console: manage_cmd::ConsoleArgs {
            console: if args.console.no_console {
                None
            } else {
                Some(args.console.console.unwrap_or_else(|| {
                    manage_cmd::DEFAULT_CONSOLE
                        .parse()
                        .unwrap_or(std::net::SocketAddr::from(([127, 0, 0, 1], 9443)))
                }))
            },
            ..args.console
        },
    };
    let config = manage_cmd::manager_config(&server_args, data_dir);
    let manager_dir = config.data_dir.clone();
    let agent_dir = data_dir.join("agent");
    manage_cmd::runtime()?.block_on(async move {
        let mut running = mamori_manager::start(config).await?;
        manage_cmd::print_manager_banner(&running, &manager_dir);

        let token = std::fs::read_to_string(&running.admin_token_path)
            .with_context(|| format!("cannot read {}", running.admin_token_path.display()))?;
        let admin = AdminClient::new(&running.url, &running.ca_fingerprint, token.trim().to_string())?;
        // A new site starts with file integrity monitoring of the system directories (and
        // on-write scanning there); `mamori policy set` changes it.
        let current: proto::Policy = admin.get(path::ADMIN_POLICY, &[]).await?;
        if current.version == 0 {
            let initial =
                proto::Policy { fim: Some(proto::FimPolicy::default()), ..proto::Policy::default() };
            let stored: proto::Policy = admin.put(path::ADMIN_POLICY, &initial).await?;
            println!(
                "Stored the initial policy (version {}): file integrity monitoring of {}",
                stored.version,
                proto::DEFAULT_FIM_PATHS.join(", ")
            );
        }

        let enrolled_here = mamori_agent::status(&agent_dir)
            .ok()
            .filter(|s| s.ca_fingerprint == running.ca_fingerprint)
            .map(|s| s.device_id);
        let device_id = match enrolled_here {
            Some(id) => id,
            None => {
                let request = proto::TokenCreateRequest {
                    ttl_secs: 300,
                    uses: 1,
                    label: "mamori up: local agent".into(),
                };
                let created: proto::TokenCreated = admin.post(path::ADMIN_TOKENS, &request).await?;
                let options = mamori_agent::EnrollOptions {
                    server_url: running.url.clone(),
                    token: created.token,
                    ca_fingerprint: running.ca_fingerprint.clone(),
                    // State left from a manager whose data was wiped: start a new identity.
                    force: agent_dir.join("agent.json").exists(),
                    machine_id: machine_id_override(),
                    hostname: None,
                };
                mamori_agent::enroll(&agent_dir, options).await?.device_id
            }
        };
        println!("Local agent {device_id} (state in {})", agent_dir.display());
        println!("Try: mamori agents list   |   mamori events tail --follow");

        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut agent = tokio::spawn({
            let agent_dir = agent_dir.clone();
            let options =
                mamori_agent::RunOptions { machine_id: machine_id_override(), ..Default::default() };
            async move { mamori_agent::run(&agent_dir, options, stopped).await }
        });
        let outcome: anyhow::Result<()> = tokio::select! {
            result = running.wait() => result.context("the manager stopped"),
            result = &mut agent => match result {
                Ok(r) => r.map_err(anyhow::Error::from).context("the agent stopped"),
                Err(e) => Err(anyhow::anyhow!("the agent task failed: {e}")),
            },
            _ = manage_cmd::stop_requested() => Ok(()),
        };
        println!("stopping");
        let _ = stop.send(true);
        if !agent.is_finished() {
            let _ = tokio::time::timeout(Duration::from_secs(15), agent).await;
        }
        running.shutdown().await?;
        outcome.map(|()| 0)
    })
}
