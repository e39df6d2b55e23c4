//! The nft script: one transaction that deletes and recreates only our table.

use std::fmt::Write as _;

use crate::plan::{AllowEntry, Direction, IpNet, IsolationPlan, Proto};

/// Address family of our table: `inet` covers IPv4 and IPv6 with one set of chains.
pub const FAMILY: &str = "inet";
/// Our table. Nothing outside it is ever created, changed or deleted.
pub const TABLE: &str = "mamori_isolate";
/// Hook priority of our chains: after conntrack (-200, so `ct state` is known) and mangle
/// (-150), before the filter chains of iptables-nft, Docker and ufw (0) and firewalld (+10).
/// A `drop` in any base chain is final, so other tables' `accept`s cannot undo isolation, and
/// our `accept`s do not override their drops: we only ever take traffic away.
pub const PRIORITY: i32 = -10;

/// Deletes our table if present, in one transaction; succeeds when it is absent. (`add table` of
/// an existing table is a no-op, so the `delete` always has something to delete: this works on
/// nft versions without `destroy`.)
pub fn remove_script() -> String {
    format!("add table {FAMILY} {TABLE}\ndelete table {FAMILY} {TABLE}\n")
}

/// The full script for a validated plan: delete-and-recreate our table, atomically
/// (`nft -f` commits the whole file as one netlink transaction, or nothing).
pub fn render(plan: &IsolationPlan) -> String {
    let mut input = Vec::new();
    let mut output = Vec::new();

    input.push("iif \"lo\" accept".to_string());
    output.push("oif \"lo\" accept".to_string());
    // ICMP errors (unreachable, fragmentation needed / packet too big) about tracked flows.
    let related = "ct state related meta l4proto { icmp, ipv6-icmp } accept".to_string();
    input.push(related.clone());
    output.push(related);
    // IPv6 cannot reach even the manager without neighbour discovery (ARP is not filtered by
    // the inet family). Hop limit 255 means the packet did not cross a router.
    input.push(
        "icmpv6 type { nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255 accept"
            .into(),
    );
    output.push(
        "icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255 accept"
            .into(),
    );
    if plan.allow_dhcp {
        output.push("udp sport 68 udp dport 67 accept comment \"dhcp\"".into());
        input.push("udp sport 67 udp dport 68 accept comment \"dhcp\"".into());
        output.push("udp sport 546 udp dport 547 accept comment \"dhcpv6\"".into());
        input.push("udp sport 547 udp dport 546 accept comment \"dhcpv6\"".into());
    }

    for m in &plan.manager {
        let entry = AllowEntry::to(IpNet::host(m.ip())).with_port(Some(Proto::Tcp), m.port());
        push_entry(&mut input, &mut output, &entry, "mamori manager");
    }
    for entry in &plan.allow {
        let comment = entry.label.clone().unwrap_or_else(|| entry.to_string());
        push_entry(&mut input, &mut output, entry, &comment);
    }

    let mut s = remove_script();
    let _ = writeln!(s, "table {FAMILY} {TABLE} {{");
    chain(&mut s, "input", "input", &input);
    chain(&mut s, "forward", "forward", &[]);
    chain(&mut s, "output", "output", &output);
    s.push_str("}\n");
    s
}

fn chain(s: &mut String, name: &str, hook: &str, rules: &[String]) {
    let _ = writeln!(s, "\tchain {name} {{");
    let _ = writeln!(s, "\t\ttype filter hook {hook} priority {PRIORITY}; policy drop;");
    for r in rules {
        let _ = writeln!(s, "\t\t{r}");
    }
    s.push_str("\t}\n");
}

/// One entry becomes, per protocol, a rule for the packets that open the flow (any state) and
/// a rule for the other side's replies (`ct state established` only: the far side can never
/// open a flow of its own through an outbound entry, even from the right source port).
fn push_entry(input: &mut Vec<String>, output: &mut Vec<String>, e: &AllowEntry, comment: &str) {
    let ip = if e.net.is_ipv4() { "ip" } else { "ip6" };
    let net = e.net;
    let comment = format!("comment \"{comment}\"");
    let protos: Vec<Option<Proto>> = match (e.proto, e.port) {
        (None, Some(_)) => vec![Some(Proto::Tcp), Some(Proto::Udp)],
        (p, _) => vec![p],
    };
    for proto in protos {
        // What the initiator's packets carry: (local-side port word, remote-side port word).
        let l4 = |port_word: &str| match (proto, e.port) {
            (None, _) => String::new(),
            (Some(p), None) => format!(" meta l4proto {p}"),
            (Some(p), Some(port)) => format!(" {p} {port_word} {port}"),
        };
        match e.direction {
            Direction::Outbound => {
                output.push(format!("{ip} daddr {net}{} accept {comment}", l4("dport")));
                input.push(format!("{ip} saddr {net}{} ct state established accept {comment}", l4("sport")));
            }
            Direction::Inbound => {
                input.push(format!("{ip} saddr {net}{} accept {comment}", l4("dport")));
                output.push(format!("{ip} daddr {net}{} ct state established accept {comment}", l4("sport")));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_one_transaction_for_our_table_only() {
        let plan =
            IsolationPlan::new(vec!["10.0.0.1:8443".parse().unwrap(), "[fd00::1]:8443".parse().unwrap()])
                .allow("10.0.0.53 any/53".parse().unwrap())
                .allow("in 10.9.0.0/16 tcp/22".parse().unwrap())
                .allow(AllowEntry::to("fd00:5::/64".parse().unwrap()).labelled("PACS"));
        let s = render(&plan);
        assert!(s.starts_with("add table inet mamori_isolate\ndelete table inet mamori_isolate\n"));
        for line in [
            "ip daddr 10.0.0.1 tcp dport 8443 accept comment \"mamori manager\"",
            "ip saddr 10.0.0.1 tcp sport 8443 ct state established accept comment \"mamori manager\"",
            "ip6 daddr fd00::1 tcp dport 8443 accept",
            "ip daddr 10.0.0.53 udp dport 53 accept",
            "ip daddr 10.0.0.53 tcp dport 53 accept",
            "ip saddr 10.9.0.0/16 tcp dport 22 accept",
            "ip daddr 10.9.0.0/16 tcp sport 22 ct state established accept",
            "ip6 daddr fd00:5::/64 accept comment \"PACS\"",
            "ip6 saddr fd00:5::/64 ct state established accept comment \"PACS\"",
            "type filter hook forward priority -10; policy drop;",
        ] {
            assert!(s.contains(line), "missing {line:?} in\n{s}");
        }
        // Nothing but our table is named.
        for l in s.lines() {
            if l.contains("table") {
                assert!(l.contains("inet mamori_isolate"), "{l}");
            }
        }
        assert!(!s.contains("flush ruleset"));
    }
}
