//! `mamori bench ingest`: simulated agents over real mutual TLS on loopback against a manager in
//! its own process, next to the raw ceiling of batched inserts into the same schema.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Subcommand;
use mamori_proto::{self as proto, path};

use crate::admin::{error_chain, AdminClient};
use crate::manage_cmd::runtime;

#[derive(Subcommand)]
pub enum BenchAction {
    /// Sustained events/s, p99 batch latency and manager peak RSS for N simulated agents.
    Ingest {
        /// Agent counts to measure, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
        agents: Vec<usize>,
        /// Events sent per measurement.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Events per batch (lowered so every agent sends at least 10 batches).
        #[arg(long, default_value_t = 500)]
        batch: usize,
        /// Work directory (default: a temporary directory, removed afterwards).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Syslog lines/s into a manager process: TCP with every line accounted for, then UDP with
    /// what was lost counted. The manager runs its rules (the built-in pack) meanwhile.
    Syslog {
        /// Lines sent over TCP.
        #[arg(long, default_value_t = 1_000_000)]
        lines: u64,
        /// TCP connections the lines are spread over (senders, like firewalls and servers).
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// UDP send rates (datagrams/s, comma-separated), 2 s each; 0 values are skipped.
        #[arg(long, value_delimiter = ',', default_value = "20000,50000,100000,200000")]
        udp_rates: Vec<u64>,
        /// Work directory (default: a temporary directory, removed afterwards).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

struct Measurement {
    agents: usize,
    events: u64,
    batch: usize,
    seconds: f64,
    p50_ms: f64,
    p99_ms: f64,
    peak_rss_kib: u64,
    stored: u64,
    raw_per_sec: f64,
}

pub fn run(action: BenchAction) -> anyhow::Result<u8> {
    let exe = std::env::current_exe().context("cannot find the mamori binary")?;
    match action {
        BenchAction::Ingest { agents, events, batch, dir } => {
            let (_temp, work) = work_dir(dir)?;
            ingest(&exe, &work, &agents, events, batch)
        }
        BenchAction::Syslog { lines, connections, udp_rates, dir } => {
            let (_temp, work) = work_dir(dir)?;
            let rates: Vec<u64> = udp_rates.into_iter().filter(|r| *r > 0).collect();
            crate::bench_syslog::run(&exe, &work, lines, connections, &rates)
        }
    }
}

/// The given directory (created), or a temporary one removed when the guard is dropped.
fn work_dir(dir: Option<PathBuf>) -> anyhow::Result<(Option<tempfile::TempDir>, PathBuf)> {
    match dir {
        Some(d) => {
            std::fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
            Ok((None, d))
        }
        None => {
            let temp = tempfile::tempdir().context("cannot create a temporary directory")?;
            let path = temp.path().to_path_buf();
            Ok((Some(temp), path))
        }
    }
}

fn ingest(exe: &Path, work: &Path, agents: &[usize], events: u64, batch: usize) -> anyhow::Result<u8> {
    println!("| agents | events | batch | events/s | p50 batch ms | p99 batch ms | manager peak RSS MiB | raw SQLite ceiling events/s | ratio | lost |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut failed = false;
    for (i, &n) in agents.iter().enumerate() {
        if n == 0 {
            bail!("--agents values must be at least 1");
        }
        let run_dir = work.join(format!("run-{i}-{n}"));
        let batch = batch.min((events / n as u64 / 10).max(1) as usize).max(1);
        let m = measure(exe, &run_dir, n, events, batch)?;
        let rate = m.events as f64 / m.seconds;
        let lost = m.events.saturating_sub(m.stored);
        failed |= lost != 0 || m.stored != m.events;
        println!(
            "| {} | {} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.0} | {:.2} | {} |",
            m.agents,
            m.events,
            m.batch,
            rate,
            m.p50_ms,
            m.p99_ms,
            m.peak_rss_kib as f64 / 1024.0,
            m.raw_per_sec,
            rate / m.raw_per_sec,
            lost
        );
    }
    if failed {
        eprintln!("mamori bench: events were lost or stored twice (see the `lost` column)");
        return Ok(1);
    }
    Ok(0)
}

/// The manager under test, stopped when dropped.
pub(crate) struct ManagerProcess {
    pub child: Child,
}

impl Drop for ManagerProcess {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Starts `mamori server` on a free loopback port with `extra` arguments; returns when it has
/// written its endpoint file.
pub(crate) fn start_manager(
    exe: &Path,
    dir: &Path,
    extra: &[String],
) -> anyhow::Result<(ManagerProcess, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let manager_dir = dir.join("manager");
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let log = std::fs::File::create(dir.join("manager.log"))?;
    let child = Command::new(exe)
        .args(["server", "--data"])
        .arg(&manager_dir)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(extra)
        .env("MAMORI_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start the manager")?;
    let mut manager = ManagerProcess { child };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !manager_dir.join(mamori_manager::ENDPOINT_FILE).exists() {
        if Instant::now() > deadline || manager.child.try_wait()?.is_some() {
            bail!("the manager did not start; see {}", dir.join("manager.log").display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((manager, manager_dir))
}

fn measure(exe: &Path, dir: &Path, agents: usize, events: u64, batch: usize) -> anyhow::Result<Measurement> {
    let (manager, manager_dir) = start_manager(exe, dir, &[])?;
    let pid = manager.child.id();
    let (endpoint, admin_token) = mamori_manager::local_admin_access(&manager_dir)?;

    let rt = runtime()?;
    let (seconds, mut latencies, stored) = rt.block_on(async {
        let admin = AdminClient::new(&endpoint.url, &endpoint.ca_fingerprint, admin_token)?;
        let request =
            proto::TokenCreateRequest { ttl_secs: 3600, uses: agents as u32, label: "bench".into() };
        let token: proto::TokenCreated = admin.post(path::ADMIN_TOKENS, &request).await?;
        let clients = enroll_all(&endpoint, &token.token, agents).await?;

        // Bodies are built before the clock starts so the load generator's JSON encoding does
        // not compete with the manager for the two cores.
        let per_agent = events / agents as u64;
        let extra = events % agents as u64;
        let mut work: Vec<(reqwest::Client, Vec<Vec<u8>>)> = Vec::with_capacity(agents);
        for (i, client) in clients.into_iter().enumerate() {
            let count = per_agent + u64::from((i as u64) < extra);
            work.push((client, bodies(i, count, batch)?));
        }
        let url = Arc::new(format!("{}{}", endpoint.url, path::EVENTS));
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for (client, bodies) in work {
            let url = url.clone();
            tasks.spawn(async move {
                let mut latencies = Vec::with_capacity(bodies.len());
                let mut stored = 0u64;
                for body in bodies {
                    let t = Instant::now();
                    let response = client
                        .post(url.as_str())
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await
                        .map_err(|e| anyhow::anyhow!("batch failed: {}", error_chain(&e)))?;
                    if !response.status().is_success() {
                        bail!(
                            "batch refused: {} {}",
                            response.status(),
                            response.text().await.unwrap_or_default()
                        );
                    }
                    let ack: proto::BatchAck = response.json().await?;
                    latencies.push(t.elapsed());
                    stored += ack.stored;
                }
                anyhow::Ok((latencies, stored))
            });
        }
        let mut latencies = Vec::new();
        let mut stored = 0;
        while let Some(done) = tasks.join_next().await {
            let (l, s) = done.context("agent task panicked")??;
            latencies.extend(l);
            stored += s;
        }
        anyhow::Ok((started.elapsed().as_secs_f64(), latencies, stored))
    })?;
    let peak_rss_kib = peak_rss_kib(pid);
    drop(manager);

    // What the manager acknowledged must be what is in its database.
    let in_store =
        mamori_store::Store::open(&manager_dir.join(mamori_manager::STORE_FILE))?.count_events()?;
    if in_store != stored {
        bail!("the manager acknowledged {stored} events but its store holds {in_store}");
    }
    let raw = mamori_store::raw_ingest_ceiling(&dir.join("raw.db"), agents, events, batch)?;
    latencies.sort_unstable();
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 * p).ceil() as usize)
            .saturating_sub(1)
            .min(latencies.len().saturating_sub(1));
        latencies.get(i).map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0)
    };
    Ok(Measurement {
        agents,
        events,
        batch,
        seconds,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        peak_rss_kib,
        stored: in_store,
        raw_per_sec: raw.events_per_sec,
    })
}

/// Enrolls `n` simulated agents (each with its own key) and returns one mTLS client per agent.
async fn enroll_all(
    endpoint: &mamori_manager::Endpoint,
    token: &str,
    n: usize,
) -> anyhow::Result<Vec<reqwest::Client>> {
    let tls = mamori_pki::tls::client_config(&endpoint.ca_fingerprint, None)?;
    let anonymous = reqwest::Client::builder().use_preconfigured_tls((*tls).clone()).build()?;
    let semaphore = Arc::new(tokio::sync::Semaphore::new(16));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let (anonymous, semaphore) = (anonymous.clone(), semaphore.clone());
        let (url, token, fp) = (endpoint.url.clone(), token.to_string(), endpoint.ca_fingerprint.clone());
        tasks.spawn(async move {
            let _permit = semaphore.acquire().await?;
            let key = mamori_pki::DeviceKey::generate()?;
            let request = proto::EnrollRequest {
                token,
                csr_pem: key.csr_pem("bench")?,
                hostname: format!("bench-{i}"),
                machine_id: format!("bench-machine-{i}"),
                previous_device_id: None,
                agent_version: env!("CARGO_PKG_VERSION").into(),
            };
            let response = anonymous.post(format!("{url}{}", path::ENROLL)).json(&request).send().await?;
            if !response.status().is_success() {
                bail!("enrollment refused: {}", response.text().await.unwrap_or_default());
            }
            let enrolled: proto::EnrollResponse = response.json().await?;
            let identity =
                mamori_pki::KeyAndCert { key_pem: key.key_pem().to_string(), cert_pem: enrolled.cert_pem };
            let tls = mamori_pki::tls::client_config(&fp, Some(&identity))?;
            let client = reqwest::Client::builder()
                .use_preconfigured_tls((*tls).clone())
                .pool_max_idle_per_host(1)
                .timeout(Duration::from_secs(120))
                .build()?;
            anyhow::Ok((i, client))
        });
    }
    let mut clients: Vec<Option<reqwest::Client>> = (0..n).map(|_| None).collect();
    while let Some(done) = tasks.join_next().await {
        let (i, client) = done.context("enrollment task panicked")??;
        clients[i] = Some(client);
    }
    Ok(clients.into_iter().flatten().collect())
}

/// The JSON bodies for one agent's `count` events, `batch` per body, seq from 1.
fn bodies(agent: usize, count: u64, batch: usize) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let mut seq = 1u64;
    let base_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64;
    while seq <= count {
        let end = (seq + batch as u64).min(count + 1);
        let mut events = Vec::with_capacity((end - seq) as usize);
        for s in seq..end {
            events.push(proto::WireEvent {
                seq: s,
                kind: if s % 10 == 0 { "process.start".into() } else { "file.write".into() },
                time_ms: base_ms + s as i64,
                data: serde_json::value::RawValue::from_string(mamori_store::synthetic_event(agent, s))?,
            });
        }
        out.push(serde_json::to_vec(&proto::EventBatch { events })?);
        seq = end;
    }
    Ok(out)
}
