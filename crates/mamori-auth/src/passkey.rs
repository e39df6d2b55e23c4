//! WebAuthn / passkeys as the alternative second factor, through `webauthn-rs` (the ceremony
//! checks: origin, relying-party id hash, challenge, signature, user verification, signature
//! counter). This module only turns the console's address into a relying party and moves JSON
//! in and out; the manager keeps the ceremony states in memory and the credentials in its store.
//!
//! Why user verification is required: the passkey replaces the TOTP code, so it must prove
//! "something you are or know" on the authenticator (fingerprint, face, PIN), not just a touch.
//!
//! Why a host name: browsers only run WebAuthn for a domain (an IP address is not a valid
//! relying-party id), so a console reached as `https://127.0.0.1:9443` is offered passkeys as
//! `https://localhost:9443`, and a console on a LAN address needs its DNS name
//! (`mamori up --console-url https://mamori.example.local:9443`).

use std::net::IpAddr;

use serde_json::Value;
use webauthn_rs::prelude::{
    Passkey, PasskeyAuthentication, PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential,
    Url, Uuid, Webauthn, WebauthnBuilder,
};

/// What can go wrong with a passkey.
#[derive(Debug, thiserror::Error)]
pub enum PasskeyError {
    /// The console's address is not an `https://` URL.
    #[error("the console address {0:?} is not an https:// URL")]
    BadUrl(String),
    /// The console is reached by an IP address that is not loopback: browsers refuse WebAuthn
    /// there.
    #[error(
        "passkeys need the console's DNS name, not the address {0}: start the manager with \
         --console-url https://NAME:PORT"
    )]
    NoHostName(String),
    /// The browser's answer is not the JSON a WebAuthn credential is.
    #[error("malformed passkey response: {0}")]
    Malformed(String),
    /// The ceremony failed (wrong origin, challenge, signature, no user verification, a
    /// counter that went backwards...).
    #[error("passkey refused: {0}")]
    Refused(String),
    /// A stored credential cannot be read back.
    #[error("stored passkey is unreadable: {0}")]
    Stored(String),
    /// No passkey to log in with.
    #[error("the account has no passkey")]
    NoPasskey,
}

/// The console as a WebAuthn relying party.
pub struct RelyingParty {
    webauthn: Webauthn,
    origin: String,
}

impl std::fmt::Debug for RelyingParty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelyingParty").field("origin", &self.origin).finish()
    }
}

/// The `https://` origin passkeys are bound to for a console reached at `url`: loopback
/// addresses become `localhost` (same machine, a name browsers accept); any other IP address
/// is refused.
pub fn https_origin(url: &str) -> Result<Url, PasskeyError> {
    let mut parsed = Url::parse(url).map_err(|_| PasskeyError::BadUrl(url.to_string()))?;
    if parsed.scheme() != "https" {
        return Err(PasskeyError::BadUrl(url.to_string()));
    }
    let host = parsed.host_str().ok_or_else(|| PasskeyError::BadUrl(url.to_string()))?.to_string();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        if !ip.is_loopback() {
            return Err(PasskeyError::NoHostName(host));
        }
        parsed.set_host(Some("localhost")).map_err(|_| PasskeyError::BadUrl(url.to_string()))?;
    }
    parsed.set_path("");
    parsed.set_query(None);
    parsed.set_fragment(None);
    Ok(parsed)
}

/// A registration in progress (between the options and the browser's answer).
#[derive(Debug)]
pub struct Registration(PasskeyRegistration);

/// A passkey login in progress (between the options and the browser's answer).
#[derive(Debug)]
pub struct Login(PasskeyAuthentication);

/// A credential as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPasskey {
    /// The credential id, base64url without padding; unique.
    pub credential_id: String,
    /// The whole credential (public key, counter, flags) as `webauthn-rs` serialises it.
    pub data: String,
    /// The signature counter after the last use (0: the authenticator does not count).
    pub counter: u32,
}

/// A passkey login that succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginOutcome {
    pub credential_id: String,
    /// The credential with its new counter, to store in place of the old one.
    pub updated: StoredPasskey,
}

fn stored(passkey: &Passkey) -> Result<StoredPasskey, PasskeyError> {
    let data = serde_json::to_string(passkey).map_err(|e| PasskeyError::Stored(e.to_string()))?;
    let counter = serde_json::from_str::<Value>(&data)
        .ok()
        .and_then(|v| v.pointer("/cred/counter").and_then(Value::as_u64))
        .unwrap_or(0);
    Ok(StoredPasskey {
        credential_id: credential_id_text(passkey.cred_id().as_ref()),
        data,
        counter: u32::try_from(counter).unwrap_or(u32::MAX),
    })
}

fn credential_id_text(raw: &[u8]) -> String {
    data_encoding::BASE64URL_NOPAD.encode(raw)
}

fn parse_stored(row: &StoredPasskey) -> Result<Passkey, PasskeyError> {
    serde_json::from_str(&row.data).map_err(|e| PasskeyError::Stored(e.to_string()))
}

fn refused(e: webauthn_rs::prelude::WebauthnError) -> PasskeyError {
    PasskeyError::Refused(e.to_string())
}

impl RelyingParty {
    /// The relying party for a console reached at `url` (`https://host:port`), shown to users
    /// as `name`.
    pub fn for_console(url: &str, name: &str) -> Result<RelyingParty, PasskeyError> {
        let origin = https_origin(url)?;
        let rp_id = origin.host_str().ok_or_else(|| PasskeyError::BadUrl(url.to_string()))?.to_string();
        let webauthn = WebauthnBuilder::new(&rp_id, &origin)
            .and_then(|b| b.rp_name(name).build())
            .map_err(|e| PasskeyError::BadUrl(format!("{url}: {e}")))?;
        Ok(RelyingParty { webauthn, origin: origin.as_str().trim_end_matches('/').to_string() })
    }

    /// The origin the browser must be on (`https://name:port`).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Options for `navigator.credentials.create()` (JSON with a `publicKey` member) for the
    /// account `user_id`, created at `created_ms`, excluding the credentials it already has.
    pub fn start_registration(
        &self,
        user_id: i64,
        created_ms: i64,
        username: &str,
        existing: &[StoredPasskey],
    ) -> Result<(Value, Registration), PasskeyError> {
        // The same handle for the same account, a different one for an account recreated with
        // the same name: authenticators replace a credential only for the same handle.
        let handle = Uuid::from_u64_pair(user_id as u64, created_ms as u64);
        let exclude = existing
            .iter()
            .map(parse_stored)
            .map(|p| p.map(|p| p.cred_id().clone()))
            .collect::<Result<Vec<_>, _>>()?;
        let (options, state) = self
            .webauthn
            .start_passkey_registration(handle, username, username, Some(exclude))
            .map_err(refused)?;
        let options = serde_json::to_value(options).map_err(|e| PasskeyError::Stored(e.to_string()))?;
        Ok((options, Registration(state)))
    }

    /// Checks the browser's answer to the registration options (`PublicKeyCredential.toJSON()`).
    pub fn finish_registration(
        &self,
        response: &Value,
        state: &Registration,
    ) -> Result<StoredPasskey, PasskeyError> {
        let credential: RegisterPublicKeyCredential =
            serde_json::from_value(response.clone()).map_err(|e| PasskeyError::Malformed(e.to_string()))?;
        let passkey = self.webauthn.finish_passkey_registration(&credential, &state.0).map_err(refused)?;
        stored(&passkey)
    }

    /// Options for `navigator.credentials.get()` with the account's credentials.
    pub fn start_login(&self, credentials: &[StoredPasskey]) -> Result<(Value, Login), PasskeyError> {
        if credentials.is_empty() {
            return Err(PasskeyError::NoPasskey);
        }
        let passkeys = credentials.iter().map(parse_stored).collect::<Result<Vec<_>, _>>()?;
        let (options, state) = self.webauthn.start_passkey_authentication(&passkeys).map_err(refused)?;
        let options = serde_json::to_value(options).map_err(|e| PasskeyError::Stored(e.to_string()))?;
        Ok((options, Login(state)))
    }

    /// Checks the browser's answer to the login options against the credentials the options
    /// were made for; a counter that did not go up (a cloned authenticator) is refused.
    pub fn finish_login(
        &self,
        response: &Value,
        state: &Login,
        credentials: &[StoredPasskey],
    ) -> Result<LoginOutcome, PasskeyError> {
        let credential: PublicKeyCredential =
            serde_json::from_value(response.clone()).map_err(|e| PasskeyError::Malformed(e.to_string()))?;
        let result = self.webauthn.finish_passkey_authentication(&credential, &state.0).map_err(refused)?;
        if !result.user_verified() {
            return Err(PasskeyError::Refused("the authenticator did not verify the user".into()));
        }
        let credential_id = credential_id_text(result.cred_id().as_ref());
        let row = credentials
            .iter()
            .find(|c| c.credential_id == credential_id)
            .ok_or_else(|| PasskeyError::Refused("unknown credential".into()))?;
        let mut passkey = parse_stored(row)?;
        passkey.update_credential(&result);
        Ok(LoginOutcome { credential_id, updated: stored(&passkey)? })
    }
}

/// The host of a console URL (`https://NAME[:PORT]`), for its certificate; `None` if it is not
/// an https:// URL with a host.
pub fn console_host(url: &str) -> Option<String> {
    let parsed = Url::parse(url).ok().filter(|u| u.scheme() == "https")?;
    let host = parsed.host_str()?.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then(|| host.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_consoles_are_offered_passkeys_as_localhost() {
        let rp = RelyingParty::for_console("https://127.0.0.1:9443", "mamori").unwrap();
        assert_eq!(rp.origin(), "https://localhost:9443");
        let rp = RelyingParty::for_console("https://[::1]:9443/", "mamori").unwrap();
        assert_eq!(rp.origin(), "https://localhost:9443");
        let rp = RelyingParty::for_console("https://mamori.example.local:9443", "mamori").unwrap();
        assert_eq!(rp.origin(), "https://mamori.example.local:9443");
    }

    #[test]
    fn lan_addresses_and_plain_http_are_refused_with_the_fix() {
        let err = RelyingParty::for_console("https://192.168.1.10:9443", "mamori").unwrap_err();
        assert!(matches!(err, PasskeyError::NoHostName(_)), "{err}");
        assert!(err.to_string().contains("--console-url"), "{err}");
        assert!(matches!(
            RelyingParty::for_console("http://localhost:9443", "m").unwrap_err(),
            PasskeyError::BadUrl(_)
        ));
        assert!(matches!(RelyingParty::for_console("not a url", "m").unwrap_err(), PasskeyError::BadUrl(_)));
    }

    #[test]
    fn registration_options_name_the_relying_party_and_require_user_verification() {
        let rp = RelyingParty::for_console("https://127.0.0.1:9443", "Hospital").unwrap();
        let (options, _) = rp.start_registration(7, 1_700_000_000_000, "alice", &[]).unwrap();
        let pk = &options["publicKey"];
        assert_eq!(pk["rp"]["id"], "localhost");
        assert_eq!(pk["rp"]["name"], "Hospital");
        assert_eq!(pk["user"]["name"], "alice");
        assert_eq!(pk["authenticatorSelection"]["userVerification"], "required");
        assert!(pk["challenge"].as_str().is_some_and(|c| c.len() >= 43), "{pk}");
        // A second ceremony has a fresh challenge.
        let (again, _) = rp.start_registration(7, 1_700_000_000_000, "alice", &[]).unwrap();
        assert_ne!(again["publicKey"]["challenge"], pk["challenge"]);
    }

    #[test]
    fn a_login_needs_a_credential_and_garbage_is_malformed() {
        let rp = RelyingParty::for_console("https://localhost:9443", "m").unwrap();
        assert!(matches!(rp.start_login(&[]).unwrap_err(), PasskeyError::NoPasskey));
        let broken = StoredPasskey { credential_id: "AA".into(), data: "{".into(), counter: 0 };
        assert!(matches!(rp.start_login(&[broken]).unwrap_err(), PasskeyError::Stored(_)));
        let (_, state) = rp.start_registration(1, 1, "a", &[]).unwrap();
        let err = rp.finish_registration(&serde_json::json!({"id": 5}), &state).unwrap_err();
        assert!(matches!(err, PasskeyError::Malformed(_)), "{err}");
    }

    #[test]
    fn the_console_host_is_read_from_its_url() {
        let host = console_host;
        assert_eq!(host("https://mamori.example.local:9443").as_deref(), Some("mamori.example.local"));
        assert_eq!(host("https://mamori.example.local/").as_deref(), Some("mamori.example.local"));
        assert_eq!(host("https://[fd00::1]:9443").as_deref(), Some("fd00::1"));
        assert_eq!(host("http://mamori:9443"), None);
        assert_eq!(host("https://:9443"), None);
    }
}
