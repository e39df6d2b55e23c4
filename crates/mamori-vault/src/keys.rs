//! The repository keys. A random 64-byte master secret holds the data key (AES-256-GCM for
//! every blob, header and snapshot) and the id key (keyed BLAKE3 for blob ids, so that ids say
//! nothing about contents to whoever lacks the key). On disk it exists only sealed by a
//! passphrase: Argon2id derives a key-encryption key that seals it with AES-256-GCM.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The unsealed keys, only ever in memory.
#[derive(Clone)]
pub struct Keys {
    data: [u8; 32],
    id: [u8; 32],
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(..)")
    }
}

/// A sealed key file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SealedKeys {
    pub kdf: String,
    pub m_cost_kib: u32,
    pub t_cost: u32,
    pub p_cost: u32,
    pub salt: String,
    pub nonce: String,
    pub sealed: String,
}

/// Argon2id cost: 64 MiB, 3 passes (OWASP's second recommended setting); sealing happens once
/// per vault start, not per request.
const M_COST_KIB: u32 = 64 * 1024;
const T_COST: u32 = 3;

impl Keys {
    pub fn generate() -> Keys {
        Keys { data: rand::random(), id: rand::random() }
    }

    /// The id of `plaintext`: keyed BLAKE3.
    /// The id key, which the vault hands to its enrolled clients so that they can name chunks
    /// and ask which ones the vault lacks without sending them (deduplication across hosts
    /// needs one id key). It reveals nothing about stored data; it lets its holder test
    /// whether a content it already has is in the repository.
    pub fn id_key(&self) -> [u8; 32] {
        self.id
    }

    pub fn blob_id(&self, plaintext: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(&self.id, plaintext).as_bytes()
    }

    /// AES-256-GCM with a random nonce; `aad` binds the ciphertext to what it is (its id and
    /// kind), so a blob moved under another name does not decrypt. Output: nonce ‖ ciphertext.
    pub fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        let cipher = Aes256Gcm::new((&self.data).into());
        let nonce: [u8; 12] = rand::random();
        let mut out = nonce.to_vec();
        let sealed = cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad })
            .map_err(|_| Error::Invalid("encryption failed (object too large?)".into()))?;
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    pub fn decrypt(&self, sealed: &[u8], aad: &[u8], what: &str) -> Result<Vec<u8>> {
        if sealed.len() < 12 + 16 {
            return Err(Error::Corrupt(what.to_string()));
        }
        let cipher = Aes256Gcm::new((&self.data).into());
        cipher
            .decrypt(Nonce::from_slice(&sealed[..12]), Payload { msg: &sealed[12..], aad })
            .map_err(|_| Error::Corrupt(what.to_string()))
    }

    /// [`Keys::decrypt`] in place: `sealed` (nonce, ciphertext, tag) becomes the plaintext,
    /// without a new allocation (the vault serves restores blob by blob through one buffer).
    pub fn decrypt_in_place(&self, sealed: &mut Vec<u8>, aad: &[u8], what: &str) -> Result<()> {
        use aes_gcm::aead::AeadInPlace;
        if sealed.len() < 12 + 16 {
            return Err(Error::Corrupt(what.to_string()));
        }
        let cipher = Aes256Gcm::new((&self.data).into());
        let (nonce, rest) = sealed.split_at_mut(12);
        let (ciphertext, tag) = rest.split_at_mut(rest.len() - 16);
        cipher
            .decrypt_in_place_detached(
                Nonce::from_slice(nonce),
                aad,
                ciphertext,
                aes_gcm::Tag::from_slice(tag),
            )
            .map_err(|_| Error::Corrupt(what.to_string()))?;
        let plaintext_len = ciphertext.len();
        sealed.copy_within(12..12 + plaintext_len, 0);
        sealed.truncate(plaintext_len);
        Ok(())
    }

    pub fn seal(&self, passphrase: &str) -> Result<SealedKeys> {
        let salt: [u8; 16] = rand::random();
        let kek = derive(passphrase, &salt, M_COST_KIB, T_COST, 1)?;
        let nonce: [u8; 12] = rand::random();
        let mut secret = self.data.to_vec();
        secret.extend_from_slice(&self.id);
        let sealed = Aes256Gcm::new((&kek).into())
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: &secret, aad: b"mamori-vault-keys" })
            .map_err(|_| Error::Invalid("cannot seal the keys".into()))?;
        Ok(SealedKeys {
            kdf: "argon2id".into(),
            m_cost_kib: M_COST_KIB,
            t_cost: T_COST,
            p_cost: 1,
            salt: hex::encode(salt),
            nonce: hex::encode(nonce),
            sealed: hex::encode(sealed),
        })
    }

    pub fn unseal(sealed: &SealedKeys, passphrase: &str) -> Result<Keys> {
        if sealed.kdf != "argon2id" {
            return Err(Error::Invalid(format!("unknown key derivation `{}`", sealed.kdf)));
        }
        let bad = |_| Error::Corrupt("key file".into());
        let salt = hex::decode(&sealed.salt).map_err(bad)?;
        let nonce = hex::decode(&sealed.nonce).map_err(bad)?;
        let ciphertext = hex::decode(&sealed.sealed).map_err(bad)?;
        if nonce.len() != 12 {
            return Err(Error::Corrupt("key file".into()));
        }
        let kek = derive(passphrase, &salt, sealed.m_cost_kib, sealed.t_cost, sealed.p_cost)?;
        let secret = Aes256Gcm::new((&kek).into())
            .decrypt(Nonce::from_slice(&nonce), Payload { msg: &ciphertext, aad: b"mamori-vault-keys" })
            .map_err(|_| Error::WrongPassphrase)?;
        if secret.len() != 64 {
            return Err(Error::Corrupt("key file".into()));
        }
        let mut keys = Keys { data: [0; 32], id: [0; 32] };
        keys.data.copy_from_slice(&secret[..32]);
        keys.id.copy_from_slice(&secret[32..]);
        Ok(keys)
    }
}

fn derive(passphrase: &str, salt: &[u8], m_cost_kib: u32, t_cost: u32, p_cost: u32) -> Result<[u8; 32]> {
    let params = argon2::Params::new(m_cost_kib, t_cost, p_cost, Some(32))
        .map_err(|e| Error::Invalid(format!("key derivation parameters: {e}")))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = [0u8; 32];
    argon
        .hash_password_into(passphrase.as_bytes(), salt, &mut out)
        .map_err(|e| Error::Invalid(format!("key derivation: {e}")))?;
    Ok(out)
}
