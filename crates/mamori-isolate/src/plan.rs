//! What to isolate with: the manager's resolved addresses and the admin allow-list.
//!
//! Everything here is validated before a single rule is generated; a bad entry is refused with
//! the entry named. Only validated, typed values reach the nft text (labels included), so the
//! ruleset cannot be injected into through a plan or a tampered state file.

use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{IsolateError, Result};

/// Most entries a plan may hold (a sanity bound, not a kernel limit).
pub const MAX_ENTRIES: usize = 1024;
/// Longest label, in bytes.
pub const MAX_LABEL: usize = 64;

/// An address or a CIDR block, IPv4 or IPv6. Host bits must be zero (`10.1.2.0/24`, not
/// `10.1.2.3/24`), so what the admin wrote is exactly what is allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// A single address (/32 or /128).
    pub fn host(addr: IpAddr) -> Self {
        IpNet { addr, prefix: max_prefix(addr) }
    }

    /// A block; refused if the prefix is out of range, zero (that would allow everything) or
    /// host bits are set.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self, String> {
        let max = max_prefix(addr);
        if prefix > max {
            return Err(format!("prefix /{prefix} is longer than /{max}"));
        }
        if prefix == 0 {
            return Err("a /0 block would allow every address".into());
        }
        if addr.is_unspecified() {
            return Err("the unspecified address is not a peer".into());
        }
        let net = IpNet { addr, prefix };
        if net.masked() != addr {
            return Err(format!("host bits are set; did you mean {}/{prefix}?", net.masked()));
        }
        Ok(net)
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    fn masked(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => {
                let bits = u32::from(a);
                let mask = if self.prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(self.prefix)) };
                IpAddr::V4((bits & mask).into())
            }
            IpAddr::V6(a) => {
                let bits = u128::from(a);
                let mask = if self.prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(self.prefix)) };
                IpAddr::V6((bits & mask).into())
            }
        }
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix == max_prefix(self.addr) {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

impl FromStr for IpNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().map_err(|_| format!("{a:?} is not an IP address"))?;
        let prefix = match p {
            None => max_prefix(addr),
            Some(p) => p.parse::<u8>().map_err(|_| format!("{p:?} is not a prefix length"))?,
        };
        IpNet::new(addr, prefix)
    }
}

impl TryFrom<String> for IpNet {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<IpNet> for String {
    fn from(n: IpNet) -> String {
        n.to_string()
    }
}

/// Transport protocol of an allow-list entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// Who opens the connection an entry allows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// This host connects to the entry's address (and remote port): DNS, EMR, PACS servers.
    #[default]
    Outbound,
    /// The entry's address connects to this host (on the local port): e.g. an incident-response
    /// jump host reaching SSH.
    Inbound,
}

/// One admin allow-list entry: an address or CIDR, optionally a protocol and a port.
///
/// Text form (see [`FromStr`]): `[in] ADDR[/LEN] [tcp|udp|any][/PORT]`, for example
/// `10.0.0.53 udp/53`, `10.20.0.0/16 tcp/443`, `fd00::10`, `10.0.0.53 any/53` (TCP and UDP),
/// `in 10.9.9.9 tcp/22` (inbound SSH from a jump host).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowEntry {
    pub net: IpNet,
    /// `None`: any protocol (with a port: TCP and UDP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<Proto>,
    /// Remote port for outbound entries, local port for inbound ones. `None`: every port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default)]
    pub direction: Direction,
    /// Shown as the rule's comment in `nft list` (letters, digits, space and `._:/-` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

impl AllowEntry {
    /// Everything to and from an address or block (outbound-initiated).
    pub fn to(net: IpNet) -> Self {
        AllowEntry { net, proto: None, port: None, direction: Direction::Outbound, label: None }
    }

    pub fn with_port(mut self, proto: Option<Proto>, port: u16) -> Self {
        self.proto = proto;
        self.port = Some(port);
        self
    }

    pub fn inbound(mut self) -> Self {
        self.direction = Direction::Inbound;
        self
    }

    pub fn labelled(mut self, label: &str) -> Self {
        self.label = Some(label.to_string());
        self
    }

    /// Checks what deserialisation cannot: the port and the label.
    pub fn validate(&self) -> Result<()> {
        let refuse =
            |reason: &str| IsolateError::InvalidEntry { entry: self.to_string(), reason: reason.into() };
        // `IpNet` fields are private, but a deserialised one went through `IpNet::new`; re-check
        // anyway so a future constructor cannot slip past.
        IpNet::new(self.net.addr, self.net.prefix).map_err(|r| refuse(&r))?;
        if self.port == Some(0) {
            return Err(refuse("port 0 is not a port"));
        }
        if let Some(label) = &self.label {
            validate_label(label).map_err(|r| refuse(&r))?;
        }
        Ok(())
    }
}

pub(crate) fn validate_label(label: &str) -> Result<(), String> {
    if label.is_empty() || label.len() > MAX_LABEL {
        return Err(format!("label must be 1 to {MAX_LABEL} bytes"));
    }
    if !label.chars().all(|c| c.is_ascii_alphanumeric() || " ._:/-".contains(c)) {
        return Err("label may hold only letters, digits, space and ._:/-".into());
    }
    Ok(())
}

impl fmt::Display for AllowEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.direction == Direction::Inbound {
            f.write_str("in ")?;
        }
        write!(f, "{}", self.net)?;
        match (self.proto, self.port) {
            (None, None) => {}
            (Some(p), None) => write!(f, " {p}")?,
            (Some(p), Some(port)) => write!(f, " {p}/{port}")?,
            (None, Some(port)) => write!(f, " any/{port}")?,
        }
        if let Some(l) = &self.label {
            write!(f, " ({l})")?;
        }
        Ok(())
    }
}

impl FromStr for AllowEntry {
    type Err = IsolateError;

    /// Parses the text form; the error names the entry and says what is wrong.
    fn from_str(s: &str) -> Result<Self> {
        let refuse = |reason: String| IsolateError::InvalidEntry { entry: s.to_string(), reason };
        let mut words = s.split_whitespace().peekable();
        let direction = match words.peek() {
            Some(&"in") => {
                words.next();
                Direction::Inbound
            }
            Some(&"out") => {
                words.next();
                Direction::Outbound
            }
            _ => Direction::Outbound,
        };
        let net: IpNet = words.next().ok_or_else(|| refuse("no address".into()))?.parse().map_err(refuse)?;
        let (proto, port) = match words.next() {
            None => (None, None),
            Some(spec) => {
                let (p, port) = match spec.split_once('/') {
                    Some((p, port)) => (p, Some(port)),
                    None => (spec, None),
                };
                let proto = match p {
                    "tcp" => Some(Proto::Tcp),
                    "udp" => Some(Proto::Udp),
                    "any" => None,
                    other => return Err(refuse(format!("unknown protocol {other:?} (tcp, udp or any)"))),
                };
                let port = match port {
                    None => None,
                    Some(port) => {
                        Some(port.parse::<u16>().map_err(|_| refuse(format!("{port:?} is not a port")))?)
                    }
                };
                (proto, port)
            }
        };
        if let Some(extra) = words.next() {
            return Err(refuse(format!("unexpected {extra:?}")));
        }
        let entry = AllowEntry { net, proto, port, direction, label: None };
        entry.validate().map_err(|e| match e {
            IsolateError::InvalidEntry { reason, .. } => refuse(reason),
            other => other,
        })?;
        Ok(entry)
    }
}

fn default_true() -> bool {
    true
}

/// Everything an isolation needs, resolved: it is written to the state file as is and
/// re-applied after a reboot without any name lookup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IsolationPlan {
    /// The manager's addresses (IP and TCP port), resolved before applying.
    pub manager: Vec<SocketAddr>,
    /// The admin allow-list.
    #[serde(default)]
    pub allow: Vec<AllowEntry>,
    /// Let DHCP (v4 67/68, v6 546/547) through so an isolated host keeps its lease, and with it
    /// its address and the path to the manager. On by default.
    #[serde(default = "default_true")]
    pub allow_dhcp: bool,
}

impl IsolationPlan {
    pub fn new(manager: Vec<SocketAddr>) -> Self {
        IsolationPlan { manager, allow: Vec::new(), allow_dhcp: true }
    }

    pub fn allow(mut self, entry: AllowEntry) -> Self {
        self.allow.push(entry);
        self
    }

    /// Refuses a plan that cannot be applied safely, naming the first bad entry.
    pub fn validate(&self) -> Result<()> {
        if self.manager.is_empty() {
            return Err(IsolateError::InvalidPlan(
                "no manager address: isolating would cut the agent off for good".into(),
            ));
        }
        if self.manager.len() + self.allow.len() > MAX_ENTRIES {
            return Err(IsolateError::InvalidPlan(format!("more than {MAX_ENTRIES} entries")));
        }
        for m in &self.manager {
            let refuse = |reason: &str| IsolateError::InvalidEntry {
                entry: format!("manager {m}"),
                reason: reason.into(),
            };
            if m.port() == 0 {
                return Err(refuse("port 0 is not a port"));
            }
            if m.ip().is_unspecified() || m.ip().is_multicast() {
                return Err(refuse("not a unicast address"));
            }
        }
        for entry in &self.allow {
            entry.validate()?;
        }
        Ok(())
    }
}

/// Resolves the manager's host name (or IP literal) and port to the addresses a plan needs.
/// Done once, before applying: once isolated, DNS may be unreachable.
pub fn resolve_manager(host: &str, port: u16) -> Result<Vec<SocketAddr>> {
    let err = |reason: String| IsolateError::Resolve { host: host.to_string(), reason };
    if port == 0 {
        return Err(err("port 0".into()));
    }
    let host_only = host.trim_start_matches('[').trim_end_matches(']');
    let mut addrs: Vec<SocketAddr> =
        (host_only, port).to_socket_addrs().map_err(|e| err(e.to_string()))?.collect();
    addrs.sort();
    addrs.dedup();
    if addrs.is_empty() {
        return Err(err("no addresses".into()));
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_entries() {
        let e: AllowEntry = "10.0.0.53 udp/53".parse().unwrap();
        assert_eq!(e.net, IpNet::host("10.0.0.53".parse().unwrap()));
        assert_eq!((e.proto, e.port, e.direction), (Some(Proto::Udp), Some(53), Direction::Outbound));
        let e: AllowEntry = "in fd00:1::/64 tcp/22".parse().unwrap();
        assert_eq!(e.direction, Direction::Inbound);
        assert_eq!(e.net.prefix(), 64);
        assert_eq!(e.to_string(), "in fd00:1::/64 tcp/22");
        let e: AllowEntry = "10.1.0.0/16 any/443".parse().unwrap();
        assert_eq!((e.proto, e.port), (None, Some(443)));
        let e: AllowEntry = "10.1.2.3".parse().unwrap();
        assert_eq!((e.proto, e.port), (None, None));
        let e: AllowEntry = "10.1.2.3 tcp".parse().unwrap();
        assert_eq!((e.proto, e.port), (Some(Proto::Tcp), None));
    }

    #[test]
    fn refuses_bad_entries_naming_them() {
        for (bad, why) in [
            ("", "no address"),
            ("10.0.0.300", "not an IP address"),
            ("10.0.0.0/33", "longer than /32"),
            ("10.0.0.1/24", "host bits"),
            ("0.0.0.0/0", "/0"),
            ("::/0", "/0"),
            ("0.0.0.0", "unspecified"),
            ("10.0.0.1 icmp", "unknown protocol"),
            ("10.0.0.1 tcp/0", "port 0"),
            ("10.0.0.1 tcp/65536", "not a port"),
            ("10.0.0.1 tcp/53 extra", "unexpected"),
            ("10.0.0.1/x", "prefix length"),
            ("10.0.0.1; flush ruleset", "not an IP address"),
        ] {
            let err = bad.parse::<AllowEntry>().unwrap_err().to_string();
            assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn refuses_bad_labels_and_plans() {
        let e = AllowEntry::to("10.0.0.1".parse().unwrap()).labelled("EMR \"; flush ruleset");
        assert!(e.validate().unwrap_err().to_string().contains("label"));
        assert!(AllowEntry::to("10.0.0.1".parse().unwrap()).labelled("EMR server 1").validate().is_ok());
        assert!(IsolationPlan::new(vec![]).validate().unwrap_err().to_string().contains("no manager"));
        let p = IsolationPlan::new(vec!["10.0.0.1:0".parse().unwrap()]);
        assert!(p.validate().unwrap_err().to_string().contains("manager 10.0.0.1:0"));
        let p = IsolationPlan::new(vec!["0.0.0.0:443".parse().unwrap()]);
        assert!(p.validate().is_err());
    }

    #[test]
    fn deserialising_validates_addresses() {
        let bad = r#"{"manager":["10.0.0.1:8443"],"allow":[{"net":"10.0.0.1/8"}]}"#;
        assert!(serde_json::from_str::<IsolationPlan>(bad).is_err());
        let good = r#"{"manager":["10.0.0.1:8443"],"allow":[{"net":"10.0.0.0/8","proto":"tcp","port":443}]}"#;
        let p: IsolationPlan = serde_json::from_str(good).unwrap();
        assert!(p.allow_dhcp);
        p.validate().unwrap();
    }

    #[test]
    fn resolves_literals() {
        assert_eq!(resolve_manager("10.0.0.1", 8443).unwrap(), vec!["10.0.0.1:8443".parse().unwrap()]);
        assert_eq!(resolve_manager("[fd00::1]", 443).unwrap(), vec!["[fd00::1]:443".parse().unwrap()]);
        assert!(resolve_manager("10.0.0.1", 0).is_err());
    }
}
