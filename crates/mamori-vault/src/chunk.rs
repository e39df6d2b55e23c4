//! Content-defined chunking: a file's bytes are cut where their content says, so an insertion
//! early in a file moves only the chunks around it and the rest deduplicate.

use std::io::Read;

/// Chunk size bounds in bytes (FastCDC 2020, normalisation level 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChunkerConfig {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl Default for ChunkerConfig {
    /// 512 KiB / 1 MiB / 8 MiB: restic's average. Most files of a source tree are smaller than
    /// the minimum and are one chunk each.
    fn default() -> Self {
        ChunkerConfig { min: 512 * 1024, avg: 1024 * 1024, max: 8 * 1024 * 1024 }
    }
}

impl ChunkerConfig {
    pub fn validate(&self) -> Result<(), String> {
        let ok = fastcdc::v2020::MINIMUM_MIN <= self.min
            && self.min <= self.avg
            && self.avg <= self.max
            && self.max <= fastcdc::v2020::MAXIMUM_MAX;
        if ok {
            Ok(())
        } else {
            Err(format!(
                "chunk sizes {}/{}/{} are out of range or out of order",
                self.min, self.avg, self.max
            ))
        }
    }
}

/// Calls `each` with every chunk of `reader`, in order; returns the bytes read.
pub fn chunk_stream<R: Read>(
    reader: R,
    config: ChunkerConfig,
    mut each: impl FnMut(&[u8]) -> crate::Result<()>,
) -> crate::Result<u64> {
    let chunker = fastcdc::v2020::StreamCDC::new(reader, config.min, config.avg, config.max);
    let mut total = 0u64;
    for chunk in chunker {
        let chunk = chunk.map_err(|e| match e {
            fastcdc::v2020::Error::IoError(io) => crate::Error::io("<file being chunked>", io),
            other => crate::Error::Invalid(format!("chunking: {other}")),
        })?;
        total += chunk.length as u64;
        each(&chunk.data)?;
    }
    Ok(total)
}
