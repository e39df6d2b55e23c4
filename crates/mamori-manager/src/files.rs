//! The admin token file.

use std::path::Path;

use anyhow::Context;

/// Returns the SHA-256 of the admin token in `path`, creating the file (0600) on first start.
/// Only the hash stays in memory; the file is for the local CLI.
pub(crate) fn load_or_create_admin_token(path: &Path) -> anyhow::Result<[u8; 32]> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => Ok(mamori_pki::hash_token(&read_admin_token(path)?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let token = mamori_pki::generate_token();
            mamori_pki::fsutil::create_private_exclusive(path, token.secret.as_bytes())
                .with_context(|| format!("cannot create {}", path.display()))?;
            Ok(token.hash)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Reads the admin token, refusing a symlink or a file others can read.
pub(crate) fn read_admin_token(path: &Path) -> anyhow::Result<String> {
    let text = mamori_pki::fsutil::read_private(path)
        .with_context(|| format!("cannot read the admin token {}", path.display()))?;
    let token = text.trim().to_string();
    if token.is_empty() {
        anyhow::bail!("the admin token file {} is empty", path.display());
    }
    Ok(token)
}
