//! The event writer: one thread that owns the write connection and group-commits.
//!
//! Each request's batch is queued; the thread takes everything queued at that moment (up to a
//! bound) into one transaction and answers every request after the commit. Under load this turns
//! many small transactions (one fsync each) into a few large ones, which is where SQLite's insert
//! rate comes from; with one request at a time it costs nothing extra.

use std::sync::Arc;

use mamori_store::{AgentBatch, NewDetection, NewEvent, NewLogEvent, Store};
use tokio::sync::{mpsc, oneshot};

/// Most events in one transaction: bounds the time a transaction holds the write lock and the
/// latency of the first request in a group.
const MAX_GROUP_EVENTS: usize = 50_000;
const QUEUE: usize = 1024;

pub(crate) struct Job {
    pub agent_id: String,
    pub events: Vec<mamori_proto::WireEvent>,
    pub reply: oneshot::Sender<Result<(u64, u64), String>>,
}

/// A batch of received log events and the detections made of them.
pub(crate) struct LogJob {
    pub events: Vec<LogRecord>,
    pub detections: Vec<DetectionRecord>,
    pub reply: oneshot::Sender<Result<u64, String>>,
}

pub(crate) struct LogRecord {
    pub source: Arc<str>,
    pub time_ms: i64,
    /// As received; the parsed event is made again when read ([`crate::syslog::reparse`]).
    pub line: String,
}

pub(crate) struct DetectionRecord {
    pub kind: mamori_store::DetectionKind,
    pub rule_id: String,
    pub title: String,
    pub level: String,
    pub host: Option<String>,
    pub source: Arc<str>,
    pub time_ms: i64,
    pub data: String,
    /// Names and addresses of the hosts the detection is about (for the response policy).
    pub subjects: Vec<String>,
    /// The agent whose own event this detection came from, if any.
    pub agent: Option<String>,
}

enum Work {
    Agent(Job),
    Logs(LogJob),
}

impl Work {
    fn len(&self) -> usize {
        match self {
            Work::Agent(j) => j.events.len(),
            Work::Logs(j) => j.events.len() + j.detections.len(),
        }
    }
}

pub(crate) struct Writer {
    tx: tokio::sync::Mutex<Option<mpsc::Sender<Work>>>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Writer {
    pub fn start(store: Store) -> Writer {
        let (tx, rx) = mpsc::channel(QUEUE);
        let thread =
            std::thread::Builder::new().name("mamori-writer".into()).spawn(move || run(store, rx)).ok();
        Writer { tx: tokio::sync::Mutex::new(Some(tx)), thread: std::sync::Mutex::new(thread) }
    }

    /// Stores the events; resolves after they are committed.
    pub async fn write(
        &self,
        agent_id: String,
        events: Vec<mamori_proto::WireEvent>,
    ) -> Result<(u64, u64), String> {
        let (reply, answer) = oneshot::channel();
        let tx = self.tx.lock().await.clone().ok_or_else(|| "the manager is shutting down".to_string())?;
        tx.send(Work::Agent(Job { agent_id, events, reply }))
            .await
            .map_err(|_| "the event writer has stopped".to_string())?;
        answer.await.map_err(|_| "the event writer has stopped".to_string())?
    }

    /// Queues log events (waiting while the queue is full: backpressure for stream senders) and
    /// returns what resolves once they are committed, so a reader can go on reading meanwhile.
    pub async fn submit_logs(
        &self,
        events: Vec<LogRecord>,
        detections: Vec<DetectionRecord>,
    ) -> Result<oneshot::Receiver<Result<u64, String>>, String> {
        let (reply, answer) = oneshot::channel();
        let tx = self.tx.lock().await.clone().ok_or_else(|| "the manager is shutting down".to_string())?;
        tx.send(Work::Logs(LogJob { events, detections, reply }))
            .await
            .map_err(|_| "the event writer has stopped".to_string())?;
        Ok(answer)
    }

    /// Lets queued jobs finish, then stops the thread.
    pub async fn close(&self) {
        self.tx.lock().await.take();
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

fn run(mut store: Store, mut rx: mpsc::Receiver<Work>) {
    while let Some(first) = rx.blocking_recv() {
        let mut size = first.len();
        let (mut group, mut logs) = (Vec::new(), Vec::new());
        let mut take = |work: Work| match work {
            Work::Agent(job) => group.push(job),
            Work::Logs(job) => logs.push(job),
        };
        take(first);
        while size < MAX_GROUP_EVENTS {
            match rx.try_recv() {
                Ok(work) => {
                    size += work.len();
                    take(work);
                }
                Err(_) => break,
            }
        }
        let received = crate::timefmt::now_ms();
        if !logs.is_empty() {
            write_logs(&mut store, logs, received);
        }
        if group.is_empty() {
            continue;
        }
        match insert(&mut store, &group, received) {
            Ok(counts) => {
                for (job, count) in group.into_iter().zip(counts) {
                    let _ = job.reply.send(Ok(count));
                }
            }
            // One bad batch must not fail the others it was grouped with: retry one by one.
            Err(_) if group.len() > 1 => {
                for job in group {
                    let result = insert(&mut store, std::slice::from_ref(&job), received)
                        .map(|c| c.first().copied().unwrap_or((0, 0)))
                        .map_err(|e| e.to_string());
                    let _ = job.reply.send(result);
                }
            }
            Err(e) => {
                for job in group {
                    let _ = job.reply.send(Err(e.to_string()));
                }
            }
        }
    }
}

fn insert(
    store: &mut Store,
    group: &[Job],
    received_ms: i64,
) -> Result<Vec<(u64, u64)>, mamori_store::Error> {
    let events: Vec<Vec<NewEvent<'_>>> = group
        .iter()
        .map(|job| {
            job.events
                .iter()
                .map(|e| NewEvent { seq: e.seq, kind: &e.kind, time_ms: e.time_ms, data: e.data.get() })
                .collect()
        })
        .collect();
    let batches: Vec<AgentBatch<'_>> = group
        .iter()
        .zip(&events)
        .map(|(job, events)| AgentBatch { agent_id: &job.agent_id, events })
        .collect();
    store.insert_events(&batches, received_ms)
}

/// Logs of many senders in one transaction; on failure each batch is retried alone so that one
/// bad batch does not fail the others.
fn write_logs(store: &mut Store, jobs: Vec<LogJob>, received_ms: i64) {
    let insert_all = |store: &mut Store, jobs: &[LogJob]| {
        let events: Vec<NewLogEvent<'_>> = jobs
            .iter()
            .flat_map(|j| &j.events)
            .map(|e| NewLogEvent { source: &e.source, time_ms: e.time_ms, line: &e.line })
            .collect();
        let detections: Vec<NewDetection<'_>> = jobs
            .iter()
            .flat_map(|j| &j.detections)
            .map(|d| NewDetection {
                kind: d.kind,
                rule_id: &d.rule_id,
                title: &d.title,
                level: &d.level,
                host: d.host.as_deref(),
                source: &d.source,
                time_ms: d.time_ms,
                data: &d.data,
            })
            .collect();
        store.insert_logs(&events, &detections, received_ms)
    };
    match insert_all(store, &jobs) {
        Ok(_) => {
            for job in jobs {
                let _ = job.reply.send(Ok(job.events.len() as u64));
            }
        }
        Err(_) if jobs.len() > 1 => {
            for job in jobs {
                let result = insert_all(store, std::slice::from_ref(&job)).map_err(|e| e.to_string());
                let _ = job.reply.send(result);
            }
        }
        Err(e) => {
            for job in jobs {
                let _ = job.reply.send(Err(e.to_string()));
            }
        }
    }
}
