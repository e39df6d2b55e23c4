//! A software WebAuthn authenticator, as a browser and a platform authenticator would answer
//! the console's passkey options: a P-256 key made here, a "none" attestation, ES256
//! signatures over authenticator data and the client data hash. Knobs let tests act as a
//! phishing page (another origin), an authenticator that skips user verification, or a clone
//! (a counter that does not go up).
#![allow(dead_code)]

use data_encoding::BASE64URL_NOPAD as B64;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use rand::RngCore;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub struct SoftAuthenticator {
    key: SigningKey,
    pub credential_id: Vec<u8>,
    /// The signature counter the next assertion reports (then incremented).
    pub counter: u32,
    /// The origin the "browser" puts in the client data.
    pub origin: String,
    /// Whether the authenticator says it verified the user (fingerprint, PIN).
    pub verify_user: bool,
    user_handle: Vec<u8>,
}

fn cbor(value: &ciborium::Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).expect("cbor");
    out
}

fn text(options: &Value, pointer: &str) -> String {
    options
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{pointer} in {options}"))
        .to_string()
}

impl SoftAuthenticator {
    pub fn new(origin: &str) -> SoftAuthenticator {
        let mut rng = rand::thread_rng();
        let key = loop {
            let mut bytes = [0u8; 32];
            rng.fill_bytes(&mut bytes);
            if let Ok(key) = SigningKey::from_bytes(&bytes.into()) {
                break key;
            }
        };
        let mut credential_id = vec![0u8; 32];
        rng.fill_bytes(&mut credential_id);
        SoftAuthenticator {
            key,
            credential_id,
            counter: 1,
            origin: origin.to_string(),
            verify_user: true,
            user_handle: Vec::new(),
        }
    }

    /// The relying party's id hash, the flags and the counter.
    fn auth_data(&self, rp_id: &str, attested: bool, counter: u32) -> Vec<u8> {
        let mut flags = 0x01; // user present
        if self.verify_user {
            flags |= 0x04;
        }
        if attested {
            flags |= 0x40;
        }
        let mut data = Sha256::digest(rp_id.as_bytes()).to_vec();
        data.push(flags);
        data.extend_from_slice(&counter.to_be_bytes());
        data
    }

    fn client_data(&self, kind: &str, challenge: &str) -> Vec<u8> {
        json!({"type": kind, "challenge": challenge, "origin": self.origin, "crossOrigin": false})
            .to_string()
            .into_bytes()
    }

    fn cose_key(&self) -> Vec<u8> {
        let point = self.key.verifying_key().to_encoded_point(false);
        let (x, y) = (point.x().expect("x").to_vec(), point.y().expect("y").to_vec());
        use ciborium::Value as C;
        cbor(&C::Map(vec![
            (C::Integer(1.into()), C::Integer(2.into())),
            (C::Integer(3.into()), C::Integer((-7).into())),
            (C::Integer((-1).into()), C::Integer(1.into())),
            (C::Integer((-2).into()), C::Bytes(x)),
            (C::Integer((-3).into()), C::Bytes(y)),
        ]))
    }

    /// The answer to `navigator.credentials.create()` for the options `POST
    /// /api/me/passkeys/options` returned (`PublicKeyCredential.toJSON()`).
    pub fn register(&mut self, options: &Value) -> Value {
        let rp_id = text(options, "/publicKey/rp/id");
        let challenge = text(options, "/publicKey/challenge");
        self.user_handle = B64.decode(text(options, "/publicKey/user/id").as_bytes()).expect("user id");
        let mut auth_data = self.auth_data(&rp_id, true, 0);
        auth_data.extend_from_slice(&[0u8; 16]); // AAGUID: none
        auth_data.extend_from_slice(&(self.credential_id.len() as u16).to_be_bytes());
        auth_data.extend_from_slice(&self.credential_id);
        auth_data.extend_from_slice(&self.cose_key());
        use ciborium::Value as C;
        let attestation = cbor(&C::Map(vec![
            (C::Text("fmt".into()), C::Text("none".into())),
            (C::Text("attStmt".into()), C::Map(vec![])),
            (C::Text("authData".into()), C::Bytes(auth_data)),
        ]));
        self.credential_json(json!({
            "clientDataJSON": B64.encode(&self.client_data("webauthn.create", &challenge)),
            "attestationObject": B64.encode(&attestation),
            "transports": ["internal"],
        }))
    }

    /// `PublicKeyCredential.toJSON()` of this credential around a `response`.
    fn credential_json(&self, response: Value) -> Value {
        let id = B64.encode(&self.credential_id);
        json!({"id": id, "rawId": id, "type": "public-key", "response": response, "clientExtensionResults": {}})
    }

    /// The answer to `navigator.credentials.get()` for the `passkey` options of a login.
    pub fn assert(&mut self, options: &Value) -> Value {
        let rp_id = text(options, "/publicKey/rpId");
        let challenge = text(options, "/publicKey/challenge");
        let auth_data = self.auth_data(&rp_id, false, self.counter);
        self.counter += 1;
        let client_data = self.client_data("webauthn.get", &challenge);
        let mut signed = auth_data.clone();
        signed.extend_from_slice(&Sha256::digest(&client_data));
        let signature: Signature = self.key.sign(&signed);
        self.credential_json(json!({
            "authenticatorData": B64.encode(&auth_data),
            "clientDataJSON": B64.encode(&client_data),
            "signature": B64.encode(signature.to_der().as_bytes()),
            "userHandle": B64.encode(&self.user_handle),
        }))
    }
}
