//! Shared by the delivery tests: a throwaway CA and a server certificate for `localhost` /
//! 127.0.0.1, and a sample alert.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mamori_alert::Alert;
use mamori_proto::Severity;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A CA and a server certificate it signed, written as PEM files into `dir`.
pub struct TestPki {
    pub ca_path: PathBuf,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestPki {
    pub fn new(dir: &Path) -> TestPki {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "mamori-alert test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);

        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();

        let pki = TestPki {
            ca_path: dir.join("ca.pem"),
            cert_path: dir.join("server.pem"),
            key_path: dir.join("server.key"),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        std::fs::write(&pki.ca_path, ca_cert.pem()).unwrap();
        std::fs::write(&pki.cert_path, &pki.cert_pem).unwrap();
        std::fs::write(&pki.key_path, &pki.key_pem).unwrap();
        pki
    }

    /// A rustls server configuration presenting the server certificate.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(self.cert_pem.as_bytes()).collect::<Result<_, _>>().unwrap();
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).unwrap();
        let config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .unwrap();
        Arc::new(config)
    }
}

/// A critical alert in Japanese, with characters every channel must escape.
pub fn sample_alert() -> Alert {
    Alert {
        id: "alert-0001".into(),
        time_ms: 1_748_736_000_000, // 2025-06-01T00:00:00Z, 09:00 in Japan
        severity: Severity::Critical,
        title: "ランサムウェアの疑い | 暗号化".into(),
        rule_id: "ransom.mass-encrypt".into(),
        host: Some("ward3-pc".into()),
        source: "ransomware".into(),
        summary: "C:\\Users\\nurse 配下で 300 件のファイルが暗号化されました。\n拡張子=.locked".into(),
        console_url: Some("https://mamori.hospital.example.jp/alerts/alert-0001".into()),
    }
}
