//! Syslog receivers: UDP (RFC 5426), TCP (RFC 6587) and TLS (RFC 5425), into the log store.
//!
//! Each message is parsed by `mamori-logs` (any format it knows, detected per message) and stored
//! as a flat JSON event in `log_events`, together with what the log rules detect in it.
//!
//! Loss, by transport:
//! - **TCP and TLS lose nothing while the manager runs**: a connection's reader waits when too
//!   many of its batches are not yet committed, so a fast sender is slowed down by TCP's flow
//!   control instead of overrunning memory. (Syslog over TCP has no acknowledgements: what was in
//!   flight when the manager stops is lost; that is the protocol's limit.)
//! - **UDP cannot be slowed down**: when the writer is behind, whole batches are dropped and
//!   counted, and the kernel's own drops on the socket are read from `/proc/net/udp`. Both are in
//!   [`LogStats`].
//!
//! TLS uses the manager's server certificate. Firewalls rarely hold a client certificate, so one
//! is optional here; one that is presented must come from the mamori CA (the same rustls
//! configuration as the agent port).

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use mamori_logs::{Format, Framer, ParseContext};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{oneshot, watch};

use crate::state::Shared;
use crate::writer::{DetectionRecord, LogRecord};

/// Largest message accepted on a stream; a longer one is counted and skipped.
pub const MAX_FRAME: usize = 64 * 1024;
/// Batches of one connection queued for the writer and not yet committed: a stream reader waits
/// beyond this. The UDP receiver drops beyond this many full batches' worth of messages.
const MAX_UNCOMMITTED: usize = 8;
/// Most messages parsed and handed to the writer at once.
const BATCH: usize = 2_000;
const READ_BUFFER: usize = 256 * 1024;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where to listen for syslog; each is off unless set.
#[derive(Debug, Clone, Default)]
pub struct SyslogConfig {
    pub udp: Option<SocketAddr>,
    pub tcp: Option<SocketAddr>,
    pub tls: Option<SocketAddr>,
}

/// The addresses actually bound (port 0 resolved).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SyslogAddrs {
    pub udp: Option<SocketAddr>,
    pub tcp: Option<SocketAddr>,
    pub tls: Option<SocketAddr>,
}

/// Counters since the manager started.
#[derive(Debug, Default)]
pub struct LogStats {
    pub received: AtomicU64,
    pub stored: AtomicU64,
    pub malformed: AtomicU64,
    /// Stream bytes that were not a message: oversized frames and garbage between frames.
    pub framing_errors: AtomicU64,
    /// UDP messages dropped because the writer was behind.
    pub udp_dropped: AtomicU64,
    pub write_errors: AtomicU64,
    pub connections: AtomicU64,
}

/// [`LogStats`] as the admin API reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct LogStatsReport {
    pub received: u64,
    pub stored: u64,
    pub malformed: u64,
    pub framing_errors: u64,
    pub udp_dropped: u64,
    /// The kernel's count of datagrams it dropped on our UDP socket (receive buffer full).
    pub udp_kernel_drops: Option<u64>,
    pub write_errors: u64,
    pub connections: u64,
}

impl LogStats {
    pub fn report(&self, udp: Option<SocketAddr>) -> LogStatsReport {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        LogStatsReport {
            received: get(&self.received),
            stored: get(&self.stored),
            malformed: get(&self.malformed),
            framing_errors: get(&self.framing_errors),
            udp_dropped: get(&self.udp_dropped),
            udp_kernel_drops: udp.and_then(|a| kernel_udp_drops(a.port())),
            write_errors: get(&self.write_errors),
            connections: get(&self.connections),
        }
    }
}

/// Binds every configured listener now (so that a taken port fails the start) and serves them
/// until `shutdown`.
pub(crate) async fn start(
    shared: Arc<Shared>,
    config: &SyslogConfig,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<(SyslogAddrs, Vec<tokio::task::JoinHandle<()>>)> {
    let mut addrs = SyslogAddrs::default();
    let mut tasks = Vec::new();
    if let Some(addr) = config.udp {
        let socket = bind_udp(addr).with_context(|| format!("cannot listen for syslog on udp {addr}"))?;
        addrs.udp = Some(socket.local_addr()?);
        tasks.push(tokio::spawn(serve_udp(shared.clone(), socket, shutdown.clone())));
    }
    for (addr, tls) in [(config.tcp, false), (config.tls, true)] {
        let Some(addr) = addr else { continue };
        let proto = if tls { "tls" } else { "tcp" };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for syslog on {proto} {addr}"))?;
        let local = listener.local_addr()?;
        if tls {
            addrs.tls = Some(local);
        } else {
            addrs.tcp = Some(local);
        }
        tasks.push(tokio::spawn(accept_streams(shared.clone(), listener, tls, shutdown.clone())));
    }
    Ok((addrs, tasks))
}

fn bind_udp(addr: SocketAddr) -> std::io::Result<tokio::net::UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    // A large receive buffer rides out bursts while a batch is parsed; the kernel caps it at
    // net.core.rmem_max, which is fine.
    set_receive_buffer(&socket, 16 * 1024 * 1024);
    socket.set_nonblocking(true)?;
    tokio::net::UdpSocket::from_std(socket)
}

fn set_receive_buffer(socket: &std::net::UdpSocket, bytes: libc::c_int) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid socket descriptor and a pointer to a c_int of the size passed.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

async fn accept_streams(
    shared: Arc<Shared>,
    listener: tokio::net::TcpListener,
    tls: bool,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(shared.server_tls.clone());
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("syslog accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        shared.log_stats.connections.fetch_add(1, Ordering::Relaxed);
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            if tls {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let source = Arc::from(format!("tls {}", peer.ip()));
                        read_stream(shared, stream, source, peer.ip(), shutdown).await
                    }
                    Ok(Err(e)) => tracing::debug!("syslog TLS handshake from {peer} failed: {e}"),
                    Err(_) => tracing::debug!("syslog TLS handshake from {peer} timed out"),
                }
            } else {
                let source = Arc::from(format!("tcp {}", peer.ip()));
                read_stream(shared, tcp, source, peer.ip(), shutdown).await
            }
        });
    }
}

/// Reads one stream to its end: frames, parses, queues; waits when too much is uncommitted.
async fn read_stream<S: AsyncRead + Unpin>(
    shared: Arc<Shared>,
    mut stream: S,
    source: Arc<str>,
    peer: IpAddr,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut framer = Framer::new(MAX_FRAME);
    let mut buf = vec![0u8; READ_BUFFER];
    let mut frames = Vec::new();
    let mut pending = Pending::default();
    let mut framing_errors = 0;
    loop {
        let read = tokio::select! {
            r = stream.read(&mut buf) => r,
            _ = shutdown.changed() => break,
        };
        let n = match read {
            Ok(0) => {
                framer.finish(&mut frames);
                0
            }
            Ok(n) => {
                framer.push(&buf[..n], &mut frames);
                n
            }
            Err(e) => {
                tracing::debug!("syslog stream from {source} ended: {e}");
                framer.finish(&mut frames);
                0
            }
        };
        let errors = framer.errors();
        shared.log_stats.framing_errors.fetch_add(errors - framing_errors, Ordering::Relaxed);
        framing_errors = errors;
        for chunk in frames.chunks(BATCH) {
            let (events, detections) = process(&shared, chunk, &source, peer);
            match shared.writer.submit_logs(events, detections).await {
                Ok(receipt) => pending.push(receipt, chunk.len()),
                Err(e) => {
                    tracing::error!("syslog from {source}: {e}");
                    return;
                }
            }
            while pending.len() > MAX_UNCOMMITTED {
                pending.settle_oldest(&shared).await;
            }
        }
        frames.clear();
        if n == 0 {
            break;
        }
    }
    while pending.len() > 0 {
        pending.settle_oldest(&shared).await;
    }
}

async fn serve_udp(shared: Arc<Shared>, socket: tokio::net::UdpSocket, mut shutdown: watch::Receiver<bool>) {
    let mut buf = vec![0u8; 65_536];
    let mut pending = Pending::default();
    // Messages by sender, so that each stored event names where it came from.
    let mut batch: Vec<(IpAddr, Vec<u8>)> = Vec::new();
    loop {
        let first = tokio::select! {
            r = socket.recv_from(&mut buf) => r,
            // Count a commit when it happens, not only when the next datagram arrives.
            result = pending.oldest(), if pending.len() > 0 => {
                pending.pop();
                count(&shared, result);
                continue;
            }
            _ = shutdown.changed() => break,
        };
        match first {
            Ok((n, from)) => batch.push((from.ip(), buf[..n].to_vec())),
            Err(e) => {
                tracing::debug!("syslog udp receive: {e}");
                continue;
            }
        }
        // Whatever else has arrived goes into the same batch.
        while batch.len() < BATCH {
            match socket.try_recv_from(&mut buf) {
                Ok((n, from)) => batch.push((from.ip(), buf[..n].to_vec())),
                Err(_) => break,
            }
        }
        pending.settle_finished(&shared);
        // Counted in messages: a datagram at a time makes many tiny batches, and the writer
        // commits them together, so their number says nothing about how far behind it is.
        if pending.messages() + batch.len() > MAX_UNCOMMITTED * BATCH {
            shared.log_stats.received.fetch_add(batch.len() as u64, Ordering::Relaxed);
            shared.log_stats.udp_dropped.fetch_add(batch.len() as u64, Ordering::Relaxed);
            batch.clear();
            continue;
        }
        batch.sort_by_key(|(ip, _)| *ip);
        let mut events = Vec::with_capacity(batch.len());
        let mut detections = Vec::new();
        for group in batch.chunk_by(|a, b| a.0 == b.0) {
            let ip = group[0].0;
            let source: Arc<str> = Arc::from(format!("udp {ip}"));
            let lines: Vec<Vec<u8>> = group.iter().map(|(_, m)| m.clone()).collect();
            let (e, d) = process(&shared, &lines, &source, ip);
            events.extend(e);
            detections.extend(d);
        }
        let messages = batch.len();
        batch.clear();
        match shared.writer.submit_logs(events, detections).await {
            Ok(receipt) => pending.push(receipt, messages),
            Err(e) => {
                tracing::error!("syslog udp: {e}");
                break;
            }
        }
    }
    while pending.len() > 0 {
        pending.settle_oldest(&shared).await;
    }
}

/// Parses messages into stored records and what the log rules detect in them.
fn process(
    shared: &Arc<Shared>,
    messages: &[Vec<u8>],
    source: &Arc<str>,
    peer: IpAddr,
) -> (Vec<LogRecord>, Vec<DetectionRecord>) {
    let now = SystemTime::now();
    let mut ctx = ParseContext::new(now);
    ctx.peer_ip = Some(peer.to_string());
    let now_ms = crate::timefmt::system_time_ms(now);
    let mut records = Vec::with_capacity(messages.len());
    let mut detections = Vec::new();
    let mut malformed = 0u64;
    for message in messages {
        let event = mamori_logs::parse_line(Format::Auto, message, &ctx);
        if event.contains_key("mamori.malformed") {
            malformed += 1;
        }
        let time_ms = event
            .get("@timestamp")
            .and_then(|t| t.as_str())
            .and_then(|t| crate::timefmt::parse(t).ok())
            .unwrap_or(now_ms);
        shared.log_rules.detect(&event, source, time_ms, &mut detections);
        let line = String::from_utf8_lossy(message).into_owned();
        records.push(LogRecord { source: source.clone(), time_ms, line });
    }
    let stats = &shared.log_stats;
    stats.received.fetch_add(messages.len() as u64, Ordering::Relaxed);
    stats.malformed.fetch_add(malformed, Ordering::Relaxed);
    if !detections.is_empty() {
        crate::respond::after_detections(shared, &detections);
    }
    (records, detections)
}

/// The event a stored line was parsed into: the same parser, the sender's address from
/// `source` (`udp 10.0.0.1`), the receive time for what the line leaves out (the year of a BSD
/// date), and the stored time as `@timestamp` (the time the line gave, or when it arrived).
pub(crate) fn reparse(line: &str, source: &str, time_ms: i64, received_ms: i64) -> mamori_logs::Event {
    let received = std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(received_ms).unwrap_or(0));
    let mut ctx = ParseContext::new(received);
    ctx.peer_ip = source.split_once(' ').map(|(_, ip)| ip.to_string());
    let mut event = mamori_logs::parse_line(Format::Auto, line.as_bytes(), &ctx);
    event.insert("@timestamp".into(), crate::timefmt::rfc3339(time_ms).into());
    event
}

/// Batches handed to the writer whose commit has not been seen yet, oldest first.
#[derive(Default)]
struct Pending(VecDeque<(oneshot::Receiver<Result<u64, String>>, usize)>, usize);

impl Pending {
    fn push(&mut self, r: oneshot::Receiver<Result<u64, String>>, messages: usize) {
        self.0.push_back((r, messages));
        self.1 += messages;
    }

    /// Messages handed to the writer and not yet committed.
    fn messages(&self) -> usize {
        self.1
    }

    fn pop(&mut self) {
        if let Some((_, n)) = self.0.pop_front() {
            self.1 -= n;
        }
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    async fn settle_oldest(&mut self, shared: &Shared) {
        if let Some((r, _)) = self.0.front_mut() {
            count(shared, r.await.unwrap_or_else(|_| Err("the writer stopped".into())));
            self.pop();
        }
    }

    /// Waits for the oldest batch's commit without taking it off the queue (cancel-safe: the
    /// receipt stays queued if the caller stops waiting).
    async fn oldest(&mut self) -> Result<u64, String> {
        match self.0.front_mut() {
            Some((receipt, _)) => receipt.await.unwrap_or_else(|_| Err("the writer stopped".into())),
            None => std::future::pending().await,
        }
    }

    /// Settles the batches already committed, without waiting.
    fn settle_finished(&mut self, shared: &Shared) {
        while let Some((front, _)) = self.0.front_mut() {
            match front.try_recv() {
                Ok(result) => {
                    count(shared, result);
                    self.pop();
                }
                Err(oneshot::error::TryRecvError::Empty) => return,
                Err(oneshot::error::TryRecvError::Closed) => {
                    count(shared, Err("the writer stopped".into()));
                    self.pop();
                }
            }
        }
    }
}

fn count(shared: &Shared, result: Result<u64, String>) {
    match result {
        Ok(n) => {
            shared.log_stats.stored.fetch_add(n, Ordering::Relaxed);
        }
        Err(e) => {
            tracing::error!("storing received logs failed: {e}");
            shared.log_stats.write_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The `drops` column of our socket's row in `/proc/net/udp` or `/proc/net/udp6`.
fn kernel_udp_drops(port: u16) -> Option<u64> {
    let local = format!(":{port:04X}");
    ["/proc/net/udp", "/proc/net/udp6"].iter().find_map(|file| {
        let text = std::fs::read_to_string(file).ok()?;
        text.lines().skip(1).find_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            (cols.get(1)?.ends_with(&local)).then(|| cols.last()?.parse().ok())?
        })
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn kernel_drops_are_read_for_a_bound_socket() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = socket.local_addr().unwrap().port();
        assert_eq!(super::kernel_udp_drops(port), Some(0));
        drop(socket);
        assert_eq!(super::kernel_udp_drops(port), None);
    }
}
