//! Who gets what: per-severity routes, the per-(rule, host) throttle and the daily digest.
//! No I/O and no clock: the caller passes `now_ms`, so the same inputs give the same decisions.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use mamori_proto::Severity;
use serde::{Deserialize, Serialize};

use crate::settings::{Lang, Settings};
use crate::Alert;

/// Throttle keys kept at most; past this the idlest key is forgotten (it starts afresh).
pub const MAX_THROTTLE_KEYS: usize = 4096;
/// (severity, rule) groups in one digest; alerts past this are only counted.
pub const MAX_DIGEST_GROUPS: usize = 512;
/// Hosts named per digest group; the rest are counted.
pub const MAX_HOSTS_PER_GROUP: usize = 20;
/// Rule ids, hosts and titles are cut to this many characters in the kept state.
const MAX_KEPT_CHARS: usize = 200;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// One message to send: a channel and its target. Serializable so the manager can queue and
/// retry deliveries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "channel", rename_all = "snake_case")]
pub enum Delivery {
    /// One mail to all these recipients.
    Email { to: Vec<String> },
    /// A POST to the [`crate::Webhook`] of this name.
    Webhook { name: String },
    /// A CEF message to the [`crate::SyslogTarget`] of this name.
    Syslog { name: String },
}

/// What to do with one alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Empty when throttled or when no route wants this severity.
    pub deliveries: Vec<Delivery>,
    /// The (rule, host) key is over its limit: the alert is only counted for the digest.
    pub throttled: bool,
}

/// The daily summary: everything seen since the previous digest, by severity and rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    pub from_ms: i64,
    pub to_ms: i64,
    /// For showing times in the reader's zone.
    pub utc_offset_minutes: i32,
    pub lang: Lang,
    /// Most severe first (informational last), then by rule id.
    pub groups: Vec<DigestGroup>,
    /// Alerts that arrived when [`MAX_DIGEST_GROUPS`] groups already existed.
    pub ungrouped: u64,
}

/// The alerts of one rule at one severity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestGroup {
    /// `None`: informational (Sigma level below low).
    pub severity: Option<Severity>,
    pub rule_id: String,
    /// The title of the first alert of the group.
    pub title: String,
    /// Alerted on their own.
    pub sent: u64,
    /// Held back by the throttle.
    pub suppressed: u64,
    /// Below every route, or informational.
    pub not_routed: u64,
    /// Busiest first.
    pub hosts: Vec<HostCount>,
    /// Alerts on hosts past the first [`MAX_HOSTS_PER_GROUP`].
    pub other_hosts: u64,
    pub first_ms: i64,
    pub last_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostCount {
    pub host: String,
    pub count: u64,
}

impl DigestGroup {
    pub fn total(&self) -> u64 {
        self.sent + self.suppressed + self.not_routed
    }
}

impl Digest {
    pub fn total(&self) -> u64 {
        self.groups.iter().map(DigestGroup::total).sum::<u64>() + self.ungrouped
    }

    pub fn suppressed(&self) -> u64 {
        self.groups.iter().map(|g| g.suppressed).sum()
    }
}

/// The router's memory, for the manager to persist across restarts (serde JSON). Opaque: only
/// [`Router::export_state`] makes one and [`Router::import_state`] reads it, re-applying the bounds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterState {
    #[serde(default)]
    throttle: Vec<ThrottleEntry>,
    #[serde(default)]
    digest_groups: Vec<DigestGroup>,
    #[serde(default)]
    digest_ungrouped: u64,
    #[serde(default)]
    digest_since_ms: Option<i64>,
    #[serde(default)]
    last_digest_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ThrottleEntry {
    rule_id: String,
    host: Option<String>,
    sent_ms: Vec<i64>,
    last_ms: i64,
}

type ThrottleKey = (String, Option<String>);

#[derive(Debug, Default)]
struct ThrottleSlot {
    /// When alerts of this key were sent, oldest first; never more than `max_per_window`.
    sent_ms: VecDeque<i64>,
    last_ms: i64,
}

/// Sorts most severe first, informational last.
type GroupKey = (u8, String);

#[derive(Debug, Default)]
struct DigestAccumulator {
    since_ms: Option<i64>,
    groups: BTreeMap<GroupKey, GroupCounts>,
    ungrouped: u64,
}

#[derive(Debug)]
struct GroupCounts {
    severity: Option<Severity>,
    title: String,
    sent: u64,
    suppressed: u64,
    not_routed: u64,
    hosts: BTreeMap<String, u64>,
    other_hosts: u64,
    first_ms: i64,
    last_ms: i64,
}

enum Outcome {
    Sent,
    Suppressed,
    NotRouted,
}

/// Decides the deliveries for each alert and keeps what the digest needs.
#[derive(Debug)]
pub struct Router {
    settings: Settings,
    throttle: BTreeMap<ThrottleKey, ThrottleSlot>,
    digest: DigestAccumulator,
    last_digest_ms: Option<i64>,
}

impl Router {
    /// `settings` should have passed [`Settings::validate`]; routes naming unknown targets give
    /// deliveries the dispatcher will refuse.
    pub fn new(settings: Settings) -> Router {
        Router {
            settings,
            throttle: BTreeMap::new(),
            digest: DigestAccumulator::default(),
            last_digest_ms: None,
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The deliveries for `alert`, after the throttle. Every alert is counted for the digest.
    pub fn route(&mut self, alert: &Alert, now_ms: i64) -> Decision {
        let deliveries = self.deliveries_for(alert.severity);
        let outcome = if deliveries.is_empty() {
            Outcome::NotRouted
        } else if self.admit(&alert.rule_id, alert.host.as_deref(), now_ms) {
            Outcome::Sent
        } else {
            Outcome::Suppressed
        };
        self.count(
            Some(alert.severity),
            &alert.rule_id,
            &alert.title,
            alert.host.as_deref(),
            &outcome,
            now_ms,
        );
        match outcome {
            Outcome::Sent => Decision { deliveries, throttled: false },
            Outcome::Suppressed => Decision { deliveries: Vec::new(), throttled: true },
            Outcome::NotRouted => Decision { deliveries: Vec::new(), throttled: false },
        }
    }

    /// Counts an informational detection (see [`crate::severity_from_level`]) for the digest only.
    pub fn note_for_digest(&mut self, rule_id: &str, title: &str, host: Option<&str>, now_ms: i64) {
        self.count(None, rule_id, title, host, &Outcome::NotRouted, now_ms);
    }

    /// Whether the digest is enabled and its local hour has come since the last one was taken.
    /// With no digest taken yet (fresh state) it is due only during the configured hour, so a
    /// first start in the afternoon waits for the next morning instead of mailing at once.
    pub fn digest_due(&self, now_ms: i64) -> bool {
        let digest = &self.settings.digest;
        if !digest.enabled {
            return false;
        }
        let scheduled = latest_scheduled_ms(now_ms, digest.hour_local, digest.utc_offset_minutes);
        match self.last_digest_ms {
            Some(last) => last < scheduled,
            None => now_ms - scheduled < HOUR_MS,
        }
    }

    /// The digest when [`Router::digest_due`], emptying the counts; `None` otherwise. A digest
    /// with nothing in it is still returned: a quiet day's mail shows that alerting works.
    pub fn take_digest(&mut self, now_ms: i64) -> Option<Digest> {
        if !self.digest_due(now_ms) {
            return None;
        }
        let acc = std::mem::take(&mut self.digest);
        let from_ms = self.last_digest_ms.or(acc.since_ms).unwrap_or(now_ms);
        self.last_digest_ms = Some(now_ms);
        Some(Digest {
            from_ms,
            to_ms: now_ms,
            utc_offset_minutes: self.settings.digest.utc_offset_minutes,
            lang: self.settings.lang,
            groups: acc.groups.into_iter().map(|(key, counts)| counts.into_group(key.1)).collect(),
            ungrouped: acc.ungrouped,
        })
    }

    pub fn export_state(&self) -> RouterState {
        RouterState {
            throttle: self
                .throttle
                .iter()
                .map(|((rule_id, host), slot)| ThrottleEntry {
                    rule_id: rule_id.clone(),
                    host: host.clone(),
                    sent_ms: slot.sent_ms.iter().copied().collect(),
                    last_ms: slot.last_ms,
                })
                .collect(),
            digest_groups: self
                .digest
                .groups
                .iter()
                .map(|(key, counts)| counts.clone_into_group(&key.1))
                .collect(),
            digest_ungrouped: self.digest.ungrouped,
            digest_since_ms: self.digest.since_ms,
            last_digest_ms: self.last_digest_ms,
        }
    }

    /// Replaces the router's memory with `state` (from [`Router::export_state`], possibly under
    /// other settings or edited by hand): the bounds and the current throttle limit are applied.
    pub fn import_state(&mut self, state: RouterState) {
        let max_sent = self.settings.throttle.max_per_window.max(1) as usize;
        let mut entries = state.throttle;
        // Keep the most recently active keys when there are too many.
        entries.sort_by_key(|e| std::cmp::Reverse(e.last_ms));
        entries.truncate(MAX_THROTTLE_KEYS);
        self.throttle = entries
            .into_iter()
            .map(|e| {
                let mut sent: Vec<i64> = e.sent_ms;
                sent.sort_unstable();
                let skip = sent.len().saturating_sub(max_sent);
                let key = (cut(&e.rule_id), e.host.as_deref().map(cut));
                (key, ThrottleSlot { sent_ms: sent.into_iter().skip(skip).collect(), last_ms: e.last_ms })
            })
            .collect();

        let mut acc = DigestAccumulator {
            since_ms: state.digest_since_ms,
            groups: BTreeMap::new(),
            ungrouped: state.digest_ungrouped,
        };
        for group in state.digest_groups {
            let key = (severity_rank(group.severity), cut(&group.rule_id));
            if acc.groups.len() >= MAX_DIGEST_GROUPS && !acc.groups.contains_key(&key) {
                acc.ungrouped = acc.ungrouped.saturating_add(group.total());
                continue;
            }
            let mut hosts = BTreeMap::new();
            let mut other_hosts = group.other_hosts;
            for h in group.hosts {
                if hosts.len() < MAX_HOSTS_PER_GROUP {
                    hosts.insert(cut(&h.host), h.count);
                } else {
                    other_hosts = other_hosts.saturating_add(h.count);
                }
            }
            acc.groups.insert(
                key,
                GroupCounts {
                    severity: group.severity,
                    title: cut(&group.title),
                    sent: group.sent,
                    suppressed: group.suppressed,
                    not_routed: group.not_routed,
                    hosts,
                    other_hosts,
                    first_ms: group.first_ms,
                    last_ms: group.last_ms,
                },
            );
        }
        self.digest = acc;
        self.last_digest_ms = state.last_digest_ms;
    }

    /// Number of (rule, host) keys the throttle remembers.
    pub fn throttle_keys(&self) -> usize {
        self.throttle.len()
    }

    fn deliveries_for(&self, severity: Severity) -> Vec<Delivery> {
        let mut email = BTreeSet::new();
        let mut webhooks = BTreeSet::new();
        let mut syslog = BTreeSet::new();
        for route in self.settings.routes.iter().filter(|r| severity >= r.min_severity) {
            email.extend(route.email.iter().map(|a| a.trim().to_string()));
            webhooks.extend(route.webhooks.iter().cloned());
            syslog.extend(route.syslog.iter().cloned());
        }
        let mut out = Vec::new();
        if !email.is_empty() {
            out.push(Delivery::Email { to: email.into_iter().collect() });
        }
        out.extend(webhooks.into_iter().map(|name| Delivery::Webhook { name }));
        out.extend(syslog.into_iter().map(|name| Delivery::Syslog { name }));
        out
    }

    /// Whether the (rule, host) key may send one more alert now; records it if so.
    fn admit(&mut self, rule_id: &str, host: Option<&str>, now_ms: i64) -> bool {
        let window_ms =
            i64::try_from(self.settings.throttle.window_s.saturating_mul(1000)).unwrap_or(i64::MAX);
        let max = self.settings.throttle.max_per_window as usize;
        let key = (cut(rule_id), host.map(cut));
        if !self.throttle.contains_key(&key) && self.throttle.len() >= MAX_THROTTLE_KEYS {
            self.evict(now_ms, window_ms);
        }
        let slot = self.throttle.entry(key).or_default();
        let oldest_counted = now_ms.saturating_sub(window_ms);
        while slot.sent_ms.front().is_some_and(|&t| t <= oldest_counted) {
            slot.sent_ms.pop_front();
        }
        slot.last_ms = slot.last_ms.max(now_ms);
        if slot.sent_ms.len() < max {
            slot.sent_ms.push_back(now_ms);
            true
        } else {
            false
        }
    }

    /// Makes room for one key: first the keys whose window has passed (they behave like new
    /// keys anyway), then, if that freed nothing, the key idle the longest.
    fn evict(&mut self, now_ms: i64, window_ms: i64) {
        let oldest_counted = now_ms.saturating_sub(window_ms);
        self.throttle.retain(|_, slot| slot.sent_ms.back().is_some_and(|&t| t > oldest_counted));
        if self.throttle.len() >= MAX_THROTTLE_KEYS {
            if let Some(idlest) =
                self.throttle.iter().min_by_key(|(_, slot)| slot.last_ms).map(|(key, _)| key.clone())
            {
                self.throttle.remove(&idlest);
            }
        }
    }

    fn count(
        &mut self,
        severity: Option<Severity>,
        rule_id: &str,
        title: &str,
        host: Option<&str>,
        outcome: &Outcome,
        now_ms: i64,
    ) {
        let acc = &mut self.digest;
        acc.since_ms = Some(acc.since_ms.map_or(now_ms, |since| since.min(now_ms)));
        let key = (severity_rank(severity), cut(rule_id));
        if acc.groups.len() >= MAX_DIGEST_GROUPS && !acc.groups.contains_key(&key) {
            acc.ungrouped = acc.ungrouped.saturating_add(1);
            return;
        }
        let group = acc.groups.entry(key).or_insert_with(|| GroupCounts {
            severity,
            title: cut(title),
            sent: 0,
            suppressed: 0,
            not_routed: 0,
            hosts: BTreeMap::new(),
            other_hosts: 0,
            first_ms: now_ms,
            last_ms: now_ms,
        });
        match outcome {
            Outcome::Sent => group.sent += 1,
            Outcome::Suppressed => group.suppressed += 1,
            Outcome::NotRouted => group.not_routed += 1,
        }
        group.first_ms = group.first_ms.min(now_ms);
        group.last_ms = group.last_ms.max(now_ms);
        if let Some(host) = host {
            let host = cut(host);
            if let Some(n) = group.hosts.get_mut(&host) {
                *n += 1;
            } else if group.hosts.len() < MAX_HOSTS_PER_GROUP {
                group.hosts.insert(host, 1);
            } else {
                group.other_hosts += 1;
            }
        }
    }
}

impl GroupCounts {
    fn clone_into_group(&self, rule_id: &str) -> DigestGroup {
        let mut hosts: Vec<HostCount> =
            self.hosts.iter().map(|(host, &count)| HostCount { host: host.clone(), count }).collect();
        hosts.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.host.cmp(&b.host)));
        DigestGroup {
            severity: self.severity,
            rule_id: rule_id.to_string(),
            title: self.title.clone(),
            sent: self.sent,
            suppressed: self.suppressed,
            not_routed: self.not_routed,
            hosts,
            other_hosts: self.other_hosts,
            first_ms: self.first_ms,
            last_ms: self.last_ms,
        }
    }

    fn into_group(self, rule_id: String) -> DigestGroup {
        self.clone_into_group(&rule_id)
    }
}

fn severity_rank(severity: Option<Severity>) -> u8 {
    match severity {
        Some(Severity::Critical) => 0,
        Some(Severity::High) => 1,
        Some(Severity::Medium) => 2,
        Some(Severity::Low) => 3,
        None => 4,
    }
}

/// Bounds the memory a hostile or broken rule id or host name can take.
fn cut(s: &str) -> String {
    match s.char_indices().nth(MAX_KEPT_CHARS) {
        Some((at, _)) => s[..at].to_string(),
        None => s.to_string(),
    }
}

/// The latest instant at or before `now_ms` when the local clock (UTC + offset) read
/// `hour_local`:00.
fn latest_scheduled_ms(now_ms: i64, hour_local: u8, utc_offset_minutes: i32) -> i64 {
    let offset_ms = i64::from(utc_offset_minutes) * 60_000;
    let local = now_ms.saturating_add(offset_ms);
    let mut scheduled_local = local.div_euclid(DAY_MS) * DAY_MS + i64::from(hour_local) * HOUR_MS;
    if scheduled_local > local {
        scheduled_local -= DAY_MS;
    }
    scheduled_local - offset_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheduled_hour_is_local() {
        // 2025-06-01T00:00:00Z is 09:00 in Japan.
        let t = 1_748_736_000_000;
        assert_eq!(latest_scheduled_ms(t, 9, 540), t);
        assert_eq!(latest_scheduled_ms(t - 1, 9, 540), t - DAY_MS);
        assert_eq!(latest_scheduled_ms(t + 5 * HOUR_MS, 8, 540), t - HOUR_MS);
        // UTC-05:00: 08:00 local is 13:00Z.
        assert_eq!(latest_scheduled_ms(t + 14 * HOUR_MS, 8, -300), t + 13 * HOUR_MS);
        // Before the epoch still floors correctly.
        assert_eq!(latest_scheduled_ms(-1, 0, 0), -DAY_MS);
    }

    #[test]
    fn cut_keeps_whole_characters() {
        let long = "漢".repeat(300);
        assert_eq!(cut(&long).chars().count(), MAX_KEPT_CHARS);
        assert_eq!(cut("short"), "short");
    }
}
