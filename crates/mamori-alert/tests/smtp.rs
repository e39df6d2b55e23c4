//! Mail against real aiosmtpd servers on 127.0.0.1 (STARTTLS and implicit TLS, both with AUTH),
//! started once by `tests/smtp_server.py`. Skipped, with a message, without python3-aiosmtpd.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use common::{sample_alert, TestPki};
use mamori_alert::{
    Delivery, DeliveryError, Dispatcher, Lang, Route, Router, Settings, SmtpSecurity, SmtpSettings,
};
use mamori_proto::Severity;

const PYTHON: &str = "/usr/bin/python3";
const USER: &str = "alerts@hospital.example.jp";
const PASSWORD: &str = "Tr0ub4dor&3-kanri";

struct Servers {
    starttls_port: u16,
    tls_port: u16,
    /// STARTTLS with AUTH LOGIN only, like Microsoft 365.
    login_only_port: u16,
    workdir: PathBuf,
    ca_path: PathBuf,
    /// Kept so its stdin stays open; the server exits when this process does.
    _child: Mutex<Child>,
}

fn servers() -> Option<&'static Servers> {
    static SERVERS: OnceLock<Option<Servers>> = OnceLock::new();
    SERVERS.get_or_init(start_servers).as_ref()
}

fn start_servers() -> Option<Servers> {
    let importable = Command::new(PYTHON)
        .args(["-c", "import aiosmtpd"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !importable {
        eprintln!("SKIPPED: {PYTHON} cannot import aiosmtpd (Debian: apt-get install python3-aiosmtpd)");
        return None;
    }
    // The server removes this directory when it stops.
    let workdir = tempfile::tempdir().unwrap().keep();
    let pki = TestPki::new(&workdir);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/smtp_server.py");
    let mut child = Command::new(PYTHON)
        .arg(script)
        .arg(&workdir)
        .arg(&pki.cert_path)
        .arg(&pki.key_path)
        .args([USER, PASSWORD])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(20)).expect("the SMTP test server did not start");
    let ports: Vec<u16> =
        line.trim().strip_prefix("ready ").expect(&line).split(' ').map(|p| p.parse().unwrap()).collect();
    Some(Servers {
        starttls_port: ports[0],
        tls_port: ports[1],
        login_only_port: ports[2],
        ca_path: pki.ca_path.clone(),
        workdir,
        _child: Mutex::new(child),
    })
}

fn smtp_settings(servers: &Servers, security: SmtpSecurity) -> SmtpSettings {
    SmtpSettings {
        host: "localhost".into(),
        port: if security == SmtpSecurity::Tls { servers.tls_port } else { servers.starttls_port },
        security,
        username: Some(USER.into()),
        password: Some(PASSWORD.into()),
        from: format!("mamori <{USER}>"),
        ca_file: Some(servers.ca_path.clone()),
        timeout_s: 5,
    }
}

fn settings_with(smtp: SmtpSettings) -> Settings {
    Settings { smtp: Some(smtp), ..Settings::default() }
}

/// The message the server recorded for `recipient`, as decoded by Python's email package.
fn received_for(servers: &Servers, recipient: &str) -> Vec<serde_json::Value> {
    let dir = servers.workdir.join("mail");
    let Ok(entries) = std::fs::read_dir(&dir) else { return Vec::new() };
    entries
        .filter_map(|e| {
            let path = e.ok()?.path();
            if path.extension()? != "json" {
                return None;
            }
            let record: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
            record["rcpt_tos"].as_array()?.iter().any(|r| r == recipient).then_some(record)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_with_auth_delivers_a_japanese_alert_that_decodes() {
    let Some(servers) = servers() else { return };
    let dispatcher = Dispatcher::new(&settings_with(smtp_settings(servers, SmtpSecurity::Starttls)));
    let to = "joho-kanri+starttls@hospital.example.jp";
    let alert = sample_alert();
    dispatcher.deliver(&Delivery::Email { to: vec![to.into()] }, &alert).await.unwrap();

    let received = received_for(servers, to);
    assert_eq!(received.len(), 1, "{received:#?}");
    let mail = &received[0];
    assert_eq!(mail["listener"], "starttls");
    assert_eq!(mail["authenticated"], true);
    assert_eq!(mail["mail_from"], USER);
    assert_eq!(mail["subject"], "[mamori] 重大: ランサムウェアの疑い | 暗号化 (ward3-pc)");
    assert_eq!(mail["content_type"], "text/plain");
    assert_eq!(mail["charset"], "utf-8");
    // Mail lines end in CRLF on the wire; the decoder keeps them.
    let body = mail["body"].as_str().unwrap().replace("\r\n", "\n");
    assert!(body.contains("重要度: 重大"), "{body}");
    assert!(body.contains("発生日時: 2025-06-01 09:00:00 (UTC+09:00)"), "{body}");
    assert!(
        body.contains("C:\\Users\\nurse 配下で 300 件のファイルが暗号化されました。\n拡張子=.locked"),
        "{body}"
    );
    assert!(body.contains("https://mamori.hospital.example.jp/alerts/alert-0001"), "{body}");
    // On the wire the headers are ASCII: the subject travels as RFC 2047 encoded-words.
    let raw = mail["raw"].as_str().unwrap();
    let headers = &raw[..raw.find("\r\n\r\n").unwrap()];
    assert!(headers.is_ascii(), "{headers}");
    let subject = headers.lines().find(|l| l.starts_with("Subject: ")).unwrap();
    assert!(subject.contains("=?utf-8?b?"), "{headers}");
    assert!(headers.contains("Message-ID: <"), "{headers}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implicit_tls_with_auth_delivers_alert_and_digest() {
    let Some(servers) = servers() else { return };
    let to = "joho-kanri+tls@hospital.example.jp";
    let mut settings = settings_with(smtp_settings(servers, SmtpSecurity::Tls));
    settings.routes = vec![Route {
        min_severity: Severity::High,
        email: vec![to.into()],
        webhooks: vec![],
        syslog: vec![],
    }];
    settings.digest.enabled = true;
    settings.digest.hour_local = 9;
    settings.digest.email = vec![to.into()];
    assert_eq!(settings.validate(), Ok(()));

    let alert = sample_alert();
    let mut router = Router::new(settings.clone());
    let decision = router.route(&alert, alert.time_ms);
    let dispatcher = Dispatcher::new(&settings);
    for delivery in &decision.deliveries {
        dispatcher.deliver(delivery, &alert).await.unwrap();
    }
    // 09:00 JST is the alert's own time: the digest is due right away on a fresh router.
    let digest = router.take_digest(alert.time_ms).expect("digest due at 09:00 JST");
    dispatcher.send_digest(&digest).await.unwrap();

    let received = received_for(servers, to);
    assert_eq!(received.len(), 2, "{received:#?}");
    assert!(received.iter().all(|m| m["listener"] == "tls" && m["authenticated"] == true));
    let subjects: Vec<&str> = received.iter().map(|m| m["subject"].as_str().unwrap()).collect();
    assert!(subjects.contains(&"[mamori] 重大: ランサムウェアの疑い | 暗号化 (ward3-pc)"), "{subjects:?}");
    assert!(subjects.contains(&"[mamori] 日次ダイジェスト 2025-06-01: 警告 1 件"), "{subjects:?}");
    let digest_mail = received.iter().find(|m| m["subject"].as_str().unwrap().contains("日次")).unwrap();
    let body = digest_mail["body"].as_str().unwrap().replace("\r\n", "\n");
    assert!(body.contains("■ 重大 (1 件)"), "{body}");
    assert!(
        body.contains(
            "・ランサムウェアの疑い | 暗号化 [ransom.mass-encrypt]: 1 件 (通知 1 / 抑制 0 / 対象外 0)"
        ),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_reported_as_failed_authentication_without_the_password() {
    let Some(servers) = servers() else { return };
    let wrong = "Wr0ng-Passw0rd-xyz";
    for security in [SmtpSecurity::Starttls, SmtpSecurity::Tls] {
        let mut smtp = smtp_settings(servers, security);
        smtp.password = Some(wrong.into());
        let dispatcher = Dispatcher::new(&settings_with(smtp));
        let to = "joho-kanri+wrongpass@hospital.example.jp";
        let err =
            dispatcher.deliver(&Delivery::Email { to: vec![to.into()] }, &sample_alert()).await.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, DeliveryError::AuthRejected { .. }), "{err:?}");
        let port = if security == SmtpSecurity::Tls { servers.tls_port } else { servers.starttls_port };
        assert_eq!(
            text,
            format!(
                "mail relay localhost:{port}: authentication failed: AUTH rejected by server: \
                 535 5.7.8 Authentication credentials invalid"
            )
        );
        assert!(!text.contains(wrong) && !format!("{err:?}").contains(wrong), "{text}");
        assert!(!err.retryable());
        assert!(received_for(servers, to).is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_from_an_unknown_ca_is_a_tls_error() {
    let Some(servers) = servers() else { return };
    for security in [SmtpSecurity::Starttls, SmtpSecurity::Tls] {
        let mut smtp = smtp_settings(servers, security);
        smtp.ca_file = None;
        let dispatcher = Dispatcher::new(&settings_with(smtp));
        let err = dispatcher
            .deliver(&Delivery::Email { to: vec!["x@hospital.example.jp".into()] }, &sample_alert())
            .await
            .unwrap_err();
        assert!(matches!(err, DeliveryError::Tls { .. }), "{security:?}: {err:?}");
        let port = if security == SmtpSecurity::Tls { servers.tls_port } else { servers.starttls_port };
        assert_eq!(
            err.to_string(),
            format!(
                "mail relay localhost:{port}: TLS handshake failed: certificate not trusted: localhost's \
                 certificate is not signed by a trusted CA (for a site's own CA, set ca_file)"
            )
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_auth_is_refused_by_validation_and_at_delivery() {
    let Some(servers) = servers() else { return };
    let mut smtp = smtp_settings(servers, SmtpSecurity::None);
    smtp.host = "127.0.0.1".into();
    smtp.ca_file = None;
    let settings = settings_with(smtp);
    let problems = settings.validate().unwrap_err();
    assert!(problems.iter().any(|p| p.contains("AUTH over plaintext is refused")), "{problems:?}");

    // Even unvalidated settings never send the credentials in the clear.
    let to = "joho-kanri+plain@hospital.example.jp";
    let err = Dispatcher::new(&settings)
        .deliver(&Delivery::Email { to: vec![to.into()] }, &sample_alert())
        .await
        .unwrap_err();
    assert!(matches!(err, DeliveryError::NotConfigured { .. }), "{err:?}");
    assert!(err.to_string().contains("AUTH over plaintext is refused"), "{err}");
    assert!(received_for(servers, to).is_empty());
}

#[tokio::test]
async fn a_closed_port_is_connection_refused_and_a_silent_server_times_out() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let smtp = |port| SmtpSettings {
        host: "127.0.0.1".into(),
        port,
        security: SmtpSecurity::Starttls,
        username: None,
        password: None,
        from: "alerts@hospital.example.jp".into(),
        ca_file: None,
        timeout_s: 1,
    };
    let delivery = Delivery::Email { to: vec!["x@hospital.example.jp".into()] };
    let err = Dispatcher::new(&settings_with(smtp(closed_port)))
        .deliver(&delivery, &sample_alert())
        .await
        .unwrap_err();
    assert!(matches!(err, DeliveryError::ConnectionRefused { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("mail relay 127.0.0.1:{closed_port}: connection refused by 127.0.0.1:{closed_port}")
    );

    // Accepts, then says nothing: the greeting never comes.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let holder = tokio::spawn(async move {
        let (socket, _) = silent.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        drop(socket);
    });
    let started = std::time::Instant::now();
    let err = Dispatcher::new(&settings_with(smtp(silent_port)))
        .deliver(&delivery, &sample_alert())
        .await
        .unwrap_err();
    assert!(matches!(err, DeliveryError::Timeout { .. }), "{err:?}");
    assert!(err.to_string().contains("timed out after 1 s during waiting for the server greeting"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
    holder.abort();
}

#[test]
fn english_settings_are_honoured_in_the_rendered_mail() {
    let mut alert = sample_alert();
    alert.severity = Severity::High;
    let mail = mamori_alert::render::alert_mail(&alert, Lang::En, 540);
    assert_eq!(mail.subject, "[mamori] High: ランサムウェアの疑い | 暗号化 (ward3-pc)");
    assert!(mail
        .body
        .contains("Details in the console:\nhttps://mamori.hospital.example.jp/alerts/alert-0001"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implicit_tls_to_a_starttls_port_says_the_server_did_not_answer_with_tls() {
    let Some(servers) = servers() else { return };
    let mut smtp = smtp_settings(servers, SmtpSecurity::Tls);
    smtp.port = servers.starttls_port;
    let err = Dispatcher::new(&settings_with(smtp))
        .deliver(&Delivery::Email { to: vec!["x@hospital.example.jp".into()] }, &sample_alert())
        .await
        .unwrap_err();
    assert!(matches!(err, DeliveryError::Tls { .. }), "{err:?}");
    assert!(err.to_string().contains("did not answer with TLS"), "{err}");
}

/// A relay that offers AUTH but no STARTTLS: the credentials must not be sent.
#[tokio::test]
async fn a_relay_without_starttls_is_refused_before_any_credentials_are_sent() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let (read, mut write) = socket.into_split();
        let mut lines = tokio::io::BufReader::new(read).lines();
        write.write_all(b"220 relay.example.jp ESMTP\r\n").await.unwrap();
        let mut seen = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            seen.push(line.clone());
            let answer: &[u8] = if line.starts_with("EHLO") {
                b"250-relay.example.jp\r\n250 AUTH PLAIN LOGIN\r\n"
            } else if line == "QUIT" {
                b"221 bye\r\n"
            } else {
                b"500 unexpected\r\n"
            };
            let _ = write.write_all(answer).await;
        }
        seen
    });
    let smtp = SmtpSettings {
        host: "127.0.0.1".into(),
        port,
        security: SmtpSecurity::Starttls,
        username: Some(USER.into()),
        password: Some(PASSWORD.into()),
        from: USER.into(),
        ca_file: None,
        timeout_s: 2,
    };
    let err = Dispatcher::new(&settings_with(smtp))
        .deliver(&Delivery::Email { to: vec!["x@hospital.example.jp".into()] }, &sample_alert())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not offer STARTTLS; refusing to send in plaintext"), "{err}");
    let seen = server.await.unwrap();
    assert!(seen[0].starts_with("EHLO "), "{seen:?}");
    assert!(!seen.iter().any(|l| l.starts_with("AUTH") || l.starts_with("MAIL")), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_offering_only_auth_login_like_microsoft_365_accepts_the_mail() {
    let Some(servers) = servers() else { return };
    let mut smtp = smtp_settings(servers, SmtpSecurity::Starttls);
    smtp.port = servers.login_only_port;
    let to = "joho-kanri+login@hospital.example.jp";
    let dispatcher = Dispatcher::new(&settings_with(smtp));
    dispatcher.send_test(&Delivery::Email { to: vec![to.into()] }).await.unwrap();
    let received = received_for(servers, to);
    assert_eq!(received.len(), 1, "{received:#?}");
    assert_eq!(received[0]["listener"], "login-only");
    assert_eq!(received[0]["authenticated"], true);
    assert_eq!(received[0]["subject"], "[mamori] 低: テスト通知");
}
