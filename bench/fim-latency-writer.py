#!/usr/bin/env python3
"""Helper of bench/fim-latency.sh (standard library only).

  pool DIR N                       create N small files DIR/p00000... (the files later modified)
  write DIR ROUND RATE SECONDS OUT make RATE changes per second for SECONDS in DIR, paced by an
                                   absolute schedule: even changes create DIR/rROUND/cNNNNNN,
                                   odd ones rewrite pool file DIR/pool/pNNNNN (each pool file
                                   once per round). Writes "op path ns" lines to OUT, where ns is
                                   CLOCK_REALTIME taken right after close().
  count DB                         fim.change events stored so far in the manager's database
  commits DIR                      SQLite WAL synchronous=FULL one-row commits per second in DIR
  analyze DB WRITES LABEL          join a round's writes to the fim.change events (JSON line)
  report LABEL RESULTS...          medians over the rounds' JSON lines, as a table
"""
import json
import os
import sqlite3
import sys
import time

COLLECT_MS = 200  # crates/mamori-agent/src/fim.rs: COLLECT
BATCH_GAP_NS = 100_000_000  # events of one applied batch are built within a few ms of each other


def pool(d, n):
    os.makedirs(d, exist_ok=True)
    for j in range(int(n)):
        with open(os.path.join(d, f"p{j:05d}"), "w") as f:
            f.write(f"pool file {j}, original content\n")


def write(d, rnd, rate, seconds, out):
    rate, seconds = int(rate), float(seconds)
    n = int(rate * seconds)
    cdir = os.path.join(d, f"r{rnd}")
    pdir = os.path.join(d, "pool")
    period = 1.0 / rate
    log = []
    late = []
    flags_c = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    flags_m = os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC
    start = time.monotonic() + 0.1
    first = last = None
    for i in range(n):
        due = start + i * period
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        elif now - due > period:
            late.append(now - due)
        if i % 2 == 0:
            op, path, flags = "create", os.path.join(cdir, f"c{i:06d}"), flags_c
        else:
            op, path, flags = "modify", os.path.join(pdir, f"p{i // 2:05d}"), flags_m
        fd = os.open(path, flags, 0o644)
        os.write(fd, f"round {rnd} change {i} {op} {'x' * (i % 64)}\n".encode())
        os.close(fd)
        t = time.time_ns()
        m = time.monotonic()
        if first is None:
            first = m
        last = m
        log.append(f"{op} {path} {t}\n")
    with open(out, "w") as f:
        f.writelines(log)
    late.sort()
    achieved = (n - 1) / (last - first) if n > 1 and last > first else 0.0
    with open(out + ".meta", "w") as f:
        json.dump({"n": n, "achieved_rate": achieved, "behind_schedule": len(late),
                   "max_behind_ms": 1000 * late[-1] if late else 0.0}, f)


def connect(db):
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)


def count(db):
    con = connect(db)
    print(con.execute("SELECT count(*) FROM events WHERE kind = 'fim.change'").fetchone()[0])


def commits(d):
    """One-row SQLite transactions per second in WAL mode with synchronous=FULL (like the
    baseline's per-path update) on the disk of D, for 2 s: the ceiling of applying changes one
    transaction (one fsync) each."""
    con = sqlite3.connect(os.path.join(d, "commits.db"), isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    con.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
    n, start = 0, time.monotonic()
    while time.monotonic() - start < 2.0:
        con.execute("BEGIN")
        con.execute("INSERT OR REPLACE INTO t VALUES (?, ?)", (n % 1000, "x" * 100))
        con.execute("COMMIT")
        n += 1
    print(f"{n / (time.monotonic() - start):.0f}")
    con.close()
    for suffix in ("", "-wal", "-shm"):
        try:
            os.unlink(os.path.join(d, "commits.db" + suffix))
        except FileNotFoundError:
            pass


def rfc3339_ns(s):
    """'2026-11-23T11:20:01.123456789Z' (any offset, any fraction) -> Unix ns."""
    import calendar
    date, rest = s.split("T")
    for sep in ("Z", "+", "-"):
        k = rest.find(sep)
        if k > 0:
            clock, off = rest[:k], rest[k:]
            break
    else:
        clock, off = rest, "Z"
    hms, _, frac = clock.partition(".")
    y, mo, d = (int(x) for x in date.split("-"))
    h, mi, sec = (int(x) for x in hms.split(":"))
    t = calendar.timegm((y, mo, d, h, mi, sec))
    if off != "Z":
        sign = 1 if off[0] == "+" else -1
        oh, om = off[1:].split(":")
        t -= sign * (int(oh) * 3600 + int(om) * 60)
    return t * 1_000_000_000 + int((frac + "000000000")[:9])


def pct(v, p):
    """Nearest-rank percentile of a sorted list."""
    if not v:
        return float("nan")
    k = max(0, min(len(v) - 1, -(-p * len(v) // 100) - 1))
    return v[int(k)]


def analyze(db, writes_file, label):
    writes = []
    with open(writes_file) as f:
        for line in f:
            op, path, t = line.split()
            writes.append((int(t), path, op))
    meta = json.load(open(writes_file + ".meta"))
    t_first = min(w[0] for w in writes)
    paths = {w[1] for w in writes}
    events = {}  # path -> [(ts_ns, received_ms, action)]
    all_ts = []
    other = {}
    con = connect(db)
    for kind, received_ms, data in con.execute(
            "SELECT kind, received_ms, data FROM events WHERE kind IN ('fim.change', 'fim.check',"
            " 'ransomware.detected', 'response.action', 'scan.finding', 'scan.problem')"):
        d = json.loads(data)
        ts = rfc3339_ns(d["@timestamp"])
        if ts < t_first:
            continue
        if kind != "fim.change":
            other[kind] = other.get(kind, 0) + 1
            continue
        path = d.get("file", {}).get("path")
        if path not in paths or d.get("mamori", {}).get("fim", {}).get("source") != "realtime":
            other["fim.change (other paths)"] = other.get("fim.change (other paths)", 0) + 1
            continue
        events.setdefault(path, []).append((ts, received_ms, d["event"]["action"]))
        all_ts.append(ts)
    for v in events.values():
        v.sort()
    # Batches: the events of one applied batch are built back to back after its window.
    all_ts.sort()
    batch_of = {}
    batches = []  # [first_ts, last_ts]
    for ts in all_ts:
        if batches and ts - batches[-1][1] <= BATCH_GAP_NS:
            batches[-1][1] = ts
        else:
            batches.append([ts, ts])
        batch_of[ts] = len(batches) - 1
    # Join: a write is matched by the first event on its path built at or after its close.
    matched = []  # (write_ns, event_ts, received_ms, batch)
    used = set()
    missed = []
    coalesced = 0
    for t, path, op in sorted(writes):
        evs = events.get(path, [])
        e = next((e for e in evs if e[0] >= t), None)
        if e is None:
            missed.append((op, path))
            continue
        key = (path, e[0])
        if key in used:
            coalesced += 1
        used.add(key)
        matched.append((t, e[0], e[1], batch_of[e[0]]))
    extra = sum(len(v) for v in events.values()) - len(used)
    # Window estimate per batch: it opened when the worker took the batch's first event, i.e.
    # at the batch's earliest write, or when the previous batch was out if that was later.
    first_write = {}
    for t, _, _, b in matched:
        first_write[b] = min(first_write.get(b, t), t)
    opened = {}
    for b, t in first_write.items():
        prev_out = batches[b - 1][1] if b > 0 else t
        opened[b] = max(t, prev_out)
    lat, to_mgr, queue, window, after = [], [], [], [], []
    for t, ts, rms, b in matched:
        lat.append((ts - t) / 1e6)
        to_mgr.append(rms - t / 1e6)
        o = opened[b]
        end = o + COLLECT_MS * 1_000_000
        queue.append(max(0, o - t) / 1e6)
        window.append((end - max(t, o)) / 1e6)
        after.append((ts - end) / 1e6)
    # Does the agent keep up? Median latency of the changes of the first and of the last second.
    t_last = max(w[0] for w in writes)
    head = sorted((ts - t) / 1e6 for t, ts, _, _ in matched if t < t_first + 1_000_000_000)
    tail = sorted((ts - t) / 1e6 for t, ts, _, _ in matched if t > t_last - 1_000_000_000)
    for v in (lat, to_mgr):
        v.sort()
    sizes = sorted(len([1 for m in matched if m[3] == b]) for b in first_write)
    mean = lambda v: sum(v) / len(v) if v else float("nan")
    r = {
        "label": label, "writes": len(writes), "matched": len(matched), "missed": len(missed),
        "coalesced": coalesced, "extra_events": extra,
        "achieved_rate": meta["achieved_rate"], "behind_schedule": meta["behind_schedule"],
        "max_behind_ms": meta["max_behind_ms"],
        "p50": pct(lat, 50), "p90": pct(lat, 90), "p99": pct(lat, 99), "max": lat[-1] if lat else float("nan"),
        "mgr_p50": pct(to_mgr, 50), "mgr_p99": pct(to_mgr, 99),
        "p50_first_s": pct(head, 50), "p50_last_s": pct(tail, 50),
        "mean": mean(lat), "mean_queue": mean(queue), "mean_window": mean(window), "mean_after": mean(after),
        "batches": len(first_write), "median_batch": pct(sizes, 50), "max_batch": sizes[-1] if sizes else 0,
        "other_events": other, "missed_examples": missed[:5],
    }
    print(json.dumps(r))
    print(f"  {r['matched']}/{r['writes']} matched, {r['missed']} missed, writer {r['achieved_rate']:.1f}/s, "
          f"p50 {r['p50']:.1f} ms, p99 {r['p99']:.1f} ms, max {r['max']:.1f} ms", file=sys.stderr)


def report(label, files):
    rows = [json.loads(l) for f in files for l in open(f) if l.strip()]
    by = {}
    for r in rows:
        by.setdefault(r["label"], []).append(r)
    med = lambda v: sorted(v)[(len(v) - 1) // 2] if len(v) % 2 else (sorted(v)[len(v) // 2 - 1] + sorted(v)[len(v) // 2]) / 2
    print(f"\nper round ({label}):")
    print(f"{'run':<18} {'writes':>7} {'matched':>7} {'missed':>6} {'rate/s':>7} {'p50':>7} {'p90':>7} {'p99':>7} "
          f"{'max':>7} {'1st s':>7} {'last s':>7} {'mgr p50':>8} {'mgr p99':>8} {'queue':>6} {'window':>6} {'after':>6} {'batches':>7} {'med.batch':>9}")
    for lab, rs in by.items():
        for i, r in enumerate(rs, 1):
            print(f"{lab + ' #' + str(i):<18} {r['writes']:>7} {r['matched']:>7} {r['missed']:>6} {r['achieved_rate']:>7.1f} "
                  f"{r['p50']:>7.1f} {r['p90']:>7.1f} {r['p99']:>7.1f} {r['max']:>7.1f} {r['p50_first_s']:>7.1f} {r['p50_last_s']:>7.1f} {r['mgr_p50']:>8.1f} {r['mgr_p99']:>8.1f} "
                  f"{r['mean_queue']:>6.1f} {r['mean_window']:>6.1f} {r['mean_after']:>6.1f} {r['batches']:>7} {r['median_batch']:>9}")
            if r["missed"] or r["coalesced"] or r["extra_events"] or r["other_events"] or r["behind_schedule"]:
                print(f"{'':<18}   coalesced {r['coalesced']}, extra events {r['extra_events']}, "
                      f"writes > 1 period behind schedule {r['behind_schedule']} (max {r['max_behind_ms']:.1f} ms), "
                      f"other events {r['other_events']}, missed e.g. {r['missed_examples']}")
    print(f"\nmedians of the per-round values (ms; latency = fim.change @timestamp - time after close()):")
    print(f"| run | rounds | changes written | events matched | missed | writer rate/s | p50 | p90 | p99 | max "
          f"| p50 of first / last second | p50 / p99 stored at manager | mean: queued / in window / after window |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for lab, rs in by.items():
        m = lambda k: med([r[k] for r in rs])
        print(f"| {lab} | {len(rs)} | {sum(r['writes'] for r in rs):,} | {sum(r['matched'] for r in rs):,} "
              f"| {sum(r['missed'] for r in rs)} | {m('achieved_rate'):,.1f} | {m('p50'):.1f} | {m('p90'):.1f} "
              f"| {m('p99'):.1f} | {m('max'):.1f} | {m('p50_first_s'):.0f} / {m('p50_last_s'):.0f} | {m('mgr_p50'):.0f} / {m('mgr_p99'):.0f} "
              f"| {m('mean_queue'):.1f} / {m('mean_window'):.1f} / {m('mean_after'):.1f} |")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "report":
        report(args[0], args[1:])
    else:
        {"pool": pool, "write": write, "count": count, "analyze": analyze, "commits": commits}[cmd](*args)
