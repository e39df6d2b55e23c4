//! Parser and framer throughput, one thread.
//!
//! ```text
//! cargo run --release -p mamori-logs --example logs_throughput [LOG_DIR] [LINES]
//! ```
//!
//! LOG_DIR holds the loghub `Linux_2k.log` and `OpenSSH_2k.log` (default:
//! `../shared/corpora/logs`); LINES is the number of lines per measurement (default 300000).
//! Synthetic RFC 5424, CEF, PAN-OS and FortiGate lines vary their addresses and ports per line.

use std::time::{Instant, SystemTime};

use mamori_logs::{parse_line, Format, Framer, ParseContext};

/// CPU seconds this process has used (user + system), from /proc: on a shared machine wall time
/// says more about the neighbours than about the parser.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th of them
    // (the first is the state letter).
    let after = stat.rsplit_once(')').map_or("", |(_, a)| a);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    // CLK_TCK is 100 on Linux.
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// (wall seconds, cpu seconds) of `f`.
fn timed(f: impl FnOnce()) -> (f64, f64) {
    let (start, cpu) = (Instant::now(), cpu_seconds());
    f();
    (start.elapsed().as_secs_f64(), cpu_seconds() - cpu)
}

fn repeat_to(lines: &[String], n: usize) -> Vec<String> {
    lines.iter().cycle().take(n).cloned().collect()
}

fn synthetic(kind: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let (a, b, port) = (i % 250 + 1, (i / 250) % 250 + 1, 1024 + i % 60000);
            match kind {
                "rfc5424" => format!(
                    "<165>1 2024-03-05T10:11:{:02}.{:03}+09:00 host{a}.example.com app{b} {i} ID47 [exampleSDID@32473 iut=\"3\" eventSource=\"Application\" eventID=\"{i}\"] message number {i} from 192.0.2.{a}",
                    i % 60, i % 1000
                ),
                "cef" => format!(
                    "<134>Mar  5 10:11:12 proxy{a} CEF:0|Trend Micro|Deep Security Agent|10.0|4000000|Eicar_test_file|6|cn1={i} cn1Label=Host ID dvchost=host{b} act=Quarantine fname=eicar.com msg=Realtime scan src=192.0.2.{a} spt={port} dst=198.51.100.{b} dpt=443 suser=user{b}"
                ),
                "panos" => format!(
                    "<14>Mar  5 10:11:12 fw-hq-01 1,2024/03/05 10:11:12,012801000001,TRAFFIC,end,2561,2024/03/05 10:11:10,192.0.2.{a},198.51.100.{b},203.0.113.5,198.51.100.{b},Allow-Web,corp\\user{a},,ssl,vsys1,trust,untrust,ethernet1/1,ethernet1/2,Forward-All,,{i},1,{port},443,40111,443,0x400053,tcp,allow,9120,1480,7640,20,2024/03/05 10:10:58,12,computer-and-internet-info,,7311111111111,0x8000000000000000,192.168.0.0-192.168.255.255,United States,,11,9,tcp-fin,0,0,0,0,,fw-hq-01,from-policy,,,0,,0,,N/A,0,0,0,0,6a1e2c3d-1111-2222-3333-444455556666,0"
                ),
                _ => format!(
                    "<189>date=2024-03-05 time=10:11:12 devname=\"FGT-HQ\" devid=\"FG100F\" eventtime=1709601072{:09} tz=\"+0900\" logid=\"0000000013\" type=\"traffic\" subtype=\"forward\" level=\"notice\" vd=\"root\" srcip=192.0.2.{a} srcport={port} srcintf=\"port1\" dstip=198.51.100.{b} dstport=443 dstintf=\"wan1\" sessionid={i} proto=6 action=\"accept\" policyid=12 service=\"HTTPS\" sentbyte=1480 rcvdbyte=7640 user=\"user{b}\"",
                    i % 1_000_000_000
                ),
            }
        })
        .collect()
}

fn measure(name: &str, format: Format, lines: &[String]) {
    let ctx = ParseContext::new(SystemTime::now());
    let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
    let mut malformed = 0usize;
    let mut fields = 0usize;
    let (wall, cpu) = timed(|| {
        for line in lines {
            let ev = parse_line(format, line.as_bytes(), &ctx);
            malformed += usize::from(ev.contains_key("mamori.malformed"));
            fields += ev.len();
        }
    });
    report(name, lines.len(), bytes, wall, cpu);
    println!("{:<28} malformed {malformed}, fields/event {:.1}", "", fields as f64 / lines.len() as f64);
}

fn report(name: &str, n: usize, bytes: usize, wall: f64, cpu: f64) {
    println!(
        "{name:<28} {n:>7} lines  {:>9.0} lines/CPU-s  {:>6.1} MB/CPU-s  ({:>9.0} lines/s wall)",
        n as f64 / cpu,
        bytes as f64 / cpu / 1e6,
        n as f64 / wall,
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "../shared/corpora/logs".into());
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(300_000);
    let read = |name: &str| -> Vec<String> {
        match std::fs::read_to_string(format!("{dir}/{name}")) {
            Ok(t) => t.lines().map(str::to_owned).collect(),
            Err(e) => {
                eprintln!("{dir}/{name}: {e}; using synthetic lines only");
                Vec::new()
            }
        }
    };
    let linux = read("Linux_2k.log");
    let ssh = read("OpenSSH_2k.log");
    if !linux.is_empty() {
        measure("rfc3164 (loghub Linux)", Format::Rfc3164, &repeat_to(&linux, n));
        measure("authlog (loghub OpenSSH)", Format::AuthLog, &repeat_to(&ssh, n));
    }
    let rfc5424 = synthetic("rfc5424", n);
    let cef = synthetic("cef", n);
    let panos = synthetic("panos", n);
    let forti = synthetic("fortigate", n);
    measure("rfc5424 (synthetic, SD)", Format::Rfc5424, &rfc5424);
    measure("cef in rfc3164", Format::Rfc3164, &cef);
    measure("panos TRAFFIC in rfc3164", Format::Rfc3164, &panos);
    measure("fortigate in syslog", Format::Rfc3164, &forti);

    // The mixed stream: every kind, interleaved.
    let mut mixed = Vec::with_capacity(n);
    let sources: Vec<&Vec<String>> =
        [&linux, &ssh, &rfc5424, &cef, &panos, &forti].into_iter().filter(|v| !v.is_empty()).collect();
    for i in 0..n {
        let src = sources[i % sources.len()];
        mixed.push(src[(i / sources.len()) % src.len()].clone());
    }
    measure("auto (mixed)", Format::Auto, &mixed);

    // Framer: the mixed stream, alternately octet-counted and newline-delimited, in 64 KiB reads.
    let mut stream = Vec::new();
    for (i, line) in mixed.iter().enumerate() {
        if i % 2 == 0 {
            stream.extend_from_slice(format!("{} ", line.len()).as_bytes());
            stream.extend_from_slice(line.as_bytes());
        } else {
            stream.extend_from_slice(line.as_bytes());
            stream.push(b'\n');
        }
    }
    let mut framer = Framer::new(64 * 1024);
    let mut frames = Vec::new();
    let mut count = 0usize;
    let (wall, cpu) = timed(|| {
        for chunk in stream.chunks(64 * 1024) {
            framer.push(chunk, &mut frames);
            count += frames.len();
            frames.clear();
        }
        framer.finish(&mut frames);
        count += frames.len();
    });
    report("framer (mixed framing)", count, stream.len(), wall, cpu);
    println!("{:<28} frame errors {}", "", framer.errors());

    // Framer + auto parse, as one manager connection task would do it.
    let ctx = ParseContext::new(SystemTime::now());
    let mut framer = Framer::new(64 * 1024);
    let mut parsed = 0usize;
    let (wall, cpu) = timed(|| {
        for chunk in stream.chunks(64 * 1024) {
            framer.push(chunk, &mut frames);
            for f in frames.drain(..) {
                let ev = parse_line(Format::Auto, &f, &ctx);
                parsed += usize::from(!ev.is_empty());
            }
        }
    });
    report("framer + auto parse", parsed, stream.len(), wall, cpu);
}
