//! Built-in detection of the EICAR anti-malware test file.
//!
//! The test string is never written into this source file (other scanners would flag the
//! repository); it is recognised by its SHA-256 instead. The EICAR definition allows the
//! 68-byte string to be followed by white space, up to 128 bytes in total.

use sha2::{Digest, Sha256};

/// SHA-256 of the 68-byte EICAR test string.
const EICAR_SHA256: [u8; 32] = [
    0x27, 0x5a, 0x02, 0x1b, 0xbf, 0xb6, 0x48, 0x9e, 0x54, 0xd4, 0x71, 0x89, 0x9f, 0x7d, 0xb9, 0xd1, 0x66,
    0x3f, 0xc6, 0x95, 0xec, 0x2f, 0xe2, 0xa2, 0xc4, 0x53, 0x8a, 0xab, 0xf6, 0x51, 0xfd, 0x0f,
];
const EICAR_LEN: usize = 68;
const EICAR_MAX_FILE: usize = 128;

/// Name reported for a match, the one ClamAV and others use.
pub const EICAR_RULE: &str = "EICAR-Test-File";

/// True when `data` is the EICAR test file (optionally followed by white space).
pub fn is_eicar(data: &[u8]) -> bool {
    if data.len() < EICAR_LEN || data.len() > EICAR_MAX_FILE || !data.starts_with(b"X5O!") {
        return false;
    }
    let (head, tail) = data.split_at(EICAR_LEN);
    tail.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n' | 0x1a))
        && Sha256::digest(head).as_slice() == EICAR_SHA256
}

#[cfg(test)]
pub(crate) fn eicar_for_tests() -> Vec<u8> {
    // Assembled from two halves so that this file never holds the contiguous string.
    let mut v = br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STAN".to_vec();
    v.extend_from_slice(br"DARD-ANTIVIRUS-TEST-FILE!$H+H*");
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_eicar_and_trailing_whitespace_only() {
        let e = eicar_for_tests();
        assert!(is_eicar(&e));
        let mut with_newline = e.clone();
        with_newline.extend_from_slice(b"\r\n");
        assert!(is_eicar(&with_newline));
        let mut with_junk = e.clone();
        with_junk.extend_from_slice(b"junk");
        assert!(!is_eicar(&with_junk));
        let mut altered = e.clone();
        altered[10] ^= 1;
        assert!(!is_eicar(&altered));
        assert!(!is_eicar(&e[..67]));
    }
}
