//! Alerting through a real manager to a real mail server (aiosmtpd on loopback, STARTTLS and
//! AUTH, its certificate from a CA given as `ca_file`): settings over the console API with the
//! password never returned, a test mail, a critical detection mailed in Japanese, the monthly
//! report mailed as a PDF attachment, and a wrong password reported without the password.
//! Skips with a message when Debian's python3-aiosmtpd is missing.

mod common;

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::console::*;
use common::fleet::*;
use serde_json::{json, Value};

const PYTHON: &str = "/usr/bin/python3";
const SMTP_USER: &str = "alerts@hospital.example";
const SMTP_PASSWORD: &str = "relay-secret-Pa55";

struct MailServer {
    child: Child,
    port: u16,
    maildir: PathBuf,
}

impl Drop for MailServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl MailServer {
    fn mails(&self) -> Vec<Value> {
        let mut out: Vec<(u64, Value)> = std::fs::read_dir(&self.maildir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                    .map(|e| {
                        let n = e.path().file_stem().unwrap().to_str().unwrap().parse().unwrap_or(0);
                        (n, serde_json::from_str(&std::fs::read_to_string(e.path()).unwrap()).unwrap())
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by_key(|(n, _)| *n);
        out.into_iter().map(|(_, v)| v).collect()
    }
}

fn start_mail_server(dir: &Path) -> Option<(MailServer, PathBuf)> {
    let importable =
        Command::new(PYTHON).args(["-c", "import aiosmtpd"]).output().is_ok_and(|o| o.status.success());
    if !importable {
        eprintln!("SKIPPED: {PYTHON} cannot import aiosmtpd (Debian package python3-aiosmtpd)");
        return None;
    }
    // A CA of the test's own for the relay's certificate.
    let (ca, _) = mamori_pki::Ca::load_or_create(&dir.join("relay-ca"), "relay test CA").unwrap();
    let leaf = ca.issue_server(&["127.0.0.1".to_string()], Duration::from_secs(3600)).unwrap();
    let (cert, key, ca_file) = (dir.join("relay.crt"), dir.join("relay.key"), dir.join("relay-ca.pem"));
    std::fs::write(&cert, format!("{}{}", leaf.cert_pem, ca.cert_pem())).unwrap();
    std::fs::write(&key, &leaf.key_pem).unwrap();
    std::fs::write(&ca_file, ca.cert_pem()).unwrap();
    let work = dir.join("smtp");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../mamori-alert/tests/smtp_server.py");
    let mut child = Command::new(PYTHON)
        .arg(script)
        .args([
            work.to_str().unwrap(),
            cert.to_str().unwrap(),
            key.to_str().unwrap(),
            SMTP_USER,
            SMTP_PASSWORD,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start aiosmtpd");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let port = line.trim().strip_prefix("ready ").expect(&line).split(' ').next().unwrap().parse().unwrap();
    Some((MailServer { child, port, maildir: work.join("mail") }, ca_file))
}

#[test]
fn alerts_tests_and_reports_are_mailed_over_starttls_with_auth() {
    let site = Site::new();
    let Some((mail, ca_file)) = start_mail_server(site.dir.path()) else { return };
    let rules = site.dir.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(
        rules.join("critical.yml"),
        "title: ランサムウェアの疑い (検証用)\nid: 11111111-0000-4000-8000-00000000a1e7\nstatus: test\nlogsource:\n    \
         product: linux\n    service: sshd\ndetection:\n    selection:\n        event.outcome: failure\n    \
         condition: selection\nlevel: critical\n",
    )
    .unwrap();
    let tcp = format!("127.0.0.1:{}", free_port());
    let rules_arg = rules.display().to_string();
    let (_server, base) = start_with_console(&site, &["--syslog-tcp", &tcp, "--log-rules", &rules_arg]);
    let mut admin = Console::new(&site, &base);
    admin.login("admin", &initial_admin_password(&site), None, 0);

    let mut settings = json!({
        "smtp": {"host": "127.0.0.1", "port": mail.port, "security": "starttls", "username": SMTP_USER,
                 "password": SMTP_PASSWORD, "from": "mamori <alerts@hospital.example>", "ca_file": ca_file},
        "routes": [{"min_severity": "high", "email": ["it@hospital.example"]}],
        "digest": {"enabled": true, "hour_local": 8, "email": ["jimu@hospital.example"]},
        "lang": "ja",
    });
    let put = admin.put("/api/alerting", settings.clone());
    assert_eq!(put.status, 200, "{put:?}");
    let shown = admin.get("/api/alerting").body;
    assert_eq!(shown["settings"]["smtp"]["password_set"], true);
    assert!(!shown.to_string().contains(SMTP_PASSWORD), "the password is never returned: {shown}");
    // Saving the settings as shown (without the password) keeps the password.
    assert_eq!(admin.put("/api/alerting", shown["settings"].clone()).status, 200);

    let test = admin
        .post("/api/alerting/test", json!({"channel": {"channel": "email", "to": ["it@hospital.example"]}}));
    assert_eq!(test.body["ok"], true, "{test:?}");
    wait_for("the test mail", Duration::from_secs(20), || !mail.mails().is_empty());
    assert!(mail.mails()[0]["authenticated"].as_bool().unwrap());

    // A critical detection → a Japanese mail to the route's recipient.
    let now = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap();
    let line = format!("<38>1 {now} emr-db01 sshd 1 - - Failed password for root from 10.9.8.7 port 5 ssh2");
    std::net::TcpStream::connect(&tcp)
        .unwrap()
        .write_all(format!("{} {line}", line.len()).as_bytes())
        .unwrap();
    wait_for("the alert mail", Duration::from_secs(30), || mail.mails().len() >= 2);
    let alert = mail.mails()[1].clone();
    assert_eq!(alert["rcpt_tos"], json!(["it@hospital.example"]));
    let subject = alert["subject"].as_str().unwrap();
    assert!(subject.contains("重大") && subject.contains("ランサムウェアの疑い"), "{subject}");
    assert!(alert["body"].as_str().unwrap().contains("emr-db01"), "{alert}");

    // The monthly report, as a PDF attachment, to the digest recipients.
    let now = time::OffsetDateTime::now_utc().to_offset(time::UtcOffset::from_hms(9, 0, 0).unwrap());
    let month = format!("{:04}-{:02}", now.year(), now.month() as u8);
    let sent = admin.post("/api/reports/monthly/send", json!({"month": month, "lang": "ja"}));
    assert_eq!(sent.body["sent_to"], 1, "{sent:?}");
    wait_for("the report mail", Duration::from_secs(30), || mail.mails().len() >= 3);
    let report = mail.mails()[2].clone();
    assert_eq!(report["rcpt_tos"], json!(["jimu@hospital.example"]));
    assert!(report["subject"].as_str().unwrap().contains("月次セキュリティレポート"));
    let raw = report["raw"].as_str().unwrap();
    assert!(
        raw.contains("application/pdf") && raw.contains(&format!("mamori-report-{month}.pdf")),
        "{raw:.2000}"
    );

    // A wrong password: the failure says so, without the password.
    settings["smtp"]["password"] = json!("wrong-secret-9");
    assert_eq!(admin.put("/api/alerting", settings).status, 200);
    let failed = admin
        .post("/api/alerting/test", json!({"channel": {"channel": "email", "to": ["it@hospital.example"]}}));
    assert_eq!(failed.body["ok"], false);
    let error = failed.body["error"].as_str().unwrap();
    assert!(error.contains("535") || error.contains("authentication"), "{error}");
    assert!(!error.contains("wrong-secret-9"));
    let audit = admin.get("/api/audit?limit=50").body.to_string();
    assert!(audit.contains("alerting.test") && audit.contains("report.send"));
    assert!(
        !audit.contains(SMTP_PASSWORD) && !audit.contains("wrong-secret-9"),
        "no password in the audit log"
    );
}
