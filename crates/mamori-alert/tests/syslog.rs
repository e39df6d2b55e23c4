//! Syslog CEF to real sockets on 127.0.0.1: a UDP datagram, TCP and TLS with octet counting.

mod common;

use common::{sample_alert, TestPki};
use mamori_alert::{Delivery, Dispatcher, Settings, SyslogTarget, SyslogTransport};
use tokio::io::AsyncReadExt;

fn settings(address: String, transport: SyslogTransport, ca_file: Option<std::path::PathBuf>) -> Settings {
    Settings {
        syslog: vec![SyslogTarget { name: "siem".into(), address, transport, ca_file }],
        ..Settings::default()
    }
}

/// The CEF of `common::sample_alert`, spelled out: `|` escaped in the header, `\`, `=` and the
/// line break escaped in the extension.
fn expected_cef() -> String {
    format!(
        "CEF:0|mamori|mamori|{}|ransom.mass-encrypt|ランサムウェアの疑い \\| 暗号化|10|rt=1748736000000 \
         externalId=alert-0001 dhost=ward3-pc cat=ransomware \
         msg=C:\\\\Users\\\\nurse 配下で 300 件のファイルが暗号化されました。\\n拡張子\\=.locked \
         cs1Label=consoleUrl cs1=https://mamori.hospital.example.jp/alerts/alert-0001",
        env!("CARGO_PKG_VERSION")
    )
}

/// Checks an RFC 5424 message carrying the sample alert and returns its HOSTNAME.
fn check_rfc5424(message: &str) -> String {
    let fields: Vec<&str> = message.splitn(8, ' ').collect();
    assert_eq!(fields[0], "<34>1", "facility auth (4), severity critical (2): {message}");
    assert_eq!(fields[1], "2025-06-01T00:00:00.000Z");
    assert!(!fields[2].is_empty() && fields[2].is_ascii());
    assert_eq!(&fields[3..7], ["mamori", "-", "alert", "-"]);
    assert_eq!(fields[7], expected_cef());
    assert!(!message.contains('\n'));
    fields[2].to_string()
}

#[tokio::test]
async fn udp_sends_one_rfc5424_datagram_with_escaped_cef() {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let address = socket.local_addr().unwrap().to_string();
    let dispatcher = Dispatcher::new(&settings(address, SyslogTransport::Udp, None));
    dispatcher.deliver(&Delivery::Syslog { name: "siem".into() }, &sample_alert()).await.unwrap();
    let mut buf = vec![0u8; 65536];
    let (n, _) = tokio::time::timeout(std::time::Duration::from_secs(5), socket.recv_from(&mut buf))
        .await
        .expect("no datagram")
        .unwrap();
    let message = std::str::from_utf8(&buf[..n]).unwrap();
    check_rfc5424(message);
}

/// Reads one connection to its end and splits the octet-counted frames.
fn frames(mut data: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let space = data.iter().position(|&b| b == b' ').expect("no length prefix");
        let len: usize = std::str::from_utf8(&data[..space]).unwrap().parse().unwrap();
        let body = &data[space + 1..space + 1 + len];
        out.push(String::from_utf8(body.to_vec()).unwrap());
        data = &data[space + 1 + len..];
    }
    out
}

#[tokio::test]
async fn tcp_uses_octet_counting_in_bytes() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut data = Vec::new();
        socket.read_to_end(&mut data).await.unwrap();
        data
    });
    let dispatcher = Dispatcher::new(&settings(address, SyslogTransport::Tcp, None));
    dispatcher.deliver(&Delivery::Syslog { name: "siem".into() }, &sample_alert()).await.unwrap();
    let data = server.await.unwrap();
    let frames = frames(&data);
    assert_eq!(frames.len(), 1);
    // The length counts bytes of UTF-8 (the title and summary are Japanese), not characters.
    let prefix = format!("{} ", frames[0].len());
    assert!(data.starts_with(prefix.as_bytes()));
    assert!(frames[0].len() > frames[0].chars().count());
    check_rfc5424(&frames[0]);
}

#[tokio::test]
async fn tls_carries_the_same_frames_and_refuses_an_untrusted_collector() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = tokio_rustls::TlsAcceptor::from(pki.server_config());
    let server = tokio::spawn(async move {
        let mut received = Vec::new();
        // First the trusted client, then the untrusted one (whose handshake fails).
        for _ in 0..2 {
            let (tcp, _) = listener.accept().await.unwrap();
            if let Ok(mut tls) = acceptor.accept(tcp).await {
                let mut data = Vec::new();
                tls.read_to_end(&mut data).await.unwrap();
                received.push(data);
            }
        }
        received
    });
    let address = format!("localhost:{port}");
    let trusted =
        Dispatcher::new(&settings(address.clone(), SyslogTransport::Tls, Some(pki.ca_path.clone())));
    trusted.deliver(&Delivery::Syslog { name: "siem".into() }, &sample_alert()).await.unwrap();

    let untrusted = Dispatcher::new(&settings(address, SyslogTransport::Tls, None));
    let err =
        untrusted.deliver(&Delivery::Syslog { name: "siem".into() }, &sample_alert()).await.unwrap_err();
    assert!(err.to_string().contains("TLS handshake failed: certificate not trusted"), "{err}");

    let received = server.await.unwrap();
    assert_eq!(received.len(), 1);
    let frames = frames(&received[0]);
    assert_eq!(frames.len(), 1);
    check_rfc5424(&frames[0]);
}
