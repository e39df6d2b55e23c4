//! Host network isolation with nftables (Linux).
//!
//! Isolation lives in **one table of its own**, `table inet mamori_isolate`, and nothing else in
//! the ruleset is read-modified-written: applying is one `nft -f -` transaction that deletes and
//! recreates only that table, removing deletes only that table. Its `input`, `output` and
//! `forward` base chains (priority -10, see [`ruleset::PRIORITY`]) drop everything except:
//!
//! * loopback;
//! * the manager's resolved addresses (TCP to its port, and the established replies);
//! * the admin allow-list ([`AllowEntry`]: address or CIDR, optional protocol and port,
//!   outbound by default), each as "may open" one way and "established replies" the other;
//! * ICMP errors related to tracked flows, IPv6 neighbour discovery (link-local, hop limit 255),
//!   and DHCP/DHCPv6 unless the plan turns it off (so the host keeps its address).
//!
//! IPv4 and IPv6 are both covered by the `inet` family. Forwarded traffic is dropped outright:
//! an isolated host routes nothing.
//!
//! # Dead-man switch
//!
//! [`Isolator::isolate`] applies the plan, then calls the caller's `verify` (for example a TLS
//! connect to the manager) until it returns `true`. If that does not happen within the timeout
//! (even if `verify` hangs: it runs on its own thread) the previous state is put back — our
//! table deleted, or the previously verified plan re-applied — and [`IsolateError::VerifyFailed`]
//! says so. `Ok` means isolated, verified and persisted; `Err` means the previous state is in
//! force, except for [`IsolateError::RollbackFailed`], which needs a human.
//!
//! # Persistence
//!
//! nftables rules do not survive a reboot. A verified isolation is recorded in
//! `<state_dir>/isolation.json` (0600, atomic replace) and [`Isolator::restore_if_isolated`], run
//! at agent start, re-applies it — without the dead-man switch: a host that was isolated stays
//! isolated until released, even if the manager is not reachable yet at boot. A table found
//! without a state file is the leftover of an isolation interrupted before it was verified, and
//! is removed. [`Isolator::release`] deletes the state file, then the table.
//!
//! # Namespaces
//!
//! An [`Isolator`] may target a named network namespace (`ip netns add NAME`): `nft` is then run
//! with its network namespace switched (`setns`) before exec. The tests isolate namespaces,
//! never the host.
//!
//! # Example (how the agent is meant to wire it)
//!
//! ```no_run
//! use std::time::Duration;
//! use mamori_isolate::{resolve_manager, IsolationPlan, Isolator};
//!
//! # fn main() -> Result<(), mamori_isolate::IsolateError> {
//! let iso = Isolator::new("/var/lib/mamori/isolation", None)?;
//! iso.restore_if_isolated()?; // at agent start
//!
//! let plan = IsolationPlan::new(resolve_manager("manager.hospital.example", 8443)?)
//!     .allow("10.0.0.53 any/53".parse()?) // DNS
//!     .allow("10.20.0.0/24 tcp/443".parse()?); // EMR
//! // verify: in the agent, a TLS handshake with the manager (by IP: DNS may be cut off).
//! iso.isolate(&plan, || std::net::TcpStream::connect("10.0.0.1:8443").is_ok(), Duration::from_secs(15))?;
//! // ... later, on the manager's order:
//! iso.release()?;
//! # Ok(())
//! # }
//! ```
//!
//! Isolating, releasing and restoring hold an exclusive lock on `<state_dir>/isolation.lock`,
//! so an agent and an admin command cannot interleave. This crate never prints, exits or
//! chooses paths.

#![deny(unsafe_code)]

mod error;
mod nft;
pub mod plan;
pub mod ruleset;
mod state;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

pub use error::{IsolateError, Restored, Result};
pub use nft::NETNS_DIR;
pub use plan::{resolve_manager, AllowEntry, Direction, IpNet, IsolationPlan, Proto};
pub use state::{IsolationState, LOCK_FILE, STATE_FILE};

use nft::Nft;

/// How often a failing `verify` is retried within the timeout.
const VERIFY_RETRY: Duration = Duration::from_millis(200);

/// Isolates one network namespace (the host's, or a named one) and keeps its state file.
#[derive(Clone, Debug)]
pub struct Isolator {
    nft: Nft,
    state_dir: PathBuf,
}

/// What [`Isolator::restore_if_isolated`] found and did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Restore {
    /// No state file and no table: nothing to do.
    NotIsolated,
    /// Isolated, and the live table matches the state file.
    AlreadyInPlace,
    /// Isolated, but the table was missing or different (reboot, `nft flush ruleset`, a hand
    /// edit): the recorded plan was applied again.
    Reapplied,
    /// A table without a state file (an isolation interrupted before verification): removed.
    RemovedStaleTable,
}

/// What [`Isolator::status`] reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// Our table is in the live ruleset.
    pub table_present: bool,
    /// The state file says the host is isolated (with `plan`).
    pub isolated: bool,
    pub plan: Option<IsolationPlan>,
    /// Seconds since the Unix epoch when the plan was (last) applied.
    pub applied_at: Option<u64>,
    /// The live table is exactly what was applied (or, not isolated, there is no table).
    pub matches: bool,
}

impl Isolator {
    /// An isolator for the host (`netns: None`) or a named network namespace, keeping its state
    /// file in `state_dir`. Runs the system's `nft` (`/usr/sbin/nft`, ..., else from `PATH`).
    pub fn new(state_dir: impl Into<PathBuf>, netns: Option<&str>) -> Result<Self> {
        if let Some(n) = netns {
            nft::validate_netns(n)?;
        }
        Ok(Isolator {
            nft: Nft { path: nft::default_path(), netns: netns.map(str::to_string) },
            state_dir: state_dir.into(),
        })
    }

    /// Runs this `nft` binary instead of the one on `PATH`.
    pub fn with_nft_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.nft.path = path.into();
        self
    }

    pub fn netns(&self) -> Option<&str> {
        self.nft.netns.as_deref()
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Applies `plan`, then requires `verify` to return `true` within `timeout` (it is retried
    /// every 200 ms; it runs on its own thread, so a hung check cannot defeat the timeout). On
    /// success the plan is persisted. On failure the previous state is put back and
    /// [`IsolateError::VerifyFailed`] returned.
    pub fn isolate<F>(&self, plan: &IsolationPlan, verify: F, timeout: Duration) -> Result<()>
    where
        F: Fn() -> bool + Send + 'static,
    {
        plan.validate()?;
        let _lock = state::lock(&self.state_dir)?;
        let previous = state::read(&self.state_dir)?;
        self.apply_rules(plan)?; // one transaction: on error nothing changed

        if !verify_within(verify, timeout) {
            let restored = self.roll_back(previous.as_ref(), "manager not reachable after isolating")?;
            return Err(IsolateError::VerifyFailed { timeout, restored });
        }
        let persisted = self.live_table().and_then(|listing| {
            let listing = listing.ok_or_else(|| IsolateError::Nft {
                action: "list",
                status: "ok".into(),
                stderr: "our table vanished right after it was applied".into(),
            })?;
            state::write(&self.state_dir, &IsolationState::new(plan.clone(), listing))
        });
        if let Err(e) = persisted {
            self.roll_back(previous.as_ref(), &e.to_string())?;
            return Err(e);
        }
        Ok(())
    }

    /// Ends isolation: deletes the state file, then our table. Idempotent. In that order, a
    /// release interrupted half-way is finished by the next [`Isolator::restore_if_isolated`]
    /// (a table without a state file is removed) instead of being undone.
    pub fn release(&self) -> Result<()> {
        let _lock = state::lock(&self.state_dir)?;
        state::remove(&self.state_dir)?;
        self.remove_rules()
    }

    /// At agent start: re-applies a recorded isolation whose table is missing or altered, and
    /// removes a table that has no state file. See [`Restore`].
    pub fn restore_if_isolated(&self) -> Result<Restore> {
        let _lock = state::lock(&self.state_dir)?;
        let recorded = state::read(&self.state_dir)?;
        let live = self.live_table()?;
        match (recorded, live) {
            (None, None) => Ok(Restore::NotIsolated),
            (None, Some(_)) => {
                self.remove_rules()?;
                Ok(Restore::RemovedStaleTable)
            }
            (Some(st), Some(live)) if live == st.listing => Ok(Restore::AlreadyInPlace),
            (Some(st), _) => {
                self.apply_rules(&st.plan)?;
                let listing = self.live_table()?.unwrap_or_default();
                state::write(&self.state_dir, &IsolationState::new(st.plan, listing))?;
                Ok(Restore::Reapplied)
            }
        }
    }

    /// Whether our table is present and matches the state file.
    pub fn status(&self) -> Result<Status> {
        let recorded = state::read(&self.state_dir)?;
        let live = self.live_table()?;
        let matches = match (&recorded, &live) {
            (Some(st), Some(l)) => *l == st.listing,
            (None, None) => true,
            _ => false,
        };
        Ok(Status {
            table_present: live.is_some(),
            isolated: recorded.is_some(),
            applied_at: recorded.as_ref().map(|s| s.applied_at),
            plan: recorded.map(|s| s.plan),
            matches,
        })
    }

    /// Low level: applies a plan's rules (one transaction) without verification or state.
    pub fn apply_rules(&self, plan: &IsolationPlan) -> Result<()> {
        plan.validate()?;
        self.nft.run("apply", &["-f", "-"], Some(&ruleset::render(plan))).map(drop)
    }

    /// Low level: deletes our table (no error if absent), leaving the state file alone.
    pub fn remove_rules(&self) -> Result<()> {
        self.nft.run("remove", &["-f", "-"], Some(&ruleset::remove_script())).map(drop)
    }

    /// `nft list table inet mamori_isolate`, or `None` when the table is absent.
    pub fn live_table(&self) -> Result<Option<String>> {
        match self.nft.run("list", &["list", "table", ruleset::FAMILY, ruleset::TABLE], None) {
            Ok(s) => Ok(Some(s)),
            Err(IsolateError::Nft { stderr, .. }) if stderr.contains("No such file or directory") => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn roll_back(&self, previous: Option<&IsolationState>, cause: &str) -> Result<Restored> {
        let result = match previous {
            Some(prev) => self.apply_rules(&prev.plan).map(|()| Restored::PreviousPlan),
            None => self.remove_rules().map(|()| Restored::NotIsolated),
        };
        result.map_err(|e| IsolateError::RollbackFailed { cause: cause.to_string(), rollback: e.to_string() })
    }
}

/// Calls `verify` on its own thread until it returns `true` or `timeout` passes.
fn verify_within<F>(verify: F, timeout: Duration) -> bool
where
    F: Fn() -> bool + Send + 'static,
{
    let deadline = Instant::now() + timeout;
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let thread_stop = Arc::clone(&stop);
    let spawned = std::thread::Builder::new().name("mamori-isolate-verify".into()).spawn(move || loop {
        if verify() {
            let _ = tx.send(());
            return;
        }
        let now = Instant::now();
        if thread_stop.load(Ordering::Relaxed) || now >= deadline {
            return;
        }
        std::thread::sleep(VERIFY_RETRY.min(deadline - now));
    });
    if spawned.is_err() {
        return false;
    }
    let ok = rx.recv_timeout(timeout).is_ok();
    stop.store(true, Ordering::Relaxed);
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_timeout_holds_even_when_verify_hangs() {
        let t = Instant::now();
        assert!(!verify_within(
            || {
                std::thread::sleep(Duration::from_secs(5));
                true
            },
            Duration::from_millis(300)
        ));
        assert!(t.elapsed() < Duration::from_secs(2));
        assert!(verify_within(|| true, Duration::from_millis(300)));
        let n = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let n2 = Arc::clone(&n);
        assert!(verify_within(move || n2.fetch_add(1, Ordering::Relaxed) >= 2, Duration::from_secs(3)));
        assert_eq!(n.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn invalid_netns_and_plan_refused_before_nft_runs() {
        assert!(matches!(Isolator::new("/tmp/x", Some("../etc")), Err(IsolateError::InvalidNetns(_))));
        let iso = Isolator::new("/nonexistent/state", None).unwrap().with_nft_path("/nonexistent/nft");
        let e = iso.isolate(&IsolationPlan::new(vec![]), || true, Duration::from_secs(1)).unwrap_err();
        assert!(matches!(e, IsolateError::InvalidPlan(_)), "{e}");
    }
}
