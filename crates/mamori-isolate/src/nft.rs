//! Running `nft`, on the host or inside a named network namespace.
//!
//! We drive the `nft` command rather than libnftables or the `nftables` crate: `nft -f -` already
//! commits a whole script as one kernel transaction (all or nothing), the script is plain text
//! an admin can read in `nft list` and in our tests, and the `nftables` crate only shells out to
//! the same binary with JSON, adding a dependency and a schema to track for nothing we need.
//!
//! For a namespace we `setns(2)` in the forked child before exec (no `ip netns exec`, so no
//! dependency on iproute2 and no mount-namespace juggling).

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{IsolateError, Result};

/// Where `ip netns add NAME` leaves the namespace's handle.
pub const NETNS_DIR: &str = "/run/netns";

#[derive(Clone, Debug)]
pub(crate) struct Nft {
    pub path: PathBuf,
    pub netns: Option<String>,
}

impl Nft {
    pub fn netns_path(&self) -> Option<PathBuf> {
        self.netns.as_ref().map(|n| Path::new(NETNS_DIR).join(n))
    }

    /// Runs `nft ARGS`, feeding `stdin` if given; returns stdout.
    pub fn run(&self, action: &'static str, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let ns_file =
            match (&self.netns, self.netns_path()) {
                (Some(name), Some(path)) => Some(std::fs::File::open(&path).map_err(|source| {
                    IsolateError::Netns { name: name.clone(), path: path.clone(), source }
                })?),
                _ => None,
            };
        let mut cmd = Command::new(&self.path);
        cmd.args(args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("LC_ALL", "C");
        if let Some(f) = &ns_file {
            let fd = f.as_raw_fd();
            // SAFETY: the closure runs in the forked child before exec and only makes one
            // async-signal-safe system call on a descriptor the parent keeps open until spawn
            // returns.
            #[allow(unsafe_code)]
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => IsolateError::NftMissing { path: self.path.clone() },
            std::io::ErrorKind::PermissionDenied if ns_file.is_some() => {
                IsolateError::PermissionDenied { action, stderr: format!("entering the namespace: {source}") }
            }
            _ => IsolateError::Spawn { path: self.path.clone(), source },
        })?;
        drop(ns_file);
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A write error (nft exited early) shows up in its exit status and stderr below.
            let _ = pipe.write_all(text.as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(|source| IsolateError::Spawn { path: self.path.clone(), source })?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        Err(classify(action, &out.status.to_string(), &String::from_utf8_lossy(&out.stderr)))
    }
}

/// Turns a failed nft run into a clear error.
pub(crate) fn classify(action: &'static str, status: &str, stderr: &str) -> IsolateError {
    let stderr = stderr.trim().to_string();
    if stderr.contains("Operation not permitted") || stderr.contains("Permission denied") {
        IsolateError::PermissionDenied { action, stderr }
    } else {
        IsolateError::Nft { action, status: status.to_string(), stderr }
    }
}

/// The system's `nft` (`/usr/sbin`, `/sbin`, `/usr/local/sbin`: fixed paths first, so a root
/// process is not steered by `PATH`, which often lacks the sbin directories anyway), else `nft`
/// looked up in `PATH` (and reported as missing if it is not there either).
pub(crate) fn default_path() -> PathBuf {
    ["/usr/sbin/nft", "/sbin/nft", "/usr/local/sbin/nft"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("nft"))
}

/// A namespace name must be a plain file name under [`NETNS_DIR`].
pub(crate) fn validate_netns(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(IsolateError::InvalidNetns(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_permission_errors() {
        let e = classify(
            "apply",
            "exit status: 1",
            "netlink: Error: cache initialization failed: Operation not permitted\n",
        );
        assert!(matches!(e, IsolateError::PermissionDenied { .. }));
        assert!(e.to_string().contains("isolation needs root (CAP_NET_ADMIN)"), "{e}");
        let e = classify("apply", "exit status: 1", "Error: syntax error");
        assert!(e.to_string().contains("syntax error"), "{e}");
    }

    #[test]
    fn missing_nft_says_install() {
        let nft = Nft { path: "/nonexistent/mamori-test/nft".into(), netns: None };
        let e = nft.run("list", &["list", "ruleset"], None).unwrap_err();
        assert!(e.to_string().contains("install the nftables package"), "{e}");
    }

    #[test]
    fn netns_names() {
        for ok in ["agent", "mamori-t-1.agent_2"] {
            validate_netns(ok).unwrap();
        }
        for bad in ["", ".", "..", "a/b", "../x", "a b", "x\0"] {
            assert!(validate_netns(bad).is_err(), "{bad:?}");
        }
    }
}
