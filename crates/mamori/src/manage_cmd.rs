//! The manager and its admin commands: `mamori server`, `token create`, `agents list`,
//! `events tail`, `policy show|set`, `agent revoke|release|isolate|commands`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use mamori_proto::{self as proto, path};

use crate::admin::AdminClient;
use crate::units::parse_duration;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8443";

#[derive(Args)]
pub struct ServerArgs {
    /// The manager's data directory (CA, store, admin token). Default: <data-dir>/manager.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Another DNS name or IP address agents use to reach this manager (repeatable).
    #[arg(long = "name", value_name = "NAME")]
    pub names: Vec<String>,
    /// Delete events older than this.
    #[arg(long, value_name = "AGE", default_value = "400d", value_parser = parse_duration)]
    pub retention: Duration,
    /// Lifetime of agent certificates (agents renew after two thirds of it).
    #[arg(long, value_name = "AGE", default_value = "7d", value_parser = parse_duration)]
    pub cert_validity: Duration,
    #[command(flatten)]
    pub logs: LogInputArgs,
    #[command(flatten)]
    pub console: ConsoleArgs,
}

/// The web console (HTTPS; log in with a password and an authenticator app).
#[derive(Args, Clone)]
pub struct ConsoleArgs {
    /// Serve the web console on this address (e.g. 0.0.0.0:9443). `mamori up` serves it on
    /// 127.0.0.1:9443 unless `--no-console`.
    #[arg(long, value_name = "ADDR")]
    pub console: Option<SocketAddr>,
    /// No web console.
    #[arg(long, conflicts_with = "console")]
    pub no_console: bool,
    /// Log a console user out after this long without activity.
    #[arg(long, value_name = "AGE", default_value = "15m", value_parser = parse_duration)]
    pub console_idle: Duration,
    /// The console's address as people type it in the browser (https://NAME:PORT): used in
    /// mail links and for passkeys, which browsers only allow on a DNS name (or localhost).
    /// NAME is added to the manager's certificate. Default: the address it listens on.
    #[arg(long, value_name = "URL")]
    pub console_url: Option<String>,
    /// The institution's name, printed on reports and mails.
    #[arg(long, value_name = "NAME", default_value = "mamori")]
    pub institution: String,
}

/// Where `mamori up` serves the console by default.
pub const DEFAULT_CONSOLE: &str = "127.0.0.1:9443";

/// Logs the manager receives from other devices (firewalls, servers) and the Sigma rules run
/// over them and over the agents' alerts.
#[derive(Args, Clone, Default)]
pub struct LogInputArgs {
    /// Receive syslog over UDP on this address (e.g. 0.0.0.0:514).
    #[arg(long, value_name = "ADDR")]
    pub syslog_udp: Option<SocketAddr>,
    /// Receive syslog over TCP (octet-counted or newline framing) on this address.
    #[arg(long, value_name = "ADDR")]
    pub syslog_tcp: Option<SocketAddr>,
    /// Receive syslog over TLS 1.3 (RFC 5425) on this address, with the manager's certificate.
    #[arg(long, value_name = "ADDR")]
    pub syslog_tls: Option<SocketAddr>,
    /// Sigma rule file or directory (detection and correlation rules) run besides the
    /// built-in pack (repeatable).
    #[arg(long = "log-rules", value_name = "PATH")]
    pub log_rules: Vec<PathBuf>,
    /// Do not run the built-in rule pack for hospitals.
    #[arg(long)]
    pub no_default_rules: bool,
    /// Field mappings for the log rules besides the built-in Windows ones (a pySigma-style
    /// processing pipeline in YAML; repeatable, applied in order).
    #[arg(long = "log-pipeline", value_name = "FILE")]
    pub log_pipelines: Vec<PathBuf>,
}

/// Where the admin commands find the manager.
#[derive(Args, Clone)]
pub struct ManagerAccess {
    /// The manager's data directory, for its address, CA fingerprint and admin token.
    /// Default: <data-dir>/manager.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
}

impl ManagerAccess {
    pub fn client(&self, data_dir: &Path) -> anyhow::Result<AdminClient> {
        AdminClient::from_manager_dir(&manager_dir(self.data.as_deref(), data_dir))
    }
}

pub fn manager_dir(given: Option<&Path>, data_dir: &Path) -> PathBuf {
    given.map(Path::to_path_buf).unwrap_or_else(|| data_dir.join("manager"))
}

#[derive(Subcommand)]
pub enum TokenAction {
    /// Create a one-time enrollment token. It is shown once; the manager keeps only its hash.
    Create {
        /// How long the token can be used.
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        ttl: Duration,
        /// How many enrollments it allows.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// A note for the token list (which host or site it is for).
        #[arg(long, default_value = "")]
        label: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        manager: ManagerAccess,
    },
    /// List enrollment tokens (without their secrets).
    List {
        #[command(flatten)]
        manager: ManagerAccess,
    },
}

#[derive(Subcommand)]
pub enum AgentsAction {
    /// Every agent with its status (online, offline, revoked, replaced).
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        manager: ManagerAccess,
    },
}

#[derive(Subcommand)]
pub enum EventsAction {
    /// The newest events, oldest first; with --follow, keep printing new ones.
    Tail {
        #[arg(long, value_name = "ID")]
        agent: Option<String>,
        /// Event kind (repeatable), e.g. scan.finding.
        #[arg(long)]
        kind: Vec<String>,
        /// Only events whose kind or data contains this text (case-insensitive).
        #[arg(short = 'q', long, value_name = "TEXT")]
        query: Option<String>,
        #[command(flatten)]
        tail: TailArgs,
    },
}

/// What every listing of events, logs or detections takes.
#[derive(Args)]
pub struct TailArgs {
    /// How many of the newest to show first.
    #[arg(short = 'n', long, default_value_t = 20)]
    pub lines: u32,
    /// Keep waiting for new ones (Ctrl-C to stop).
    #[arg(short, long)]
    pub follow: bool,
    /// Only from this time on (RFC 3339).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub manager: ManagerAccess,
}

#[derive(Subcommand)]
pub enum PolicyAction {
    /// Print the current policy as JSON.
    Show {
        #[command(flatten)]
        manager: ManagerAccess,
    },
    /// Store FILE (JSON) as the new policy; agents pick it up at their next heartbeat.
    Set {
        file: PathBuf,
        #[command(flatten)]
        manager: ManagerAccess,
    },
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")
}

/// Resolves when SIGINT or SIGTERM arrives.
pub async fn stop_requested() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

pub fn manager_config(args: &ServerArgs, data_dir: &Path) -> mamori_manager::Config {
    let mut config = mamori_manager::Config::new(manager_dir(args.data.as_deref(), data_dir), args.listen);
    config.server_names = args.names.clone();
    config.retention = args.retention;
    config.client_cert_validity = args.cert_validity;
    config.syslog = mamori_manager::SyslogConfig {
        udp: args.logs.syslog_udp,
        tcp: args.logs.syslog_tcp,
        tls: args.logs.syslog_tls,
    };
    config.log_rules = args.logs.log_rules.clone();
    config.default_rules = !args.logs.no_default_rules;
    config.log_pipelines = args.logs.log_pipelines.clone();
    config.console = if args.console.no_console { None } else { args.console.console };
    config.console_idle = args.console.console_idle;
    config.console_url = args.console.console_url.clone();
    config.institution = args.console.institution.clone();
    config
}

pub fn print_manager_banner(running: &mamori_manager::Running, data: &Path) {
    if running.created_ca {
        println!("Created a new device CA in {}", data.join("ca").display());
    }
    println!("mamori manager listening on {}", running.url);
    println!("CA fingerprint (SHA-256): {}", running.ca_fingerprint);
    println!("Admin API token: {}", running.admin_token_path.display());
    println!("OpenAPI document: {}{}", running.url, path::OPENAPI);
    if let Some(url) = &running.console_url {
        println!("Web console: {url}/ (certificate from the device CA above)");
    }
    if let Some(file) = &running.console_initial_password {
        println!(
            "Created the console account `admin`; its password is in {} (the first login sets up the authenticator app)",
            file.display()
        );
    }
    for (proto, addr) in
        [("udp", running.syslog.udp), ("tcp", running.syslog.tcp), ("tls", running.syslog.tls)]
    {
        if let Some(addr) = addr {
            println!("Receiving syslog on {proto} {addr}");
        }
    }
}

pub fn server(args: ServerArgs, data_dir: &Path) -> anyhow::Result<u8> {
    let config = manager_config(&args, data_dir);
    let data = config.data_dir.clone();
    runtime()?.block_on(async move {
        let mut running = mamori_manager::start(config).await?;
        print_manager_banner(&running, &data);
        tokio::select! {
            result = running.wait() => result?,
            _ = stop_requested() => {
                println!("stopping");
                running.shutdown().await?;
            }
        }
        Ok(0)
    })
}

pub fn token(action: TokenAction, data_dir: &Path) -> anyhow::Result<u8> {
    runtime()?.block_on(async move {
        match action {
            TokenAction::Create { ttl, uses, label, json, manager } => {
                let client = manager.client(data_dir)?;
                let request = proto::TokenCreateRequest { ttl_secs: ttl.as_secs(), uses, label };
                let created: proto::TokenCreated = client.post(path::ADMIN_TOKENS, &request).await?;
                if json {
                    println!("{}", serde_json::to_string(&created)?);
                } else {
                    let (endpoint, _) = mamori_manager::local_admin_access(&manager_dir(manager.data.as_deref(), data_dir))?;
                    println!("{}", created.token);
                    eprintln!(
                        "Valid until {} for {} enrollment(s). It is shown only now.\nOn the host to enroll:\n  mamori agent enroll --server {} --token {} --ca-fingerprint {}",
                        created.expires_at, created.uses, endpoint.url, created.token, endpoint.ca_fingerprint
                    );
                }
            }
            TokenAction::List { manager } => {
                let tokens: serde_json::Value = manager.client(data_dir)?.get(path::ADMIN_TOKENS, &[]).await?;
                println!("{}", serde_json::to_string_pretty(&tokens)?);
            }
        }
        Ok(0)
    })
}

pub fn agents(action: AgentsAction, data_dir: &Path) -> anyhow::Result<u8> {
    let AgentsAction::List { json, manager } = action;
    runtime()?.block_on(async move {
        let agents: Vec<proto::AgentSummary> = manager.client(data_dir)?.get(path::ADMIN_AGENTS, &[]).await?;
        if json {
            for a in &agents {
                println!("{}", serde_json::to_string(a)?);
            }
            return Ok(0);
        }
        if agents.is_empty() {
            println!("No agents are enrolled. Create a token with `mamori token create`.");
            return Ok(0);
        }
        println!(
            "{:<32}  {:<8}  {:<8}  {:<20}  {:<25}  {:>6}  VERSION",
            "ID", "STATUS", "ISOLATED", "HOST", "LAST SEEN", "POLICY"
        );
        for a in &agents {
            println!(
                "{:<32}  {:<8}  {:<8}  {:<20}  {:<25}  {:>6}  {}",
                a.id,
                a.status,
                if a.isolated { "yes" } else { "no" },
                a.hostname,
                a.last_seen.as_deref().unwrap_or("never"),
                a.policy_version,
                a.agent_version
            );
        }
        Ok(0)
    })
}

pub fn revoke(id: &str, manager: &ManagerAccess, data_dir: &Path) -> anyhow::Result<u8> {
    runtime()?.block_on(async move {
        let client = manager.client(data_dir)?;
        let answer: proto::RevokeResponse =
            client.post(&format!("/v1/admin/agents/{id}/revoke"), &()).await?;
        println!("Revoked agent {}; closed {} open connection(s).", answer.id, answer.connections_closed);
        Ok(0)
    })
}

/// Agent ids go into URL paths; anything but the characters ids are made of is a typo (or a
/// path of its own) and would reach some other route.
fn check_agent_id(id: &str) -> anyhow::Result<()> {
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        anyhow::bail!("`{id}` is not an agent id (see `mamori agents list`)");
    }
    Ok(())
}

/// Text an agent or an admin wrote, made safe to print on a terminal (no escape sequences).
fn printable(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// How often `--wait` asks the manager whether the result has arrived.
const WAIT_POLL: Duration = Duration::from_secs(1);

/// `mamori agent release|isolate|scan ID`: queues the command; with `--wait`, polls until the
/// agent reports. 0 done (or queued without --wait), 1 the agent reports failure, 2 no result in
/// time.
pub fn command(
    action: proto::CommandAction,
    args: crate::agent_cmd::CommandArgs,
    data_dir: &Path,
) -> anyhow::Result<u8> {
    command_on(action, "", args, data_dir)
}

/// [`command`] for an action that applies to something (`target`: the snapshot of
/// `mamori agent restore`).
pub fn command_on(
    action: proto::CommandAction,
    target: &str,
    args: crate::agent_cmd::CommandArgs,
    data_dir: &Path,
) -> anyhow::Result<u8> {
    let crate::agent_cmd::CommandArgs { id, reason, wait, manager } = args;
    check_agent_id(&id)?;
    let target = target.to_string();
    runtime()?.block_on(async move {
        let client = manager.client(data_dir)?;
        let route = path::admin_agent_commands(&id);
        let queued: proto::CommandRecord =
            client.post(&route, &proto::CommandRequest { action, target, reason }).await?;
        println!("Queued {} command {} for agent {id}.", action.as_str(), queued.id);
        let Some(wait) = wait else {
            println!(
                "The agent receives it at its next heartbeat; see `mamori agent commands {id}` for the result."
            );
            return Ok(0);
        };
        let deadline = Instant::now() + Duration::from_secs(wait);
        let mut last_error: Option<anyhow::Error>;
        loop {
            // A manager restarting while we wait is not the agent's answer: keep asking until the
            // time is up, and say what went wrong if it never recovers.
            match client.get::<Vec<proto::CommandRecord>>(&route, &[("limit", "100".into())]).await {
                Ok(list) => {
                    last_error = None;
                    if let Some(done) = list.iter().find(|c| c.id == queued.id && c.status != "pending") {
                        let message = printable(done.message.as_deref().unwrap_or(""));
                        if done.status == "succeeded" {
                            println!("Agent {id} carried out {} {}: {message}", action.as_str(), done.id);
                            return Ok(0);
                        }
                        eprintln!("mamori: agent {id} reports that {} {} failed: {message}", action.as_str(), done.id);
                        return Ok(1);
                    }
                }
                Err(e) => last_error = Some(e),
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            tokio::time::sleep(WAIT_POLL.min(deadline - now)).await;
        }
        eprintln!(
            "mamori: no result from agent {id} for {} {} within {wait} s; the command stays queued and is \
             delivered when the agent next checks in (see `mamori agent commands {id}`)",
            action.as_str(),
            queued.id
        );
        if let Some(e) = last_error {
            eprintln!("mamori: the last attempt to ask the manager failed: {e:#}");
        }
        Ok(2)
    })
}

/// `mamori agent commands ID`.
pub fn list_commands(
    id: &str,
    json: bool,
    limit: u32,
    manager: &ManagerAccess,
    data_dir: &Path,
) -> anyhow::Result<u8> {
    check_agent_id(id)?;
    runtime()?.block_on(async move {
        let client = manager.client(data_dir)?;
        let list: Vec<proto::CommandRecord> = client
            .get(&path::admin_agent_commands(id), &[("limit", limit.clamp(1, 1000).to_string())])
            .await?;
        if json {
            for c in &list {
                println!("{}", serde_json::to_string(c)?);
            }
            return Ok(0);
        }
        if list.is_empty() {
            println!("No commands for agent {id}.");
            return Ok(0);
        }
        println!(
            "{:<32}  {:<8}  {:<9}  {:<24}  {:<24}  MESSAGE",
            "ID", "ACTION", "STATUS", "CREATED", "COMPLETED"
        );
        for c in &list {
            println!(
                "{:<32}  {:<8}  {:<9}  {:<24}  {:<24}  {}",
                c.id,
                c.action.as_str(),
                c.status,
                c.created,
                c.completed.as_deref().unwrap_or("-"),
                printable(c.message.as_deref().unwrap_or(""))
            );
        }
        Ok(0)
    })
}

pub fn policy(action: PolicyAction, data_dir: &Path) -> anyhow::Result<u8> {
    runtime()?.block_on(async move {
        match action {
            PolicyAction::Show { manager } => {
                let policy: proto::Policy = manager.client(data_dir)?.get(path::ADMIN_POLICY, &[]).await?;
                println!("{}", serde_json::to_string_pretty(&policy)?);
            }
            PolicyAction::Set { file, manager } => {
                let text = std::fs::read_to_string(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
                let policy: proto::Policy = serde_json::from_str(&text)
                    .with_context(|| format!("{} is not a valid policy", file.display()))?;
                let stored: proto::Policy =
                    manager.client(data_dir)?.put(path::ADMIN_POLICY, &policy).await?;
                println!("Stored policy version {}.", stored.version);
            }
        }
        Ok(0)
    })
}

pub fn events(action: EventsAction, data_dir: &Path) -> anyhow::Result<u8> {
    let EventsAction::Tail { agent, kind, query, tail } = action;
    let kinds = (!kind.is_empty()).then(|| kind.join(","));
    let base = query_params(&[("agent", agent), ("kind", kinds), ("q", query)]);
    runtime()?.block_on(tail_pages::<proto::EventPage>(path::ADMIN_EVENTS, base, &tail, data_dir, |e| {
        print_event(e, tail.json)
    }))?;
    Ok(0)
}

/// The query pairs whose values are given.
pub fn query_params<'a>(pairs: &[(&'a str, Option<String>)]) -> Vec<(&'a str, String)> {
    pairs.iter().filter_map(|(k, v)| v.clone().map(|v| (*k, v))).collect()
}

/// A page of an admin list route, taken apart into records that carry an increasing id.
pub trait Page: serde::de::DeserializeOwned {
    type Record;
    fn records(self) -> Vec<Self::Record>;
    fn id(record: &Self::Record) -> i64;
}

impl Page for proto::EventPage {
    type Record = proto::EventRecord;
    fn records(self) -> Vec<Self::Record> {
        self.events
    }
    fn id(record: &Self::Record) -> i64 {
        record.id
    }
}

impl Page for proto::LogEventPage {
    type Record = proto::LogEventRecord;
    fn records(self) -> Vec<Self::Record> {
        self.events
    }
    fn id(record: &Self::Record) -> i64 {
        record.id
    }
}

impl Page for proto::LogDetectionPage {
    type Record = proto::LogDetectionRecord;
    fn records(self) -> Vec<Self::Record> {
        self.detections
    }
    fn id(record: &Self::Record) -> i64 {
        record.id
    }
}

/// Prints the newest `tail.lines` records of an admin list route matching `base`, oldest first,
/// then with `tail.follow` polls for newer ones (by id) until Ctrl-C.
pub async fn tail_pages<P: Page>(
    route: &str,
    mut base: Vec<(&str, String)>,
    tail: &TailArgs,
    data_dir: &Path,
    print: impl Fn(&P::Record) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let client = tail.manager.client(data_dir)?;
    let (lines, follow) = (tail.lines, tail.follow);
    if let Some(since) = &tail.since {
        base.push(("since", since.clone()));
    }
    let mut first = base.clone();
    first.push(("limit", lines.max(1).to_string()));
    first.push(("order", "desc".into()));
    let page = client.get::<P>(route, &first).await?.records();
    // Even with -n 0 the newest id is needed to follow from.
    let mut last_id = page.first().map(P::id).unwrap_or(0);
    let shown: Vec<&P::Record> = page.iter().rev().collect();
    let skip = shown.len().saturating_sub(lines as usize);
    for record in &shown[skip..] {
        print(record)?;
    }
    if !follow {
        return Ok(());
    }
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop_requested() => break,
        }
        let mut next = base.clone();
        next.push(("after", last_id.to_string()));
        next.push(("limit", "1000".into()));
        for record in client.get::<P>(route, &next).await?.records() {
            print(&record)?;
            last_id = last_id.max(P::id(&record));
        }
    }
    Ok(())
}

fn print_event(e: &proto::EventRecord, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(e)?);
    } else {
        println!("{}  {}  {:<20}  {}", e.time, e.agent_id, e.kind, e.data.get());
    }
    Ok(())
}
