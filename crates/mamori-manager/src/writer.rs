//! The event writer: one thread that owns the write connection and group-commits.
//!
//! Each request's batch is queued; the thread takes everything queued at that moment (up to a
//! bound) into one transaction and answers every request after the commit. Under load this turns
//! many small transactions (one fsync each) into a few large ones, which is where SQLite's insert
//! rate comes from; with one request at a time it costs nothing extra.

use mamori_store::{AgentBatch, NewEvent, Store};
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

pub(crate) struct Writer {
    tx: tokio::sync::Mutex<Option<mpsc::Sender<Job>>>,
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
        tx.send(Job { agent_id, events, reply })
            .await
            .map_err(|_| "the event writer has stopped".to_string())?;
        answer.await.map_err(|_| "the event writer has stopped".to_string())?
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

fn run(mut store: Store, mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.blocking_recv() {
        let mut group = vec![first];
        let mut events = group[0].events.len();
        while events < MAX_GROUP_EVENTS {
            match rx.try_recv() {
                Ok(job) => {
                    events += job.events.len();
                    group.push(job);
                }
                Err(_) => break,
            }
        }
        let received = crate::timefmt::now_ms();
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
