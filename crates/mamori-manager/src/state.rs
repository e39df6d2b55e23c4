//! What every connection and request shares: the CA, the revocation set, live agent status,
//! the current policy, and the handles to the store.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context;
use mamori_pki::Ca;
use mamori_store::{HeartbeatRow, Store};
use tokio::sync::{watch, Notify};

use crate::writer::Writer;
use crate::{files, Config};

/// Heartbeat data and last-seen times are kept in memory and written every few seconds: one
/// transaction for all agents instead of one fsync per heartbeat.
const LIVE_FLUSH_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Default)]
pub(crate) struct Live {
    pub last_seen_ms: i64,
    pub heartbeat: Option<HeartbeatRow>,
    pub dirty: bool,
    /// The address the agent last connected from (not stored: it is only used to match log
    /// detections to agents, and an address from before a restart may be stale).
    pub ip: Option<std::net::IpAddr>,
}

pub(crate) struct Shared {
    pub ca: Ca,
    pub created_ca: bool,
    pub client_cert_validity: Duration,
    pub offline_after: Duration,
    pub retention: Duration,
    pub retention_interval: Duration,
    pub admin_token_hash: [u8; 32],
    pub server_tls: Arc<rustls::ServerConfig>,
    /// Device ids refused at the handshake: revoked or replaced agents.
    pub untrusted: Arc<RwLock<HashSet<String>>>,
    /// Device ids of agents the store knows as active. A certificate our CA signed for an id
    /// the store does not know (say, after restoring an old database) gets nothing.
    pub active: RwLock<HashSet<String>>,
    /// Open connections per device id, so a revocation can close them at once.
    pub connections: Mutex<HashMap<String, HashMap<u64, Arc<Notify>>>>,
    pub live: Mutex<HashMap<String, Live>>,
    /// Commands without a result, per agent, oldest first. Heartbeats are answered from here, so
    /// they still never read the store; it changes only after the store has committed.
    pub commands: Mutex<HashMap<String, Vec<mamori_proto::AgentCommand>>>,
    /// (version, JSON) of the current policy; version 0 means none was ever set.
    pub policy: RwLock<(u64, Arc<str>)>,
    pub writer: Writer,
    pub log_stats: crate::syslog::LogStats,
    pub log_rules: crate::log_rules::LogRules,
    /// Where syslog is received, for the admin API (set once listening).
    pub syslog_addrs: RwLock<crate::syslog::SyslogAddrs>,
    pub response: crate::respond::ResponseCache,
    /// The web console's sessions, live updates and audit key.
    pub console: crate::console::ConsoleState,
    /// TLS for browsers (no client certificates), same server certificate.
    pub console_tls: Arc<rustls::ServerConfig>,
    /// Set when this start created the first console account.
    pub console_initial_password: Option<std::path::PathBuf>,
    pub store_path: std::path::PathBuf,
    readers: Mutex<Vec<Store>>,
}

impl Shared {
    pub async fn open(config: &Config) -> anyhow::Result<Shared> {
        let config = config.clone();
        tokio::task::spawn_blocking(move || Shared::open_blocking(&config))
            .await
            .context("startup panicked")?
    }

    fn open_blocking(config: &Config) -> anyhow::Result<Shared> {
        mamori_pki::fsutil::create_private_dir(&config.data_dir)
            .with_context(|| format!("cannot create {}", config.data_dir.display()))?;
        let (ca, created_ca) = Ca::load_or_create(&config.data_dir.join("ca"), "mamori device CA")
            .context("cannot open the device CA")?;
        let admin_token_hash =
            files::load_or_create_admin_token(&config.data_dir.join(crate::ADMIN_TOKEN_FILE))?;
        let store_path = config.data_dir.join(crate::STORE_FILE);
        let store =
            Store::open(&store_path).with_context(|| format!("cannot open {}", store_path.display()))?;
        let untrusted: HashSet<String> = store.untrusted_agent_ids()?.into_iter().collect();
        let active: HashSet<String> =
            store.list_agents()?.into_iter().filter(|a| a.status == "active").map(|a| a.id).collect();
        let mut commands: HashMap<String, Vec<mamori_proto::AgentCommand>> = HashMap::new();
        for row in store.all_pending_commands()? {
            match crate::api::agent_command(&row) {
                Some(command) => commands.entry(row.agent_id).or_default().push(command),
                None => tracing::warn!(
                    "command {} has an action this build does not know: {}",
                    row.id,
                    row.action
                ),
            }
        }
        let policy = match store.current_policy()? {
            // The stored text is the policy as uploaded; the version is the row's.
            Some((version, json)) => {
                let mut policy: mamori_proto::Policy = serde_json::from_str(&json)
                    .with_context(|| format!("stored policy version {version} is not a valid policy"))?;
                policy.version = version;
                (version, Arc::from(serde_json::to_string(&policy)?.as_str()))
            }
            None => {
                let default = mamori_proto::Policy::default();
                (0, Arc::from(serde_json::to_string(&default)?.as_str()))
            }
        };

        let untrusted = Arc::new(RwLock::new(untrusted));
        let server_key = ca.issue_server(&server_names(config), config.server_cert_validity)?;
        let check = untrusted.clone();
        let is_revoked: mamori_pki::tls::RevocationCheck = Arc::new(move |info| match &info.device_id {
            // A client certificate without our device URI was not issued by this manager.
            None => true,
            Some(id) => check.read().map(|set| set.contains(id)).unwrap_or(true),
        });
        let server_tls = mamori_pki::tls::server_config(
            ca.cert_der(),
            &server_key,
            mamori_pki::tls::ClientAuth::Optional,
            is_revoked,
        )?;
        let console_tls = mamori_pki::tls::browser_server_config(ca.cert_der(), &server_key)?;
        let console = crate::console::ConsoleState::new(
            &config.data_dir,
            config.console_idle,
            config.institution.clone(),
        )?;
        let mut store = store;
        let console_initial_password =
            crate::console::users::ensure_first_admin(&mut store, &config.data_dir)?;
        let writer = Writer::start(Store::open(&store_path)?);
        Ok(Shared {
            ca,
            created_ca,
            client_cert_validity: config.client_cert_validity,
            offline_after: config.offline_after,
            retention: config.retention,
            retention_interval: config.retention_interval,
            admin_token_hash,
            server_tls,
            untrusted,
            active: RwLock::new(active),
            connections: Mutex::new(HashMap::new()),
            live: Mutex::new(HashMap::new()),
            commands: Mutex::new(commands),
            policy: RwLock::new(policy),
            writer,
            log_stats: crate::syslog::LogStats::default(),
            log_rules: crate::log_rules::LogRules::load(&config.rule_paths()?, &config.log_pipelines)?,
            syslog_addrs: RwLock::new(crate::syslog::SyslogAddrs::default()),
            response: crate::respond::ResponseCache::default(),
            console,
            console_tls,
            console_initial_password,
            store_path,
            readers: Mutex::new(vec![store]),
        })
    }

    /// Runs `f` on a store connection from a small pool, on a blocking thread.
    pub async fn with_store<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Store) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let shared = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut store =
                match shared.readers.lock().map_err(|_| anyhow::anyhow!("store pool poisoned"))?.pop() {
                    Some(s) => s,
                    None => Store::open(&shared.store_path)?,
                };
            let result = f(&mut store);
            if let Ok(mut pool) = shared.readers.lock() {
                if pool.len() < 8 {
                    pool.push(store);
                }
            }
            result
        })
        .await
        .context("store task panicked")?
    }

    pub fn is_active(&self, device_id: &str) -> bool {
        let untrusted = self.untrusted.read().map(|s| s.contains(device_id)).unwrap_or(true);
        !untrusted && self.active.read().map(|s| s.contains(device_id)).unwrap_or(false)
    }

    /// Refuses the ids from now on and closes their open connections. Returns how many
    /// connections were closed.
    pub fn distrust(&self, ids: &[String]) -> u64 {
        if let Ok(mut set) = self.untrusted.write() {
            set.extend(ids.iter().cloned());
        }
        if let Ok(mut set) = self.active.write() {
            for id in ids {
                set.remove(id);
            }
        }
        let mut closed = 0;
        if let Ok(mut conns) = self.connections.lock() {
            for id in ids {
                if let Some(map) = conns.remove(id) {
                    for notify in map.values() {
                        notify.notify_one();
                        closed += 1;
                    }
                }
            }
        }
        closed
    }

    /// The commands `device_id` has not reported a result for, oldest first.
    pub fn pending_commands(&self, device_id: &str) -> Vec<mamori_proto::AgentCommand> {
        self.commands.lock().ok().and_then(|c| c.get(device_id).cloned()).unwrap_or_default()
    }

    /// Adds a command the store has just queued.
    pub fn command_queued(&self, device_id: &str, command: mamori_proto::AgentCommand) {
        if let Ok(mut all) = self.commands.lock() {
            let list = all.entry(device_id.to_string()).or_default();
            list.push(command);
            // Two admins queuing at once may commit in one order and get here in the other.
            list.sort_by_key(|c| c.created_ms);
        }
    }

    /// Forgets a command whose result the store has recorded.
    pub fn command_completed(&self, device_id: &str, command_id: &str) {
        if let Ok(mut all) = self.commands.lock() {
            if let Some(list) = all.get_mut(device_id) {
                list.retain(|c| c.id != command_id);
                if list.is_empty() {
                    all.remove(device_id);
                }
            }
        }
    }

    /// The hostname and address an agent was last seen with (for matching log detections).
    pub fn agent_seen(&self, device_id: &str) -> (Option<String>, Option<std::net::IpAddr>) {
        self.live
            .lock()
            .ok()
            .and_then(|live| {
                live.get(device_id).map(|l| (l.heartbeat.as_ref().map(|h| h.hostname.clone()), l.ip))
            })
            .unwrap_or((None, None))
    }

    /// (agent id, hostname, address, isolated) of every agent seen since the start.
    pub fn agents_seen(&self) -> Vec<(String, Option<String>, Option<std::net::IpAddr>, bool)> {
        self.live
            .lock()
            .map(|live| {
                live.iter()
                    .map(|(id, l)| {
                        let hb = l.heartbeat.as_ref();
                        (id.clone(), hb.map(|h| h.hostname.clone()), l.ip, hb.is_some_and(|h| h.isolated))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn touch(&self, device_id: &str, now_ms: i64, heartbeat: Option<HeartbeatRow>) {
        self.touch_from(device_id, now_ms, heartbeat, None)
    }

    /// [`Shared::touch`], also noting the address the agent connected from.
    pub fn touch_from(
        &self,
        device_id: &str,
        now_ms: i64,
        heartbeat: Option<HeartbeatRow>,
        ip: Option<std::net::IpAddr>,
    ) {
        if let Ok(mut live) = self.live.lock() {
            let entry = live.entry(device_id.to_string()).or_default();
            if ip.is_some() {
                entry.ip = ip;
            }
            entry.last_seen_ms = entry.last_seen_ms.max(now_ms);
            if heartbeat.is_some() {
                entry.heartbeat = heartbeat;
            }
            entry.dirty = true;
        }
    }

    /// Writes changed heartbeats and last-seen times to the store.
    pub fn flush_live(&self) {
        let pending: Vec<(String, i64, Option<HeartbeatRow>)> = match self.live.lock() {
            Ok(mut live) => live
                .iter_mut()
                .filter(|(_, l)| l.dirty)
                .map(|(id, l)| {
                    l.dirty = false;
                    (id.clone(), l.last_seen_ms, l.heartbeat.clone())
                })
                .collect(),
            Err(_) => return,
        };
        if pending.is_empty() {
            return;
        }
        let result = Store::open(&self.store_path).and_then(|mut store| store.record_live(&pending));
        if let Err(e) = result {
            tracing::warn!("cannot record agent heartbeats: {e}");
        }
    }
}

fn server_names(config: &Config) -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    if let Ok(host) = hostname() {
        names.push(host);
    }
    if !config.listen.ip().is_unspecified() {
        names.push(config.listen.ip().to_string());
    }
    names.extend(config.server_names.iter().cloned());
    if let Some(host) = config.console_url.as_deref().and_then(mamori_auth::passkey::console_host) {
        names.push(host);
    }
    let mut seen = HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

fn hostname() -> std::io::Result<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")?;
    let name = name.trim();
    if name.is_empty() || name.contains(|c: char| c.is_whitespace()) {
        return Err(std::io::Error::other("no usable host name"));
    }
    Ok(name.to_string())
}

/// Periodic work: writing live status, the retention sweep.
pub(crate) fn spawn_background(
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let live = {
        let shared = shared.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(LIVE_FLUSH_INTERVAL);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.changed() => return,
                }
                let s = shared.clone();
                let _ = tokio::task::spawn_blocking(move || s.flush_live()).await;
            }
        })
    };
    let retention = {
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(shared.retention_interval);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.changed() => return,
                }
                let cutoff = crate::timefmt::now_ms()
                    .saturating_sub(i64::try_from(shared.retention.as_millis()).unwrap_or(i64::MAX));
                let swept = shared
                    .with_store(move |store| {
                        Ok(store.delete_events_before(cutoff, 10_000)?
                            + store.delete_log_events_before(cutoff, 10_000)?)
                    })
                    .await;
                match swept {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(
                        "retention: deleted {n} events older than {}",
                        crate::timefmt::rfc3339(cutoff)
                    ),
                    Err(e) => tracing::warn!("retention sweep failed: {e:#}"),
                }
            }
        })
    };
    vec![live, retention]
}
