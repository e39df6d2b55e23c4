//! The admin API client the CLI uses: TLS 1.3 to the manager, the CA pinned by fingerprint, the
//! admin token as a bearer token.

use std::path::Path;

use anyhow::{bail, Context};
use mamori_proto::ApiError;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub struct AdminClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl AdminClient {
    /// Finds the manager through its data directory (`manager.json`, `admin.token`).
    pub fn from_manager_dir(dir: &Path) -> anyhow::Result<AdminClient> {
        let (endpoint, token) = mamori_manager::local_admin_access(dir)?;
        AdminClient::new(&endpoint.url, &endpoint.ca_fingerprint, token)
    }

    pub fn new(url: &str, ca_fingerprint: &str, token: String) -> anyhow::Result<AdminClient> {
        let tls = mamori_pki::tls::client_config(ca_fingerprint, None)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls((*tls).clone())
            .https_only(true)
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .context("cannot build the HTTPS client")?;
        Ok(AdminClient { http, base: url.trim_end_matches('/').to_string(), token })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<T> {
        let request = self.http.get(format!("{}{path}", self.base)).query(query);
        self.send(request).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> anyhow::Result<T> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body)).await
    }

    pub async fn put<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> anyhow::Result<T> {
        self.send(self.http.put(format!("{}{path}", self.base)).json(body)).await
    }

    async fn send<T: DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> anyhow::Result<T> {
        let response =
            request.bearer_auth(&self.token).send().await.map_err(|e| {
                anyhow::anyhow!("cannot reach the manager at {}: {}", self.base, error_chain(&e))
            })?;
        let status = response.status();
        let bytes = response.bytes().await.context("reading the manager's answer")?;
        if !status.is_success() {
            match serde_json::from_slice::<ApiError>(&bytes) {
                Ok(e) => bail!("the manager refused: {} ({})", e.message, e.error),
                Err(_) => bail!("the manager answered {status}: {}", String::from_utf8_lossy(&bytes)),
            }
        }
        serde_json::from_slice(&bytes).context("the manager's answer is not what this CLI expects")
    }
}

/// reqwest's Display stops at the outermost error; the TLS reason (say, a CA that does not match
/// the pinned fingerprint) is further down.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}
