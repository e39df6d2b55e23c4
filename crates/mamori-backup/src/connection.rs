//! HTTPS to the vault with the device certificate: TLS 1.3, the mamori CA pinned by
//! fingerprint, no system roots.

use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use mamori_proto::vault::{self as wire, path};
use mamori_proto::ApiError;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Blobs as the vault returned them in one answer: kind, id and content, views into one
/// buffer that goes back to its connection's pool when this is dropped.
pub struct Blobs {
    body: Vec<u8>,
    frames: Vec<(u8, [u8; 32], Range<usize>)>,
    pool: BufferPool,
}

impl Blobs {
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Kind, id and content of each blob, in the order asked for.
    pub fn iter(&self) -> impl Iterator<Item = (u8, &[u8; 32], &[u8])> {
        self.frames.iter().map(|(kind, id, range)| (*kind, id, &self.body[range.clone()]))
    }
}

#[cfg(test)]
impl Blobs {
    /// Blobs as if the vault had sent them, for the writer's tests.
    pub(crate) fn for_tests(blobs: &[([u8; 32], &[u8])]) -> Blobs {
        let mut body = Vec::new();
        let mut frames = Vec::new();
        for (id, data) in blobs {
            frames.push((0, *id, body.len()..body.len() + data.len()));
            body.extend_from_slice(data);
        }
        Blobs { body, frames, pool: BufferPool::default() }
    }
}

impl Drop for Blobs {
    fn drop(&mut self) {
        self.pool.put(std::mem::take(&mut self.body));
    }
}

/// Answers of a restore are megabytes each, tens of thousands of them in a row. Fresh buffers
/// of that size come from mmap and are zeroed by the kernel page by page; reusing a few costs
/// nothing (measured with perf: page faults and clearing were a fifth of the client's CPU).
#[derive(Clone, Default)]
struct BufferPool(Arc<Mutex<Vec<Vec<u8>>>>);

/// Buffers kept for reuse: the fetches a restore has in flight, plus one being written out.
const POOLED_BUFFERS: usize = 4;

impl BufferPool {
    fn take(&self) -> Vec<u8> {
        self.0.lock().ok().and_then(|mut pool| pool.pop()).unwrap_or_default()
    }

    fn clear(&self) {
        if let Ok(mut pool) = self.0.lock() {
            pool.clear();
        }
    }

    fn put(&self, mut buffer: Vec<u8>) {
        if let Ok(mut pool) = self.0.lock() {
            if pool.len() < POOLED_BUFFERS && buffer.capacity() <= wire::MAX_BATCH_BYTES {
                buffer.clear();
                pool.push(buffer);
            }
        }
    }
}

/// What a client needs to reach the vault: its device key and certificate, and the
/// fingerprint of the mamori CA (the vault's certificate must chain to it).
#[derive(Clone)]
pub struct Identity {
    pub key_pem: String,
    pub cert_pem: String,
    pub ca_fingerprint: String,
    pub hostname: String,
}

#[derive(Clone)]
pub struct Connection {
    base: String,
    http: reqwest::Client,
    buffers: BufferPool,
}

impl Connection {
    pub fn new(url: &str, identity: &Identity) -> anyhow::Result<Connection> {
        let base = url.trim_end_matches('/').to_string();
        if !base.starts_with("https://") {
            bail!("the vault URL must start with https:// (got {url})");
        }
        let tls = mamori_pki::tls::client_config(
            &identity.ca_fingerprint,
            Some(&mamori_pki::KeyAndCert {
                key_pem: identity.key_pem.clone(),
                cert_pem: identity.cert_pem.clone(),
            }),
        )?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls((*tls).clone())
            .https_only(true)
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(600))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("mamori-backup/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the HTTPS client")?;
        Ok(Connection { base, http, buffers: BufferPool::default() })
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    /// Frees the answer buffers kept for reuse: a backup reads the previous snapshot's trees
    /// first and then only uploads, so keeping them would only add to its peak memory.
    pub fn release_buffers(&self) {
        self.buffers.clear();
    }

    /// Sends `req`; the answer if it is a success, else the vault's refusal as the error.
    async fn answer(&self, what: &str, req: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let resp = req
            .send()
            .await
            .map_err(|e| anyhow!("{what}: cannot reach the vault at {}: {}", self.base, chain(&e)))?;
        let status = resp.status();
        if !status.is_success() {
            let bytes = resp.bytes().await.map_err(|e| anyhow!("{what}: {}", chain(&e)))?;
            let message = match serde_json::from_slice::<ApiError>(&bytes) {
                Ok(e) => format!("{} ({})", e.message, e.error),
                Err(_) => String::from_utf8_lossy(&bytes[..bytes.len().min(2048)]).trim().to_string(),
            };
            bail!("{what}: the vault refused ({status}): {message}");
        }
        Ok(resp)
    }

    async fn send(&self, what: &str, req: reqwest::RequestBuilder) -> anyhow::Result<bytes::Bytes> {
        let resp = self.answer(what, req).await?;
        resp.bytes().await.map_err(|e| anyhow!("{what}: {}", chain(&e)))
    }

    async fn json<T: DeserializeOwned>(&self, what: &str, req: reqwest::RequestBuilder) -> anyhow::Result<T> {
        let bytes = self.send(what, req).await?;
        serde_json::from_slice(&bytes)
            .with_context(|| format!("{what}: the vault's answer is not what mamori expects"))
    }

    fn post_json<B: Serialize>(&self, route: &str, body: &B) -> reqwest::RequestBuilder {
        self.http.post(format!("{}{route}", self.base)).json(body)
    }

    pub async fn session(&self) -> anyhow::Result<wire::Session> {
        self.json("session", self.http.get(format!("{}{}", self.base, path::SESSION))).await
    }

    pub async fn missing(&self, ids: Vec<String>) -> anyhow::Result<Vec<String>> {
        let answer: wire::Ids =
            self.json("missing", self.post_json(path::MISSING, &wire::Ids { ids })).await?;
        Ok(answer.ids)
    }

    pub async fn upload(&self, body: Vec<u8>) -> anyhow::Result<wire::Stored> {
        let req = self
            .http
            .post(format!("{}{}", self.base, path::BLOBS))
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(body);
        self.json("upload", req).await
    }

    /// The blobs `ids`, each checked against its id with `id_key` (the vault is trusted to
    /// keep data, not to return the right data unchecked).
    pub async fn read(&self, ids: Vec<String>, id_key: &[u8; 32]) -> anyhow::Result<Blobs> {
        let wanted = ids.len();
        let mut blobs =
            Blobs { body: Vec::new(), frames: Vec::with_capacity(wanted), pool: self.buffers.clone() };
        if wanted == 0 {
            return Ok(blobs);
        }
        let mut resp = self.answer("read", self.post_json(path::READ, &wire::Ids { ids })).await?;
        blobs.body = self.buffers.take();
        if let Some(length) = resp.content_length() {
            blobs.body.reserve(usize::try_from(length).unwrap_or(0).min(wire::MAX_BATCH_BYTES));
        }
        while let Some(chunk) = resp.chunk().await.map_err(|e| anyhow!("read: {}", chain(&e)))? {
            if blobs.body.len() + chunk.len() > wire::MAX_BATCH_BYTES + wanted * wire::FRAME_HEADER {
                bail!("read: the vault's answer is larger than any batch can be");
            }
            blobs.body.extend_from_slice(&chunk);
        }
        let frames = wire::decode_frames(&blobs.body).map_err(|e| anyhow!("read: {e}"))?;
        if frames.len() != wanted {
            bail!("read: asked for {wanted} blobs, the vault sent {}", frames.len());
        }
        let mut offset = 0usize;
        let mut ranges = Vec::with_capacity(frames.len());
        for f in frames {
            offset += wire::FRAME_HEADER;
            if *blake3::keyed_hash(id_key, f.data).as_bytes() != f.id {
                bail!("the vault sent blob {} with content that does not match it", hex::encode(f.id));
            }
            ranges.push((f.kind, f.id, offset..offset + f.data.len()));
            offset += f.data.len();
        }
        blobs.frames = ranges;
        Ok(blobs)
    }

    pub async fn commit(&self, req: &wire::CommitRequest) -> anyhow::Result<wire::SnapshotInfo> {
        let answer: wire::Committed = self.json("commit", self.post_json(path::SNAPSHOTS, req)).await?;
        Ok(answer.snapshot)
    }

    pub async fn snapshots(&self) -> anyhow::Result<Vec<wire::SnapshotInfo>> {
        self.json("snapshots", self.http.get(format!("{}{}", self.base, path::SNAPSHOTS))).await
    }

    /// Sends an arbitrary request (tests use it to show that modifications are refused).
    pub async fn raw(
        &self,
        method: reqwest::Method,
        route: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<(u16, String)> {
        let resp = self
            .http
            .request(method, format!("{}{route}", self.base))
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await
            .map_err(|e| anyhow!("cannot reach the vault: {}", chain(&e)))?;
        let status = resp.status().as_u16();
        Ok((status, resp.text().await.unwrap_or_default()))
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
