//! The console end to end in a real headless Chromium (Debian's, driven by Playwright from
//! `tests/e2e/console.mjs`) against a real manager: log in with the password and a TOTP code,
//! see a detection that came in over syslog, isolate a host, verify the audit log, register a
//! passkey (Chromium's virtual authenticator) and log in with it, switch to
//! English. Screenshots are kept in `$CARGO_TARGET_DIR/console-artefacts/e2e` (or a temporary
//! directory). Skips with a message when node, chromium or playwright-core is missing.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use common::console::*;
use common::fleet::*;
use serde_json::json;

const TITLE: &str = "電子カルテ端末での不審なログイン失敗";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn missing_tools() -> Option<String> {
    let chromium = std::env::var("MAMORI_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        return Some(format!("{chromium} is not installed (Debian package chromium)"));
    }
    if std::process::Command::new("node").arg("--version").output().is_err() {
        return Some("node is not installed".into());
    }
    if !repo_root().join("tests/e2e/node_modules/playwright-core").exists() {
        return Some(
            "tests/e2e/node_modules/playwright-core is missing (scripts/setup.sh installs it)".into(),
        );
    }
    None
}

#[test]
fn log_in_see_a_detection_isolate_and_verify_the_audit_log_in_a_browser() {
    if let Some(why) = missing_tools() {
        eprintln!("SKIPPED the browser test: {why}");
        return;
    }
    let site = Site::new();
    let rules = site.dir.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(
        rules.join("e2e.yml"),
        format!(
            "title: {TITLE}\nid: 0b6f1e9a-0000-4000-8000-00000000e2e0\nstatus: test\nlogsource:\n    product: linux\n    \
             service: sshd\ndetection:\n    selection:\n        event.outcome: failure\n    condition: selection\nlevel: high\n"
        ),
    )
    .unwrap();
    let tcp = format!("127.0.0.1:{}", free_port());
    let rules_arg = rules.display().to_string();
    let (_server, base) = start_with_console(&site, &["--syslog-tcp", &tcp, "--log-rules", &rules_arg]);
    let agent_id = site.enroll("ward-pc-01");

    // The admin's first login sets up the authenticator; the browser then logs in for real.
    let password = initial_admin_password(&site);
    let mut admin = Console::new(&site, &base);
    let secret = admin.login("admin", &password, None, 0);
    let hostname = admin.get("/api/agents").body["agents"][0]["hostname"].as_str().unwrap().to_string();
    admin.post("/api/logout", json!({}));

    let now = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap();
    let line = format!(
        "<38>1 {now} {hostname} sshd 4242 - - Failed password for nurse from 10.20.30.40 port 50000 ssh2"
    );
    std::net::TcpStream::connect(&tcp)
        .unwrap()
        .write_all(format!("{} {line}", line.len()).as_bytes())
        .unwrap();

    let artefacts = match std::env::var("CARGO_TARGET_DIR") {
        Ok(dir) => Path::new(&dir).join("console-artefacts/e2e"),
        Err(_) => site.dir.path().join("artefacts"),
    };
    std::fs::create_dir_all(&artefacts).unwrap();
    let out = std::process::Command::new("node")
        .arg(repo_root().join("tests/e2e/console.mjs"))
        // As localhost: browsers only run passkeys on a DNS name (the script registers one with
        // Chromium's virtual authenticator and logs in with it).
        .env("MAMORI_URL", base.replace("127.0.0.1", "localhost"))
        .env("MAMORI_USER", "admin")
        .env("MAMORI_PASSWORD", &password)
        .env("MAMORI_TOTP_SECRET", &secret)
        .env("MAMORI_HOST", &hostname)
        .env("MAMORI_DETECTION_TITLE", TITLE)
        .env("MAMORI_ARTEFACTS", &artefacts)
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "the browser test failed (screenshots in {}): {stdout}",
        artefacts.display()
    );
    for shot in std::fs::read_dir(&artefacts).unwrap() {
        eprintln!("artefact: {}", shot.unwrap().path().display());
    }

    // What the browser did is real: the command is queued for the agent and audited.
    let store = site.store();
    let commands = store.list_commands(&agent_id, 10).unwrap();
    assert!(
        commands.iter().any(|c| c.action == "isolate" && c.reason.contains("console: admin")),
        "{commands:?}"
    );
    let audit = store.list_audit(None, 1000).unwrap();
    assert!(audit
        .iter()
        .any(|r| r.action == "agent.isolate" && r.actor == "user:admin" && r.target == agent_id));
    assert!(audit.iter().any(|r| r.action == "audit.verify" && r.detail.contains("\"ok\":true")));
    assert!(audit.iter().filter(|r| r.action == "login.success").count() >= 2);
}
