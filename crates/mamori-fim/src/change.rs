//! "What changed": the one comparison used by the full check and by real-time events.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::entry::{hex, Entry, Kind};

/// The kind of a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// A path that is not in the baseline.
    Created,
    /// Content changed: hash, size, symlink target or object type.
    Modified,
    /// Only metadata changed (mode, owner, times, inode, xattrs).
    AttributesChanged,
    /// A baseline path that is gone.
    Deleted,
}

/// One recorded attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    Kind,
    Hash,
    Size,
    Target,
    Mode,
    Uid,
    Gid,
    Mtime,
    Ctime,
    Inode,
    Dev,
    Xattrs,
}

impl Field {
    /// Fields whose change makes a `Modified` (the others make `AttributesChanged`).
    fn is_content(self) -> bool {
        matches!(self, Field::Kind | Field::Hash | Field::Size | Field::Target)
    }
}

/// One field, before → after, rendered for people and JSON (hashes in hex, modes in octal,
/// times in nanoseconds since the epoch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldChange {
    pub field: Field,
    pub before: String,
    pub after: String,
}

/// A difference between the baseline and the file system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub path: PathBuf,
    pub kind: ChangeKind,
    /// For `Modified` and `AttributesChanged`: every field that differs.
    pub fields: Vec<FieldChange>,
    pub before: Option<Entry>,
    pub after: Option<Entry>,
}

impl Change {
    /// Whether `field` is among the changed fields.
    pub fn has(&self, field: Field) -> bool {
        self.fields.iter().any(|f| f.field == field)
    }
}

fn opt_hex(h: &Option<[u8; 32]>) -> String {
    h.as_ref().map(|h| hex(h)).unwrap_or_else(|| "-".into())
}

/// Compares a baseline entry with what is there now. Directories' size, mtime and ctime are
/// recorded but not compared: they move with every entry created or removed inside, which is
/// reported as that entry's own `Created`/`Deleted`. A content hash missing on either side
/// (file unreadable now, reported as a problem) is not compared.
pub fn diff(path: &Path, before: Option<&Entry>, after: Option<&Entry>) -> Option<Change> {
    let (b, a) = match (before, after) {
        (None, None) => return None,
        (None, Some(a)) => {
            return Some(Change {
                path: path.to_path_buf(),
                kind: ChangeKind::Created,
                fields: Vec::new(),
                before: None,
                after: Some(a.clone()),
            })
        }
        (Some(b), None) => {
            return Some(Change {
                path: path.to_path_buf(),
                kind: ChangeKind::Deleted,
                fields: Vec::new(),
                before: Some(b.clone()),
                after: None,
            })
        }
        (Some(b), Some(a)) => (b, a),
    };
    let mut fields = Vec::new();
    let mut push = |field, before: String, after: String| fields.push(FieldChange { field, before, after });
    let dir = a.kind == Kind::Dir && b.kind == Kind::Dir;
    if a.kind != b.kind {
        push(Field::Kind, b.kind.as_str().into(), a.kind.as_str().into());
    }
    if a.hash.is_some() && b.hash.is_some() && a.hash != b.hash {
        push(Field::Hash, opt_hex(&b.hash), opt_hex(&a.hash));
    }
    if !dir && a.size != b.size {
        push(Field::Size, b.size.to_string(), a.size.to_string());
    }
    if a.target != b.target {
        let show = |t: &Option<PathBuf>| t.as_ref().map(|t| t.display().to_string()).unwrap_or_default();
        push(Field::Target, show(&b.target), show(&a.target));
    }
    if a.mode != b.mode {
        push(Field::Mode, format!("{:04o}", b.mode), format!("{:04o}", a.mode));
    }
    if a.uid != b.uid {
        push(Field::Uid, b.uid.to_string(), a.uid.to_string());
    }
    if a.gid != b.gid {
        push(Field::Gid, b.gid.to_string(), a.gid.to_string());
    }
    if !dir && a.mtime_ns != b.mtime_ns {
        push(Field::Mtime, b.mtime_ns.to_string(), a.mtime_ns.to_string());
    }
    if !dir && a.ctime_ns != b.ctime_ns {
        push(Field::Ctime, b.ctime_ns.to_string(), a.ctime_ns.to_string());
    }
    if a.ino != b.ino {
        push(Field::Inode, b.ino.to_string(), a.ino.to_string());
    }
    if a.dev != b.dev {
        push(Field::Dev, b.dev.to_string(), a.dev.to_string());
    }
    if a.xattrs != b.xattrs {
        push(Field::Xattrs, opt_hex(&b.xattrs), opt_hex(&a.xattrs));
    }
    if fields.is_empty() {
        return None;
    }
    let kind = if fields.iter().any(|f| f.field.is_content()) {
        ChangeKind::Modified
    } else {
        ChangeKind::AttributesChanged
    };
    Some(Change { path: path.to_path_buf(), kind, fields, before: Some(b.clone()), after: Some(a.clone()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: Kind) -> Entry {
        Entry {
            kind,
            size: 10,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime_ns: 1,
            ctime_ns: 1,
            ino: 7,
            dev: 1,
            hash: Some([1; 32]),
            xattrs: None,
            target: None,
        }
    }

    #[test]
    fn content_fields_make_modified_others_attributes() {
        let p = Path::new("/x");
        let a = entry(Kind::File);
        assert_eq!(diff(p, Some(&a), Some(&a)), None);
        let mut b = a.clone();
        b.hash = Some([2; 32]);
        b.mtime_ns = 2;
        let c = diff(p, Some(&a), Some(&b)).unwrap();
        assert_eq!(c.kind, ChangeKind::Modified);
        assert_eq!(c.fields.iter().map(|f| f.field).collect::<Vec<_>>(), vec![Field::Hash, Field::Mtime]);
        let mut b = a.clone();
        b.mode = 0o4755;
        b.xattrs = Some([3; 32]);
        let c = diff(p, Some(&a), Some(&b)).unwrap();
        assert_eq!(c.kind, ChangeKind::AttributesChanged);
        assert_eq!(c.fields[0].before, "0644");
        assert_eq!(c.fields[0].after, "4755");
        assert!(c.has(Field::Xattrs));
    }

    #[test]
    fn unknown_hash_is_not_compared_and_dir_times_are_ignored() {
        let p = Path::new("/x");
        let a = entry(Kind::File);
        let mut b = a.clone();
        b.hash = None;
        assert_eq!(diff(p, Some(&a), Some(&b)), None);
        let d = entry(Kind::Dir);
        let mut e = d.clone();
        e.mtime_ns = 5;
        e.ctime_ns = 5;
        e.size = 4096;
        assert_eq!(diff(p, Some(&d), Some(&e)), None);
        e.uid = 3;
        assert_eq!(diff(p, Some(&d), Some(&e)).unwrap().kind, ChangeKind::AttributesChanged);
        let c = diff(p, Some(&a), Some(&d)).unwrap();
        assert_eq!(c.kind, ChangeKind::Modified);
        assert!(c.has(Field::Kind));
        assert_eq!(diff(p, None, Some(&a)).unwrap().kind, ChangeKind::Created);
        assert_eq!(diff(p, Some(&a), None).unwrap().kind, ChangeKind::Deleted);
    }
}
