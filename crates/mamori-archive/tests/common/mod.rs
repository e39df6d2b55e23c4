//! Builders for real archives used by the integration tests.
#![allow(dead_code)]

use std::io::{Cursor, Write};

use mamori_archive::{expand, Flow, Limits, Member, Report};

pub type Visited = Vec<(Vec<String>, Vec<u8>)>;

/// Expand and record every visit (path chain and bytes) plus the reports.
pub fn run(data: &[u8], outer_name: &str, limits: &Limits) -> (Visited, Vec<Report>) {
    let mut visited = Vec::new();
    let reports = expand(data, outer_name, limits, &mut |m: &Member<'_>| {
        visited.push((m.path.to_vec(), m.data.to_vec()));
        Flow::Continue
    });
    (visited, reports)
}

pub fn paths(visited: &Visited) -> Vec<Vec<String>> {
    visited.iter().map(|(p, _)| p.clone()).collect()
}

pub fn chain(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

pub fn zip_with(method: zip::CompressionMethod, files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default().compression_method(method);
    for (name, data) in files {
        if name.ends_with('/') {
            w.add_directory(*name, opts).unwrap();
        } else {
            w.start_file(*name, opts).unwrap();
            w.write_all(data).unwrap();
        }
    }
    w.finish().unwrap().into_inner()
}

pub fn zip_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    zip_with(zip::CompressionMethod::Deflated, files)
}

pub fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Cheap deterministic bytes that do not compress (xorshift64*).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed | 1);
    (0..len).map(|_| rng.next() as u8).collect()
}

pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A raw deflate stream of `chunks` MiB of zeros, with its CRC-32 and length.
///
/// Pushing 2 GiB through `ZipWriter` or `GzEncoder` takes close to a minute
/// in a debug build, so the stream is made by flate2 one MiB at a time with
/// full flushes: after a full flush the compressor forgets its history, so
/// every MiB after the first compresses to the same bytes and can be
/// repeated. The result is a genuine deflate stream with a correct CRC, which
/// `zeros_builders_make_valid_archives` checks by expanding small ones
/// completely.
pub fn deflate_zeros(chunks: u32) -> (Vec<u8>, u32, u64) {
    const MIB: usize = 1024 * 1024;
    let zeros = vec![0u8; MIB];
    let mut c = flate2::Compress::new(flate2::Compression::default(), false);
    let mut deflate = |input: &[u8], flush: flate2::FlushCompress| {
        let mut out = Vec::with_capacity(MIB);
        let before = c.total_in();
        c.compress_vec(input, &mut out, flush).unwrap();
        assert_eq!(c.total_in() - before, input.len() as u64);
        assert!(out.len() < out.capacity(), "output buffer filled up");
        out
    };
    let first = deflate(&zeros, flate2::FlushCompress::Full);
    let second = deflate(&zeros, flate2::FlushCompress::Full);
    let third = deflate(&zeros, flate2::FlushCompress::Full);
    assert_eq!(second, third, "full flush did not make chunks repeat");
    let mut stream = first;
    for _ in 1..chunks {
        stream.extend_from_slice(&second);
    }
    stream.extend_from_slice(&deflate(&[], flate2::FlushCompress::Finish));

    let mut one = flate2::Crc::new();
    one.update(&zeros);
    let mut crc = flate2::Crc::new();
    for _ in 0..chunks {
        crc.combine(&one);
    }
    (stream, crc.sum(), u64::from(chunks) * MIB as u64)
}

/// A gzip file of `chunks` MiB of zeros.
pub fn gzip_of_zeros(chunks: u32) -> Vec<u8> {
    let (stream, crc, size) = deflate_zeros(chunks);
    let mut g = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    g.extend_from_slice(&stream);
    g.extend_from_slice(&crc.to_le_bytes());
    g.extend_from_slice(&(size as u32).to_le_bytes()); // ISIZE is size mod 2^32
    g
}

/// A single-member deflate zip of `chunks` MiB of zeros.
pub fn zip_of_zeros(name: &str, chunks: u32) -> Vec<u8> {
    let (stream, crc, size) = deflate_zeros(chunks);
    let size = u32::try_from(size).expect("stay below zip64");
    let compressed = u32::try_from(stream.len()).unwrap();

    let mut z = Vec::new();
    // Local file header.
    z.extend_from_slice(b"PK\x03\x04");
    z.extend_from_slice(&20u16.to_le_bytes()); // version needed
    z.extend_from_slice(&0u16.to_le_bytes()); // flags
    z.extend_from_slice(&8u16.to_le_bytes()); // deflate
    z.extend_from_slice(&[0, 0, 0x21, 0]); // time, date (1980-01-01)
    z.extend_from_slice(&crc.to_le_bytes());
    z.extend_from_slice(&compressed.to_le_bytes());
    z.extend_from_slice(&size.to_le_bytes());
    z.extend_from_slice(&(name.len() as u16).to_le_bytes());
    z.extend_from_slice(&0u16.to_le_bytes()); // extra length
    z.extend_from_slice(name.as_bytes());
    z.extend_from_slice(&stream);
    // Central directory.
    let cd_start = u32::try_from(z.len()).unwrap();
    z.extend_from_slice(b"PK\x01\x02");
    z.extend_from_slice(&20u16.to_le_bytes()); // made by
    z.extend_from_slice(&20u16.to_le_bytes()); // needed
    z.extend_from_slice(&0u16.to_le_bytes());
    z.extend_from_slice(&8u16.to_le_bytes());
    z.extend_from_slice(&[0, 0, 0x21, 0]);
    z.extend_from_slice(&crc.to_le_bytes());
    z.extend_from_slice(&compressed.to_le_bytes());
    z.extend_from_slice(&size.to_le_bytes());
    z.extend_from_slice(&(name.len() as u16).to_le_bytes());
    z.extend_from_slice(&[0; 12]); // extra, comment, disk, internal and external attrs
    z.extend_from_slice(&0u32.to_le_bytes()); // local header offset
    z.extend_from_slice(name.as_bytes());
    let cd_len = u32::try_from(z.len()).unwrap() - cd_start;
    // End of central directory.
    z.extend_from_slice(b"PK\x05\x06");
    z.extend_from_slice(&[0; 4]); // disk numbers
    z.extend_from_slice(&1u16.to_le_bytes());
    z.extend_from_slice(&1u16.to_le_bytes());
    z.extend_from_slice(&cd_len.to_le_bytes());
    z.extend_from_slice(&cd_start.to_le_bytes());
    z.extend_from_slice(&0u16.to_le_bytes());
    z
}
