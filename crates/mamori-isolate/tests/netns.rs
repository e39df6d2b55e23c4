//! Real nftables rules inside network namespaces created per test; the host's own ruleset is
//! never touched (checked at the end of each test).
//!
//! Topology per test: namespaces `agent`, `peer` and `manager`, each with `eth0` joined by a
//! veth pair to a bridge in a fourth `hub` namespace (so no interface is created on the host).
//! Addresses: 10.77.0.{1,2,3}/24 and fd00:77::{1,2,3}/64. Listeners and connects run on threads
//! that `setns` into a namespace. Skipped, saying so, when not root or `ip`/`nft` are missing.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use mamori_isolate::{AllowEntry, IsolateError, IsolationPlan, Isolator, Restore, Restored};
use mamori_netlab::{connects, in_ns, listen, listen_udp, run, sa};

const AGENT: &str = "10.77.0.1";
const PEER: &str = "10.77.0.2";
const MANAGER: &str = "10.77.0.3";
const AGENT6: &str = "fd00:77::1";
const PEER6: &str = "fd00:77::2";
const MANAGER6: &str = "fd00:77::3";
const MANAGER_PORT: u16 = 8443;
const DB_PORT: u16 = 5432; // allow-listed on the peer
const WEB_PORT: u16 = 80; // not allow-listed
const SSH_PORT: u16 = 22; // listened on by the agent
const DNS_PORT: u16 = 53; // UDP on the peer, allow-listed
const OTHER_UDP_PORT: u16 = 54; // UDP on the peer, not allow-listed

/// A UDP query from `ns` gets its answer.
fn udp_answers(ns: &str, to: SocketAddr) -> bool {
    in_ns(ns, || {
        let bind = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
        let s = UdpSocket::bind(bind).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let mut buf = [0u8; 16];
        s.send_to(b"query", to).is_ok() && matches!(s.recv_from(&mut buf), Ok((5, from)) if from == to)
    })
}

/// An established connection still echoes.
fn echoes(stream: &mut TcpStream) -> bool {
    stream.set_read_timeout(Some(Duration::from_millis(700))).unwrap();
    let mut buf = [0u8; 4];
    stream.write_all(b"ping").is_ok() && stream.read_exact(&mut buf).is_ok() && &buf == b"ping"
}

fn open_stream(ns: &str, to: SocketAddr) -> TcpStream {
    in_ns(ns, || TcpStream::connect_timeout(&to, Duration::from_secs(2)).unwrap())
}

struct Lab {
    net: mamori_netlab::Lab,
    agent: String,
    peer: String,
    manager: String,
    state: tempfile::TempDir,
}

impl Lab {
    /// `None` (after printing why) when the environment cannot run these tests.
    fn new() -> Option<Lab> {
        let net = mamori_netlab::Lab::new(
            "mamori-isolate namespace test",
            &["agent", "peer", "manager"],
            "10.77.0",
            Some("fd00:77:"),
        )?;
        let lab = Lab {
            agent: net.ns("agent").to_string(),
            peer: net.ns("peer").to_string(),
            manager: net.ns("manager").to_string(),
            net,
            state: tempfile::tempdir().unwrap(),
        };
        for ip in [PEER, PEER6] {
            listen(&lab.peer, sa(ip, WEB_PORT));
            listen(&lab.peer, sa(ip, DB_PORT));
        }
        for ip in [AGENT, AGENT6] {
            listen(&lab.agent, sa(ip, SSH_PORT));
        }
        listen_udp(&lab.peer, sa(PEER, DNS_PORT));
        listen_udp(&lab.peer, sa(PEER, OTHER_UDP_PORT));
        for ip in [MANAGER, MANAGER6] {
            listen(&lab.manager, sa(ip, MANAGER_PORT));
        }
        lab.net.wait_until_connects(&lab.agent, sa(PEER, WEB_PORT));
        lab.net.wait_until_connects(&lab.agent, sa(PEER6, WEB_PORT));
        Some(lab)
    }

    fn isolator(&self) -> Isolator {
        Isolator::new(self.state.path(), Some(&self.agent)).unwrap()
    }

    fn plan(&self) -> IsolationPlan {
        IsolationPlan::new(vec![sa(MANAGER, MANAGER_PORT), sa(MANAGER6, MANAGER_PORT)])
            .allow(format!("{PEER} tcp/{DB_PORT}").parse().unwrap())
            .allow(AllowEntry::to(PEER6.parse().unwrap()).with_port(None, DB_PORT).labelled("PACS v6"))
    }

    /// A dead-man check as the agent would do it: connect to the manager from the agent.
    fn verify(&self) -> impl Fn() -> bool + Send + 'static {
        let ns = self.agent.clone();
        move || connects(&ns, sa(MANAGER, MANAGER_PORT))
    }

    fn nft_in(&self, ns: &str, args: &[&str]) -> String {
        let mut all = vec!["ip", "netns", "exec", ns, "nft"];
        all.extend_from_slice(args);
        let out = Command::new("ip").args(&all[1..]).output().unwrap();
        assert!(out.status.success(), "{all:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn assert_open(&self) {
        for ip in [PEER, PEER6] {
            assert!(connects(&self.agent, sa(ip, WEB_PORT)), "agent -> peer {ip} should work");
        }
        for ip in [AGENT, AGENT6] {
            assert!(connects(&self.peer, sa(ip, SSH_PORT)), "peer -> agent {ip} should work");
        }
    }

    fn assert_isolated(&self) {
        for ip in [PEER, PEER6] {
            assert!(!connects(&self.agent, sa(ip, WEB_PORT)), "agent -> peer {ip}:{WEB_PORT} must fail");
            assert!(connects(&self.agent, sa(ip, DB_PORT)), "agent -> allow-listed {ip}:{DB_PORT} must work");
        }
        for ip in [AGENT, AGENT6] {
            assert!(!connects(&self.peer, sa(ip, SSH_PORT)), "peer -> agent {ip} must fail");
            assert!(!connects(&self.manager, sa(ip, SSH_PORT)), "manager -> agent {ip} must fail");
        }
        for ip in [MANAGER, MANAGER6] {
            assert!(connects(&self.agent, sa(ip, MANAGER_PORT)), "agent -> manager {ip} must work");
        }
    }
}

#[test]
fn isolates_then_releases_ipv4_and_ipv6() {
    let Some(lab) = Lab::new() else { return };
    lab.assert_open();
    // Someone else's table in the agent's namespace must survive everything we do.
    lab.nft_in(&lab.agent, &["add", "table", "inet", "other"]);
    lab.nft_in(&lab.agent, &["add", "chain", "inet", "other", "c", "{ type filter hook input priority 0; }"]);
    let other = lab.nft_in(&lab.agent, &["list", "table", "inet", "other"]);

    // Connections open before isolating: the one to the manager (the agent's own channel) keeps
    // working, the one to the peer (say, a C2 channel) is cut.
    let mut to_manager = open_stream(&lab.agent, sa(MANAGER, MANAGER_PORT));
    let mut to_peer = open_stream(&lab.agent, sa(PEER, WEB_PORT));
    assert!(echoes(&mut to_manager) && echoes(&mut to_peer));
    assert!(udp_answers(&lab.agent, sa(PEER, DNS_PORT)) && udp_answers(&lab.agent, sa(PEER, OTHER_UDP_PORT)));

    let iso = lab.isolator();
    let plan = lab.plan().allow(format!("{PEER} udp/{DNS_PORT}").parse().unwrap());
    iso.isolate(&plan, lab.verify(), Duration::from_secs(5)).unwrap();
    lab.assert_isolated();
    assert!(echoes(&mut to_manager), "established manager connection must survive isolation");
    assert!(!echoes(&mut to_peer), "established peer connection must be cut");
    assert!(udp_answers(&lab.agent, sa(PEER, DNS_PORT)), "allow-listed DNS must answer");
    assert!(!udp_answers(&lab.agent, sa(PEER, OTHER_UDP_PORT)), "other UDP must not");

    let st = iso.status().unwrap();
    assert!(st.table_present && st.isolated && st.matches, "{st:?}");
    assert_eq!(st.plan.as_ref(), Some(&plan));
    let state_file = lab.state.path().join(mamori_isolate::STATE_FILE);
    assert_eq!(std::fs::metadata(&state_file).unwrap().permissions().mode() & 0o777, 0o600);
    let live = iso.live_table().unwrap().unwrap();
    assert!(live.contains("comment \"PACS v6\""), "{live}");
    eprintln!("generated ruleset:\n{}\nlive:\n{live}", mamori_isolate::ruleset::render(&lab.plan()));

    // Isolating again with a new allow-list replaces our table: now the peer may reach the
    // agent's SSH (an inbound entry), but still nothing else.
    let plan = lab.plan().allow(format!("in {PEER} tcp/{SSH_PORT}").parse().unwrap());
    iso.isolate(&plan, lab.verify(), Duration::from_secs(5)).unwrap();
    assert!(connects(&lab.peer, sa(AGENT, SSH_PORT)), "inbound allow-listed SSH must work");
    assert!(!connects(&lab.peer, sa(AGENT6, SSH_PORT)), "the entry is IPv4 only");
    assert!(!connects(&lab.manager, sa(AGENT, SSH_PORT)), "only from the listed address");
    assert!(!connects(&lab.agent, sa(PEER, WEB_PORT)));
    assert!(!udp_answers(&lab.agent, sa(PEER, DNS_PORT)), "DNS entry no longer in the plan");
    assert!(echoes(&mut to_manager));

    iso.release().unwrap();
    lab.assert_open();
    let st = iso.status().unwrap();
    assert!(!st.table_present && !st.isolated && st.matches, "{st:?}");
    assert!(!state_file.exists());
    iso.release().unwrap(); // idempotent
    assert_eq!(lab.nft_in(&lab.agent, &["list", "table", "inet", "other"]), other);
}

#[test]
fn unreachable_manager_rolls_back() {
    let Some(lab) = Lab::new() else { return };
    let iso = lab.isolator();

    // Wrong manager address in the plan: the real manager is cut off, so verify fails.
    let mut wrong = lab.plan();
    wrong.manager = vec![sa("10.77.0.99", MANAGER_PORT)];
    let t = Instant::now();
    let err = iso.isolate(&wrong, lab.verify(), Duration::from_secs(1)).unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(4));
    assert!(matches!(err, IsolateError::VerifyFailed { restored: Restored::NotIsolated, .. }), "{err}");
    assert!(err.to_string().contains("rolled back"), "{err}");
    assert!(iso.live_table().unwrap().is_none());
    assert!(!iso.status().unwrap().isolated);
    lab.assert_open();

    // A verify that hangs cannot keep the host isolated past the timeout.
    let t = Instant::now();
    let hang = || {
        std::thread::sleep(Duration::from_secs(20));
        true
    };
    let err = iso.isolate(&lab.plan(), hang, Duration::from_millis(500)).unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(matches!(err, IsolateError::VerifyFailed { .. }), "{err}");
    lab.assert_open();

    // Already isolated, then a new plan while the manager's link is down: the previous,
    // verified plan is put back.
    iso.isolate(&lab.plan(), lab.verify(), Duration::from_secs(5)).unwrap();
    run(&["ip", "-n", &lab.manager, "link", "set", "eth0", "down"]);
    let mut bigger = lab.plan();
    bigger.allow.push(format!("{PEER} tcp/{WEB_PORT}").parse().unwrap());
    let err = iso.isolate(&bigger, lab.verify(), Duration::from_secs(1)).unwrap_err();
    assert!(matches!(err, IsolateError::VerifyFailed { restored: Restored::PreviousPlan, .. }), "{err}");
    run(&["ip", "-n", &lab.manager, "link", "set", "eth0", "up"]);
    // Link down flushed the static IPv6 address; put it back.
    run(&["ip", "-n", &lab.manager, "addr", "replace", &format!("{MANAGER6}/64"), "dev", "eth0", "nodad"]);
    let st = iso.status().unwrap();
    assert!(st.isolated && st.table_present && st.matches, "{st:?}");
    assert_eq!(st.plan, Some(lab.plan()));
    let t = Instant::now();
    while !(connects(&lab.agent, sa(MANAGER, MANAGER_PORT))
        && connects(&lab.agent, sa(MANAGER6, MANAGER_PORT)))
    {
        assert!(t.elapsed() < Duration::from_secs(5), "manager link never came back");
        std::thread::sleep(Duration::from_millis(50));
    }
    lab.assert_isolated(); // web port still closed: the bigger plan is not in force
    iso.release().unwrap();
    lab.assert_open();
}

#[test]
fn restore_reapplies_after_simulated_reboot() {
    let Some(lab) = Lab::new() else { return };
    let iso = lab.isolator();
    assert_eq!(iso.restore_if_isolated().unwrap(), Restore::NotIsolated);
    iso.isolate(&lab.plan(), lab.verify(), Duration::from_secs(5)).unwrap();
    assert_eq!(iso.restore_if_isolated().unwrap(), Restore::AlreadyInPlace);

    // Reboot: the rules are gone, the state file is not.
    lab.nft_in(&lab.agent, &["delete", "table", "inet", "mamori_isolate"]);
    lab.assert_open();
    let st = iso.status().unwrap();
    assert!(st.isolated && !st.table_present && !st.matches, "{st:?}");

    // Agent restart: a fresh isolator on the same state directory.
    let restarted = lab.isolator();
    assert_eq!(restarted.restore_if_isolated().unwrap(), Restore::Reapplied);
    lab.assert_isolated();
    assert!(restarted.status().unwrap().matches);

    // Someone punches a hole in our table: status notices, restore repairs.
    lab.nft_in(&lab.agent, &["insert", "rule", "inet", "mamori_isolate", "output", "accept"]);
    assert!(!restarted.status().unwrap().matches);
    assert_eq!(restarted.restore_if_isolated().unwrap(), Restore::Reapplied);
    assert!(restarted.status().unwrap().matches);
    lab.assert_isolated();

    // A table without a state file (isolation interrupted before verification) is removed.
    restarted.release().unwrap();
    restarted.apply_rules(&lab.plan()).unwrap();
    assert_eq!(restarted.restore_if_isolated().unwrap(), Restore::RemovedStaleTable);
    lab.assert_open();
    assert_eq!(restarted.restore_if_isolated().unwrap(), Restore::NotIsolated);
}

#[test]
fn clear_errors() {
    let Some(lab) = Lab::new() else { return };
    // A namespace that does not exist is named.
    let iso = Isolator::new(lab.state.path(), Some("mamori-no-such-netns")).unwrap();
    let e = iso.status().unwrap_err().to_string();
    assert!(e.contains("mamori-no-such-netns"), "{e}");

    // Missing nft.
    let e = lab.isolator().with_nft_path("/nonexistent/nft").release().unwrap_err().to_string();
    assert!(e.contains("install the nftables package"), "{e}");

    // No privileges: nft run as nobody (after entering the lab namespace as root).
    let dir = tempfile::tempdir().unwrap();
    let wrapper = dir.path().join("nft-as-nobody");
    std::fs::write(
        &wrapper,
        "#!/bin/sh\nexec setpriv --reuid=65534 --regid=65534 --clear-groups nft \"$@\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    if Command::new("setpriv").arg("--version").output().is_ok_and(|o| o.status.success()) {
        let e = lab.isolator().with_nft_path(&wrapper).apply_rules(&lab.plan()).unwrap_err();
        assert!(matches!(e, IsolateError::PermissionDenied { .. }), "{e}");
        assert!(e.to_string().contains("isolation needs root (CAP_NET_ADMIN)"), "{e}");
    } else {
        let _ = writeln!(std::io::stderr(), "SKIPPED: permission-denied case: setpriv not found");
    }

    // Every entry shape is accepted by nft (v4/v6, block/host, any/tcp/udp, with/without port,
    // both directions, labels, DHCP off).
    let mut all = IsolationPlan::new(vec![sa(MANAGER, MANAGER_PORT), sa("fe80::1", 443)]);
    all.allow_dhcp = false;
    for e in [
        "10.0.0.0/8",
        "10.1.2.3 tcp",
        "10.1.2.3 udp/53",
        "10.1.2.3 any/53",
        "in 10.1.0.0/16",
        "in 10.1.0.0/16 udp",
        "in 10.1.2.3 any/22",
        "fd00::/8",
        "fd00::1 tcp/443",
        "in fd00:1::/64 tcp/22",
        "in fd00:1::/64 any",
        "192.0.2.1/32 any",
    ] {
        all.allow.push(e.parse().unwrap_or_else(|err| panic!("{e}: {err}")));
    }
    all.allow.push(AllowEntry::to("10.9.9.9".parse().unwrap()).labelled("EMR prod-1 10.9.9.9:443/tcp"));
    let iso = lab.isolator();
    iso.apply_rules(&all).unwrap();
    let live = iso.live_table().unwrap().unwrap();
    assert!(live.contains("EMR prod-1") && !live.contains("dhcp"), "{live}");
    iso.remove_rules().unwrap();
    iso.remove_rules().unwrap();
    assert!(iso.live_table().unwrap().is_none());

    // Bad input is refused before nft runs, naming the entry; nothing was applied.
    let mut bad = lab.plan();
    bad.allow.push(AllowEntry::to(PEER.parse().unwrap()).labelled("x\"; flush ruleset; \""));
    let e = lab.isolator().isolate(&bad, || true, Duration::from_secs(1)).unwrap_err().to_string();
    assert!(e.contains("10.77.0.2") && e.contains("label"), "{e}");
    assert!(lab.isolator().live_table().unwrap().is_none());
    lab.assert_open();
}
