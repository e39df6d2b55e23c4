//! `mamori bench syslog`: lines/s a manager process takes in over syslog on loopback, parsing
//! each line and running its rules, and whether anything was lost.
//!
//! TCP: `connections` senders write their share of the lines (newline framing) as fast as the
//! manager lets them; the clock stops when the manager has stored every line, and a line
//! missing from its store fails the run. UDP: one socket sends at fixed rates (2 s each, paced
//! per datagram); what the manager stored and dropped (its own count and the kernel's) is
//! reported per rate.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mamori_proto::path;
use serde_json::Value;

use crate::admin::AdminClient;
use crate::bench_cmd::{peak_rss_kib, start_manager};
use crate::manage_cmd::runtime;

/// A mix of what a hospital's manager receives: firewall traffic, sshd, an application's
/// RFC 5424 lines and CEF, each line different.
fn line(i: u64, now_ms: i64) -> String {
    let host = i % 200;
    match i % 10 {
        0..=3 => format!(
            "<189>date=2026-12-01 time=10:00:00 devname=\"FGT-HQ\" devid=\"FG100F\" eventtime={} tz=\"+0900\" logid=\"0000000013\" type=\"traffic\" subtype=\"forward\" level=\"notice\" srcip=10.1.{}.{} srcport={} dstip=203.0.113.{} dstport=443 proto=6 action=\"{}\" policyid=7 service=\"HTTPS\" sentbyte={} rcvdbyte={}",
            i128::from(now_ms) * 1_000_000 + i128::from(i),
            host / 100,
            host,
            1024 + i % 60000,
            i % 250,
            if i.is_multiple_of(7) { "deny" } else { "accept" },
            i % 5000,
            i % 9000
        ),
        4..=6 => format!(
            "<38>Dec  1 10:00:00 srv{host:03} sshd[{}]: Failed password for user{} from 198.51.100.{} port {} ssh2",
            1000 + i % 30000,
            i % 50,
            i % 250,
            1024 + i % 60000
        ),
        7 | 8 => format!(
            "<134>1 2026-12-01T10:00:00.{:03}Z emr{host:03} orders 4242 ORD - order {i} saved by nurse{} in {} ms",
            i % 1000,
            i % 80,
            i % 900
        ),
        _ => format!(
            "<132>Dec  1 10:00:00 pa220 CEF:0|Palo Alto Networks|PAN-OS|10.1|threat|THREAT|5|src=10.2.0.{} dst=198.51.100.{} spt={} dpt=443 act=alert cs1=rule{}",
            host,
            i % 250,
            1024 + i % 60000,
            i % 30
        ),
    }
}

async fn status(admin: &AdminClient) -> anyhow::Result<Value> {
    admin.get(path::ADMIN_LOG_STATUS, &[]).await
}

fn stat(status: &Value, key: &str) -> u64 {
    status["stats"][key].as_u64().unwrap_or(0)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn free_udp_port() -> anyhow::Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

struct UdpRow {
    rate: u64,
    sent: u64,
    achieved: f64,
    stored: u64,
    manager_dropped: u64,
    kernel_dropped: u64,
}

pub fn run(exe: &Path, work: &Path, lines: u64, connections: usize, udp_rates: &[u64]) -> anyhow::Result<u8> {
    if connections == 0 || lines == 0 {
        bail!("--lines and --connections must be at least 1");
    }
    let (tcp, udp) = (format!("127.0.0.1:{}", free_port()?), format!("127.0.0.1:{}", free_udp_port()?));
    let extra = ["--syslog-tcp".to_string(), tcp.clone(), "--syslog-udp".to_string(), udp.clone()];
    let (manager, manager_dir) = start_manager(exe, work, &extra)?;
    let pid = manager.child.id();
    let (endpoint, token) = mamori_manager::local_admin_access(&manager_dir)?;
    let rt = runtime()?;
    let admin = AdminClient::new(&endpoint.url, &endpoint.ca_fingerprint, token)?;
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64;

    // Payloads are built before the clock starts: the load generator shares the two cores.
    let payloads: Vec<Vec<u8>> = (0..connections as u64)
        .map(|c| {
            let mut buf = Vec::new();
            for i in (c..lines).step_by(connections) {
                buf.extend_from_slice(line(i, now_ms).as_bytes());
                buf.push(b'\n');
            }
            buf
        })
        .collect();
    let bytes: usize = payloads.iter().map(Vec::len).sum();

    let started = Instant::now();
    let senders: Vec<_> = payloads
        .into_iter()
        .map(|payload| {
            let tcp = tcp.clone();
            std::thread::spawn(move || -> std::io::Result<()> {
                let mut stream = std::net::TcpStream::connect(&tcp)?;
                stream.write_all(&payload)?;
                stream.shutdown(std::net::Shutdown::Write)
            })
        })
        .collect();
    for sender in senders {
        sender.join().map_err(|_| anyhow::anyhow!("a sender panicked"))?.context("sending over TCP")?;
    }
    let sent_secs = started.elapsed().as_secs_f64();
    let (stored, tcp_status) = rt.block_on(wait_for_stored(&admin, lines))?;
    let tcp_secs = started.elapsed().as_secs_f64();
    let tcp_rss = peak_rss_kib(pid);

    // UDP: one socket at fixed rates, 2 s each, paced per datagram.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let mut udp_rows = Vec::new();
    let mut before = tcp_status;
    let mut next_line = lines;
    let mut udp_stored_total = 0;
    for &rate in udp_rates {
        let count = rate * 2;
        let datagrams: Vec<String> = (next_line..next_line + count).map(|i| line(i, now_ms)).collect();
        next_line += count;
        let step_started = Instant::now();
        for (i, d) in datagrams.iter().enumerate() {
            // Datagram i is due at i / rate seconds.
            let due = Duration::from_secs_f64(i as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(step_started.elapsed()) {
                if wait > Duration::from_micros(200) {
                    std::thread::sleep(wait);
                }
            }
            socket.send_to(d.as_bytes(), &udp).context("sending over UDP")?;
        }
        let send_secs = step_started.elapsed().as_secs_f64();
        let after = rt.block_on(wait_for_quiet(&admin))?;
        let delta = |key: &str| stat(&after, key) - stat(&before, key);
        let kernel = |s: &Value| s["stats"]["udp_kernel_drops"].as_u64().unwrap_or(0);
        let row = UdpRow {
            rate,
            sent: count,
            achieved: count as f64 / send_secs,
            stored: delta("stored"),
            manager_dropped: delta("udp_dropped"),
            kernel_dropped: kernel(&after) - kernel(&before),
        };
        udp_stored_total += row.stored;
        udp_rows.push(row);
        before = after;
    }
    let peak_rss = peak_rss_kib(pid);
    drop(manager);

    let in_store =
        mamori_store::Store::open(&manager_dir.join(mamori_manager::STORE_FILE))?.count_log_events()?;
    println!(
        "| transport | lines sent | stored | lost | wall s | lines/s stored | MB/s | manager peak RSS MiB |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| TCP, {connections} connections | {lines} | {stored} | {} | {tcp_secs:.2} | {:.0} | {:.1} | {:.1} |",
        lines - stored.min(lines),
        stored as f64 / tcp_secs,
        bytes as f64 / tcp_secs / 1e6,
        tcp_rss as f64 / 1024.0
    );
    println!();
    println!("| UDP rate asked | achieved | sent | stored | lost | dropped by the manager | dropped by the kernel | loss |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &udp_rows {
        let lost = r.sent.saturating_sub(r.stored);
        println!(
            "| {} | {:.0} | {} | {} | {} | {} | {} | {:.2} % |",
            r.rate,
            r.achieved,
            r.sent,
            r.stored,
            lost,
            r.manager_dropped,
            r.kernel_dropped,
            100.0 * lost as f64 / r.sent.max(1) as f64
        );
    }
    println!("manager peak RSS over the whole run: {:.1} MiB", peak_rss as f64 / 1024.0);
    println!("TCP senders finished writing after {sent_secs:.2} s; the store holds {in_store} log events.");
    if stored != lines || in_store != lines + udp_stored_total {
        eprintln!("mamori bench: TCP lines were lost, or the store does not hold what was counted as stored");
        return Ok(1);
    }
    Ok(0)
}

/// Polls until `lines` are stored; fails if nothing moves for 30 s.
async fn wait_for_stored(admin: &AdminClient, lines: u64) -> anyhow::Result<(u64, Value)> {
    let mut last = (0, Instant::now());
    loop {
        let s = status(admin).await?;
        let stored = stat(&s, "stored");
        if stored >= lines {
            return Ok((stored, s));
        }
        if stored != last.0 {
            last = (stored, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(30) {
            bail!("the manager stored {stored} of {lines} lines and then nothing for 30 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls until the received count has not moved for 2 s and everything received is stored or
/// counted as dropped.
async fn wait_for_quiet(admin: &AdminClient) -> anyhow::Result<Value> {
    let mut last = (u64::MAX, Instant::now());
    loop {
        let s = status(admin).await?;
        let counts = (stat(&s, "received"), stat(&s, "stored") + stat(&s, "udp_dropped"));
        if counts.0 != last.0 {
            last = (counts.0, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(2) && counts.1 >= counts.0 {
            return Ok(s);
        }
        if last.1.elapsed() > Duration::from_secs(60) {
            bail!("the manager's UDP counters did not settle");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
