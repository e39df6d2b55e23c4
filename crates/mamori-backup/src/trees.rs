//! Fetching a snapshot's trees from the vault, a level at a time in batches, so that a tree of
//! thousands of directories costs as many round trips as it is deep.

use std::collections::HashMap;

use anyhow::anyhow;
use mamori_proto::vault as wire;
use mamori_vault::{BlobId, Tree};

use crate::connection::Connection;

pub struct TreeCache {
    conn: Connection,
    id_key: [u8; 32],
    trees: HashMap<BlobId, Tree>,
}

impl TreeCache {
    pub fn new(conn: Connection, id_key: [u8; 32]) -> TreeCache {
        TreeCache { conn, id_key, trees: HashMap::new() }
    }

    pub fn get(&self, id: &BlobId) -> Option<&Tree> {
        self.trees.get(id)
    }

    pub fn into_map(self) -> HashMap<BlobId, Tree> {
        self.trees
    }

    /// Fetches `ids` (not recursively).
    pub async fn fetch(&mut self, ids: &[BlobId]) -> anyhow::Result<()> {
        let mut wanted: Vec<BlobId> = ids.iter().filter(|id| !self.trees.contains_key(id)).copied().collect();
        wanted.sort_by_key(|id| id.0);
        wanted.dedup();
        for part in wanted.chunks(2000) {
            let blobs = self.conn.read(part.iter().map(BlobId::to_hex).collect(), &self.id_key).await?;
            for (kind, id, data) in blobs.iter() {
                if kind != wire::KIND_TREE {
                    return Err(anyhow!("blob {} is not a tree", hex::encode(id)));
                }
                let tree: Tree = serde_json::from_slice(data)
                    .map_err(|_| anyhow!("tree {} is damaged", hex::encode(id)))?;
                self.trees.insert(BlobId(*id), tree);
            }
        }
        Ok(())
    }

    /// Fetches `roots` and every tree below them.
    pub async fn fetch_all(&mut self, roots: &[BlobId]) -> anyhow::Result<()> {
        let mut level: Vec<BlobId> = roots.to_vec();
        while !level.is_empty() {
            self.fetch(&level).await?;
            let mut next = Vec::new();
            for id in &level {
                if let Some(tree) = self.trees.get(id) {
                    next.extend(
                        tree.nodes.iter().filter_map(|n| n.subtree).filter(|s| !self.trees.contains_key(s)),
                    );
                }
            }
            level = next;
        }
        Ok(())
    }
}
