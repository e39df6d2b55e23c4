//! Reading EVTX files into flat events: one file ([`read_file`], [`read_bytes`]) or many in
//! parallel ([`read_paths`]).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use evtx::{EvtxParser, EvtxRecord, ParserSettings};
use rayon::prelude::*;
use serde_json::Value;

use crate::channels::service_for_channel;
use crate::discover::{discover, EvtxFile, PathProblem};
use crate::flatten::flatten_record_json;
use crate::Event;

const FILE_HEADER_SIZE: u64 = 4096;
const CHUNK_SIZE: u64 = 65536;

/// How files are read.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// Threads the `evtx` crate uses for the chunks of one file (1: none of its own). Many
    /// small files read best one file per thread with this at 1 (see the crate docs).
    pub chunk_threads: usize,
    /// Skip chunks whose CRC does not match. Off by default: a chunk with a bad checksum
    /// usually still holds readable records, and each record that does not parse is reported.
    pub validate_checksums: bool,
    /// Error messages kept per file; the rest are only counted.
    pub max_errors_kept: usize,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions { chunk_threads: 1, validate_checksums: false, max_errors_kept: 50 }
    }
}

/// One event record.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The record header's id (`EventRecordID` in the event).
    pub record_id: u64,
    /// `TimeCreated` (the record header's time when that is missing), milliseconds since the
    /// Unix epoch.
    pub time_ms: i64,
    pub event: Event,
}

/// What reading one file gave.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileReport {
    pub path: PathBuf,
    pub bytes: u64,
    /// Records delivered.
    pub records: u64,
    /// Chunks or records that could not be read (the rest of the file was still read).
    pub error_count: u64,
    /// The first [`ReadOptions::max_errors_kept`] of those, with their reason.
    pub errors: Vec<String>,
    /// The file could not be read at all (not opened, not an EVTX file).
    pub fatal: Option<String>,
}

impl FileReport {
    fn new(path: &Path) -> Self {
        FileReport { path: path.to_path_buf(), ..FileReport::default() }
    }

    fn error(&mut self, reason: String, keep: usize) {
        self.error_count += 1;
        if self.errors.len() < keep {
            self.errors.push(reason);
        }
    }

    /// Whether anything went wrong with this file.
    pub fn has_problems(&self) -> bool {
        self.fatal.is_some() || self.error_count > 0
    }
}

/// Everything [`read_paths`] did.
#[derive(Debug, Clone, Default)]
pub struct ReadSummary {
    /// One per file, in path order.
    pub files: Vec<FileReport>,
    /// Paths that were not read at all (missing, FIFO, link loop...).
    pub path_problems: Vec<PathProblem>,
}

impl ReadSummary {
    pub fn records(&self) -> u64 {
        self.files.iter().map(|file| file.records).sum()
    }
    pub fn record_errors(&self) -> u64 {
        self.files.iter().map(|file| file.error_count).sum()
    }
    pub fn failed_files(&self) -> usize {
        self.files.iter().filter(|file| file.fatal.is_some()).count()
    }
}

/// Open a path for reading without ever blocking on a FIFO, and only if it is a regular file;
/// returns the file and its size.
pub fn open_regular_file(path: &Path) -> io::Result<(File, u64)> {
    // O_NONBLOCK: opening a FIFO must not wait for a writer; it has no effect on regular files.
    let file = OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY).open(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        let kind = if metadata.is_dir() { "a directory" } else { "not a regular file" };
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{kind}, not an event log file")));
    }
    Ok((file, metadata.len()))
}

/// Presents a file whose last chunk was cut short as if that chunk were zero-padded, so that
/// the records before the cut are still read (the `evtx` crate only reads whole chunks).
struct PaddedReader<R> {
    inner: R,
    real_len: u64,
    padded_len: u64,
    position: u64,
}

impl<R: Read + Seek> Read for PaddedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.position >= self.padded_len {
            return Ok(0);
        }
        if self.position < self.real_len {
            let want = buf.len().min((self.real_len - self.position) as usize);
            let got = self.inner.read(&mut buf[..want])?;
            self.position += got as u64;
            return Ok(got);
        }
        let want = buf.len().min((self.padded_len - self.position) as usize);
        buf[..want].fill(0);
        self.position += want as u64;
        Ok(want)
    }
}

impl<R: Read + Seek> Seek for PaddedReader<R> {
    fn seek(&mut self, target: SeekFrom) -> io::Result<u64> {
        let position = match target {
            SeekFrom::Start(offset) => Some(offset),
            SeekFrom::End(delta) => self.padded_len.checked_add_signed(delta),
            SeekFrom::Current(delta) => self.position.checked_add_signed(delta),
        }
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before start"))?;
        self.inner.seek(SeekFrom::Start(position.min(self.real_len)))?;
        self.position = position;
        Ok(position)
    }
}

/// If the file ends inside a chunk: the length to pad it to and the error to report.
fn truncation(len: u64) -> Option<(u64, String)> {
    if len <= FILE_HEADER_SIZE {
        return None;
    }
    let partial = (len - FILE_HEADER_SIZE) % CHUNK_SIZE;
    if partial == 0 {
        return None;
    }
    let chunk = (len - FILE_HEADER_SIZE) / CHUNK_SIZE;
    Some((
        len - partial + CHUNK_SIZE,
        format!(
            "file truncated: its last chunk ({chunk}) holds {partial} of {CHUNK_SIZE} bytes; \
             records past the cut are lost"
        ),
    ))
}

/// Read one EVTX file; `on_record` gets each record in file order.
pub fn read_file(path: &Path, options: &ReadOptions, on_record: &mut dyn FnMut(Record)) -> FileReport {
    let mut report = FileReport::new(path);
    let (file, len) = match open_regular_file(path) {
        Ok(opened) => opened,
        Err(error) => {
            report.fatal = Some(format!("cannot open: {error}"));
            return report;
        }
    };
    report.bytes = len;
    match truncation(len) {
        Some((padded_len, reason)) => {
            report.error(reason, options.max_errors_kept);
            let reader = PaddedReader { inner: file, real_len: len, padded_len, position: 0 };
            parse_guarded(reader, options, &mut report, on_record);
        }
        None => parse_guarded(file, options, &mut report, on_record),
    }
    report
}

/// Read an EVTX file held in memory (`name` only labels the report).
pub fn read_bytes(
    name: &Path,
    mut data: Vec<u8>,
    options: &ReadOptions,
    on_record: &mut dyn FnMut(Record),
) -> FileReport {
    let mut report = FileReport::new(name);
    report.bytes = data.len() as u64;
    if let Some((padded_len, reason)) = truncation(report.bytes) {
        report.error(reason, options.max_errors_kept);
        data.resize(padded_len as usize, 0);
    }
    parse_guarded(io::Cursor::new(data), options, &mut report, on_record);
    report
}

/// A panic inside the parser on hostile input must cost only this file.
fn parse_guarded<R: Read + Seek>(
    reader: R,
    options: &ReadOptions,
    report: &mut FileReport,
    on_record: &mut dyn FnMut(Record),
) {
    let outcome = catch_unwind(AssertUnwindSafe(|| parse(reader, options, report, on_record)));
    if let Err(panic) = outcome {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned());
        let reason =
            format!("the EVTX parser failed on this file ({message}); records after it were not read");
        report.error(reason, options.max_errors_kept);
    }
}

fn parse<R: Read + Seek>(
    reader: R,
    options: &ReadOptions,
    report: &mut FileReport,
    on_record: &mut dyn FnMut(Record),
) {
    let settings = ParserSettings::new()
        .indent(false)
        .separate_json_attributes(false)
        .validate_checksums(options.validate_checksums)
        .num_threads(options.chunk_threads.max(1));
    let mut parser = match EvtxParser::from_read_seek(reader) {
        Ok(parser) => parser.with_configuration(settings),
        Err(error) => {
            report.fatal = Some(format!("not a readable EVTX file: {}", error_chain(&error)));
            return;
        }
    };
    for item in parser.serialized_records(render_record) {
        match item {
            Ok(Ok(record)) => {
                report.records += 1;
                on_record(record);
            }
            Ok(Err(reason)) => report.error(reason, options.max_errors_kept),
            Err(error) => report.error(error_chain(&error), options.max_errors_kept),
        }
    }
}

/// Runs on the parser's worker (the chunk's thread): render, then flatten.
fn render_record(record: evtx::err::Result<EvtxRecord<'_>>) -> evtx::err::Result<Result<Record, String>> {
    let record = record?;
    let record_id = record.event_record_id;
    if !size_copy_matches(&record) {
        // Typically a record cut by a truncated file (the rest is zero padding) or
        // overwritten: its values would be silently wrong.
        return Ok(Err(format!(
            "record {record_id}: damaged (its trailing size copy does not match its header), skipped"
        )));
    }
    let header_time = record.timestamp;
    let rendered = record.into_json_bytes()?;
    // Sized for a typical record (System + EventData), to avoid regrowing the map.
    let mut event = Event::with_capacity(48);
    if let Err(error) = flatten_record_json(&rendered.data, &mut event) {
        return Ok(Err(format!("record {record_id}: unexpected rendered form: {error}")));
    }
    let time_ms = finish_event(&mut event, header_time);
    Ok(Ok(Record { record_id, time_ms, event }))
}

/// Windows writes each record's size again after its data; the `evtx` crate does not check it.
fn size_copy_matches(record: &EvtxRecord<'_>) -> bool {
    let header_size = 24u64;
    let Some(start) = record.binxml_offset.checked_sub(header_size) else {
        return false;
    };
    let end = record.binxml_offset + u64::from(record.binxml_size);
    let data = record.chunk.data;
    let read_u32 = |at: u64| -> Option<u32> {
        let at = usize::try_from(at).ok()?;
        let bytes = data.get(at..at.checked_add(4)?)?;
        Some(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    };
    match (read_u32(start + 4), read_u32(end)) {
        (Some(size), Some(copy)) => size == copy,
        _ => false,
    }
}

/// Add the common fields; returns the event time in milliseconds.
fn finish_event(event: &mut Event, header_time: evtx::Timestamp) -> i64 {
    let created = event
        .get("TimeCreated")
        .and_then(Value::as_str)
        .and_then(|text| text.parse::<evtx::Timestamp>().ok().map(|time| (time, text)));
    let (time, timestamp_text) = match created {
        Some((time, text)) if text.ends_with('Z') => (time, text.to_owned()),
        Some((time, _)) => (time, time.to_string()),
        None => (header_time, header_time.to_string()),
    };
    let service = event.get("Channel").and_then(Value::as_str).and_then(service_for_channel);
    event.insert("@timestamp".to_owned(), Value::String(timestamp_text));
    event.insert("mamori.input".to_owned(), Value::from("evtx"));
    event.insert("mamori.logsource.product".to_owned(), Value::from("windows"));
    if let Some(service) = service {
        event.insert("mamori.logsource.service".to_owned(), Value::from(service));
    }
    time.as_millisecond()
}

/// An error and its causes, which carry the useful detail (offsets, what was expected).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Read files on `threads` threads (0: one per core), one file per thread at a time, biggest
/// first. `on_record` is called from the reading threads.
pub fn read_files<F>(
    files: &[EvtxFile],
    options: &ReadOptions,
    threads: usize,
    on_record: F,
) -> Vec<FileReport>
where
    F: Fn(&EvtxFile, Record) + Sync,
{
    let mut order: Vec<&EvtxFile> = files.iter().collect();
    order.sort_by_key(|file| std::cmp::Reverse(file.bytes));
    let read_one = |file: &&EvtxFile| read_file(&file.path, options, &mut |record| on_record(file, record));
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build();
    let mut reports: Vec<FileReport> = match pool {
        Ok(pool) => pool.install(|| order.par_iter().map(read_one).collect()),
        // No threads to be had: the same work, on this one.
        Err(_) => order.iter().map(read_one).collect(),
    };
    reports.sort_by(|a, b| a.path.cmp(&b.path));
    reports
}

/// Discover and read `paths` (files, directories) in parallel; see [`read_files`].
pub fn read_paths<F>(paths: &[PathBuf], options: &ReadOptions, threads: usize, on_record: F) -> ReadSummary
where
    F: Fn(&EvtxFile, Record) + Sync,
{
    let discovery = discover(paths);
    let files = read_files(&discovery.files, options, threads, on_record);
    ReadSummary { files, path_problems: discovery.problems }
}
