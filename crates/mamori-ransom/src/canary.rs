//! Decoy (canary) files.
//!
//! Encryptors walk directories, most of them in the order the file system or a sorted listing
//! gives. Two decoys per directory, named to sort first (`!`, before digits and letters, also
//! case-insensitively) and last (`zzzz_`), are among the first files a sorted walk touches in
//! either direction. They are real documents (a valid OOXML zip and a valid PDF) so that an
//! encryptor that filters by type or magic still picks them. Nothing legitimate writes them; the
//! detector gives any write, rename or delete of one [`crate::detector::CANARY_POINTS`].

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Name of the decoy that sorts first in a directory.
pub const FIRST_NAME: &str = "!0000_Accounts_Receivable_2019.docx";
/// Name of the decoy that sorts last in a directory.
pub const LAST_NAME: &str = "zzzz_Scanned_Records_Archive.pdf";

/// The set of planted canaries.
#[derive(Debug, Clone, Default)]
pub struct Canaries {
    paths: Vec<PathBuf>,
}

impl Canaries {
    pub fn new() -> Self {
        Self::default()
    }

    /// Plant the two decoys in `dir` (an existing decoy is kept and registered, never
    /// overwritten) and return their paths.
    pub fn plant(&mut self, dir: &Path) -> io::Result<[PathBuf; 2]> {
        let first = dir.join(FIRST_NAME);
        let last = dir.join(LAST_NAME);
        write_new(&first, &docx_bytes(dir)?)?;
        write_new(&last, &pdf_bytes(dir))?;
        self.register(first.clone());
        self.register(last.clone());
        Ok([first, last])
    }

    /// Register an existing file as a canary (e.g. reloaded from the agent's state).
    pub fn register(&mut self, path: PathBuf) {
        if !self.paths.contains(&path) {
            self.paths.push(path);
        }
    }

    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    pub fn contains(&self, path: &Path) -> bool {
        self.paths.iter().any(|p| p == path)
    }
}

fn write_new(path: &Path, bytes: &[u8]) -> io::Result<()> {
    match OpenOptions::new().write(true).create_new(true).open(path) {
        Ok(mut f) => {
            f.write_all(bytes)?;
            f.sync_all()
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// A small but valid .docx, its text varying with the directory so decoys are not identical.
fn docx_bytes(dir: &Path) -> io::Result<Vec<u8>> {
    use zip::write::SimpleFileOptions;
    let seed = dir.as_os_str().len() as u32 * 7919 % 9000 + 1000;
    let mut out = io::Cursor::new(Vec::new());
    let mut z = zip::ZipWriter::new(&mut out);
    let opts = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    let parts: [(&str, String); 3] = [
        (
            "[Content_Types].xml",
            r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>"#.to_string(),
        ),
        (
            "_rels/.rels",
            r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="word/document.xml"/></Relationships>"#.to_string(),
        ),
        (
            "word/document.xml",
            format!(
                r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body><w:p><w:r><w:t>Accounts receivable reconciliation, batch {seed}. Outstanding invoices for outpatient services, insurer remittances and adjustments. Prepared by Finance.</w:t></w:r></w:p></w:body></w:document>"#
            ),
        ),
    ];
    for (name, body) in parts {
        z.start_file(name, opts).map_err(io::Error::other)?;
        z.write_all(body.as_bytes())?;
    }
    z.finish().map_err(io::Error::other)?;
    Ok(out.into_inner())
}

/// A minimal valid PDF (one page, one line of text, correct xref offsets).
fn pdf_bytes(dir: &Path) -> Vec<u8> {
    let seed = dir.as_os_str().len() as u32 * 104_729 % 90_000 + 10_000;
    let text = format!("Scanned records archive, box {seed}. Retention: 10 years.");
    let stream = format!("BT /F1 12 Tf 72 720 Td ({text}) Tj ET");
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_string(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R \
         /Resources << /Font << /F1 5 0 R >> >> >>"
            .to_string(),
        format!("<< /Length {} >>\nstream\n{stream}\nendstream", stream.len()),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_string(),
    ];
    let mut out = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n".to_vec();
    let mut offsets = Vec::new();
    for (i, o) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n{o}\nendobj\n", i + 1).as_bytes());
    }
    let xref = out.len();
    out.extend_from_slice(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes());
    for off in offsets {
        out.extend_from_slice(format!("{off:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!("trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n", objects.len() + 1)
            .as_bytes(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::{ContentSample, FileKind};

    #[test]
    fn plants_real_documents_sorting_first_and_last() {
        let dir = tempfile::tempdir().unwrap();
        for n in ["0001.txt", "AAA.docx", "aaa.pdf", "report.xlsx", "zz.txt", "ZZZ.csv"] {
            std::fs::write(dir.path().join(n), "x").unwrap();
        }
        let mut c = Canaries::new();
        let [first, last] = c.plant(dir.path()).unwrap();
        assert_eq!(ContentSample::from_file(&first).unwrap().kind, FileKind::OfficeZip);
        assert_eq!(ContentSample::from_file(&last).unwrap().kind, FileKind::Pdf);
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names.first().unwrap(), FIRST_NAME);
        assert_eq!(names.last().unwrap(), LAST_NAME);
        names.sort_by_key(|n| n.to_lowercase());
        assert_eq!(names.first().unwrap(), FIRST_NAME);
        assert_eq!(names.last().unwrap(), LAST_NAME);
        // Planting again keeps the files and the registry unchanged.
        let before = std::fs::read(&first).unwrap();
        c.plant(dir.path()).unwrap();
        assert_eq!(std::fs::read(&first).unwrap(), before);
        assert_eq!(c.paths().len(), 2);
        assert!(c.contains(&last));
    }
}
