//! The backup client (issue 6): what `mamori backup` and the agent's scheduled backups do.
//!
//! - [`connection`]: HTTPS to the vault with the device certificate (TLS 1.3, pinned CA).
//! - [`backup`]: walk, skip unchanged files by metadata, chunk, upload what the vault lacks,
//!   commit the snapshot.
//! - [`trees`]: fetching snapshot trees level by level.
//! - [`restore`]: restore bit-exact into an empty directory; the last clean snapshot; the
//!   versions of a file; the difference between two snapshots.
//!
//! The client holds no repository key: the vault seals what it receives. It does hold the id
//! key (to name chunks and ask which ones the vault lacks), and it checks every blob the vault
//! returns against its id.

pub mod backup;
pub mod connection;
pub mod restore;
pub mod trees;

pub use backup::{backup, BackupOptions, BackupSummary};
pub use connection::{Connection, Identity};

/// The session's id key.
pub async fn id_key(conn: &Connection) -> anyhow::Result<[u8; 32]> {
    backup::parse_key(&conn.session().await?.id_key)
}
