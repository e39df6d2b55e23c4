//! Tests, including real TLS handshakes over loopback. They live inside the crate so they can
//! use the internal helper that issues already-expired certificates.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::tls::{self, ClientAuth, RevocationCheck};
use crate::*;

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

fn new_ca(name: &str) -> (tempfile::TempDir, Ca) {
    let dir = tempfile::tempdir().unwrap();
    let (ca, created) = Ca::load_or_create(dir.path(), name).unwrap();
    assert!(created);
    (dir, ca)
}

fn server_cert(ca: &Ca) -> KeyAndCert {
    ca.issue_server(&["manager.test".to_string(), "127.0.0.1".to_string()], DAY).unwrap()
}

/// Enrolls a fresh device: returns its identity and the issued certificate info.
fn enroll(ca: &Ca) -> (KeyAndCert, CertInfo) {
    let key = DeviceKey::generate().unwrap();
    let device_id = new_device_id();
    let issued = ca.sign_csr(&key.csr_pem(&device_id).unwrap(), &device_id, DEFAULT_CLIENT_VALIDITY).unwrap();
    assert_eq!(issued.info.device_id.as_deref(), Some(device_id.as_str()));
    (KeyAndCert { key_pem: key.key_pem().to_string(), cert_pem: issued.cert_pem }, issued.info)
}

/// A server config for `ca` with a fresh server certificate for localhost.
fn server_for(
    ca: &Ca,
    auth: ClientAuth,
    is_revoked: RevocationCheck,
) -> std::sync::Arc<rustls::ServerConfig> {
    tls::server_config(ca.cert_der(), &server_cert(ca), auth, is_revoked).unwrap()
}

fn never_revoked() -> RevocationCheck {
    Arc::new(|_: &CertInfo| false)
}

struct Outcome {
    /// Ok(peer info seen by the server) if the server completed the handshake and echoed.
    server: Result<Option<CertInfo>, String>,
    /// Ok(echoed bytes) if the client completed the handshake and got the echo.
    client: Result<Vec<u8>, String>,
}

impl Outcome {
    fn assert_ok(&self) -> Option<CertInfo> {
        assert_eq!(self.client.as_deref(), Ok(&b"hello"[..]), "client failed: {:?}", self.client);
        self.server.clone().unwrap_or_else(|e| panic!("server failed: {e}"))
    }
    fn assert_refused(&self) {
        assert!(self.client.is_err(), "client unexpectedly succeeded");
        assert!(self.server.is_err(), "server unexpectedly succeeded");
    }
}

/// One connection over loopback: the client sends "hello", the server echoes it back.
async fn handshake(
    server_cfg: Arc<rustls::ServerConfig>,
    client_cfg: Arc<rustls::ClientConfig>,
    server_name: &str,
) -> Outcome {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut tls = TlsAcceptor::from(server_cfg).accept(tcp).await.map_err(|e| e.to_string())?;
        let info = tls::peer_info(tls.get_ref().1);
        let mut buf = [0u8; 5];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        tls.write_all(&buf).await.map_err(|e| e.to_string())?;
        tls.shutdown().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(info)
    });
    let name = rustls::pki_types::ServerName::try_from(server_name.to_string()).unwrap();
    let client = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let mut tls = TlsConnector::from(client_cfg).connect(name, tcp).await.map_err(|e| e.to_string())?;
        // In TLS 1.3 the client finishes its side before the server has judged the client
        // certificate, so a refusal shows up on the first read.
        tls.write_all(b"hello").await.map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        tls.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(buf)
    };
    let client = tokio::time::timeout(Duration::from_secs(10), client)
        .await
        .unwrap_or_else(|_| Err("client timed out".into()));
    let server = match tokio::time::timeout(Duration::from_secs(10), server).await {
        Ok(joined) => joined.unwrap(),
        Err(_) => Err("server timed out".into()),
    };
    Outcome { server, client }
}

#[tokio::test]
async fn happy_path_mtls_echo_and_peer_info() {
    let (_dir, ca) = new_ca("Mamori Test CA");
    let (identity, info) = enroll(&ca);
    let server = server_for(&ca, ClientAuth::Required, never_revoked());
    let client = tls::client_config(&ca.fingerprint(), Some(&identity)).unwrap();
    let seen = handshake(server, client, "manager.test").await.assert_ok().expect("peer info");
    assert_eq!(seen.device_id, info.device_id);
    assert_eq!(seen.serial_hex, info.serial_hex);
    assert_eq!(seen, info);
}

#[tokio::test]
async fn ip_literal_server_name_works() {
    let (_dir, ca) = new_ca("Mamori Test CA");
    let (identity, _) = enroll(&ca);
    let server = server_for(&ca, ClientAuth::Required, never_revoked());
    let client = tls::client_config(&ca.fingerprint(), Some(&identity)).unwrap();
    handshake(server, client, "127.0.0.1").await.assert_ok();
}

#[tokio::test]
async fn wrong_server_name_refused() {
    let (_dir, ca) = new_ca("Mamori Test CA");
    let (identity, _) = enroll(&ca);
    let server = server_for(&ca, ClientAuth::Required, never_revoked());
    let client = tls::client_config(&ca.fingerprint(), Some(&identity)).unwrap();
    handshake(server, client, "other.test").await.assert_refused();
}

#[test]
fn csr_requested_identity_is_ignored() {
    let (_dir, ca) = new_ca("Mamori Test CA");
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["admin.example".to_string()]).unwrap();
    params.subject_alt_names.push(rcgen::SanType::URI("urn:mamori:device:admin".try_into().unwrap()));
    params.distinguished_name.push(rcgen::DnType::CommonName, "admin");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();

    let issued = ca.sign_csr(&csr, "dev-42", DAY).unwrap();
    assert_eq!(issued.info.device_id.as_deref(), Some("dev-42"));

    let der = pem_to_der(&issued.cert_pem).unwrap();
    let (_, x509) = x509_parser::parse_x509_certificate(&der).unwrap();
    let cns: Vec<_> = x509.subject().iter_common_name().map(|c| c.as_str().unwrap().to_string()).collect();
    assert_eq!(cns, vec!["dev-42".to_string()]);
    let san = x509.subject_alternative_name().unwrap().unwrap();
    let names: Vec<String> = san.value.general_names.iter().map(|n| n.to_string()).collect();
    assert_eq!(names, vec!["URI(urn:mamori:device:dev-42)".to_string()]);
    let eku = x509.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth);
    assert!(!x509.is_ca());
    // The public key is the one from the CSR.
    assert_eq!(x509.public_key().raw, rcgen::PublicKeyData::subject_public_key_info(&key).as_slice());
}

#[test]
fn csr_with_bad_signature_rejected() {
    let (_dir, ca) = new_ca("Mamori Test CA");
    let key = DeviceKey::generate().unwrap();
    let csr = key.csr_pem("dev-1").unwrap();
    let mut der = <rustls::pki_types::CertificateSigningRequestDer<'_> as rustls::pki_types::pem::PemObject>::from_pem_slice(csr.as_bytes())
        .unwrap()
        .as_ref()
        .to_vec();
    // Flip a bit in the last byte, inside the signature.
    let last = der.len() - 1;
    der[last] ^= 0x01;
    let pem = format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &der)
    );
    assert!(matches!(ca.sign_csr(&pem, "dev-1", DAY), Err(Error::InvalidCsr(_))));
    assert!(matches!(ca.sign_csr("garbage", "dev-1", DAY), Err(Error::InvalidCsr(_))));
    assert!(matches!(ca.sign_csr(&csr, "bad id/..", DAY), Err(Error::InvalidDeviceId(_))));
}

#[test]
fn issued_cert_fields() {
    let (_dir, ca) = new_ca("Mamori Test CA");
    let key = DeviceKey::generate().unwrap();
    let before = SystemTime::now();
    let issued = ca.sign_csr(&key.csr_pem("dev-1").unwrap(), "dev-1", DEFAULT_CLIENT_VALIDITY).unwrap();
    let info = &issued.info;
    assert_eq!(info.serial_hex.len(), 34);
    assert!(info.serial_hex.starts_with("01"));
    let other = ca.sign_csr(&key.csr_pem("dev-1").unwrap(), "dev-1", DEFAULT_CLIENT_VALIDITY).unwrap();
    assert_ne!(info.serial_hex, other.info.serial_hex);
    let backdate = before.duration_since(info.not_before).unwrap();
    assert!(backdate >= Duration::from_secs(299) && backdate <= Duration::from_secs(310), "{backdate:?}");
    let life = info.not_after.duration_since(before).unwrap();
    assert!(life.abs_diff(DEFAULT_CLIENT_VALIDITY) <= Duration::from_secs(10), "{life:?}");
    assert_eq!(info.fingerprint, fingerprint_of_der(&pem_to_der(&issued.cert_pem).unwrap()));
    assert_eq!(cert_info(&pem_to_der(&issued.cert_pem).unwrap()).unwrap(), *info);
}

#[tokio::test]
async fn client_cert_from_another_ca_refused() {
    let (_dir, ca) = new_ca("Mamori Test CA");
    let (_dir2, rogue) = new_ca("Rogue CA");
    let (identity, _) = enroll(&rogue);
    let server = server_for(&ca, ClientAuth::Required, never_revoked());
    let client = tls::client_config(&ca.fingerprint(), Some(&identity)).unwrap();
    handshake(server, client, "manager.test").await.assert_refused();
}

#[tokio::test]
async fn revoked_cert_refused_other_accepted() {
    let (_dir, ca) = new_ca("Mamori Test CA");
    let (revoked_id, revoked_info) = enroll(&ca);
    let (good_id, good_info) = enroll(&ca);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let revoked_serial = revoked_info.serial_hex.clone();
    let seen2 = seen.clone();
    let check: RevocationCheck = Arc::new(move |info: &CertInfo| {
        seen2.lock().unwrap().push(info.serial_hex.clone());
        info.serial_hex == revoked_serial
    });
    let server = server_for(&ca, ClientAuth::Required, check);

    let client = tls::client_config(&ca.fingerprint(), Some(&revoked_id)).unwrap();
    handshake(server.clone(), client, "manager.test").await.assert_refused();

    let client = tls::client_config(&ca.fingerprint(), Some(&good_id)).unwrap();
    let info = handshake(server.clone(), client.clone(), "manager.test").await.assert_ok().unwrap();
    assert_eq!(info.serial_hex, good_info.serial_hex);
    // A second connection consults the callback again (no caching, session resumption or not).
    handshake(server, client, "manager.test").await.assert_ok();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen, vec![revoked_info.serial_hex, good_info.serial_hex.clone(), good_info.serial_hex]);
}

#[tokio::test]
async fn required_without_client_cert_refused() {
    let (_dir, ca) = new_ca("Mamori Test CA");
    let server = server_for(&ca, ClientAuth::Required, never_revoked());
    let client = tls::client_config(&ca.fingerprint(), None).unwrap();
    handshake(server, client, "manager.test").await.assert_refused();
}

#[tokio::test]
async fn optional_without_client_cert_accepted_without_peer_info() {
    let (_dir, ca) = new_ca("Mamori Test CA");
    let server = server_for(&ca, ClientAuth::Optional, never_revoked());
    let client = tls::client_config(&ca.fingerprint(), None).unwrap();
    assert_eq!(handshake(server, client, "manager.test").await.assert_ok(), None);
}

#[tokio::test]
async fn optional_still_verifies_presented_certs() {
    let (_dir, ca) = new_ca("Mamori Test CA");
    let (_dir2, rogue) = new_ca("Rogue CA");
    let (rogue_id, _) = enroll(&rogue);
    let (good_id, good_info) = enroll(&ca);
    let revoked_serial = good_info.serial_hex.clone();
    let server = server_for(&ca, ClientAuth::Optional, never_revoked());
    let client = tls::client_config(&ca.fingerprint(), Some(&rogue_id)).unwrap();
    handshake(server.clone(), client, "manager.test").await.assert_refused();
    let client = tls::client_config(&ca.fingerprint(), Some(&good_id)).unwrap();
    let info = handshake(server, client.clone(), "manager.test").await.assert_ok();
    assert_eq!(info.unwrap().serial_hex, good_info.serial_hex);

    let check: RevocationCheck = Arc::new(move |i: &CertInfo| i.serial_hex == revoked_serial);
    let server = server_for(&ca, ClientAuth::Optional, check);
    handshake(server, client, "manager.test").await.assert_refused();
}

#[tokio::test]
async fn wrong_pinned_fingerprint_refused() {
    let (_dir, ca) = new_ca("Mamori Test CA");
    let (_dir2, other) = new_ca("Other CA");
    let (identity, _) = enroll(&ca);
    let server = server_for(&ca, ClientAuth::Optional, never_revoked());
    let client = tls::client_config(&other.fingerprint(), Some(&identity)).unwrap();
    handshake(server.clone(), client, "manager.test").await.assert_refused();
    let client = tls::client_config(&other.fingerprint(), None).unwrap();
    handshake(server, client, "manager.test").await.assert_refused();
    assert!(matches!(tls::client_config("abc", None), Err(Error::InvalidFingerprint)));
}

#[tokio::test]
async fn server_leaf_from_other_ca_with_our_ca_in_chain_refused() {
    let (_dir, ca) = new_ca("Mamori Test CA");
    let (_dir2, rogue) = new_ca("Mamori Test CA"); // same name, to make it harder
    let rogue_leaf = server_cert(&rogue);
    // The server sends [rogue leaf, our CA]: the pinned CA is present, but it did not sign the leaf.
    let server =
        tls::server_config(ca.cert_der(), &rogue_leaf, ClientAuth::Optional, never_revoked()).unwrap();
    let client = tls::client_config(&ca.fingerprint(), None).unwrap();
    handshake(server, client, "manager.test").await.assert_refused();
}

#[tokio::test]
async fn server_without_ca_in_chain_refused() {
    // The client pins by fingerprint and has no copy of the CA, so it cannot verify a bare leaf.
    let (_dir, ca) = new_ca("Mamori Test CA");
    let leaf = server_cert(&ca);
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice_compat(&leaf.key_pem);
    let chain = vec![rustls::pki_types::CertificateDer::from(pem_to_der(&leaf.cert_pem).unwrap())];
    let server =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
    let client = tls::client_config(&ca.fingerprint(), None).unwrap();
    handshake(Arc::new(server), client, "manager.test").await.assert_refused();
}

trait FromPemCompat {
    fn from_pem_slice_compat(pem: &str) -> Self;
}

impl FromPemCompat for rustls::pki_types::PrivateKeyDer<'static> {
    fn from_pem_slice_compat(pem: &str) -> Self {
        rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes()).unwrap()
    }
}

#[tokio::test]
async fn expired_client_cert_refused() {
    let (_dir, ca) = new_ca("Mamori Test CA");
    let key = DeviceKey::generate().unwrap();
    let now = SystemTime::now();
    let issued =
        ca.sign_csr_window(&key.csr_pem("dev-old").unwrap(), "dev-old", now - 10 * DAY, now - DAY).unwrap();
    let identity = KeyAndCert { key_pem: key.key_pem().to_string(), cert_pem: issued.cert_pem };
    let server = server_for(&ca, ClientAuth::Required, never_revoked());
    let client = tls::client_config(&ca.fingerprint(), Some(&identity)).unwrap();
    handshake(server, client, "manager.test").await.assert_refused();
}

#[tokio::test]
async fn tls12_only_client_refused() {
    // rustls' tls12 feature is enabled for dev builds only, so we can build a client that
    // speaks nothing but TLS 1.2; it trusts our CA normally so only the version differs.
    let (_dir, ca) = new_ca("Mamori Test CA");
    let (identity, _) = enroll(&ca);
    let server = server_for(&ca, ClientAuth::Required, never_revoked());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from(ca.cert_der().to_vec())).unwrap();
    let chain = vec![rustls::pki_types::CertificateDer::from(pem_to_der(&identity.cert_pem).unwrap())];
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice_compat(&identity.key_pem);
    let client =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots.clone())
            .with_client_auth_cert(chain.clone(), key)
            .unwrap();
    handshake(server.clone(), Arc::new(client), "manager.test").await.assert_refused();

    // Control: the same hand-built client with TLS 1.3 succeeds, so the refusal above is the version.
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice_compat(&identity.key_pem);
    let client =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap();
    handshake(server, Arc::new(client), "manager.test").await.assert_ok();
}

#[tokio::test]
async fn our_client_refuses_tls12_only_server() {
    let (_dir, ca) = new_ca("Mamori Test CA");
    let leaf = server_cert(&ca);
    let chain = vec![
        rustls::pki_types::CertificateDer::from(pem_to_der(&leaf.cert_pem).unwrap()),
        rustls::pki_types::CertificateDer::from(ca.cert_der().to_vec()),
    ];
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice_compat(&leaf.key_pem);
    let server =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
    let client = tls::client_config(&ca.fingerprint(), None).unwrap();
    handshake(Arc::new(server), client, "manager.test").await.assert_refused();
}

#[test]
fn tokens() {
    let t = generate_token();
    assert!(t.secret.starts_with("mmt_"));
    assert_eq!(t.secret.len(), 4 + 43);
    let body = &t.secret[4..];
    assert!(body.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    let decoded = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, body).unwrap();
    assert_eq!(decoded.len(), 32);
    assert_eq!(hash_token(&t.secret), t.hash);
    assert!(token_matches(&t.secret, &t.hash));
    let u = generate_token();
    assert_ne!(t.secret, u.secret);
    assert_ne!(t.hash, u.hash);
    assert!(!token_matches(&u.secret, &t.hash));
    assert!(!token_matches("", &t.hash));
    let mut almost = t.secret.clone();
    almost.pop();
    assert!(!token_matches(&almost, &t.hash));
    assert!(!format!("{t:?}").contains(&t.secret));
}

#[test]
fn device_ids_and_keys() {
    let a = new_device_id();
    let b = new_device_id();
    assert_eq!(a.len(), 32);
    assert!(a.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
    assert_ne!(a, b);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.key");
    let key = DeviceKey::generate().unwrap();
    key.save(&path).unwrap();
    assert_eq!(mode(&path), 0o600);
    let loaded = DeviceKey::load(&path).unwrap();
    assert_eq!(loaded.public_key_fingerprint(), key.public_key_fingerprint());
    assert_eq!(loaded.key_pem(), key.key_pem());
    assert_eq!(key.public_key_fingerprint().len(), 64);
    assert_ne!(DeviceKey::generate().unwrap().public_key_fingerprint(), key.public_key_fingerprint());
    assert!(!format!("{key:?}").contains("PRIVATE"));
    // Overwrite keeps 0600 and leaves no temp files behind.
    DeviceKey::generate().unwrap().save(&path).unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

    // The fingerprint is over the SPKI that ends up in the certificate.
    let (_cadir, ca) = new_ca("Mamori Test CA");
    let issued = ca.sign_csr(&key.csr_pem("dev-1").unwrap(), "dev-1", DAY).unwrap();
    let der = pem_to_der(&issued.cert_pem).unwrap();
    let (_, x509) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert_eq!(fingerprint_of_der(x509.public_key().raw), key.public_key_fingerprint());

    set_mode(&path, 0o640);
    assert!(matches!(DeviceKey::load(&path), Err(Error::InsecurePermissions { .. })));
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[cfg(unix)]
fn set_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[cfg(unix)]
#[test]
fn ca_key_permissions_and_reload() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, created) = Ca::load_or_create(dir.path(), "Mamori CA").unwrap();
    assert!(created);
    assert_eq!(mode(&dir.path().join("ca.key")), 0o600);
    let fp = ca.fingerprint();
    assert_eq!(fp.len(), 64);
    assert!(fp.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
    assert_eq!(fp, fingerprint_of_der(ca.cert_der()));
    assert_eq!(pem_to_der(ca.cert_pem()).unwrap(), ca.cert_der());

    let (again, created) = Ca::load_or_create(dir.path(), "ignored on load").unwrap();
    assert!(!created);
    assert_eq!(again.fingerprint(), fp);

    // The reloaded CA can still issue certificates that chain to the original CA cert.
    let key = DeviceKey::generate().unwrap();
    let issued = again.sign_csr(&key.csr_pem("dev-1").unwrap(), "dev-1", DAY).unwrap();
    let der = pem_to_der(&issued.cert_pem).unwrap();
    let (_, leaf) = x509_parser::parse_x509_certificate(&der).unwrap();
    let (_, ca_x509) = x509_parser::parse_x509_certificate(ca.cert_der()).unwrap();
    assert_eq!(leaf.issuer(), ca_x509.subject());
    leaf.verify_signature(Some(ca_x509.public_key())).unwrap();

    set_mode(&dir.path().join("ca.key"), 0o644);
    assert!(matches!(
        Ca::load_or_create(dir.path(), "x"),
        Err(Error::InsecurePermissions { mode: 0o644, .. })
    ));
}

#[cfg(unix)]
#[test]
fn ca_key_symlink_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_ca, _) = Ca::load_or_create(dir.path(), "Mamori CA").unwrap();
    let other = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(dir.path().join("ca.key"), other.path().join("ca.key")).unwrap();
    std::fs::copy(dir.path().join("ca.crt"), other.path().join("ca.crt")).unwrap();
    assert!(matches!(Ca::load_or_create(other.path(), "x"), Err(Error::Symlink(_))));
}

#[test]
fn ca_missing_cert_or_mismatched_cert() {
    let dir = tempfile::tempdir().unwrap();
    Ca::load_or_create(dir.path(), "Mamori CA").unwrap();
    let other = tempfile::tempdir().unwrap();
    Ca::load_or_create(other.path(), "Other CA").unwrap();

    std::fs::copy(other.path().join("ca.crt"), dir.path().join("ca.crt")).unwrap();
    assert!(matches!(Ca::load_or_create(dir.path(), "x"), Err(Error::CaKeyMismatch)));

    std::fs::remove_file(dir.path().join("ca.crt")).unwrap();
    assert!(matches!(Ca::load_or_create(dir.path(), "x"), Err(Error::MissingCaCert { .. })));
}

#[test]
fn issue_server_rejects_bad_input() {
    let (_dir, ca) = new_ca("Mamori Test CA");
    assert!(matches!(ca.issue_server(&[], DAY), Err(Error::NoNames)));
    assert!(ca.issue_server(&["bad name".to_string()], DAY).is_err());
}

#[tokio::test]
async fn server_never_resumes_so_revocation_is_checked_every_time() {
    // A stock rustls client that would happily resume a session: the server must still run a
    // full handshake, and therefore the revocation callback, on every connection.
    let (_dir, ca) = new_ca("Mamori Test CA");
    let (identity, _) = enroll(&ca);
    let calls = Arc::new(Mutex::new(0u32));
    let calls2 = calls.clone();
    let check: RevocationCheck = Arc::new(move |_: &CertInfo| {
        *calls2.lock().unwrap() += 1;
        false
    });
    let server = server_for(&ca, ClientAuth::Required, check);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from(ca.cert_der().to_vec())).unwrap();
    let chain = vec![rustls::pki_types::CertificateDer::from(pem_to_der(&identity.cert_pem).unwrap())];
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice_compat(&identity.key_pem);
    let client = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap(),
    );
    for _ in 0..3 {
        handshake(server.clone(), client.clone(), "manager.test").await.assert_ok();
    }
    assert_eq!(*calls.lock().unwrap(), 3);
}

#[cfg(unix)]
#[test]
fn ca_creates_missing_dir_private() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("pki").join("ca");
    let (_ca, created) = Ca::load_or_create(&dir, "Mamori CA").unwrap();
    assert!(created);
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("ca.key")), 0o600);
}
