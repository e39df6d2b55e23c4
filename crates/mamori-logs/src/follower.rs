//! [`Follower`]: follows one log file across rotation, truncation and replacement, with a
//! position the caller commits after it has stored the lines.
//!
//! # Position and state file
//!
//! The position is (device, inode, offset, fingerprint): the fingerprint is the file's first bytes
//! (up to [`FINGERPRINT_LEN`]), so a file that was deleted and recreated with a recycled inode
//! number, or rewritten in place, is noticed. It is stored in a one-line text state file,
//! replaced atomically (temporary file, fsync, rename, fsync of the directory):
//!
//! ```text
//! mamori-follower 1 dev=2049 ino=131 offset=4096 fp=4a756e2031342031353a31363a3031
//! ```
//!
//! # What `poll` does
//!
//! 1. Reads the open file from the current offset to its end (at most
//!    [`FollowerOptions::max_read_per_poll`] bytes per call) and hands out the complete lines
//!    (without the `\n`). A partial last line is held until its `\n`; a line longer than
//!    [`FollowerOptions::max_line`] is handed out in pieces of that size.
//! 2. Truncation (`copytruncate`): the file is shorter than the offset, or its first bytes no
//!    longer match the fingerprint → read again from the start. Lines written between the last
//!    poll and the truncation are lost; that is inherent to `copytruncate`.
//! 3. Rotation or replacement: the path now names another file (rename + create, or delete +
//!    create). The old file, still open, is read to its end first; if it still grew, the switch
//!    waits for the next poll (a writer may not have reopened yet). A final line without `\n`
//!    in the old file is handed out. Then the new file is read from its start.
//! 4. The path is gone (deleted, not yet recreated): the open file keeps being read.
//!
//! # Restart
//!
//! [`Follower::open`] reads the state file. If the path still names the same file (device, inode
//! and fingerprint) that is no shorter than the offset, reading resumes at the offset. If it names
//! another file, the directory is searched for the old one under a rotated name (`name.1`,
//! `name-20240101`, ...; same device, inode and fingerprint): its unread rest is read first, then
//! the new file from the start. Otherwise the file is read from the start. Lines handed out but
//! not committed before a restart are handed out again (at-least-once); committed lines are not.
//!
//! # Limits
//!
//! * A file rotated twice while the follower was stopped: the rest of the old file is read, the
//!   intermediate generation (`name.1` when the old one is `name.2`) is not.
//! * Lines a writer appends to a renamed file after the follower has switched to the new file
//!   are not read (the switch waits while the old file still grows at the moment of the check).
//! * Compressed rotations (`name.1.gz`) are never read.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

/// How many leading bytes identify a file.
pub const FINGERPRINT_LEN: usize = 64;

const STATE_MAGIC: &str = "mamori-follower 1";

/// Tuning of a [`Follower`].
#[derive(Debug, Clone)]
pub struct FollowerOptions {
    /// Longest line held; longer lines are handed out in pieces of this size.
    pub max_line: usize,
    /// Most bytes read by one `poll` (later polls continue).
    pub max_read_per_poll: usize,
    /// With no state file, start at the end of the existing file instead of its beginning.
    pub start_at_end: bool,
}

impl Default for FollowerOptions {
    fn default() -> Self {
        FollowerOptions { max_line: 1 << 20, max_read_per_poll: 8 << 20, start_at_end: false }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Position {
    dev: u64,
    ino: u64,
    offset: u64,
    fingerprint: Vec<u8>,
}

impl Position {
    fn encode(&self) -> String {
        let fp: String = self.fingerprint.iter().map(|b| format!("{b:02x}")).collect();
        format!("{STATE_MAGIC} dev={} ino={} offset={} fp={fp}\n", self.dev, self.ino, self.offset)
    }

    fn decode(text: &str) -> Option<Position> {
        let rest = text.trim_end().strip_prefix(STATE_MAGIC)?;
        let mut pos = Position { dev: 0, ino: 0, offset: 0, fingerprint: Vec::new() };
        let mut seen = 0;
        for part in rest.split_ascii_whitespace() {
            let (k, v) = part.split_once('=')?;
            match k {
                "dev" => pos.dev = v.parse().ok()?,
                "ino" => pos.ino = v.parse().ok()?,
                "offset" => pos.offset = v.parse().ok()?,
                "fp" => {
                    if !v.len().is_multiple_of(2) || v.len() > FINGERPRINT_LEN * 2 {
                        return None;
                    }
                    pos.fingerprint = (0..v.len())
                        .step_by(2)
                        .map(|i| u8::from_str_radix(v.get(i..i + 2)?, 16).ok())
                        .collect::<Option<Vec<u8>>>()?;
                }
                _ => return None,
            }
            seen += 1;
        }
        (seen == 4).then_some(pos)
    }
}

/// An open file being read.
struct Current {
    file: File,
    dev: u64,
    ino: u64,
    /// Bytes of the file consumed (handed out or held in `partial`).
    read_offset: u64,
    /// The file's first bytes, as far as they exist yet.
    fingerprint: Vec<u8>,
}

impl Current {
    fn open(path: &Path) -> io::Result<Current> {
        let file = File::open(path)?;
        let meta = file.metadata()?;
        let mut c =
            Current { file, dev: meta.dev(), ino: meta.ino(), read_offset: 0, fingerprint: Vec::new() };
        c.refresh_fingerprint()?;
        Ok(c)
    }

    fn read_prefix(&self, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        let mut got = 0;
        while got < len {
            let n = self.file.read_at(&mut buf[got..], got as u64)?;
            if n == 0 {
                break;
            }
            got += n;
        }
        buf.truncate(got);
        Ok(buf)
    }

    /// Extends the fingerprint while the file is shorter than [`FINGERPRINT_LEN`].
    fn refresh_fingerprint(&mut self) -> io::Result<()> {
        if self.fingerprint.len() < FINGERPRINT_LEN {
            self.fingerprint = self.read_prefix(FINGERPRINT_LEN)?;
        }
        Ok(())
    }

    /// Whether the file still starts with the bytes it started with.
    fn fingerprint_matches(&self, expected: &[u8]) -> io::Result<bool> {
        if expected.is_empty() {
            return Ok(true);
        }
        Ok(self.read_prefix(expected.len())? == expected)
    }
}

/// Follows one file. See the module documentation.
pub struct Follower {
    path: PathBuf,
    state_path: PathBuf,
    options: FollowerOptions,
    current: Option<Current>,
    partial: Vec<u8>,
    /// Position just after the last line handed out.
    handed: Option<Position>,
    committed: Option<Position>,
}

fn same_file(meta: &fs::Metadata, dev: u64, ino: u64) -> bool {
    meta.dev() == dev && meta.ino() == ino
}

impl Follower {
    /// Opens `path` (which need not exist yet) with the position saved in `state_file`.
    pub fn open(path: impl Into<PathBuf>, state_file: impl Into<PathBuf>) -> io::Result<Follower> {
        Follower::open_with(path, state_file, FollowerOptions::default())
    }

    pub fn open_with(
        path: impl Into<PathBuf>,
        state_file: impl Into<PathBuf>,
        options: FollowerOptions,
    ) -> io::Result<Follower> {
        let path = path.into();
        let state_path = state_file.into();
        let saved = match fs::read_to_string(&state_path) {
            Ok(text) => Some(Position::decode(&text).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: not a follower state file", state_path.display()),
                )
            })?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let mut follower = Follower {
            path,
            state_path,
            options: FollowerOptions {
                max_line: options.max_line.max(1),
                max_read_per_poll: options.max_read_per_poll.max(1),
                ..options
            },
            current: None,
            partial: Vec::new(),
            handed: None,
            committed: saved.clone(),
        };
        let current = match Current::open(&follower.path) {
            Ok(c) => Some(c),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        follower.current = match (saved, current) {
            (Some(pos), Some(mut cur)) => {
                let len = cur.file.metadata()?.len();
                if cur.dev == pos.dev && cur.ino == pos.ino {
                    if len >= pos.offset && cur.fingerprint_matches(&pos.fingerprint)? {
                        cur.read_offset = pos.offset;
                    }
                    Some(cur)
                } else if let Some(mut old) = follower.find_rotated(&pos)? {
                    // Finish the rotated file first; the next poll notices the new one.
                    old.read_offset = pos.offset;
                    Some(old)
                } else {
                    Some(cur)
                }
            }
            (Some(pos), None) => follower.find_rotated(&pos)?.map(|mut old| {
                old.read_offset = pos.offset;
                old
            }),
            (None, Some(mut cur)) => {
                if follower.options.start_at_end {
                    cur.read_offset = cur.file.metadata()?.len();
                }
                Some(cur)
            }
            (None, None) => None,
        };
        follower.handed = follower.current_position();
        Ok(follower)
    }

    /// A file next to the followed one, under a rotated name, that is the one `pos` describes.
    fn find_rotated(&self, pos: &Position) -> io::Result<Option<Current>> {
        let Some(name) = self.path.file_name().and_then(|n| n.to_str()) else {
            return Ok(None);
        };
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        for entry in entries.flatten() {
            let candidate = entry.file_name();
            let Some(candidate) = candidate.to_str() else {
                continue;
            };
            if candidate == name || !candidate.starts_with(name) {
                continue;
            }
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if !same_file(&meta, pos.dev, pos.ino) || meta.len() < pos.offset {
                continue;
            }
            let Ok(cur) = Current::open(&entry.path()) else {
                continue;
            };
            if cur.fingerprint_matches(&pos.fingerprint)? {
                return Ok(Some(cur));
            }
        }
        Ok(None)
    }

    fn current_position(&self) -> Option<Position> {
        self.current.as_ref().map(|c| Position {
            dev: c.dev,
            ino: c.ino,
            offset: c.read_offset - self.partial.len() as u64,
            fingerprint: c.fingerprint.clone(),
        })
    }

    /// Appends the complete lines available since the last call to `out`; returns how many.
    pub fn poll(&mut self, out: &mut Vec<Vec<u8>>) -> io::Result<usize> {
        let before = out.len();
        let mut budget = self.options.max_read_per_poll;
        // Each round handles at most one truncation or rotation; two rounds cover
        // "finish the old file, then read the new one".
        for _ in 0..4 {
            if self.current.is_none() {
                match Current::open(&self.path) {
                    Ok(c) => self.current = Some(c),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e) => return Err(e),
                }
            }
            // Truncation first: reading at the old offset of a rewritten file would hand out
            // the middle of a line.
            self.check_truncated()?;
            self.read_available(out, &mut budget)?;
            if budget == 0 {
                break;
            }
            let rotated = match fs::metadata(&self.path) {
                Ok(meta) => self.current.as_ref().is_some_and(|c| !same_file(&meta, c.dev, c.ino)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                Err(e) => return Err(e),
            };
            if !rotated {
                break;
            }
            // Drain whatever reached the old file before it was renamed away.
            if self.read_available(out, &mut budget)? > 0 || budget == 0 {
                break;
            }
            if !self.partial.is_empty() {
                out.push(std::mem::take(&mut self.partial));
            }
            self.current = None;
            match Current::open(&self.path) {
                Ok(c) => self.current = Some(c),
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) => return Err(e),
            }
        }
        self.handed = self.current_position().or(self.handed.take());
        Ok(out.len() - before)
    }

    /// Reads from the current file to its end (within the budget); returns the bytes read.
    fn read_available(&mut self, out: &mut Vec<Vec<u8>>, budget: &mut usize) -> io::Result<usize> {
        let Some(cur) = self.current.as_mut() else {
            return Ok(0);
        };
        let mut total = 0;
        let mut buf = vec![0u8; 64 * 1024];
        while *budget > 0 {
            let want = buf.len().min(*budget);
            let n = cur.file.read_at(&mut buf[..want], cur.read_offset)?;
            if n == 0 {
                break;
            }
            cur.read_offset += n as u64;
            *budget -= n;
            total += n;
            let mut chunk = &buf[..n];
            let max_line = self.options.max_line;
            while let Some(p) = memchr::memchr(b'\n', chunk) {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(&chunk[..p]);
                if line.len() > max_line {
                    out.extend(line.chunks(max_line).map(<[u8]>::to_vec));
                } else {
                    out.push(line);
                }
                chunk = &chunk[p + 1..];
            }
            self.partial.extend_from_slice(chunk);
            while self.partial.len() > max_line {
                let rest = self.partial.split_off(max_line);
                out.push(std::mem::replace(&mut self.partial, rest));
            }
        }
        if total > 0 {
            cur.refresh_fingerprint()?;
        }
        Ok(total)
    }

    /// Detects truncation or in-place rewriting; restarts at offset 0 then.
    fn check_truncated(&mut self) -> io::Result<()> {
        let Some(cur) = self.current.as_mut() else {
            return Ok(());
        };
        let len = cur.file.metadata()?.len();
        let rewritten = len < cur.read_offset || !cur.fingerprint_matches(&cur.fingerprint)?;
        if rewritten {
            cur.read_offset = 0;
            cur.fingerprint.clear();
            cur.refresh_fingerprint()?;
            self.partial.clear();
        }
        Ok(())
    }

    /// Persists the position after the last line handed out by [`Follower::poll`].
    pub fn commit(&mut self) -> io::Result<()> {
        let Some(pos) = self.handed.clone() else {
            return Ok(());
        };
        if self.committed.as_ref() == Some(&pos) {
            return Ok(());
        }
        write_atomically(&self.state_path, pos.encode().as_bytes())?;
        self.committed = Some(pos);
        Ok(())
    }

    /// The followed path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of an incomplete last line being held.
    pub fn pending_bytes(&self) -> usize {
        self.partial.len()
    }
}

fn write_atomically(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    {
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trip_and_rejects_garbage() {
        let pos = Position { dev: 2049, ino: 131, offset: 4096, fingerprint: b"Jun 14".to_vec() };
        assert_eq!(Position::decode(&pos.encode()), Some(pos));
        for bad in [
            "",
            "mamori-follower 1 dev=1",
            "x dev=1 ino=2 offset=3 fp=",
            "mamori-follower 1 dev=1 ino=2 offset=3 fp=zz",
        ] {
            assert_eq!(Position::decode(bad), None, "{bad}");
        }
    }
}
