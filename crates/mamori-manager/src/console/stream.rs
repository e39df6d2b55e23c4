//! Live updates: a server-sent event `changed` naming the topics that changed, so that the
//! page refetches what it shows. Changes come from two places: the console's own actions
//! ([`super::ConsoleState::notify`]) and a watcher that looks at the store every two seconds
//! (new events and detections from ingest, agents going online or offline, command results),
//! which keeps ingest free of any console concern.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, Method};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use mamori_auth::Permission;
use tokio::sync::broadcast;

use super::session::authenticate;
use crate::api::ApiFailure;
use crate::state::Shared;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Topic {
    Agents,
    Detections,
    Events,
    Commands,
    Audit,
    Backups,
}

impl Topic {
    fn as_str(self) -> &'static str {
        match self {
            Topic::Agents => "agents",
            Topic::Detections => "detections",
            Topic::Events => "events",
            Topic::Commands => "commands",
            Topic::Audit => "audit",
            Topic::Backups => "backups",
        }
    }
}

pub(crate) fn channel() -> broadcast::Sender<Topic> {
    broadcast::channel(256).0
}

/// What the watcher compares between two looks.
#[derive(Default, PartialEq, Eq, Clone)]
struct Marks {
    last_event: i64,
    last_detection: i64,
    agents: String,
    commands: String,
}

/// Looks at the store every two seconds and announces what changed, until `shutdown`.
pub(crate) fn spawn_watcher(
    shared: Arc<Shared>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // The first look is taken at once, so that nothing that arrives later is mistaken for
        // the starting point.
        let mut before: Option<Marks> = marks(&shared).await.ok();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                _ = shutdown.changed() => return,
            }
            // Nobody has the console open: no store reads. The marks of the last look stay, so
            // the first look after someone connects announces what changed meanwhile.
            if shared.console.topics.receiver_count() == 0 {
                continue;
            }
            let now = match marks(&shared).await {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!("console watcher: {e:#}");
                    continue;
                }
            };
            if let Some(old) = &before {
                if old.last_event != now.last_event {
                    shared.console.notify(Topic::Events);
                    shared.console.notify(Topic::Backups);
                }
                if old.last_detection != now.last_detection {
                    shared.console.notify(Topic::Detections);
                }
                if old.agents != now.agents {
                    shared.console.notify(Topic::Agents);
                }
                if old.commands != now.commands {
                    shared.console.notify(Topic::Commands);
                    shared.console.notify(Topic::Agents);
                }
            }
            before = Some(now);
        }
    })
}

async fn marks(shared: &Arc<Shared>) -> anyhow::Result<Marks> {
    let agents = super::views::agent_summaries(shared).await.map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let (last_event, last_detection, commands) = shared
        .with_store(|s| Ok((s.max_event_id()?, s.max_detection_id()?, s.command_fingerprint()?)))
        .await?;
    let agents = agents
        .iter()
        .map(|a| format!("{}:{}:{}:{}", a.id, a.status, a.isolated, a.pending_commands))
        .collect::<Vec<_>>()
        .join(",");
    Ok(Marks { last_event, last_detection, agents, commands })
}

pub(crate) async fn stream(
    State(shared): State<Arc<Shared>>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiFailure> {
    let session = authenticate(&shared, &method, &headers, Permission::View).await?;
    let receiver = shared.console.topics.subscribe();
    let token_key = super::session::session_key(&headers);
    let events = stream::unfold(
        (receiver, shared, token_key, session.username),
        |(mut rx, shared, key, user)| async move {
            loop {
                // A session that ended (logout, expiry, disabled user) ends its stream too.
                if !key.is_some_and(|k| shared.console.sessions.is_live(&k)) {
                    tracing::debug!("closing the event stream of {user}: session ended");
                    return None;
                }
                let first = match tokio::time::timeout(Duration::from_secs(15), rx.recv()).await {
                    Err(_) => continue,
                    Ok(Ok(t)) => t,
                    Ok(Err(broadcast::error::RecvError::Lagged(_))) => Topic::Agents,
                    Ok(Err(broadcast::error::RecvError::Closed)) => return None,
                };
                // Changes come in bursts (an ingest batch, an action and its audit record): one
                // message for everything within 300 ms.
                let mut topics = vec![first];
                let until = tokio::time::Instant::now() + Duration::from_millis(300);
                while let Ok(Ok(t)) = tokio::time::timeout_at(until, rx.recv()).await {
                    topics.push(t);
                }
                topics.sort();
                topics.dedup();
                let names: Vec<&str> = topics.iter().map(|t| t.as_str()).collect();
                let event =
                    Event::default().event("changed").data(serde_json::json!({"topics": names}).to_string());
                return Some((Ok::<_, std::convert::Infallible>(event), (rx, shared, key, user)));
            }
        },
    );
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response())
}
