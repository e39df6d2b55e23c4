//! Test support (dev-dependency only): a small network of Linux network namespaces, so that
//! isolation tests run real nftables rules without touching the host's own network.
//!
//! [`Lab::new`] makes one namespace per host plus a `hub` namespace holding a bridge; each host
//! gets `eth0`, one end of a veth pair whose other end is on the bridge, and the addresses
//! `<v4 prefix>.<n>/24` (and `<v6 prefix>::<n>/64` when asked), `n` counting from 1 in the
//! order given. Nothing is created in the host's namespace. Dropping the lab deletes the
//! namespaces and (unless the test is already failing) asserts that the host's nftables
//! ruleset is what it was. Sockets are made inside a namespace by [`in_ns`], which runs a
//! closure on a thread that `setns`es first.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Why these tests cannot run here, if they cannot: not root, or `ip` / `nft` missing.
pub fn skip_reason() -> Option<&'static str> {
    let works = |cmd: &str, arg: &str| Command::new(cmd).arg(arg).output().is_ok_and(|o| o.status.success());
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (network namespaces and nftables need CAP_SYS_ADMIN/CAP_NET_ADMIN)");
    }
    if !works("ip", "-V") {
        return Some("`ip` (iproute2) not found");
    }
    if !works("nft", "--version") {
        return Some("`nft` (nftables) not found");
    }
    None
}

/// Runs a command, panicking with its stderr when it fails.
pub fn run(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().expect("spawn");
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// `nft list ruleset` of the host's namespace.
pub fn host_ruleset() -> String {
    let out = Command::new("nft").args(["list", "ruleset"]).output().expect("nft");
    assert!(out.status.success(), "nft list ruleset: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ip:port` (IPv6 literals without brackets are fine).
pub fn sa(ip: &str, port: u16) -> SocketAddr {
    if ip.contains(':') {
        format!("[{ip}]:{port}").parse().expect("socket address")
    } else {
        format!("{ip}:{port}").parse().expect("socket address")
    }
}

/// Runs `f` on a thread inside namespace `ns`; sockets it creates stay in that namespace.
pub fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let fd = File::open(format!("/run/netns/{ns}")).expect("open netns");
            // SAFETY: setns on this thread only, with a valid namespace descriptor.
            let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {ns}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("namespace thread")
    })
}

/// A TCP echo server in `ns` until the process ends.
pub fn listen(ns: &str, addr: SocketAddr) {
    let l = in_ns(ns, || TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr} in {ns}: {e}")));
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = [0u8; 512];
                while let Ok(n @ 1..) = c.read(&mut buf) {
                    if c.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
}

/// A UDP echo server in `ns` (stands in for DNS) until the process ends.
pub fn listen_udp(ns: &str, addr: SocketAddr) {
    let s = in_ns(ns, || UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind udp {addr} in {ns}: {e}")));
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(&buf[..n], from);
        }
    });
}

/// A TCP connection from `ns` to `to` is accepted within 500 ms.
pub fn connects(ns: &str, to: SocketAddr) -> bool {
    in_ns(ns, || TcpStream::connect_timeout(&to, Duration::from_millis(500)).is_ok())
}

/// Namespaces joined by a bridge; see the crate documentation.
pub struct Lab {
    hosts: Vec<(String, String)>,
    hub: String,
    host_before: String,
}

impl Lab {
    /// `None`, after printing why to stderr (past the test harness's capture, so the skip is
    /// seen), when the environment cannot run namespace tests. `what` names the test suite in
    /// that message; `hosts` are short names (`agent`, `peer`...); `v4` is the first three
    /// octets (`10.77.0`), `v6` an optional prefix (`fd00:77:`).
    pub fn new(what: &str, hosts: &[&str], v4: &str, v6: Option<&str>) -> Option<Lab> {
        if let Some(why) = skip_reason() {
            let _ = writeln!(std::io::stderr(), "SKIPPED: {what}: {why}");
            return None;
        }
        let id = format!("nl{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        let lab = Lab {
            hosts: hosts.iter().map(|h| (h.to_string(), format!("{id}-{h}"))).collect(),
            hub: format!("{id}-hub"),
            host_before: host_ruleset(),
        };
        // Each namespace is registered for cleanup (in `lab`) before anything can fail.
        run(&["ip", "netns", "add", &lab.hub]);
        for (_, ns) in &lab.hosts {
            run(&["ip", "netns", "add", ns]);
        }
        run(&["ip", "-n", &lab.hub, "link", "add", "br0", "type", "bridge"]);
        run(&["ip", "-n", &lab.hub, "link", "set", "br0", "up"]);
        for (i, (_, ns)) in lab.hosts.iter().enumerate() {
            let n = i + 1;
            let hubif = format!("v{n}");
            run(&[
                "ip", "-n", &lab.hub, "link", "add", &hubif, "type", "veth", "peer", "name", "eth0", "netns",
                ns,
            ]);
            run(&["ip", "-n", &lab.hub, "link", "set", &hubif, "master", "br0", "up"]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            run(&["ip", "-n", ns, "addr", "add", &format!("{v4}.{n}/24"), "dev", "eth0"]);
            if let Some(v6) = v6 {
                run(&["ip", "-n", ns, "addr", "add", &format!("{v6}:{n}/64"), "dev", "eth0", "nodad"]);
            }
            run(&["ip", "-n", ns, "link", "set", "eth0", "up"]);
        }
        Some(lab)
    }

    /// The namespace name of host `name`.
    pub fn ns(&self, name: &str) -> &str {
        self.hosts
            .iter()
            .find(|(h, _)| h == name)
            .map(|(_, ns)| ns.as_str())
            .unwrap_or_else(|| panic!("no host {name} in this lab"))
    }

    /// Waits (up to 10 s) until `ns` can open a TCP connection to `to`: links and neighbours up.
    pub fn wait_until_connects(&self, ns: &str, to: SocketAddr) {
        let t = Instant::now();
        while !connects(ns, to) {
            assert!(t.elapsed() < Duration::from_secs(10), "lab network never came up ({ns} -> {to})");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (_, ns) in &self.hosts {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.hub]).output();
        if !std::thread::panicking() {
            assert_eq!(host_ruleset(), self.host_before, "the host's ruleset changed");
        }
    }
}
