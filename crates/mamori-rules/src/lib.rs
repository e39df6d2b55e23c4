//! mamori's default Sigma rule pack for hospitals, embedded in the binary.
//!
//! The pack is small and tuned to be quiet on normal logs: detection rules that are only
//! building blocks (`level: informational`, one failed logon, one allowed connection) and the
//! correlation rules that join them into something worth a person's time — a burst of failed
//! logons followed by a success, a burst of denied connections from an internal host followed
//! by a remote logon from it, a malware alert from the mamori agent followed by allowed
//! internet traffic from the same host. Building blocks referenced by a correlation are not
//! reported on their own (Sigma's `generate: false`).
//!
//! The rules live as ordinary Sigma YAML in `rules/` beside this file, so they can be read,
//! copied and changed like any other rule set. The manager and `mamori hunt` load rules from
//! directories; [`write_pack`] puts this pack into one.
//!
//! This crate only holds text: no parsing, no evaluation (that is `mamori-sigma` and
//! `mamori-correlate`), no policy about where the pack is written.

use std::io;
use std::path::Path;

/// One rule file of the pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackFile {
    /// File name (`*.yml`).
    pub name: &'static str,
    /// Its YAML text (one or more documents).
    pub yaml: &'static str,
}

macro_rules! pack_file {
    ($name:literal) => {
        PackFile { name: $name, yaml: include_str!(concat!("../rules/", $name)) }
    };
}

/// Every file of the default pack, by name.
pub const DEFAULT_PACK: &[PackFile] = &[
    pack_file!("firewall_allowed_outbound_internet.yml"),
    pack_file!("firewall_denied_from_internal_host.yml"),
    pack_file!("mamori_agent_malware_alert.yml"),
    pack_file!("mamori_vault_refused_request.yml"),
    pack_file!("mamori_vault_suspicious_snapshot.yml"),
    pack_file!("mr_denied_burst_then_remote_logon.yml"),
    pack_file!("mr_internal_host_denied_burst.yml"),
    pack_file!("mr_malware_then_internet_egress.yml"),
    pack_file!("mr_sshd_bruteforce_success.yml"),
    pack_file!("mr_sshd_many_failed_logins.yml"),
    pack_file!("mr_win_bruteforce_success.yml"),
    pack_file!("mr_win_many_failed_logons.yml"),
    pack_file!("sshd_accepted_login.yml"),
    pack_file!("sshd_failed_login.yml"),
    pack_file!("win_failed_logon.yml"),
    pack_file!("win_remote_logon_from_host.yml"),
    pack_file!("win_successful_logon.yml"),
];

/// Name of the marker file [`write_pack`] leaves in the directory it owns.
pub const MARKER: &str = ".mamori-default-pack";

/// Writes the default pack into `dir` (created if missing), replacing files of an older pack.
///
/// `dir` belongs to the pack: `.yml` files in it that are not part of this pack are removed,
/// so a rule dropped from the pack stops running after an upgrade. Site rules belong in a
/// directory of their own. To keep a site from losing files by mistake, a non-empty
/// directory without the marker written by an earlier call is refused.
pub fn write_pack(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let marker = dir.join(MARKER);
    let has_entries = std::fs::read_dir(dir)?.next().is_some();
    if has_entries && !marker.exists() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} is not empty and was not written by mamori: refusing to put the default rule pack there",
                dir.display()
            ),
        ));
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let stale = path.extension().is_some_and(|e| e == "yml")
            && path
                .file_name()
                .and_then(|n| n.to_str())
                .is_none_or(|n| !DEFAULT_PACK.iter().any(|f| f.name == n));
        if stale {
            std::fs::remove_file(&path)?;
        }
    }
    for file in DEFAULT_PACK {
        let path = dir.join(file.name);
        // Written through a temporary name so that a reader never sees half a rule.
        let temp = dir.join(format!(".{}.tmp", file.name));
        std::fs::write(&temp, file.yaml)?;
        std::fs::rename(&temp, &path)?;
    }
    std::fs::write(marker, "Written by mamori at every start: local changes here are overwritten.\n")?;
    Ok(())
}
