//! A console client as a browser would be: HTTPS to the console listener (the device CA pinned),
//! the session cookie and the CSRF header handled by hand so that tests can leave them out.
#![allow(dead_code)]

use std::time::Duration;

use serde_json::{json, Value};

use super::fleet::{free_port, wait_for, Proc, Site};

pub struct Console {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
    pub base: String,
    pub cookie: Option<String>,
    pub csrf: Option<String>,
}

pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
    pub bytes: Vec<u8>,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.body)
    }
}

/// Starts a manager with the console on a free port; returns it and the console's base URL.
pub fn start_with_console(site: &Site, extra: &[&str]) -> (Proc, String) {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut args = vec!["--console", addr.as_str(), "--institution", "みなと総合病院"];
    args.extend_from_slice(extra);
    let proc = site.start(&args);
    wait_for("the console to listen", Duration::from_secs(30), || {
        std::net::TcpStream::connect(&addr).is_ok()
    });
    (proc, format!("https://{addr}"))
}

/// The initial admin password the manager wrote at its first start.
pub fn initial_admin_password(site: &Site) -> String {
    let path = site.data().join("console-initial-password");
    let text = std::fs::read_to_string(&path).expect("initial password file");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("admin"));
    lines.next().expect("password line").to_string()
}

/// The TOTP code of `secret` for the step `offset` steps from now (the server accepts ±1).
pub fn code(secret: &str, offset: i64) -> String {
    let secret = mamori_auth::TotpSecret::from_base32(secret).expect("secret");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    mamori_auth::current_code(&secret, now + offset * mamori_auth::totp::STEP_MS)
}

impl Console {
    pub fn new(site: &Site, base: &str) -> Console {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let tls = mamori_pki::tls::client_config(&site.fingerprint(), None).expect("tls config");
        let client = reqwest::Client::builder()
            .use_preconfigured_tls((*tls).clone())
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        Console { rt, client, base: base.to_string(), cookie: None, csrf: None }
    }

    pub fn request(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Reply {
        let mut req = self.client.request(method.clone(), format!("{}{path}", self.base));
        if let Some(c) = &self.cookie {
            req = req.header("cookie", format!("mamori_session={c}"));
        }
        if method != reqwest::Method::GET {
            if let Some(t) = &self.csrf {
                req = req.header("x-csrf-token", t);
            }
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        self.rt.block_on(async {
            let resp = req.send().await.expect("request");
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let bytes = resp.bytes().await.expect("body").to_vec();
            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            Reply { status, body, headers, bytes }
        })
    }

    pub fn get(&self, path: &str) -> Reply {
        self.request(reqwest::Method::GET, path, None)
    }

    pub fn post(&self, path: &str, body: Value) -> Reply {
        self.request(reqwest::Method::POST, path, Some(&body))
    }

    pub fn put(&self, path: &str, body: Value) -> Reply {
        self.request(reqwest::Method::PUT, path, Some(&body))
    }

    pub fn delete(&self, path: &str) -> Reply {
        self.request(reqwest::Method::DELETE, path, None)
    }

    /// Both login steps. `secret` is the account's TOTP secret, or `None` for an account that
    /// sets it up now; returns the secret in use. `offset` picks the step (see [`code`]).
    pub fn login(&mut self, user: &str, password: &str, secret: Option<&str>, offset: i64) -> String {
        let first = self.post("/api/login", json!({"username": user, "password": password}));
        assert_eq!(first.status, 200, "password step of {user}: {first:?}");
        assert!(first.headers.get("set-cookie").is_none(), "no cookie before the second factor");
        let secret = match secret {
            Some(s) => {
                assert_eq!(first.body["stage"], "totp");
                s.to_string()
            }
            None => {
                assert_eq!(first.body["stage"], "totp_setup", "{first:?}");
                first.body["secret"].as_str().expect("secret").to_string()
            }
        };
        let challenge = first.body["challenge"].as_str().expect("challenge").to_string();
        let second =
            self.post("/api/login/totp", json!({"challenge": challenge, "code": code(&secret, offset)}));
        assert_eq!(second.status, 200, "code step of {user}: {second:?}");
        let cookie = second.headers.get("set-cookie").expect("session cookie").to_str().unwrap().to_string();
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("Secure") && cookie.contains("SameSite=Strict"),
            "{cookie}"
        );
        let value = cookie.split(';').next().unwrap().trim_start_matches("mamori_session=").to_string();
        self.cookie = Some(value);
        self.csrf = Some(second.body["csrf"].as_str().expect("csrf").to_string());
        secret
    }
}
