//! Webhooks against a real HTTPS server on 127.0.0.1 (axum over tokio-rustls, a test CA).

mod common;

use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use common::{sample_alert, TestPki};
use hyper_util::rt::TokioIo;
use mamori_alert::{Delivery, DeliveryError, Dispatcher, Lang, Settings, Webhook, WebhookFormat};
use serde_json::Value;
use tower::ServiceExt;

type Received = Arc<Mutex<Vec<(String, String, Value)>>>;

struct HookServer {
    port: u16,
    received: Received,
    _dir: tempfile::TempDir,
    pki: TestPki,
}

async fn start() -> HookServer {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path());
    let received: Received = Arc::default();
    let record = |status: StatusCode, answer: &'static str| {
        let received = received.clone();
        move |uri: axum::http::Uri, headers: HeaderMap, body: String| async move {
            let content_type =
                headers.get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
            received.lock().unwrap().push((
                uri.path().to_string(),
                content_type,
                serde_json::from_str(&body).unwrap(),
            ));
            (status, answer)
        }
    };
    let app = axum::Router::new()
        .route("/hooks/json", post(record(StatusCode::OK, "")))
        .route("/hooks/slack/T000/B000/XXXX", post(record(StatusCode::OK, "ok")))
        .route("/hooks/teams/workflows/sig=SECRET", post(record(StatusCode::ACCEPTED, "")))
        .route(
            "/hooks/broken/SECRET-TOKEN",
            post(record(StatusCode::INTERNAL_SERVER_ERROR, "internal trouble\nretry later")),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = tokio_rustls::TlsAcceptor::from(pki.server_config());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let acceptor = acceptor.clone();
            let app = app.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    app.clone().oneshot(req.map(axum::body::Body::new))
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), svc).await;
            });
        }
    });
    HookServer { port, received, _dir: dir, pki }
}

impl HookServer {
    fn webhook(&self, name: &str, path: &str, format: WebhookFormat, trusted: bool) -> Webhook {
        Webhook {
            name: name.into(),
            url: format!("https://localhost:{}{path}", self.port),
            format,
            ca_file: trusted.then(|| self.pki.ca_path.clone()),
        }
    }

    fn body_for(&self, path: &str) -> (String, Value) {
        let received = self.received.lock().unwrap();
        let matching: Vec<_> = received.iter().filter(|(p, _, _)| p == path).collect();
        assert_eq!(matching.len(), 1, "{received:#?}");
        (matching[0].1.clone(), matching[0].2.clone())
    }
}

#[tokio::test]
async fn json_slack_and_teams_payloads_arrive_with_their_structure() {
    let server = start().await;
    let settings = Settings {
        webhooks: vec![
            server.webhook("script", "/hooks/json", WebhookFormat::Json, true),
            server.webhook("slack", "/hooks/slack/T000/B000/XXXX", WebhookFormat::Slack, true),
            server.webhook("teams", "/hooks/teams/workflows/sig=SECRET", WebhookFormat::Teams, true),
        ],
        lang: Lang::Ja,
        ..Settings::default()
    };
    assert_eq!(settings.validate(), Ok(()));
    let dispatcher = Dispatcher::new(&settings);
    let alert = sample_alert();
    for name in ["script", "slack", "teams"] {
        dispatcher.deliver(&Delivery::Webhook { name: name.into() }, &alert).await.unwrap();
    }

    let (content_type, json) = server.body_for("/hooks/json");
    assert_eq!(content_type, "application/json");
    assert_eq!(json["type"], "mamori.alert");
    assert_eq!(json["time"], "2025-06-01T00:00:00.000Z");
    assert_eq!(json["text"], "[重大] ランサムウェアの疑い | 暗号化 (ward3-pc)");
    let back: mamori_alert::Alert = serde_json::from_value(json["alert"].clone()).unwrap();
    assert_eq!(back, alert);
    assert_eq!(json["alert"]["severity"], "critical");

    let (_, slack) = server.body_for("/hooks/slack/T000/B000/XXXX");
    assert_eq!(slack["text"], "[重大] ランサムウェアの疑い | 暗号化 (ward3-pc)");
    let blocks = slack["blocks"].as_array().unwrap();
    let kinds: Vec<&str> = blocks.iter().map(|b| b["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["header", "section", "section", "actions"]);
    assert_eq!(blocks[0]["text"]["type"], "plain_text");
    assert_eq!(blocks[1]["text"]["text"], alert.summary);
    let fields: Vec<&str> =
        blocks[2]["fields"].as_array().unwrap().iter().map(|f| f["text"].as_str().unwrap()).collect();
    assert_eq!(
        fields,
        [
            "*対象ホスト*\nward3-pc",
            "*発生日時*\n2025-06-01 09:00:00 (UTC+09:00)",
            "*検知ルール*\nransom.mass-encrypt",
            "*検知元*\nランサムウェア挙動検知"
        ]
    );
    assert_eq!(blocks[3]["elements"][0]["url"], alert.console_url.clone().unwrap());

    let (_, teams) = server.body_for("/hooks/teams/workflows/sig=SECRET");
    assert_eq!(teams["type"], "message");
    let attachment = &teams["attachments"][0];
    assert_eq!(attachment["contentType"], "application/vnd.microsoft.card.adaptive");
    let card = &attachment["content"];
    assert_eq!(card["type"], "AdaptiveCard");
    assert_eq!(card["version"], "1.4");
    assert_eq!(card["body"][0]["type"], "TextBlock");
    assert_eq!(card["body"][0]["text"], "[重大] ランサムウェアの疑い | 暗号化 (ward3-pc)");
    assert_eq!(card["body"][0]["color"], "Attention");
    assert_eq!(card["body"][1]["text"], alert.summary);
    assert_eq!(card["body"][2]["type"], "FactSet");
    assert_eq!(card["body"][2]["facts"][0], serde_json::json!({"title": "対象ホスト", "value": "ward3-pc"}));
    assert_eq!(card["actions"][0]["type"], "Action.OpenUrl");
    assert_eq!(card["actions"][0]["url"], alert.console_url.clone().unwrap());
}

#[tokio::test]
async fn a_500_answer_names_the_status_and_hides_the_url_secret() {
    let server = start().await;
    let settings = Settings {
        webhooks: vec![server.webhook("broken", "/hooks/broken/SECRET-TOKEN", WebhookFormat::Json, true)],
        ..Settings::default()
    };
    let err = Dispatcher::new(&settings)
        .deliver(&Delivery::Webhook { name: "broken".into() }, &sample_alert())
        .await
        .unwrap_err();
    assert!(matches!(err, DeliveryError::HttpStatus { status: 500, .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "webhook \"broken\" (localhost): HTTP 500 Internal Server Error from localhost: internal trouble retry later"
    );
    assert!(err.retryable());
    assert!(!format!("{err:?}").contains("SECRET-TOKEN"));
}

#[tokio::test]
async fn untrusted_certificates_refused_ports_and_unknown_names_are_told_apart() {
    let server = start().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let settings = Settings {
        webhooks: vec![
            server.webhook("untrusted", "/hooks/json", WebhookFormat::Json, false),
            Webhook {
                name: "down".into(),
                url: format!("https://127.0.0.1:{closed_port}/hook"),
                format: WebhookFormat::Slack,
                ca_file: None,
            },
        ],
        ..Settings::default()
    };
    let dispatcher = Dispatcher::new(&settings);
    let alert = sample_alert();

    let err = dispatcher.deliver(&Delivery::Webhook { name: "untrusted".into() }, &alert).await.unwrap_err();
    assert!(matches!(err, DeliveryError::Tls { .. }), "{err:?}");
    assert!(err.to_string().contains("certificate not trusted"), "{err}");
    assert!(server.received.lock().unwrap().is_empty());

    let err = dispatcher.deliver(&Delivery::Webhook { name: "down".into() }, &alert).await.unwrap_err();
    assert_eq!(
        err,
        DeliveryError::ConnectionRefused {
            target: "webhook \"down\" (127.0.0.1)".into(),
            address: format!("127.0.0.1:{closed_port}")
        }
    );

    let err = dispatcher.deliver(&Delivery::Webhook { name: "nobody".into() }, &alert).await.unwrap_err();
    assert!(matches!(err, DeliveryError::NotConfigured { .. }), "{err:?}");
}

#[tokio::test]
async fn an_unreadable_ca_file_fails_only_its_own_webhook() {
    let server = start().await;
    let mut broken = server.webhook("broken-ca", "/hooks/json", WebhookFormat::Json, true);
    broken.ca_file = Some("/nonexistent/ca.pem".into());
    let settings = Settings {
        webhooks: vec![broken, server.webhook("fine", "/hooks/json", WebhookFormat::Json, true)],
        ..Settings::default()
    };
    let dispatcher = Dispatcher::new(&settings);
    let err = dispatcher.send_test(&Delivery::Webhook { name: "broken-ca".into() }).await.unwrap_err();
    assert!(matches!(err, DeliveryError::Setup { .. }), "{err:?}");
    assert!(err.to_string().contains("cannot read ca_file /nonexistent/ca.pem"), "{err}");
    dispatcher.send_test(&Delivery::Webhook { name: "fine".into() }).await.unwrap();
    let (_, json) = server.body_for("/hooks/json");
    assert_eq!(json["alert"]["title"], "テスト通知");
}
