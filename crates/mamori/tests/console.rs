//! The web console's API against a real manager process over HTTPS: the first admin account,
//! two-factor login (no session without the code), CSRF, every role boundary, lockout, the audit
//! log (verified from the API and the CLI, an edited row detected), detections triage with a
//! false-positive suppression, live updates, the checklist and the monthly report as a PDF
//! whose text is read back.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::console::*;
use common::fleet::*;
use serde_json::{json, Value};

const OPERATOR_PASSWORD: &str = "kango-shitsu-2026!";
const AUDITOR_PASSWORD: &str = "kansa-tantou-2026#";

fn sshd_line(host: &str, message: &str) -> String {
    let now = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap();
    let m = format!("<38>1 {now} {host} sshd 4242 - - {message}");
    format!("{} {m}", m.len())
}

/// A site rule at `critical` so that detections are alerted and counted in reports.
fn write_rule(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("site-rules");
    std::fs::create_dir_all(&path).unwrap();
    std::fs::write(
        path.join("emr_root_login.yml"),
        "title: 電子カルテサーバへの root ログイン失敗\nid: 7d0c5f55-0000-4000-8000-000000000001\nstatus: test\n\
         logsource:\n    product: linux\n    service: sshd\ndetection:\n    selection:\n        event.outcome: failure\n        \
         user.name: root\n    condition: selection\nlevel: critical\n",
    )
    .unwrap();
    path
}

fn send_syslog(addr: &str, lines: &[String]) {
    let mut s = std::net::TcpStream::connect(addr).expect("syslog tcp");
    for l in lines {
        s.write_all(l.as_bytes()).unwrap();
    }
}

#[test]
fn first_admin_two_factor_csrf_and_logout() {
    let site = Site::new();
    let (_server, base) = start_with_console(&site, &[]);
    let file = site.data().join("console-initial-password");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the initial password file is private");
    let password = initial_admin_password(&site);

    let mut admin = Console::new(&site, &base);
    // The page itself: strict headers, Japanese by default.
    let page = admin.get("/");
    assert_eq!(page.status, 200);
    assert!(page.headers["content-security-policy"].to_str().unwrap().contains("default-src 'self'"));
    assert_eq!(page.headers["x-frame-options"], "DENY");
    assert_eq!(admin.get("/api/i18n/ja").body["nav.overview"], "概要");
    assert_eq!(admin.get("/api/me").body["error"], "not_logged_in");

    // A wrong password, then the right one: no session until the code.
    let wrong = admin.post("/api/login", json!({"username": "admin", "password": "not-the-password"}));
    assert_eq!((wrong.status, wrong.body["error"].as_str()), (401, Some("bad_credentials")));
    let first = admin.post("/api/login", json!({"username": "ADMIN", "password": password}));
    assert_eq!(first.body["stage"], "totp_setup", "{first:?}");
    assert!(first.body["otpauth_uri"].as_str().unwrap().starts_with("otpauth://totp/mamori:admin?"));
    let secret = first.body["secret"].as_str().unwrap().to_string();
    assert!(first.headers.get("set-cookie").is_none());
    // A wrong code ends this login attempt: the challenge is single use.
    let challenge = first.body["challenge"].as_str().unwrap();
    let wrong_code = format!("{:06}", (code(&secret, 0).parse::<u32>().unwrap() + 1) % 1_000_000);
    let bad = admin.post("/api/login/totp", json!({"challenge": challenge, "code": wrong_code}));
    assert_eq!((bad.status, bad.body["error"].as_str()), (401, Some("bad_code")));
    let again = admin.post("/api/login/totp", json!({"challenge": challenge, "code": code(&secret, 0)}));
    assert_eq!(again.body["error"], "challenge_expired");
    // A made-up session cookie is nothing.
    admin.cookie = Some("mmt_forged".into());
    assert_eq!(admin.get("/api/overview").status, 401);
    admin.cookie = None;

    // The secret shown at setup was not stored by a failed attempt: setup is offered again.
    let secret = admin.login("admin", &password, None, 0);
    let me = admin.get("/api/me");
    assert_eq!(me.body["user"]["role"], "admin");
    assert_eq!(me.body["user"]["lang"], "ja");
    // Now the account has a second factor: the next login asks for it, and the same code
    // (step) is refused as a replay.
    let replay = Console::new(&site, &base);
    let step = replay.post("/api/login", json!({"username": "admin", "password": password}));
    assert_eq!(step.body["stage"], "totp");
    let r = replay
        .post("/api/login/totp", json!({"challenge": step.body["challenge"], "code": code(&secret, 0)}));
    assert_eq!(r.body["error"], "bad_code", "a used step is refused: {r:?}");

    // CSRF: a state-changing request without the header is refused even with the cookie.
    let csrf = admin.csrf.take();
    let refused = admin.put("/api/me/lang", json!({"lang": "en"}));
    assert_eq!((refused.status, refused.body["error"].as_str()), (403, Some("csrf")));
    admin.csrf = csrf;
    assert_eq!(admin.put("/api/me/lang", json!({"lang": "en"})).status, 200);
    assert_eq!(admin.get("/api/me").body["user"]["lang"], "en");

    assert_eq!(admin.post("/api/logout", json!({})).status, 200);
    assert_eq!(admin.get("/api/me").body["error"], "not_logged_in");
}

#[test]
fn roles_lockout_and_the_audit_log() {
    let site = Site::new();
    let (mut server, base) = start_with_console(&site, &[]);
    let agent_id = site.enroll("ward-pc-01");
    let password = initial_admin_password(&site);
    let mut admin = Console::new(&site, &base);
    admin.login("admin", &password, None, 0);

    // Weak passwords and bad names are refused with the policy's codes.
    let weak =
        admin.post("/api/users", json!({"username": "nurse", "role": "operator", "password": "short"}));
    assert_eq!((weak.status, weak.body["error"].as_str()), (400, Some("weak_password")));
    assert!(weak.body["message"].as_str().unwrap().contains("password_too_short"));
    let same = admin.post(
        "/api/users",
        json!({"username": "nurse-station", "role": "operator", "password": "nurse-station"}),
    );
    assert_eq!(same.body["error"], "weak_password");
    for (name, role, pw) in [("nurse", "operator", OPERATOR_PASSWORD), ("kansa", "auditor", AUDITOR_PASSWORD)]
    {
        let made = admin.post("/api/users", json!({"username": name, "role": role, "password": pw}));
        assert_eq!(made.status, 200, "{made:?}");
        assert_eq!(made.body["totp_enrolled"], false);
    }
    assert_eq!(
        admin
            .post(
                "/api/users",
                json!({"username": "Nurse", "role": "auditor", "password": OPERATOR_PASSWORD})
            )
            .status,
        409
    );

    let mut operator = Console::new(&site, &base);
    operator.login("nurse", OPERATOR_PASSWORD, None, 0);
    let mut auditor = Console::new(&site, &base);
    auditor.login("kansa", AUDITOR_PASSWORD, None, 0);

    // A spare account for the user actions, so that no case ends a tester's own session.
    let spare = admin.post(
        "/api/users",
        json!({"username": "spare", "role": "auditor", "password": "spare-account-2026"}),
    );
    assert_eq!(spare.status, 200);

    // Every console route that does something, against every role. Allowed: anything but
    // 401/403 (a route may still answer 404 for an id that does not exist, 409 for a conflict);
    // refused: 403 `forbidden`, before the route looks at anything.
    use reqwest::Method as M;
    let a = agent_id.as_str();
    let q = "0123456789abcdef";
    let cases: Vec<(&str, M, String, Value, [bool; 3])> = vec![
        // name, method, path, body, [admin, operator, auditor]
        ("view overview", M::GET, "/api/overview".into(), Value::Null, [true, true, true]),
        ("view agents", M::GET, "/api/agents".into(), Value::Null, [true, true, true]),
        ("view agent", M::GET, format!("/api/agents/{a}"), Value::Null, [true, true, true]),
        ("view detections", M::GET, "/api/detections".into(), Value::Null, [true, true, true]),
        ("view events", M::GET, "/api/events?q=x".into(), Value::Null, [true, true, true]),
        ("view logs", M::GET, "/api/logs".into(), Value::Null, [true, true, true]),
        ("view quarantine", M::GET, "/api/quarantine".into(), Value::Null, [true, true, true]),
        ("view backups", M::GET, "/api/backups".into(), Value::Null, [true, true, true]),
        ("view suppressions", M::GET, "/api/suppressions".into(), Value::Null, [true, true, true]),
        ("view audit", M::GET, "/api/audit".into(), Value::Null, [true, true, true]),
        ("view checklist", M::GET, "/api/checklist".into(), Value::Null, [true, true, true]),
        ("view alerting", M::GET, "/api/alerting".into(), Value::Null, [true, true, true]),
        ("report", M::GET, "/api/reports/monthly?format=html".into(), Value::Null, [true, true, true]),
        ("verify audit", M::POST, "/api/audit/verify".into(), json!({}), [true, true, true]),
        (
            "isolate",
            M::POST,
            format!("/api/agents/{a}/isolate"),
            json!({"reason": "ransomware suspected"}),
            [true, true, false],
        ),
        (
            "release",
            M::POST,
            format!("/api/agents/{a}/release"),
            json!({"reason": "clean"}),
            [true, true, false],
        ),
        (
            "scan now",
            M::POST,
            format!("/api/agents/{a}/scan"),
            json!({"reason": "check"}),
            [true, true, false],
        ),
        (
            "quarantine restore",
            M::POST,
            format!("/api/agents/{a}/quarantine/{q}/restore"),
            json!({}),
            [true, true, false],
        ),
        (
            "quarantine delete",
            M::POST,
            format!("/api/agents/{a}/quarantine/{q}/delete"),
            json!({}),
            [true, true, false],
        ),
        (
            "backup restore request",
            M::POST,
            format!("/api/agents/{a}/backups/{}/restore", "ab".repeat(32)),
            json!({"reason": "files encrypted"}),
            [true, true, false],
        ),
        ("own passkeys", M::GET, "/api/me/passkeys".into(), Value::Null, [true, true, true]),
        ("acknowledge", M::POST, "/api/detections/999999/acknowledge".into(), json!({}), [true, true, false]),
        ("close", M::POST, "/api/detections/999999/close".into(), json!({"note": "n"}), [true, true, false]),
        (
            "false positive",
            M::POST,
            "/api/detections/999999/false-positive".into(),
            json!({"note": "n"}),
            [true, true, false],
        ),
        (
            "delete suppression",
            M::DELETE,
            "/api/suppressions/999999".into(),
            Value::Null,
            [true, true, false],
        ),
        (
            "record restore test",
            M::POST,
            "/api/checklist/restore-test".into(),
            json!({"host": "h", "snapshot": "s"}),
            [true, true, false],
        ),
        ("send report", M::POST, "/api/reports/monthly/send".into(), json!({}), [true, true, false]),
        ("list users", M::GET, "/api/users".into(), Value::Null, [true, false, false]),
        (
            "create user",
            M::POST,
            "/api/users".into(),
            json!({"username": "x1", "role": "auditor", "password": "another-long-pass-1"}),
            [true, false, false],
        ),
        ("change role", M::PUT, "/api/users/spare".into(), json!({"role": "auditor"}), [true, false, false]),
        ("reset totp", M::POST, "/api/users/spare/reset-totp".into(), json!({}), [true, false, false]),
        ("unlock", M::POST, "/api/users/spare/unlock".into(), json!({}), [true, false, false]),
        (
            "set password",
            M::POST,
            "/api/users/spare/password".into(),
            json!({"password": "spare-account-2027"}),
            [true, false, false],
        ),
        ("alerting settings", M::PUT, "/api/alerting".into(), json!({}), [true, false, false]),
        (
            "alerting test",
            M::POST,
            "/api/alerting/test".into(),
            json!({"channel": {"channel": "webhook", "name": "none"}}),
            [true, false, false],
        ),
        (
            "inventory",
            M::PUT,
            "/api/checklist/inventory".into(),
            json!({"hosts": ["ward-pc-01"]}),
            [true, false, false],
        ),
    ];
    for (who, client) in [(0, &admin), (1, &operator), (2, &auditor)] {
        for (name, method, path, body, allowed) in &cases {
            let reply = client.request(method.clone(), path, if body.is_null() { None } else { Some(body) });
            if allowed[who] {
                assert!(![401, 403].contains(&reply.status), "role {who} may {name}: {reply:?}");
            } else {
                assert_eq!(
                    (reply.status, reply.body["error"].as_str()),
                    (403, Some("forbidden")),
                    "role {who} may not {name}"
                );
            }
        }
    }
    // Self-service needs a session but no permission: the auditor changes its language.
    assert_eq!(auditor.put("/api/me/lang", json!({"lang": "en"})).status, 200);
    // The operator's isolate command is queued for the agent with the reason and who asked.
    let commands = admin.get(&format!("/api/agents/{agent_id}")).body["commands"].clone();
    assert!(
        commands
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["action"] == "isolate" && c["reason"].as_str().unwrap().contains("console: nurse")),
        "{commands}"
    );

    // Lockout: five wrong passwords lock the account; the right one is then refused too.
    let guesser = Console::new(&site, &base);
    for _ in 0..5 {
        let r = guesser.post("/api/login", json!({"username": "nurse", "password": "wrong-password-123"}));
        assert_eq!(r.status, 401);
    }
    let locked = guesser.post("/api/login", json!({"username": "nurse", "password": OPERATOR_PASSWORD}));
    assert_eq!((locked.status, locked.body["error"].as_str()), (423, Some("locked")));
    assert!(locked.body["retry_after_s"].as_u64().unwrap() > 800);
    assert!(admin.get("/api/users").body["users"]
        .as_array()
        .unwrap()
        .iter()
        .any(|u| u["username"] == "nurse" && !u["locked_until"].is_null()));
    assert_eq!(admin.post("/api/users/nurse/unlock", json!({})).status, 200);
    let first = guesser.post("/api/login", json!({"username": "nurse", "password": OPERATOR_PASSWORD}));
    assert_eq!(first.body["stage"], "totp", "unlocked: {first:?}");

    // Disabling a user ends their session at once; the last admin cannot be disabled.
    assert_eq!(admin.put("/api/users/kansa", json!({"disabled": true})).status, 200);
    assert_eq!(auditor.get("/api/overview").status, 401);
    let last = admin.put("/api/users/admin", json!({"role": "operator"}));
    assert_eq!(last.body["error"], "last_admin");

    // The audit log has all of it, and verifies.
    let audit = admin.get("/api/audit?limit=1000").body["records"].clone();
    let actions: Vec<(String, String)> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["actor"].as_str().unwrap().to_string(), r["action"].as_str().unwrap().to_string()))
        .collect();
    for expected in [
        ("user:admin", "login.success"),
        ("user:admin", "user.create"),
        ("user:nurse", "agent.isolate"),
        ("user:kansa", "access.denied"),
        ("user:nurse", "login.failure"),
        ("user:nurse", "login.refused"),
        ("user:admin", "user.unlock"),
        ("user:admin", "user.update"),
        ("manager", "user.create"),
    ] {
        assert!(
            actions.iter().any(|(a, b)| a == expected.0 && b == expected.1),
            "audit lacks {expected:?}: {actions:?}"
        );
    }
    let verified = admin.post("/api/audit/verify", json!({}));
    assert_eq!(verified.body["ok"], true, "{verified:?}");
    let n = verified.body["records"].as_u64().unwrap();
    assert!(n > 20, "{n} records");
    let cli = mamori(&["audit", "verify", "--data", &site.data_arg()], &[]);
    assert_eq!(cli.code, 0, "{}", cli.stdout);

    // Someone with the database file edits a record: the CLI and the console both say where.
    server.stop();
    let store = mamori_store::Store::open(&site.data().join("manager.db")).unwrap();
    let victim =
        store.list_audit(None, 1000).unwrap().into_iter().find(|r| r.action == "agent.isolate").unwrap();
    store
        .execute_raw(&format!(
            "UPDATE audit_log SET detail = '{{\"reason\":\"routine\"}}' WHERE seq = {}",
            victim.seq
        ))
        .unwrap();
    drop(store);
    let cli = mamori(&["audit", "verify", "--data", &site.data_arg(), "--json"], &[]);
    assert_eq!(cli.code, 1, "an altered log exits 1: {}", cli.stdout);
    let report: Value = serde_json::from_str(cli.stdout.trim()).unwrap();
    assert_eq!(report["first_bad_seq"].as_u64(), Some(victim.seq));
    // Recomputing the whole chain after the edit is caught by the signed checkpoints.
    let store = mamori_store::Store::open(&site.data().join("manager.db")).unwrap();
    let mut prev = [0u8; 32];
    let rows: Vec<_> = {
        let mut v = Vec::new();
        store.for_each_audit(|r| v.push(r)).unwrap();
        v
    };
    for r in rows {
        let rec = mamori_audit::Chain::append(
            (r.seq > 1).then_some(mamori_audit::Head { seq: r.seq - 1, hash: prev }),
            mamori_audit::Entry {
                time_ms: r.time_ms,
                actor: &r.actor,
                action: &r.action,
                target: &r.target,
                detail: &r.detail,
            },
        )
        .unwrap();
        store
            .execute_raw(&format!(
                "UPDATE audit_log SET prev_hash = x'{}', hash = x'{}' WHERE seq = {}",
                hex::encode(rec.prev_hash),
                hex::encode(rec.hash),
                r.seq
            ))
            .unwrap();
        prev = rec.hash;
    }
    drop(store);
    let cli = mamori(&["audit", "verify", "--data", &site.data_arg(), "--json"], &[]);
    assert_eq!(cli.code, 1, "a recomputed chain no longer matches its checkpoints: {}", cli.stdout);
    let report: Value = serde_json::from_str(cli.stdout.trim()).unwrap();
    assert!(report["first_bad_seq"].as_u64().unwrap() >= victim.seq, "{report}");
}

#[test]
fn triage_suppression_live_updates_checklist_and_report() {
    let site = Site::new();
    let rules = write_rule(site.dir.path());
    let tcp = format!("127.0.0.1:{}", free_port());
    let rules_arg = rules.display().to_string();
    let (_server, base) = start_with_console(&site, &["--syslog-tcp", &tcp, "--log-rules", &rules_arg]);
    site.enroll("emr-db01");
    let password = initial_admin_password(&site);
    let mut admin = Console::new(&site, &base);
    admin.login("admin", &password, None, 0);
    // The agent reports this machine's host name; the firewall/server logs name the same host.
    let host = admin.get("/api/agents").body["agents"][0]["hostname"].as_str().unwrap().to_string();

    // A live update stream, read on its own thread.
    let stream = std::thread::spawn({
        let cookie = admin.cookie.clone().unwrap();
        let addr = base.trim_start_matches("https://").to_string();
        let fingerprint = site.fingerprint();
        move || read_sse(&addr, &cookie, &fingerprint, Duration::from_secs(20))
    });
    std::thread::sleep(Duration::from_millis(500));

    send_syslog(&tcp, &[sshd_line(&host, "Failed password for root from 10.1.2.3 port 50000 ssh2")]);
    let mut detections = Vec::new();
    wait_for("the detection in the console", Duration::from_secs(20), || {
        detections = admin.get("/api/detections?severity=critical").body["detections"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        !detections.is_empty()
    });
    let d = &detections[0];
    assert_eq!(d["title"], "電子カルテサーバへの root ログイン失敗");
    assert_eq!(d["host"], host.as_str());
    assert_eq!(d["status"], "open");
    let id = d["id"].as_i64().unwrap();
    let sse = stream.join().unwrap();
    assert!(sse.contains("event: changed") && sse.contains("detections"), "live update: {sse}");

    assert_eq!(admin.get("/api/overview").body["detections_open"]["critical"], 1);
    let ack = admin.post(&format!("/api/detections/{id}/acknowledge"), json!({}));
    assert_eq!(ack.body["status"], "acknowledged");
    let no_note = admin.post(&format!("/api/detections/{id}/false-positive"), json!({"note": " "}));
    assert_eq!(no_note.status, 400);
    let fp = admin
        .post(&format!("/api/detections/{id}/false-positive"), json!({"note": "監視スクリプトの誤設定"}));
    assert_eq!(fp.body["status"], "false_positive", "{fp:?}");
    assert_eq!(admin.get("/api/overview").body["detections_open"]["critical"], 0);
    let sups = admin.get("/api/suppressions").body["suppressions"].clone();
    assert_eq!(sups.as_array().unwrap().len(), 1);

    // The same rule on the same host again: stored, but marked as a false positive by the
    // suppression (not open, not alerted).
    send_syslog(&tcp, &[sshd_line(&host, "Failed password for root from 10.1.2.3 port 50001 ssh2")]);
    wait_for("the second detection to be suppressed", Duration::from_secs(20), || {
        let all = admin.get("/api/detections?status=all").body["detections"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        all.len() == 2 && all.iter().all(|d| d["status"] == "false_positive")
    });
    // Another host is not covered by that suppression.
    send_syslog(&tcp, &[sshd_line("pacs01", "Failed password for root from 10.1.2.3 port 50002 ssh2")]);
    wait_for("the other host's detection", Duration::from_secs(20), || {
        admin.get("/api/detections").body["detections"]
            .as_array()
            .is_some_and(|d| d.iter().any(|d| d["host"] == "pacs01"))
    });
    std::thread::sleep(Duration::from_secs(3));
    let open = admin.get("/api/detections").body["detections"].as_array().cloned().unwrap();
    assert_eq!(open.len(), 1, "only pacs01's stays open: {open:?}");

    // Checklist: the admin has TOTP; no inventory, no backups, no alert route.
    let checklist = admin.get("/api/checklist").body["items"].clone();
    let item = |id: &str| checklist.as_array().unwrap().iter().find(|i| i["id"] == id).cloned().unwrap();
    assert_eq!(item("mfa")["status"], "ok", "{checklist}");
    assert_eq!(item("alerting")["status"], "missing");
    assert_eq!(item("log_collection")["status"], "ok");
    // The admin reads Japanese: the sentences are in Japanese too.
    assert!(item("devices")["missing"][0].as_str().unwrap().contains("台帳"), "{checklist}");
    assert_eq!(
        admin.put("/api/checklist/inventory", json!({"hosts": [host.as_str(), "reception-01"]})).status,
        200
    );
    let checklist = admin.get("/api/checklist").body["items"].clone();
    let devices = checklist.as_array().unwrap().iter().find(|i| i["id"] == "devices").cloned().unwrap();
    assert!(devices["missing"].to_string().contains("reception-01"), "{devices}");
    assert_eq!(admin.get("/api/audit?limit=5").body["records"][0]["action"], "inventory.update");

    // The month's report as PDF: its text holds the institution, the host and the figures.
    let now = time::OffsetDateTime::now_utc().to_offset(time::UtcOffset::from_hms(9, 0, 0).unwrap());
    let month = format!("{:04}-{:02}", now.year(), now.month() as u8);
    let json = admin.get(&format!("/api/reports/monthly?month={month}&format=json")).body;
    let row =
        json["endpoints"].as_array().unwrap().iter().find(|e| e["host"] == host.as_str()).cloned().unwrap();
    assert_eq!(row["detections"]["critical"], 2, "{json}");
    assert_eq!(json["totals"]["false_positives"], 2);
    let Some(pdftotext) = which("pdftotext") else {
        eprintln!("SKIPPED the PDF text check: pdftotext is not installed (Debian package poppler-utils)");
        return;
    };
    let pdf = admin.get(&format!("/api/reports/monthly?month={month}&lang=ja&format=pdf"));
    assert_eq!(pdf.status, 200, "{pdf:?}");
    assert_eq!(pdf.headers["content-type"], "application/pdf");
    let file = site.dir.path().join("report.pdf");
    std::fs::write(&file, &pdf.bytes).unwrap();
    let out = std::process::Command::new(pdftotext)
        .args(["-layout", file.to_str().unwrap(), "-"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "みなと総合病院",
        "月次セキュリティレポート",
        host.as_str(),
        "電子カルテサーバへの root ログイン失敗",
    ] {
        assert!(text.contains(expected), "the PDF text lacks {expected:?}:\n{text}");
    }
    let line =
        text.lines().find(|l| l.contains(host.as_str()) && l.chars().any(|c| c.is_ascii_digit())).unwrap();
    assert!(line.split_whitespace().any(|w| w == "2"), "{host}'s row counts 2 detections: {line}");
    if let Ok(dir) = std::env::var("CARGO_TARGET_DIR") {
        let artefacts = std::path::Path::new(&dir).join("console-artefacts");
        let _ = std::fs::create_dir_all(&artefacts);
        let _ = std::fs::write(artefacts.join("monthly-report-ja.pdf"), &pdf.bytes);
    }
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| std::path::Path::new(d).join(name))
        .find(|p| p.exists())
}

/// Reads the event stream over a raw TLS connection for `limit` (or until two events arrived).
fn read_sse(addr: &str, cookie: &str, fingerprint: &str, limit: Duration) -> String {
    let config = mamori_pki::tls::client_config(fingerprint, None).unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(config, name).unwrap();
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let request = format!(
        "GET /api/stream HTTP/1.1\r\nHost: {addr}\r\nCookie: mamori_session={cookie}\r\nAccept: text/event-stream\r\n\r\n"
    );
    tls.write_all(request.as_bytes()).unwrap();
    let started = std::time::Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while started.elapsed() < limit {
        match tls.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        if String::from_utf8_lossy(&seen).contains("detections") {
            break;
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

/// Passkeys instead of the TOTP code, with a software authenticator speaking real WebAuthn
/// (P-256, CBOR, ES256): registration from a session, a login with password + passkey, and
/// the attacks the ceremony must stop: another origin (phishing), no user verification, a
/// replayed assertion, a cloned authenticator (counter not going up). Failures count for the
/// lockout; TOTP keeps working; removal and a second-factor reset take the passkey away.
#[test]
fn passkeys_are_an_alternative_second_factor() {
    use common::passkey::SoftAuthenticator;

    let site = Site::new();
    let (_server, base) = start_with_console(&site, &[]);
    let password = initial_admin_password(&site);
    let mut admin = Console::new(&site, &base);
    let secret = admin.login("admin", &password, None, -1);
    let port = base.rsplit(':').next().unwrap();
    // Browsers refuse WebAuthn on an IP address: a loopback console is offered as localhost.
    let origin = format!("https://localhost:{port}");
    let mine = admin.get("/api/me/passkeys");
    assert_eq!(
        (mine.body["available"].as_bool(), mine.body["detail"]["origin"].as_str()),
        (Some(true), Some(origin.as_str()))
    );
    assert_eq!(mine.body["passkeys"].as_array().map(Vec::len), Some(0));

    // A page on another origin cannot register a passkey for this console.
    let options = admin.post("/api/me/passkeys/options", json!({}));
    assert_eq!(options.status, 200, "{options:?}");
    assert_eq!(options.body["publicKey"]["rp"]["id"], "localhost");
    assert_eq!(options.body["publicKey"]["user"]["name"], "admin");
    let mut phisher = SoftAuthenticator::new(&format!("https://mamori-login.example:{port}"));
    let refused = admin
        .post("/api/me/passkeys", json!({"name": "evil", "credential": phisher.register(&options.body)}));
    assert_eq!((refused.status, refused.body["error"].as_str()), (400, Some("bad_passkey")), "{refused:?}");
    // The options were used up by that attempt.
    let mut key = SoftAuthenticator::new(&origin);
    let stale =
        admin.post("/api/me/passkeys", json!({"name": "PC", "credential": key.register(&options.body)}));
    assert_eq!(stale.body["error"], "registration_expired", "{stale:?}");

    let options = admin.post("/api/me/passkeys/options", json!({}));
    let no_name =
        admin.post("/api/me/passkeys", json!({"name": " ", "credential": key.register(&options.body)}));
    assert_eq!(no_name.body["error"], "bad_name");
    let options = admin.post("/api/me/passkeys/options", json!({}));
    let added = admin.post(
        "/api/me/passkeys",
        json!({"name": "ナースステーションPC", "credential": key.register(&options.body)}),
    );
    assert_eq!(added.status, 200, "{added:?}");
    let listed = added.body["passkeys"].as_array().unwrap().clone();
    assert_eq!((listed.len(), listed[0]["name"].as_str()), (1, Some("ナースステーションPC")));
    // The same credential cannot be registered twice: excludeCredentials lists it for real
    // authenticators, and the server refuses it anyway (across accounts, the store's unique
    // credential id does: see mamori-store).
    let options = admin.post("/api/me/passkeys/options", json!({}));
    let excluded = options.body["publicKey"]["excludeCredentials"].as_array().map(Vec::len);
    assert_eq!(excluded, Some(1), "{options:?}");
    let twice =
        admin.post("/api/me/passkeys", json!({"name": "again", "credential": key.register(&options.body)}));
    assert_eq!((twice.status, twice.body["error"].as_str()), (400, Some("bad_passkey")), "{twice:?}");
    assert_eq!(admin.get("/api/users").body["users"][0]["passkeys"], 1);

    // Password, then the passkey: a session, no code typed.
    let login = |console: &Console| {
        let first = console.post("/api/login", json!({"username": "admin", "password": password}));
        assert_eq!(first.body["stage"], "totp", "{first:?}");
        assert!(first.body["passkey"]["publicKey"]["challenge"].is_string(), "passkey offered: {first:?}");
        first.body
    };
    let browser = Console::new(&site, &base);
    let offer = login(&browser);
    assert_eq!(offer["passkey"]["publicKey"]["rpId"], "localhost");
    assert_eq!(offer["passkey"]["publicKey"]["userVerification"], "required");
    let assertion = key.assert(&offer["passkey"]);
    let ok =
        browser.post("/api/login/passkey", json!({"challenge": offer["challenge"], "credential": assertion}));
    assert_eq!(ok.status, 200, "{ok:?}");
    assert!(ok.headers.get("set-cookie").is_some());
    assert_eq!(ok.body["user"]["username"], "admin");

    // Replays: the same answer again (the challenge is single use), and on a new login.
    let again =
        browser.post("/api/login/passkey", json!({"challenge": offer["challenge"], "credential": assertion}));
    assert_eq!(again.body["error"], "challenge_expired", "{again:?}");
    let failures = |admin: &Console| admin.get("/api/users").body["users"][0]["failures"].as_u64();
    let attempt = |auth: &mut SoftAuthenticator, old: Option<&Value>| {
        let offer = login(&browser);
        let answer = old.cloned().unwrap_or_else(|| auth.assert(&offer["passkey"]));
        browser.post("/api/login/passkey", json!({"challenge": offer["challenge"], "credential": answer}))
    };
    let replayed = attempt(&mut key, Some(&assertion));
    assert_eq!(
        (replayed.status, replayed.body["error"].as_str()),
        (401, Some("bad_passkey")),
        "{replayed:?}"
    );
    // A phishing page relaying the ceremony: the browser puts its own origin in.
    key.origin = "https://mamori-login.example".into();
    let phished = attempt(&mut key, None);
    assert_eq!(phished.body["error"], "bad_passkey", "{phished:?}");
    key.origin = origin.clone();
    // An authenticator that only checked presence, not the user.
    key.verify_user = false;
    let unverified = attempt(&mut key, None);
    assert_eq!(unverified.body["error"], "bad_passkey", "{unverified:?}");
    key.verify_user = true;
    // A clone of the key whose counter lags behind the original's.
    let counter = key.counter;
    key.counter = 1;
    let cloned = attempt(&mut key, None);
    assert_eq!(cloned.body["error"], "bad_passkey", "{cloned:?}");
    key.counter = counter;
    assert_eq!(failures(&admin), Some(4), "every refused passkey counts for the lockout");
    // The real key still works and clears the count.
    let back = attempt(&mut key, None);
    assert_eq!(back.status, 200, "{back:?}");
    assert_eq!(failures(&admin), Some(0));

    // The code still works for the same account.
    let totp = Console::new(&site, &base);
    let first = login(&totp);
    let by_code =
        totp.post("/api/login/totp", json!({"challenge": first["challenge"], "code": code(&secret, 1)}));
    assert_eq!(by_code.status, 200, "{by_code:?}");
    // A login that was not offered a passkey cannot be finished with one.
    let mut nurse = Console::new(&site, &base);
    assert_eq!(
        admin
            .post(
                "/api/users",
                json!({"username": "nurse", "role": "operator", "password": OPERATOR_PASSWORD})
            )
            .status,
        200
    );
    let nurse_secret = nurse.login("nurse", OPERATOR_PASSWORD, None, 0);
    let nurse_first = nurse.post("/api/login", json!({"username": "nurse", "password": OPERATOR_PASSWORD}));
    assert!(nurse_first.body.get("passkey").is_none(), "no passkey, no offer: {nurse_first:?}");
    let stray = nurse.post(
        "/api/login/passkey",
        json!({"challenge": nurse_first.body["challenge"], "credential": key.assert(&offer["passkey"])}),
    );
    assert_eq!(stray.body["error"], "no_passkey", "{stray:?}");
    // An admin's second-factor reset takes the nurse's passkey away with the TOTP secret.
    let mut nurse_key = SoftAuthenticator::new(&origin);
    let options = nurse.post("/api/me/passkeys/options", json!({}));
    assert_eq!(
        nurse
            .post("/api/me/passkeys", json!({"name": "k", "credential": nurse_key.register(&options.body)}))
            .status,
        200
    );
    assert_eq!(admin.post("/api/users/nurse/reset-totp", json!({})).status, 200);
    let after_reset = Console::new(&site, &base)
        .post("/api/login", json!({"username": "nurse", "password": OPERATOR_PASSWORD}));
    assert_eq!(after_reset.body["stage"], "totp_setup");
    assert!(after_reset.body.get("passkey").is_none());
    let _ = nurse_secret;

    // Removing the passkey: no more offers; someone else's id is not found.
    let id = listed[0]["id"].as_i64().unwrap();
    assert_eq!(
        nurse.delete(&format!("/api/me/passkeys/{id}")).status,
        401,
        "the reset ended the nurse's session"
    );
    let removed = admin.delete(&format!("/api/me/passkeys/{id}"));
    assert_eq!(removed.status, 200, "{removed:?}");
    assert_eq!(removed.body["passkeys"].as_array().map(Vec::len), Some(0));
    assert_eq!(admin.delete(&format!("/api/me/passkeys/{id}")).status, 404);
    let plain =
        Console::new(&site, &base).post("/api/login", json!({"username": "admin", "password": password}));
    assert!(plain.body.get("passkey").is_none(), "{plain:?}");

    // All of it is in the audit log.
    let audit = admin.get("/api/audit?limit=1000").body["records"].clone();
    let has = |action: &str, detail: &dyn Fn(&Value) -> bool| {
        audit.as_array().unwrap().iter().any(|r| r["action"] == action && detail(&r["detail"]))
    };
    assert!(has("passkey.added", &|d| d["name"] == "ナースステーションPC"));
    assert!(has("passkey.refused", &|_| true));
    assert!(has("passkey.removed", &|d| d["id"] == id));
    assert!(has("login.success", &|d| d["factor"] == "passkey"));
    assert!(has("login.success", &|d| d["factor"] == "totp"));
    assert!(has("login.failure", &|d| d["step"] == "passkey"));
}
