//! The manager and agents as separate processes talking real TLS 1.3 on loopback, storing into
//! real SQLite files: enrollment, refusals, revocation, renewal, crash safety, spool accounting,
//! scheduled scans and retention.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::fleet::*;
use serde_json::Value;

#[test]
fn enrollment_heartbeat_and_event_delivery() {
    let site = Site::new();
    let mut server = site.start(&[]);
    let fp = site.fingerprint();
    assert_eq!(fp.len(), 64);
    assert!(server.log().contains(&fp), "the manager prints its CA fingerprint");
    let key_mode = std::fs::metadata(site.data().join("ca/ca.key")).expect("ca.key").permissions();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&key_mode) & 0o777, 0o600);
    let token_mode = std::fs::metadata(site.data().join("admin.token")).expect("admin.token").permissions();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&token_mode) & 0o777, 0o600);

    let id = site.enroll("host-a");
    let key = site.agent_dir("host-a").join("device.key");
    let mode = std::fs::metadata(&key).expect("device key").permissions();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
    // The key never reached the manager: nothing in its directory holds it. (The first 48 base64
    // characters are the PKCS#8 header every P-256 key shares; the secret follows.)
    let key_text = std::fs::read_to_string(&key).expect("key");
    let body: String = key_text.lines().filter(|l| !l.starts_with("-----")).collect();
    for entry in walk(&site.data()) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(&body[48..96]),
            "device key found in {}",
            entry.display()
        );
    }
    assert_eq!(site.agent(&id)["status"], "offline", "enrolled but never heard from");

    spool_events(&site.agent_dir("host-a"), 0, 250, now_ms(), None);
    let _agent = site.run_agent("host-a", &[]);
    wait_for("250 events", Duration::from_secs(30), || site.events(&id, "test.event").len() >= 250);
    assert_exactly_once(&site.events(&id, "test.event"), 0..250);
    wait_for("the agent to be online", Duration::from_secs(30), || site.agent(&id)["status"] == "online");
    assert_eq!(site.events(&id, "agent.started").len(), 1);

    let tail = mamori(
        &["events", "tail", "-n", "5", "--json", "--kind", "test.event", "--data", &site.data_arg()],
        &[],
    );
    assert_eq!(tail.code, 0);
    let ns: Vec<u64> = tail
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("event JSON")["data"]["n"].as_u64().expect("n"))
        .collect();
    assert_eq!(ns, vec![245, 246, 247, 248, 249], "the newest five, oldest first");
    server.stop();
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn expired_reused_forged_tokens_and_wrong_fingerprint_are_refused() {
    let site = Site::new();
    let _server = site.start(&[]);
    let fp = site.fingerprint();

    let short = site.token(&["--ttl", "1s"]);
    std::thread::sleep(Duration::from_millis(1500));
    let out = site.enroll_with("a", &short, &fp, &[]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("expired"), "{}", out.stderr);

    let once = site.token(&[]);
    assert_eq!(site.enroll_with("b", &once, &fp, &[]).code, 0);
    let out = site.enroll_with("c", &once, &fp, &[]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("already been used"), "{}", out.stderr);

    let forged = "mmt_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let out = site.enroll_with("d", forged, &fp, &[]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("unknown"), "{}", out.stderr);

    let twice = site.token(&["--uses", "2"]);
    let wrong = "00".repeat(32);
    let out = site.enroll_with("e", &twice, &wrong, &[]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.to_lowercase().contains("fingerprint"), "{}", out.stderr);
    assert!(!site.agent_dir("e").join("device.crt").exists(), "nothing saved after a pinning failure");

    assert_eq!(site.agents().len(), 1, "only the one good enrollment exists");
    // The token whose use was refused at the TLS layer was not spent.
    assert_eq!(site.enroll_with("f", &twice, &fp, &[]).code, 0);
}

/// TLS client for raw HTTP/1.1 requests with a chosen identity.
struct RawClient {
    stream: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
}

impl RawClient {
    async fn connect(
        port: u16,
        fp: &str,
        identity: Option<&mamori_pki::KeyAndCert>,
    ) -> std::io::Result<RawClient> {
        let config: Arc<rustls::ClientConfig> =
            mamori_pki::tls::client_config(fp, identity).expect("client config");
        let connector = tokio_rustls::TlsConnector::from(config);
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
        Ok(RawClient { stream: connector.connect(name, tcp).await? })
    }

    /// Sends a heartbeat on this connection; returns the status code.
    async fn heartbeat(&mut self) -> std::io::Result<u16> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let body = serde_json::to_string(&mamori_proto::Heartbeat::default()).expect("json");
        let request = format!(
            "POST /v1/agent/heartbeat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.stream.write_all(request.as_bytes()).await?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"));
            }
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf);
            if let Some(head_end) = text.find("\r\n\r\n") {
                let length: usize = text[..head_end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string())
                    })
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                if buf.len() >= head_end + 4 + length {
                    let status = text[9..12].parse().unwrap_or(0);
                    return Ok(status);
                }
            }
        }
    }
}

fn identity(agent_dir: &Path) -> mamori_pki::KeyAndCert {
    mamori_pki::KeyAndCert {
        key_pem: std::fs::read_to_string(agent_dir.join("device.key")).expect("key"),
        cert_pem: std::fs::read_to_string(agent_dir.join("device.crt")).expect("cert"),
    }
}

#[test]
fn revocation_is_immediate_and_other_cas_are_refused() {
    let site = Site::new();
    let _server = site.start(&[]);
    let fp = site.fingerprint();
    let id = site.enroll("host");
    let me = identity(&site.agent_dir("host"));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        // A certificate from another CA, for a device id that exists.
        let other = tempfile::tempdir().expect("tempdir");
        let (other_ca, _) = mamori_pki::Ca::load_or_create(other.path(), "evil CA").expect("other CA");
        let key = mamori_pki::DeviceKey::generate().expect("key");
        let forged =
            other_ca.sign_csr(&key.csr_pem("x").expect("csr"), &id, Duration::from_secs(3600)).expect("sign");
        let forged = mamori_pki::KeyAndCert { key_pem: key.key_pem().to_string(), cert_pem: forged.cert_pem };
        let refused = match RawClient::connect(site.port, &fp, Some(&forged)).await {
            Err(_) => true,
            Ok(mut c) => c.heartbeat().await.is_err(),
        };
        assert!(refused, "a certificate from another CA must not get an answer");

        // Without a certificate the agent routes say so.
        let mut anonymous = RawClient::connect(site.port, &fp, None).await.expect("connect");
        assert_eq!(anonymous.heartbeat().await.expect("answer"), 401);

        let mut open = RawClient::connect(site.port, &fp, Some(&me)).await.expect("connect");
        assert_eq!(open.heartbeat().await.expect("heartbeat"), 200);
        assert_eq!(open.heartbeat().await.expect("keep-alive heartbeat"), 200);

        let out = mamori(&["agent", "revoke", &id, "--data", &site.data_arg()], &[]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert!(out.stdout.contains("closed 1 open connection"), "{}", out.stdout);
        assert!(open.heartbeat().await.is_err(), "the open connection is closed at once");
        let refused = match RawClient::connect(site.port, &fp, Some(&me)).await {
            Err(_) => true,
            Ok(mut c) => c.heartbeat().await.is_err(),
        };
        assert!(refused, "a new handshake with a revoked certificate fails");
    });
    assert_eq!(site.agent(&id)["status"], "revoked");
}

#[test]
fn reenrolling_a_host_replaces_its_old_identity() {
    let site = Site::new();
    let _server = site.start(&[]);
    let fp = site.fingerprint();
    let old = site.enroll("host");
    let old_identity = identity(&site.agent_dir("host"));
    let token = site.token(&[]);
    let out = site.enroll_with("host", &token, &fp, &[]);
    assert_ne!(out.code, 0, "enrolling twice needs --force");
    let out = site.enroll_with("host", &token, &fp, &["--force"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let new = device_id(&out.stdout);
    assert_ne!(new, old);
    assert_ne!(
        identity(&site.agent_dir("host")).key_pem,
        old_identity.key_pem,
        "a new identity has a new key"
    );
    let old_row = site.agent(&old);
    assert_eq!(old_row["status"], "replaced");
    assert_eq!(old_row["replaced_by"], new.as_str());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let refused = match RawClient::connect(site.port, &fp, Some(&old_identity)).await {
            Err(_) => true,
            Ok(mut c) => c.heartbeat().await.is_err(),
        };
        assert!(refused, "the replaced identity is refused");
    });
}

#[test]
fn certificates_are_renewed_before_they_expire() {
    let site = Site::new();
    // Certificates are backdated five minutes, so with a 10 s lifetime the agent renews at every
    // heartbeat (every 5 s at the least): each certificate is replaced well before its end.
    let _server = site.start(&["--cert-validity", "10s"]);
    let id = site.enroll("host");
    let policy = site.dir.path().join("policy.json");
    std::fs::write(&policy, r#"{"heartbeat_secs": 1}"#).expect("policy");
    let refused = mamori(&["policy", "set", &policy.display().to_string(), "--data", &site.data_arg()], &[]);
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains("heartbeat_secs must be between 5 and 3600"), "{}", refused.stderr);
    std::fs::write(&policy, r#"{"heartbeat_secs": 5}"#).expect("policy");
    assert_eq!(
        mamori(&["policy", "set", &policy.display().to_string(), "--data", &site.data_arg()], &[]).code,
        0
    );
    let first = identity(&site.agent_dir("host")).cert_pem;
    let _agent = site.run_agent("host", &[]);
    wait_for("a renewed certificate", Duration::from_secs(20), || {
        identity(&site.agent_dir("host")).cert_pem != first
    });
    // Past the first certificate's end, the agent still gets through.
    std::thread::sleep(Duration::from_secs(8));
    let seen = site.agent(&id);
    assert_eq!(seen["status"], "online", "{seen}");
    assert_eq!(seen["policy_version"], 1);
}

#[test]
fn manager_killed_while_agents_send_loses_and_duplicates_nothing() {
    let site = Site::new();
    let mut server = site.start(&[]);
    let names = ["a1", "a2", "a3"];
    let ids: Vec<String> = names.iter().map(|n| site.enroll(n)).collect();
    // Enough that the manager (~250k events/s here) is still busy when the kill lands.
    const N: u64 = 100_000;
    for n in names {
        spool_events(&site.agent_dir(n), 0, N, now_ms(), None);
    }
    let store = site.store();
    let _agents: Vec<Proc> = names.iter().map(|n| site.run_agent(n, &[])).collect();
    wait_for_every("delivery to start", Duration::from_secs(30), Duration::from_millis(5), || {
        ids.iter().any(|id| site.has_event(&store, id, "test.event"))
    });
    server.sigkill();
    let partial: usize = ids.iter().map(|id| site.events(id, "test.event").len()).sum();
    eprintln!("manager killed after {partial} of {} events were stored", 3 * N);
    assert!(partial < 3 * N as usize, "the kill landed after everything was delivered; make N larger");
    let _server = site.start(&[]);
    for id in &ids {
        wait_for("all events after the restart", Duration::from_secs(60), || {
            site.events(id, "test.event").len() >= N as usize
        });
        assert_exactly_once(&site.events(id, "test.event"), 0..N);
    }
}

#[test]
fn agent_killed_mid_batch_delivers_its_spool_once() {
    let site = Site::new();
    let _server = site.start(&[]);
    let id = site.enroll("host");
    const N: u64 = 100_000;
    spool_events(&site.agent_dir("host"), 0, N, now_ms(), None);
    let store = site.store();
    let mut agent = site.run_agent("host", &[]);
    wait_for_every("delivery to start", Duration::from_secs(30), Duration::from_millis(5), || {
        site.has_event(&store, &id, "test.event")
    });
    agent.sigkill();
    let partial = site.events(&id, "test.event").len();
    eprintln!("agent killed after {partial} of {N} events were stored");
    assert!(partial < N as usize, "the kill landed after everything was delivered; make N larger");
    let _agent = site.run_agent("host", &[]);
    wait_for("the rest of the spool", Duration::from_secs(60), || {
        site.events(&id, "test.event").len() >= N as usize
    });
    assert_exactly_once(&site.events(&id, "test.event"), 0..N);
    assert_eq!(site.events(&id, "agent.started").len(), 2);
}

#[test]
fn a_full_spool_drops_the_oldest_and_says_how_many() {
    let site = Site::new();
    let _server = site.start(&[]);
    let id = site.enroll("host");
    // The manager is reachable but the agent is not running: events pile up in a 64 KiB spool.
    let dropped = spool_events(&site.agent_dir("host"), 0, 2_000, now_ms(), Some(64 << 10));
    assert!(dropped > 0, "the spool should have overflowed");
    let _agent = site.run_agent("host", &["--spool-max-size", "64K"]);
    let kept = 2_000 - dropped;
    wait_for("the kept events", Duration::from_secs(30), || {
        site.events(&id, "test.event").len() as u64 >= kept
    });
    assert_exactly_once(&site.events(&id, "test.event"), dropped..2_000);
    let notices = site.events(&id, mamori_spool::DROPPED_KIND);
    assert!(!notices.is_empty(), "a drop notice reaches the manager");
    let counted: u64 = notices
        .iter()
        .map(|n| {
            serde_json::from_str::<Value>(&n.data).expect("notice JSON")["dropped"].as_u64().expect("dropped")
        })
        .sum();
    assert_eq!(counted, dropped, "the notices account for every dropped event");
}

#[test]
fn scheduled_scan_from_policy_reports_detections() {
    let site = Site::new();
    let _server = site.start(&[]);
    let id = site.enroll("host");
    let target = site.dir.path().join("target");
    common::write(&target.join("clean.txt"), b"nothing here");
    common::write(&target.join("sub/eicar.com"), &common::eicar());
    let policy = site.dir.path().join("policy.json");
    let text = serde_json::json!({
        "heartbeat_secs": 5,
        "scans": [{"name": "daily", "paths": [target.display().to_string()], "every_secs": 86400}]
    });
    std::fs::write(&policy, text.to_string()).expect("policy");
    assert_eq!(
        mamori(&["policy", "set", &policy.display().to_string(), "--data", &site.data_arg()], &[]).code,
        0
    );
    let _agent = site.run_agent("host", &[]);
    wait_for("a detection", Duration::from_secs(60), || !site.events(&id, "scan.finding").is_empty());
    let finding: Value = serde_json::from_str(&site.events(&id, "scan.finding")[0].data).expect("JSON");
    assert!(finding.to_string().contains("eicar.com"), "{finding}");
    let out =
        mamori(&["events", "tail", "--json", "--kind", "scan.finding", "--data", &site.data_arg()], &[]);
    assert_eq!(out.stdout.lines().count(), 1);
}

#[test]
fn retention_removes_old_events_and_keeps_recent_ones() {
    let site = Site::new();
    let mut server = site.start(&[]);
    let id = site.enroll("host");
    let old = now_ms() - 401 * 24 * 3600 * 1000;
    spool_events(&site.agent_dir("host"), 0, 10, old, None);
    spool_events(&site.agent_dir("host"), 10, 10, now_ms(), None);
    let mut agent = site.run_agent("host", &[]);
    wait_for("delivery", Duration::from_secs(30), || site.events(&id, "test.event").len() >= 20);
    agent.stop();
    server.stop();
    // The retention sweep runs at start (and hourly).
    let _server = site.start(&[]);
    wait_for("the sweep", Duration::from_secs(30), || site.events(&id, "test.event").len() == 10);
    assert_exactly_once(&site.events(&id, "test.event"), 10..20);
}

#[test]
fn openapi_document_describes_every_route() {
    let site = Site::new();
    let _server = site.start(&[]);
    let doc = mamori_manager::openapi_document();
    let paths = doc["paths"].as_object().expect("paths");
    for route in [
        mamori_proto::path::ENROLL,
        mamori_proto::path::RENEW,
        mamori_proto::path::HEARTBEAT,
        mamori_proto::path::EVENTS,
        mamori_proto::path::POLICY,
        mamori_proto::path::ADMIN_AGENTS,
        mamori_proto::path::ADMIN_EVENTS,
        mamori_proto::path::ADMIN_DETECTIONS,
        mamori_proto::path::ADMIN_TOKENS,
        mamori_proto::path::ADMIN_POLICY,
        mamori_proto::path::ADMIN_LOG_STATUS,
        mamori_proto::path::ADMIN_LOG_EVENTS,
        mamori_proto::path::ADMIN_LOG_DETECTIONS,
        mamori_proto::path::OPENAPI,
        mamori_proto::path::HEALTH,
    ] {
        assert!(paths.contains_key(route), "{route} is not in the OpenAPI document");
    }
    // Every documented route exists on the server (the fallback answers `not_found`).
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let served = rt.block_on(async {
        let tls = mamori_pki::tls::client_config(&site.fingerprint(), None).expect("tls");
        let client =
            reqwest::Client::builder().use_preconfigured_tls((*tls).clone()).build().expect("client");
        let mut missing = Vec::new();
        for (path, ops) in paths {
            let url = format!("{}{}", site.url(), path.replace("{id}", "nobody"));
            for method in ops.as_object().expect("ops").keys() {
                let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
                let body = client.request(m, &url).send().await.expect("request").text().await.expect("body");
                if body.contains("\"not_found\"") {
                    missing.push(format!("{method} {path}"));
                }
            }
        }
        missing
    });
    assert!(served.is_empty(), "documented but not served: {served:?}");
}

#[test]
fn up_runs_a_manager_and_a_local_agent_and_restarts_with_the_same_identity() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let data = dir.path().join("data");
    let start = |n: u64| {
        let mut cmd = Command::new(BIN);
        cmd.args(["up", "--listen", &listen])
            .env("MAMORI_DATA_DIR", &data)
            .env("MAMORI_MACHINE_ID", "up-host");
        let proc = Proc::spawn(&mut cmd, dir.path().join(format!("up-{n}.log")));
        wait_for("the local agent", Duration::from_secs(30), || proc.log().contains("Local agent"));
        proc
    };
    let agent_id = |log: &str| {
        log.lines()
            .find_map(|l| l.strip_prefix("Local agent "))
            .and_then(|l| l.split_whitespace().next())
            .map(String::from)
            .expect("agent id in the log")
    };
    let mut first = start(1);
    let log = first.log();
    assert!(log.contains(&format!("listening on https://127.0.0.1:{port}")), "{log}");
    let id = agent_id(&log);
    let manager = data.join("manager").display().to_string();
    let listed = || -> Vec<Value> {
        let out = mamori(&["agents", "list", "--json", "--data", &manager], &[]);
        out.stdout.lines().map(|l| serde_json::from_str(l).expect("JSON")).collect()
    };
    wait_for("the agent online", Duration::from_secs(30), || {
        listed().iter().any(|a| a["id"] == id.as_str() && a["status"] == "online")
    });
    let policy = mamori(&["policy", "show", "--data", &manager], &[]);
    let policy: Value = serde_json::from_str(&policy.stdout).expect("policy JSON");
    assert_eq!(policy["version"], 1, "a new site gets an initial policy");
    assert_eq!(policy["fim"]["paths"][0], "/etc", "with file integrity monitoring of the system directories");
    first.stop();

    let second = start(2);
    assert_eq!(agent_id(&second.log()), id, "a restart keeps the enrolled identity");
    assert_eq!(listed().len(), 1, "no second enrollment");
    let policy = mamori(&["policy", "show", "--data", &manager], &[]);
    assert!(policy.stdout.contains("\"version\": 1"), "the initial policy is stored once: {}", policy.stdout);
}
