//! Logs at the manager, end to end through the real binary: syslog over UDP, TCP and TLS on
//! loopback, parsing and storage, the default rule pack's correlations (sshd brute force; an
//! agent's malware alert followed by the firewall allowing traffic from that host to the
//! internet) and the response policy isolating the agent, `mamori logs`, and rules that
//! cannot be used being reported.

mod common;

use std::io::Write;
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

use common::commands::Http;
use common::fleet::*;
use mamori_proto as proto;
use serde_json::{json, Value};

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

fn rfc3339(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).expect("time");
    t.format(&time::format_description::well_known::Rfc3339).expect("format")
}

fn sshd(ms: i64, message: &str) -> String {
    format!("<38>1 {} web01 sshd 4242 - - {message}", rfc3339(ms))
}

/// A FortiGate traffic log of `src` reaching `dst` with `action`, at `ms`.
fn fortigate(ms: i64, src: &str, dst: &str, action: &str) -> String {
    format!(
        "<189>date=2026-01-01 time=00:00:00 devname=\"FGT-HQ\" devid=\"FG100F\" eventtime={} tz=\"+0000\" \
         logid=\"0000000013\" type=\"traffic\" subtype=\"forward\" level=\"notice\" srcip={src} srcport=50123 \
         dstip={dst} dstport=443 proto=6 action=\"{action}\" policyid=7 service=\"HTTPS\"",
        i128::from(ms) * 1_000_000
    )
}

fn octet_counted(messages: &[String]) -> Vec<u8> {
    messages.iter().flat_map(|m| format!("{} {m}", m.len()).into_bytes()).collect()
}

fn log_status(site: &Site) -> Value {
    let out = mamori(&["logs", "status", "--json", "--data", &site.data_arg()], &[]);
    assert_eq!(out.code, 0, "logs status failed: {}", out.stderr);
    serde_json::from_str(out.stdout.trim()).expect("status JSON")
}

fn stored(site: &Site) -> u64 {
    log_status(site)["stats"]["stored"].as_u64().expect("stored")
}

fn detections(site: &Site, query: &str) -> Vec<Value> {
    let answer = Http::admin(site).request(
        reqwest::Method::GET,
        &format!("{}?limit=1000&order=asc{query}", proto::path::ADMIN_LOG_DETECTIONS),
        None,
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.body["detections"].as_array().cloned().unwrap_or_default()
}

fn log_events(site: &Site, query: &str) -> Vec<Value> {
    let answer = Http::admin(site).request(
        reqwest::Method::GET,
        &format!("{}?limit=10000&order=asc{query}", proto::path::ADMIN_LOG_EVENTS),
        None,
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.body["events"].as_array().cloned().unwrap_or_default()
}

/// Sends `bytes` over TLS 1.3 to the manager's syslog TLS port, pinning the manager's CA.
fn send_tls(site: &Site, port: u16, bytes: &[u8]) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        use tokio::io::AsyncWriteExt;
        let config = mamori_pki::tls::client_config(&site.fingerprint(), None).expect("tls config");
        let connector = tokio_rustls::TlsConnector::from(config);
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
        let mut tls = connector.connect(name, tcp).await.expect("TLS handshake with the syslog port");
        assert_eq!(tls.get_ref().1.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
        tls.write_all(bytes).await.expect("write");
        tls.shutdown().await.expect("close");
    });
}

#[test]
fn syslog_over_udp_tcp_and_tls_is_parsed_stored_and_counted() {
    let site = Site::new();
    let (udp, tcp, tls) = (free_udp_port(), free_port(), free_port());
    let (udp_arg, tcp_arg, tls_arg) =
        (format!("127.0.0.1:{udp}"), format!("127.0.0.1:{tcp}"), format!("127.0.0.1:{tls}"));
    let server = site.start(&["--syslog-udp", &udp_arg, "--syslog-tcp", &tcp_arg, "--syslog-tls", &tls_arg]);
    assert!(server.log().contains(&format!("Receiving syslog on tcp {tcp_arg}")), "{}", server.log());
    let now = now_ms();

    // UDP: one datagram, one message.
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.send_to(fortigate(now, "10.1.2.3", "10.9.9.9", "deny").as_bytes(), &udp_arg).expect("send");

    // TCP: octet counting and newline framing on one connection, one line of garbage between.
    let mut stream = TcpStream::connect(&tcp_arg).expect("connect");
    let cef = "CEF:0|Palo Alto Networks|PAN-OS|10.1|threat|THREAT|8|src=10.1.2.4 dst=198.51.100.7 suser=alice act=alert";
    let panos = "<14>Mar  5 10:11:12 PA-220 1,2024/03/05 10:11:12,012801000001,TRAFFIC,end,2561,2024/03/05 10:11:12,10.1.2.5,203.0.113.8,0.0.0.0,0.0.0.0,allow-web,,,ssl,vsys1,trust,untrust,ethernet1/2,ethernet1/1,forward,2024/03/05 10:11:12,12345,1,51000,443,0,0,0x0,tcp,allow,1500,700,800,10,2024/03/05 10:11:00,5,any,0,123,0x0,10.0.0.0-10.255.255.255,Japan,0,5,5,tcp-fin";
    stream
        .write_all(&octet_counted(&[sshd(now, "Failed password for bob from 203.0.113.50 port 2222 ssh2")]))
        .expect("write");
    stream.write_all(format!("{cef}\n{panos}\nthis is no log format at all\n").as_bytes()).expect("write");
    drop(stream);

    // TLS (RFC 5425): octet counted.
    send_tls(
        &site,
        tls,
        &octet_counted(&[sshd(now, "Accepted publickey for carol from 192.0.2.77 port 3333 ssh2")]),
    );

    wait_for("6 stored log events", Duration::from_secs(30), || stored(&site) == 6);
    let status = log_status(&site);
    assert_eq!(status["stats"]["received"], 6, "{status}");
    assert_eq!(status["stats"]["malformed"], 1, "the garbage line is kept and counted: {status}");
    assert_eq!(status["stats"]["udp_dropped"], 0, "{status}");
    assert_eq!(status["listen"]["udp"], udp_arg.as_str());
    assert!(status["rules"]["rules_loaded"].as_u64().expect("rules") > 0, "default pack loaded: {status}");

    let events = log_events(&site, "");
    let field = |pred: &dyn Fn(&Value) -> bool, key: &str| -> String {
        let e = events
            .iter()
            .find(|e| pred(&e["data"]))
            .unwrap_or_else(|| panic!("no event for {key}: {events:#?}"));
        e["data"][key].as_str().map(str::to_string).unwrap_or_else(|| e["data"][key].to_string())
    };
    let input = |name: &'static str| move |d: &Value| d["mamori.input"] == name;
    assert_eq!(field(&input("fortigate"), "source.ip"), "10.1.2.3");
    assert_eq!(field(&input("fortigate"), "event.action"), "deny");
    assert_eq!(field(&input("cef"), "user.name"), "alice");
    assert_eq!(field(&input("panos"), "destination.ip"), "203.0.113.8");
    assert_eq!(field(&|d: &Value| d["user.name"] == "bob", "source.ip"), "203.0.113.50");
    assert_eq!(field(&|d: &Value| d["user.name"] == "carol", "event.outcome"), "success");
    let garbage =
        events.iter().find(|e| e["data"]["mamori.malformed"] == true).expect("malformed event kept");
    assert_eq!(garbage["data"]["log.original"], "this is no log format at all");
    let sources: std::collections::BTreeSet<String> = events
        .iter()
        .map(|e| e["source"].as_str().expect("source").split(' ').next().expect("proto").to_string())
        .collect();
    assert_eq!(sources.into_iter().collect::<Vec<_>>(), ["tcp", "tls", "udp"]);

    // The same through the CLI, filtered by sender.
    let out = mamori(
        &["logs", "tail", "--json", "-n", "100", "--source", "tls 127.0.0.1", "--data", &site.data_arg()],
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.lines().count(), 1, "{}", out.stdout);
    assert!(out.stdout.contains("carol"), "{}", out.stdout);
}

#[test]
fn a_fast_tcp_sender_loses_no_line() {
    let site = Site::new();
    let tcp = format!("127.0.0.1:{}", free_port());
    let _server = site.start(&["--syslog-tcp", &tcp]);
    let now = now_ms();
    let lines = 30_000u64;
    let mut stream = TcpStream::connect(&tcp).expect("connect");
    let mut batch = String::new();
    for i in 0..lines {
        batch.push_str(&format!("<134>1 {} app01 billing 77 - - request {i} done\n", rfc3339(now)));
        if batch.len() > 64 * 1024 {
            stream.write_all(batch.as_bytes()).expect("write");
            batch.clear();
        }
    }
    stream.write_all(batch.as_bytes()).expect("write");
    drop(stream);
    wait_for("every line stored", Duration::from_secs(60), || stored(&site) >= lines);
    assert_eq!(stored(&site), lines);
    assert_eq!(site.store().count_log_events().expect("count"), lines);
    // Each line is there once: the numbers 0..lines, none twice.
    let mut seen = vec![false; lines as usize];
    let mut after = 0;
    loop {
        let page = log_events(&site, &format!("&after={after}"));
        let Some(last) = page.last() else { break };
        after = last["id"].as_i64().expect("id");
        for e in &page {
            let message = e["data"]["message"].as_str().expect("message");
            let n: usize = message.split(' ').nth(1).and_then(|n| n.parse().ok()).expect("line number");
            assert!(!seen[n], "line {n} stored twice");
            seen[n] = true;
        }
    }
    assert!(seen.iter().all(|s| *s), "lines missing");
}

#[test]
fn sshd_brute_force_then_success_is_one_correlation_and_the_building_blocks_stay_quiet() {
    let site = Site::new();
    let tcp = format!("127.0.0.1:{}", free_port());
    let _server = site.start(&["--syslog-tcp", &tcp]);
    let now = now_ms() - 60_000;
    let mut messages: Vec<String> = (0..12)
        .map(|i| sshd(now + i * 1000, "Failed password for root from 203.0.113.9 port 40000 ssh2"))
        .collect();
    // Someone else's ordinary login: no detection.
    messages.push(sshd(now + 12_500, "Accepted password for nurse from 10.1.0.20 port 40001 ssh2"));
    messages.push(sshd(now + 13_000, "Accepted password for root from 203.0.113.9 port 40002 ssh2"));
    let mut stream = TcpStream::connect(&tcp).expect("connect");
    stream.write_all(&octet_counted(&messages)).expect("write");
    drop(stream);
    wait_for("14 stored", Duration::from_secs(30), || stored(&site) == 14);
    wait_for("the correlation", Duration::from_secs(10), || !detections(&site, "&level=high").is_empty());
    let all = detections(&site, "");
    let titles: Vec<&str> = all.iter().map(|d| d["title"].as_str().expect("title")).collect();
    assert_eq!(
        titles.iter().filter(|t| t.contains("brute force followed by an accepted login")).count(),
        1,
        "{titles:#?}"
    );
    let hit = all.iter().find(|d| d["kind"] == "correlation" && d["level"] == "high").expect("correlation");
    assert_eq!(hit["data"]["correlation"]["group"]["source.ip"], "203.0.113.9", "{hit:#}");
    assert_eq!(hit["data"]["correlation"]["group"]["user.name"], "root", "{hit:#}");
    // Failed and accepted logins are building blocks: referenced by correlations, not reported.
    assert!(
        all.iter().all(|d| d["kind"] == "correlation"),
        "building blocks reported on their own: {titles:#?}"
    );
    let out = mamori(&["logs", "detections", "--level", "high", "--data", &site.data_arg()], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("[correlation] SSH brute force followed by an accepted login"),
        "{}",
        out.stdout
    );
}

#[test]
fn malware_alert_then_internet_egress_isolates_the_agent_by_policy() {
    let site = Site::new();
    let udp = format!("127.0.0.1:{}", free_udp_port());
    let _server = site.start(&["--syslog-udp", &udp]);
    let admin = Http::admin(&site);

    // A response rule for log detections may only isolate (or alert).
    let mut policy = json!({"response": {"rules": [
        {"detection": "sigma", "min_severity": "critical", "actions": ["quarantine"]}]}});
    let refused = admin.request(reqwest::Method::PUT, proto::path::ADMIN_POLICY, Some(&policy));
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(refused.body["message"].as_str().expect("message").contains("sigma"), "{}", refused.body);
    policy["response"]["rules"][0]["actions"] = json!(["isolate"]);
    let stored_policy = admin.request(reqwest::Method::PUT, proto::path::ADMIN_POLICY, Some(&policy));
    assert_eq!(stored_policy.status, 200, "{}", stored_policy.body);

    let id = site.enroll("ward-pc");
    let other = site.enroll("other-pc");
    let agent = Http::agent(&site, "ward-pc");
    assert!(agent.heartbeat(false).commands.is_empty());
    let now = now_ms();
    let batch = json!({"events": [{"seq": 1, "kind": proto::kind::SCAN_FINDING, "time_ms": now,
        "data": {"file.path": "/home/ward/invoice.exe", "rule.name": "EICAR", "event.action": "malware-detected"}}]});
    let answer = agent.request(reqwest::Method::POST, proto::path::EVENTS, Some(&batch));
    assert_eq!(answer.status, 200, "{}", answer.body);

    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    // Internal traffic is not egress; traffic from another address is another host.
    socket.send_to(fortigate(now + 1000, "127.0.0.1", "10.20.0.5", "accept").as_bytes(), &udp).expect("send");
    socket.send_to(fortigate(now + 1000, "10.1.0.99", "8.8.8.8", "accept").as_bytes(), &udp).expect("send");
    wait_for("2 stored", Duration::from_secs(30), || stored(&site) == 2);
    assert!(detections(&site, "&level=critical").is_empty());
    socket.send_to(fortigate(now + 2000, "127.0.0.1", "8.8.8.8", "accept").as_bytes(), &udp).expect("send");

    wait_for("the correlation", Duration::from_secs(30), || !detections(&site, "&level=critical").is_empty());
    let critical = detections(&site, "&level=critical");
    assert_eq!(critical.len(), 1, "{critical:#?}");
    assert!(critical[0]["title"]
        .as_str()
        .expect("title")
        .contains("Malware on a host followed by allowed outbound"));

    let command = agent.next_command(&[]);
    assert_eq!(command.action, proto::CommandAction::Isolate);
    assert!(command.reason.contains("Malware on a host"), "{}", command.reason);
    let listed = admin.request(reqwest::Method::GET, &proto::path::admin_agent_commands(&id), None);
    assert_eq!(
        listed.body.as_array().map(Vec::len),
        Some(1),
        "one isolation, not one per detection: {}",
        listed.body
    );
    let untouched = admin.request(reqwest::Method::GET, &proto::path::admin_agent_commands(&other), None);
    assert_eq!(untouched.body.as_array().map(Vec::len), Some(0), "{}", untouched.body);
}

#[test]
fn rules_that_cannot_be_used_are_reported_with_the_reason_and_the_rest_run() {
    let site = Site::new();
    let rules = site.dir.path().join("site-rules");
    std::fs::create_dir_all(&rules).expect("mkdir");
    std::fs::write(rules.join("broken.yml"), "title: [unclosed\n").expect("write");
    std::fs::write(
        rules.join("unknown_modifier.yml"),
        "title: Unknown modifier\nid: 6a1f7f9e-0000-4000-8000-000000000001\nlogsource:\n  product: linux\n\
         detection:\n  sel:\n    message|sparkle: x\n  condition: sel\nlevel: high\n",
    )
    .expect("write");
    std::fs::write(
        rules.join("good.yml"),
        "title: Billing service error\nid: 6a1f7f9e-0000-4000-8000-000000000002\nlogsource:\n  product: linux\n\
         detection:\n  sel:\n    message|contains: 'disk full'\n  condition: sel\nlevel: medium\n",
    )
    .expect("write");
    // A rule written for another product's field name, mapped by a site pipeline.
    std::fs::write(
        rules.join("mapped.yml"),
        "title: Backup job failed\nid: 6a1f7f9e-0000-4000-8000-000000000003\nlogsource:\n  product: linux\n\
         detection:\n  sel:\n    Application: backupd\n  condition: sel\nlevel: high\n",
    )
    .expect("write");
    let pipeline = site.dir.path().join("pipeline.yml");
    std::fs::write(
        &pipeline,
        "name: site\ntransformations:\n  - id: app_name\n    type: field_name_mapping\n\
         \x20   mapping: {Application: process.name}\n    rule_conditions:\n      - {type: logsource, product: linux}\n",
    )
    .expect("write");
    let tcp = format!("127.0.0.1:{}", free_port());
    let (rules_arg, pipeline_arg) = (rules.display().to_string(), pipeline.display().to_string());
    let server = site.start(&[
        "--syslog-tcp",
        &tcp,
        "--log-rules",
        &rules_arg,
        "--no-default-rules",
        "--log-pipeline",
        &pipeline_arg,
    ]);
    let status = log_status(&site);
    let problems: Vec<&str> = status["rules"]["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|p| p.as_str().expect("text"))
        .collect();
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(problems.iter().any(|p| p.contains("broken.yml")), "{problems:#?}");
    assert!(
        problems.iter().any(|p| p.contains("unknown_modifier.yml") && p.contains("sparkle")),
        "{problems:#?}"
    );
    assert_eq!(status["rules"]["rules_loaded"], 2, "only the site's good rules: {status}");
    assert!(server.log().contains("unknown_modifier.yml"), "logged at start: {}", server.log());

    let mut stream = TcpStream::connect(&tcp).expect("connect");
    stream
        .write_all(format!("<11>1 {} db01 billing 9 - - disk full on /var\n", rfc3339(now_ms())).as_bytes())
        .expect("write");
    drop(stream);
    wait_for("the detection", Duration::from_secs(30), || !detections(&site, "").is_empty());
    assert_eq!(detections(&site, "")[0]["title"], "Billing service error");
}

#[test]
fn log_lines_an_agent_collected_go_through_the_same_rules() {
    let site = Site::new();
    let _server = site.start(&[]);
    let id = site.enroll("db-server");
    let agent = Http::agent(&site, "db-server");
    agent.heartbeat(false);
    let now = now_ms() - 60_000;
    let sshd = |seq: u64, outcome: &str| {
        json!({"seq": seq, "kind": proto::kind::LOG_EVENT, "time_ms": now + seq as i64 * 1000, "data": {
            "mamori.logsource.product": "linux", "mamori.logsource.service": "sshd",
            "event.action": "ssh_login", "event.outcome": outcome, "user.name": "postgres",
            "source.ip": "198.51.100.23", "log.file.path": "/var/log/auth.log"}})
    };
    let mut events: Vec<Value> = (1..=10).map(|seq| sshd(seq, "failure")).collect();
    events.push(sshd(11, "success"));
    let answer =
        agent.request(reqwest::Method::POST, proto::path::EVENTS, Some(&json!({ "events": events })));
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["stored"], 11);
    let found = detections(&site, "");
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0]["title"], "SSH brute force followed by an accepted login");
    assert_eq!(found[0]["source"], format!("agent {id}"));
    assert_eq!(found[0]["host"], "test-host", "the agent's hostname from its heartbeat");
    // The same batch again (a lost acknowledgement) is stored once and detects nothing new.
    let again = agent.request(reqwest::Method::POST, proto::path::EVENTS, Some(&json!({ "events": events })));
    assert_eq!(again.body["duplicates"], 11, "{}", again.body);
    assert_eq!(detections(&site, "").len(), 1);
}
