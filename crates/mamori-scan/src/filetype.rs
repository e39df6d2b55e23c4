//! File type names for the `filetype` external variable.
//!
//! Real rule sets (signature-base among them) were written for THOR, which sets `filetype`
//! to upper-case names such as `EXE`, `ELF` or `PDF` from the file's magic bytes, and for
//! scripts from the extension. We follow the same names so that those rules keep working.

/// The THOR-style type of `data`, whose file name has `extension` (with its dot,
/// lower-case). Empty when unknown.
pub fn detect(data: &[u8], extension: &str) -> &'static str {
    let magic: &[(&[u8], &str)] = &[
        (b"MZ", "EXE"),
        (b"\x7fELF", "ELF"),
        (b"\xfe\xed\xfa\xce", "MACH-O"),
        (b"\xfe\xed\xfa\xcf", "MACH-O"),
        (b"\xce\xfa\xed\xfe", "MACH-O"),
        (b"\xcf\xfa\xed\xfe", "MACH-O"),
        (b"\xca\xfe\xba\xbe", "MACH-O"),
        (b"%PDF", "PDF"),
        (b"GIF8", "GIF"),
        (b"\x89PNG", "PNG"),
        (b"\xff\xd8\xff", "JPEG"),
        (b"{\\rtf", "RTF"),
        (b"MDMP", "MDMP"),
        (b"PK\x03\x04", "ZIP"),
        (b"\x1f\x8b", "GZIP"),
        (b"Rar!", "RAR"),
        (b"7z\xbc\xaf\x27\x1c", "7Z"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "OLE"),
        (b"dex\n", "DEX"),
        (b"#!", "SCRIPT"),
    ];
    for (prefix, name) in magic {
        if data.starts_with(prefix) {
            // A shebang names the interpreter; prefer the extension's more specific name.
            if *name != "SCRIPT" {
                return name;
            }
            break;
        }
    }
    match extension {
        ".vbs" | ".vbe" => "VBS",
        ".php" | ".php5" | ".phtml" => "PHP",
        ".py" | ".pyw" => "Python",
        ".jsp" | ".jspx" => "JSP",
        ".asp" | ".aspx" | ".ashx" | ".asmx" => "ASP",
        ".bat" | ".cmd" => "BATCH",
        ".ps1" | ".psm1" | ".psd1" => "PowerShell",
        ".js" => "JS",
        ".sh" => "SHELL",
        _ if data.starts_with(b"#!") => "SCRIPT",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::detect;

    #[test]
    fn magic_wins_over_extension_and_scripts_use_extension() {
        assert_eq!(detect(b"MZ\x90\x00", ".txt"), "EXE");
        assert_eq!(detect(b"\x7fELF\x02", ""), "ELF");
        assert_eq!(detect(b"<?php echo 1;", ".php"), "PHP");
        assert_eq!(detect(b"#!/usr/bin/python3", ".py"), "Python");
        assert_eq!(detect(b"#!/bin/sh", ""), "SCRIPT");
        assert_eq!(detect(b"hello", ".txt"), "");
    }
}
