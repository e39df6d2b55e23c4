//! Splits a syslog TCP/TLS byte stream into messages (RFC 6587).
//!
//! Each frame is detected on its own: a frame that starts with a non-zero digit run followed by a
//! space is octet-counted (`LEN SP MSG`); anything else runs to the next `\n` (non-transparent
//! framing; a `\r` before the `\n` is dropped, and empty lines are skipped). Senders switch freely.
//!
//! Memory is bounded by `max_frame` (+ a few bytes): an octet count above the maximum, or a line
//! longer than it, is counted as an error and its bytes are skipped as they arrive without being
//! stored; framing resumes after them (after `LEN` bytes, or after the next `\n`).

/// Counters for the caller's metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FramerStats {
    /// Messages handed out.
    pub frames: u64,
    /// Frames dropped for exceeding the maximum size (octet count or line length).
    pub oversized: u64,
    /// Octet-counted frames cut short by the end of the stream.
    pub invalid: u64,
}

impl FramerStats {
    /// All errors together.
    pub fn errors(&self) -> u64 {
        self.oversized + self.invalid
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a frame (the buffer holds the beginning of an undecided frame).
    Start,
    /// Reading an octet-counted frame of this many bytes into the buffer.
    Counted(usize),
    /// Skipping this many more bytes of an oversized octet-counted frame.
    SkipCount(usize),
    /// Skipping to the next `\n`.
    SkipLine,
}

/// The digits of an octet count: nine are enough for any sane maximum and keep the arithmetic
/// far from overflow.
const MAX_LEN_DIGITS: usize = 9;

/// Stream framer. Feed bytes with [`Framer::push`]; complete messages are appended to `out`.
#[derive(Debug)]
pub struct Framer {
    max_frame: usize,
    buf: Vec<u8>,
    state: State,
    stats: FramerStats,
}

impl Framer {
    /// `max_frame`: the largest message accepted, in bytes (at least 1).
    pub fn new(max_frame: usize) -> Framer {
        Framer {
            max_frame: max_frame.max(1),
            buf: Vec::new(),
            state: State::Start,
            stats: FramerStats::default(),
        }
    }

    pub fn stats(&self) -> FramerStats {
        self.stats
    }

    /// Number of frames dropped as errors so far.
    pub fn errors(&self) -> u64 {
        self.stats.errors()
    }

    /// Bytes held for an incomplete frame.
    pub fn pending_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Consumes `bytes`, appending every completed message to `out`.
    pub fn push(&mut self, mut bytes: &[u8], out: &mut Vec<Vec<u8>>) {
        while !bytes.is_empty() {
            match self.state {
                State::SkipCount(n) => {
                    let take = n.min(bytes.len());
                    bytes = &bytes[take..];
                    self.state = if take == n { State::Start } else { State::SkipCount(n - take) };
                }
                State::SkipLine => match memchr::memchr(b'\n', bytes) {
                    Some(p) => {
                        bytes = &bytes[p + 1..];
                        self.state = State::Start;
                    }
                    None => bytes = &[],
                },
                State::Counted(len) => {
                    let take = (len - self.buf.len()).min(bytes.len());
                    self.buf.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    if self.buf.len() == len {
                        self.emit(out);
                        self.state = State::Start;
                    }
                }
                State::Start => bytes = self.start(bytes, out),
            }
        }
    }

    /// End of stream: a final line without `\n` is handed out; a partial octet-counted frame is
    /// counted as an error (the sender stopped in the middle).
    pub fn finish(&mut self, out: &mut Vec<Vec<u8>>) {
        match self.state {
            State::Start if !self.buf.is_empty() => {
                if self.buf.first().is_some_and(u8::is_ascii_digit) && self.buf.iter().all(u8::is_ascii_digit)
                {
                    // Only digits: the beginning of an octet count that never got its frame.
                    self.stats.invalid += 1;
                    self.buf.clear();
                } else {
                    if self.buf.last() == Some(&b'\r') {
                        self.buf.pop();
                    }
                    if self.buf.len() > self.max_frame {
                        self.stats.oversized += 1;
                        self.buf.clear();
                    } else {
                        self.emit(out);
                    }
                }
            }
            State::Counted(_) => {
                self.stats.invalid += 1;
                self.buf.clear();
            }
            _ => {}
        }
        self.state = State::Start;
    }

    fn emit(&mut self, out: &mut Vec<Vec<u8>>) {
        self.stats.frames += 1;
        out.push(std::mem::take(&mut self.buf));
    }

    /// At a frame start (with `self.buf` holding what has been seen of it). Returns the unused rest.
    fn start<'a>(&mut self, bytes: &'a [u8], out: &mut Vec<Vec<u8>>) -> &'a [u8] {
        // Skip blank lines between frames.
        let mut bytes = bytes;
        if self.buf.is_empty() {
            let skip = bytes.iter().take_while(|&&c| c == b'\n' || c == b'\r').count();
            bytes = &bytes[skip..];
            if bytes.is_empty() {
                return bytes;
            }
        }
        // Decide octet counting vs newline: look at the digits seen so far plus the new bytes.
        let digits_held = self.buf.len();
        let counting_candidate =
            self.buf.iter().all(u8::is_ascii_digit) && (digits_held > 0 || matches!(bytes[0], b'1'..=b'9'));
        if counting_candidate {
            let more_digits = bytes.iter().take_while(|c| c.is_ascii_digit()).count();
            let total_digits = digits_held + more_digits;
            if total_digits > MAX_LEN_DIGITS {
                // Not a length we would ever accept; treat the frame as a line and see how long
                // it gets.
            } else if more_digits == bytes.len() {
                self.buf.extend_from_slice(bytes);
                return &[];
            } else if bytes[more_digits] == b' ' {
                let mut len = 0usize;
                for &d in self.buf.iter().chain(&bytes[..more_digits]) {
                    len = len * 10 + usize::from(d - b'0');
                }
                self.buf.clear();
                let rest = &bytes[more_digits + 1..];
                if len > self.max_frame {
                    self.stats.oversized += 1;
                    self.state = State::SkipCount(len);
                } else if len == 0 {
                    self.state = State::Start;
                } else {
                    self.buf.reserve(len);
                    self.state = State::Counted(len);
                }
                return rest;
            }
        }
        // Newline-delimited frame.
        match memchr::memchr(b'\n', bytes) {
            Some(p) => {
                if self.buf.len() + p > self.max_frame + 1 {
                    self.stats.oversized += 1;
                    self.buf.clear();
                } else {
                    self.buf.extend_from_slice(&bytes[..p]);
                    if self.buf.last() == Some(&b'\r') {
                        self.buf.pop();
                    }
                    if self.buf.len() > self.max_frame {
                        self.stats.oversized += 1;
                        self.buf.clear();
                    } else {
                        self.emit(out);
                    }
                }
                &bytes[p + 1..]
            }
            None => {
                // +1 leaves room for a `\r` that the next chunk's `\n` will make droppable.
                if self.buf.len() + bytes.len() > self.max_frame + 1 {
                    self.stats.oversized += 1;
                    self.buf.clear();
                    self.state = State::SkipLine;
                } else {
                    self.buf.extend_from_slice(bytes);
                }
                &[]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_all(chunks: &[&[u8]], max: usize) -> (Vec<Vec<u8>>, FramerStats) {
        let mut f = Framer::new(max);
        let mut out = Vec::new();
        for c in chunks {
            f.push(c, &mut out);
        }
        f.finish(&mut out);
        (out, f.stats())
    }

    #[test]
    fn mixed_framing_in_one_stream() {
        let stream = b"<13>Jun  1 00:00:00 a b: one\n17 <13>1 - - - - - x\n\r\n<13>three\r\n5 hello<13>last";
        let (out, stats) = frame_all(&[stream], 1024);
        let expected: Vec<&[u8]> =
            vec![b"<13>Jun  1 00:00:00 a b: one", b"<13>1 - - - - - x", b"<13>three", b"hello", b"<13>last"];
        assert_eq!(out, expected);
        assert_eq!(stats.frames, 5);
        assert_eq!(stats.errors(), 0);
        // The same stream byte by byte gives the same frames.
        let singles: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(frame_all(&singles, 1024).0, expected);
    }

    #[test]
    fn oversized_frames_are_skipped_and_counted() {
        let mut stream = b"20 ".to_vec();
        stream.extend_from_slice(&[b'x'; 20]);
        stream.extend_from_slice(b"3 abc");
        stream.extend_from_slice(&[b'y'; 50]);
        stream.extend_from_slice(b"\nok\n");
        stream.extend_from_slice(b"1234567890123 too many digits\nfine\n");
        for chunk in [1, 3, 7, stream.len()] {
            let pieces: Vec<&[u8]> = stream.chunks(chunk).collect();
            let mut f = Framer::new(10);
            let mut out = Vec::new();
            for p in &pieces {
                f.push(p, &mut out);
                assert!(f.pending_bytes() <= 11, "buffer grew to {}", f.pending_bytes());
            }
            f.finish(&mut out);
            let expected: Vec<&[u8]> = vec![b"abc", b"ok", b"fine"];
            assert_eq!(out, expected, "chunk {chunk}");
            assert_eq!(f.stats().oversized, 3, "chunk {chunk}");
        }
    }

    #[test]
    fn truncated_stream_end() {
        let (out, stats) = frame_all(&[b"10 abc"], 100);
        assert!(out.is_empty());
        assert_eq!(stats.invalid, 1);
        let (out, stats) = frame_all(&[b"12"], 100);
        assert!(out.is_empty());
        assert_eq!(stats.invalid, 1);
        // A leading zero is no octet count: that frame is a line.
        let (out, stats) = frame_all(&[b"0 \n12 rest"], 100);
        assert_eq!(out, vec![b"0 ".to_vec()]);
        assert_eq!(stats.invalid, 1);
    }
}
