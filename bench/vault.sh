#!/usr/bin/env bash
# The mamori backup vault vs restic and borg (issue 6), side by side in the same run.
#
#   bench/vault-setup.sh && bench/vault.sh
#   ROUNDS=3 TOOLS="restic borg-lz4 borg-zstd3" LOCATIONS="tmpfs disk" RANSOM=0 bench/vault.sh
#   BIN=/path/to/mamori bench/vault.sh      (a binary built before, instead of building)
#
# Dataset: three successive Debian linux-source-6.1 trees (bench/vault-setup.sh). Every tool
# backs up the same path, $CACHE/src: the extracted trees are renamed into place with `mv`
# (same filesystem), so file mtimes are the tarball's. Each tree is its own extraction, so
# between versions every file has a new inode and ctime: the default change detection of all
# three tools (restic: mtime, size, inode; borg: ctime, size, inode; mamori: its own) re-reads
# every file of v2 and v3 and deduplicates by content; only the no-change run (v3 again, not
# moved) can skip by metadata.
#
# For each round, each repository location (tmpfs: /dev/shm; disk: $DISK_DIR, default
# ${TMPDIR:-/var/tmp}) and each tool, from an empty repository and an empty client cache, both
# in that location:
#   full (v1), incr1 (v2), incr2 (v3), nochange (v3 again), restore of the latest snapshot into
#   an empty directory in that location, checked bit-exact against the source with `diff -r`
#   (a failure stops the benchmark), repo size and client cache size (sums of file sizes).
# Wall time and peak RSS of every step by GNU time (%e %M), CPU = user + sys. For mamori, the
# vault server is a separate process: its CPU per step is read from /proc/<pid>/stat and its
# peak RSS per step from VmHWM (reset before each step through /proc/<pid>/clear_refs).
# Then, for mamori, `vault check` (must exit 0) and, with RANSOM=1 (default), one more backup of
# a copy of v3 in which ~20% of the files were encrypted in place (AES-256-CTR keystream from
# `openssl enc`) and renamed *.locked: the snapshot must be flagged `suspicious`, the three
# legitimate versions must not be.
#
# Medians over ROUNDS (default 1) and the ratios mamori / peer against the issue's goals are
# printed at the end, as Markdown.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-1}
TOOLS=${TOOLS:-mamori restic borg-lz4 borg-zstd3}
LOCATIONS=${LOCATIONS:-tmpfs disk}
RANSOM=${RANSOM:-1}
RANSOM_FRACTION=${RANSOM_FRACTION:-0.2}
CACHE=${MAMORI_BENCH_CACHE:-$HOME/.cache/mamori-bench}/linux-source
# The versions bench/vault-setup.sh chose and extracted.
VERSIONS=${VERSIONS:-$(cat "$CACHE/versions" 2>/dev/null || true)}
TMPFS_DIR=${TMPFS_DIR:-/dev/shm}
DISK_DIR=${DISK_DIR:-${TMPDIR:-/var/tmp}}
PASSWORD=${PASSWORD:-mamori-bench-passphrase}
export RESTIC_PASSWORD=$PASSWORD BORG_PASSPHRASE=$PASSWORD MAMORI_VAULT_PASSPHRASE=$PASSWORD
export BORG_RELOCATED_REPO_ACCESS_IS_OK=yes BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=no

read -r -a versions <<<"$VERSIONS"
[ ${#versions[@]} -eq 3 ] || { echo "VERSIONS must name three versions (got: '$VERSIONS'; run bench/vault-setup.sh first)" >&2; exit 2; }
for v in "${versions[@]}"; do
    [ -d "$CACHE/trees/$v" ] || [ "$(cat "$CACHE/src.version" 2>/dev/null)" = "$v" ] ||
        { echo "missing tree $CACHE/trees/$v: run bench/vault-setup.sh first" >&2; exit 2; }
done
for t in $TOOLS; do
    case $t in mamori | restic | borg-lz4 | borg-zstd3) ;; *) echo "unknown tool $t" >&2; exit 2 ;; esac
done
[ -x /usr/bin/time ] || { echo "/usr/bin/time missing: run bench/vault-setup.sh" >&2; exit 2; }
[[ " $TOOLS " == *" restic "* ]] && ! command -v restic >/dev/null && { echo "restic missing: run bench/vault-setup.sh" >&2; exit 2; }
[[ " $TOOLS " == *" borg-"* ]] && ! command -v borg >/dev/null && { echo "borg missing: run bench/vault-setup.sh" >&2; exit 2; }

has_mamori=false
[[ " $TOOLS " == *" mamori "* ]] && has_mamori=true
version="mamori not run"
if $has_mamori; then
    command -v jq >/dev/null || { echo "jq missing (apt-get install jq)" >&2; exit 2; }
    if [ -n "${BIN:-}" ]; then
        bin=$BIN
        version="mamori binary $bin"
    else
        export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mamori-target}"
        echo "building mamori (release)..."
        nice -n 19 cargo build --release -q -p mamori
        bin=$CARGO_TARGET_DIR/release/mamori
        version="mamori commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- crates Cargo.lock 2>/dev/null || echo ' + uncommitted changes')"
    fi
    for sub in "vault init" "vault serve" "vault sign" "vault check" "backup run" "backup restore"; do
        # shellcheck disable=SC2086
        "$bin" $sub --help >/dev/null 2>&1 ||
            { echo "$bin has no '$sub' subcommand (yet): run with TOOLS=\"restic borg-lz4 borg-zstd3\"" >&2; exit 2; }
    done
fi

# --- the source: trees renamed into $CACHE/src ------------------------------------------
SRC=$CACHE/src
# Put the tree that is at $SRC back where it came from (also after an interrupted run).
unplace() {
    if [ -d "$SRC" ]; then
        local cur
        cur=$(cat "$CACHE/src.version" 2>/dev/null || true)
        [ -n "$cur" ] || { echo "$SRC exists but $CACHE/src.version does not: move it away by hand" >&2; exit 2; }
        if [ "$cur" = ransom ]; then rm -rf "$SRC"; else mv "$SRC" "$CACHE/trees/$cur"; fi
    fi
    rm -f "$CACHE/src.version"
}
# place VERSION: rename the tree of VERSION to $SRC.
place() {
    unplace
    mv "$CACHE/trees/$1" "$SRC"
    echo "$1" >"$CACHE/src.version"
}
unplace
rm -rf "$CACHE/trees/.ransom"

WORK=$(mktemp -d "${DISK_DIR}/vaultbench.XXXXXX")
LOCDIR=
cleanup() {
    local rc=$?
    [ -n "${server_pid:-}" ] && kill "$server_pid" 2>/dev/null
    [ -n "${manager_pid:-}" ] && kill "$manager_pid" 2>/dev/null
    wait 2>/dev/null || true
    unplace || true
    rm -rf "$CACHE/trees/.ransom" "$WORK" ${LOCDIR:+"$LOCDIR"}
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM
RES=$WORK/results # lines: round location tool step wall_s rss_kib cpu_s [server_rss_kib server_cpu_s]
: >"$RES"
JSONL=$WORK/mamori.jsonl # location round step suspicious (mamori's backup run --json)
: >"$JSONL"
: >"$WORK/verify"
: >"$RES.sizes"

fail() {
    echo "FAILED: $*" >&2
    for f in "$WORK"/step.err "$WORK"/step.out; do
        [ -s "$f" ] && { echo "--- ${f##*/} (last 30 lines):" >&2; tail -n 30 "$f" >&2; }
    done
    exit 1
}

# measure TOOL STEP CMD...: runs CMD under GNU time (stdout to step.out, stderr to step.err);
# appends a result line (mamori: with the vault server's peak RSS and CPU during the step).
measure() {
    local tool=$1 step=$2
    shift 2
    local s_cpu0=0
    if [ "$tool" = mamori ]; then
        echo 5 >"/proc/$server_pid/clear_refs" # resets VmHWM to the current RSS
        s_cpu0=$(proc_cpu "$server_pid")
    fi
    # What the step reads is put in the page cache first, for every tool alike (see warm).
    if [ "$step" = restore ]; then warm "$LOCDIR"; else warm "$SRC"; fi
    local rc=0
    /usr/bin/time -f '%e %M %U %S' -o "$WORK/time" "$@" >"$WORK/step.out" 2>"$WORK/step.err" || rc=$?
    # `mamori backup run` exits 1 when the vault flagged the snapshot: expected for the
    # ransomware step, a failure anywhere else.
    if [ "$rc" -ne 0 ] && ! { [ "$rc" -eq 1 ] && [ "$tool" = mamori ] && [ "$step" = ransom ]; }; then
        fail "$tool $step ($loc, round $round): $*"
    fi
    local wall rss usr sys extra=
    read -r wall rss usr sys < <(tail -n 1 "$WORK/time")
    if [ "$tool" = mamori ]; then
        local hwm s_cpu1
        hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$server_pid/status")
        s_cpu1=$(proc_cpu "$server_pid")
        extra=" $hwm $(awk -v a="$s_cpu0" -v b="$s_cpu1" 'BEGIN {printf "%.2f", b - a}')"
    fi
    local cpu
    cpu=$(awk -v u="$usr" -v s="$sys" 'BEGIN {printf "%.2f", u + s}')
    echo "$round $loc $tool $step $wall $rss $cpu$extra" >>"$RES"
    printf '    %-9s %8.2f s  %7.1f MiB  cpu %7.2f s%s\n' "$step" "$wall" "$(awk -v r="$rss" 'BEGIN {print r / 1024}')" "$cpu" \
        "${extra:+  (server: $(awk -v r="${extra# }" 'BEGIN {split(r, a, " "); printf "%.1f MiB, cpu %.2f s", a[1] / 1024, a[2]}'))}"
}
# warm DIR: reads every file under DIR into the page cache. Warming once at the start is not
# enough: this machine runs a DAMON `pageout` scheme (/sys/kernel/mm/damon) that evicts page
# cache not touched for about a minute, although memory is free. Without this, the first tool
# of each round read a source the previous round had let go cold, the others a warm one.
warm() { find "$1" -type f -print0 | xargs -0 -r cat >/dev/null; }
proc_cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$1/stat"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 300); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# verify TOOL TARGET: the restored tree must equal $SRC (content, names, types, symlink targets).
verify() {
    local tool=$1 target=$2 root=
    for cand in "$target$SRC" "$target/src" "$target"; do
        [ -f "$cand/Makefile" ] && [ -d "$cand/kernel" ] && { root=$cand; break; }
    done
    [ -n "$root" ] || fail "$tool restore ($loc, round $round): no restored tree found under $target"
    if ! diff -r --no-dereference "$SRC" "$root" >"$WORK/diff" 2>&1; then
        echo "--- diff -r $SRC $root (first 20 lines):" >&2
        head -n 20 "$WORK/diff" >&2
        fail "$tool restore ($loc, round $round) is NOT bit-exact ($(grep -c "^diff \|^Only in\|^File " "$WORK/diff" || true) entries differ)"
    fi
    # Metadata, reported (not fatal): mode and mtime (whole seconds) of every entry.
    local meta
    meta=$(diff <(cd "$SRC" && find . -printf '%p %y %m %TY%Tm%Td%TH%TM%TS\n' | sed 's/\.[0-9]*$//' | sort) \
        <(cd "$root" && find . -printf '%p %y %m %TY%Tm%Td%TH%TM%TS\n' | sed 's/\.[0-9]*$//' | sort) | grep -c '^<' || true)
    echo "$round $loc $tool meta_diff $meta" >>"$WORK/verify"
    echo "    restore verified bit-exact (diff -r); entries with other mode/mtime: $meta"
}

# --- restic ---------------------------------------------------------------------------
restic_run() {
    local repo=$LOCDIR/restic/repo
    export RESTIC_REPOSITORY=$repo RESTIC_CACHE_DIR=$LOCDIR/restic/cache
    mkdir -p "$LOCDIR/restic"
    restic init -q >"$WORK/step.out" 2>"$WORK/step.err" || fail "restic init"
    local i=0 step
    for step in full incr1 incr2 nochange; do
        [ $step = nochange ] || place "${versions[i]}"
        i=$((i + 1))
        (cd "$CACHE" && measure restic "$step" restic backup -q src)
    done
    mkdir "$LOCDIR/restic/restore"
    measure restic restore restic restore latest --target "$LOCDIR/restic/restore" -q
    verify restic "$LOCDIR/restic/restore"
    sizes restic "$repo" "$RESTIC_CACHE_DIR"
    unset RESTIC_REPOSITORY RESTIC_CACHE_DIR
}

# --- borg -----------------------------------------------------------------------------
borg_run() {
    local tool=$1 comp=$2 repo=$LOCDIR/$1/repo
    export BORG_BASE_DIR=$LOCDIR/$tool/base
    mkdir -p "$BORG_BASE_DIR"
    borg init -e repokey "$repo" >"$WORK/step.out" 2>"$WORK/step.err" || fail "borg init"
    local i=0 step
    for step in full incr1 incr2 nochange; do
        [ $step = nochange ] || place "${versions[i]}"
        i=$((i + 1))
        (cd "$CACHE" && measure "$tool" "$step" borg create --compression "$comp" "$repo::$step" src)
    done
    mkdir "$LOCDIR/$tool/restore"
    (cd "$LOCDIR/$tool/restore" && measure "$tool" restore borg extract "$repo::nochange")
    verify "$tool" "$LOCDIR/$tool/restore"
    sizes "$tool" "$repo" "$BORG_BASE_DIR"
    unset BORG_BASE_DIR
}

# sizes TOOL REPO CACHE: repo and client-cache bytes (sum of file sizes: `du -sb` would also
# count directory sizes, 4 KiB each on ext4 and next to nothing on tmpfs) as result lines.
fbytes() { find "$1" -type f -printf '%s\n' 2>/dev/null | awk '{s += $1} END {print s + 0}'; }
sizes() {
    local r c
    r=$(fbytes "$2") c=$(fbytes "$3")
    echo "$round $loc $1 repo_bytes $r" >>"$RES.sizes"
    echo "$round $loc $1 cache_bytes $c" >>"$RES.sizes"
    printf '    repo %.1f MB (%d files), client cache %.1f MB\n' "$(awk -v b="$r" 'BEGIN {print b / 1e6}')" \
        "$(find "$2" -type f | wc -l)" "$(awk -v b="$c" 'BEGIN {print b / 1e6}')"
}

# --- mamori (the CLI contract of issue 6; adjust here if flags differ) -------------------
# A manager (device CA) and one enrolled client identity, a vault repository with a TLS
# certificate signed by the manager's CA, all on loopback; everything in $LOCDIR/mamori.
mamori_setup() {
    local d=$LOCDIR/mamori
    M_REPO=$d/repo M_AGENT=$d/agent
    mkdir -p "$d"
    local p1 p2
    p1=$(free_port)
    "$bin" server --data "$d/manager" --listen "127.0.0.1:$p1" >"$d/manager.log" 2>&1 &
    manager_pid=$!
    wait_port "$p1" || fail "mamori manager did not listen on $p1 ($(tail -n 5 "$d/manager.log"))"
    local fp token
    fp=$(jq -r .ca_fingerprint "$d/manager/manager.json")
    token=$("$bin" token create --json --data "$d/manager" | jq -r .token)
    MAMORI_MACHINE_ID=bench "$bin" agent enroll --server "https://127.0.0.1:$p1" --token "$token" \
        --ca-fingerprint "$fp" --agent-dir "$M_AGENT" >"$d/enroll.log" 2>&1 || fail "mamori agent enroll ($(tail -n 5 "$d/enroll.log"))"
    "$bin" vault init --data "$M_REPO" --name 127.0.0.1 >"$d/init.log" 2>&1 || fail "mamori vault init ($(tail -n 5 "$d/init.log"))"
    "$bin" vault sign --data "$d/manager" --csr "$M_REPO/tls/vault.csr" --out "$M_REPO/tls/vault.crt" \
        >"$d/sign.log" 2>&1 || fail "mamori vault sign ($(tail -n 5 "$d/sign.log"))"
    p2=$(free_port)
    "$bin" vault serve --data "$M_REPO" --listen "127.0.0.1:$p2" >"$d/serve.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 300); do
        grep -q "listening on" "$d/serve.log" && break
        kill -0 "$server_pid" 2>/dev/null || fail "mamori vault serve exited ($(tail -n 5 "$d/serve.log"))"
        sleep 0.1
    done
    grep -q "listening on" "$d/serve.log" || fail "mamori vault serve: no 'listening on' after 30 s"
    M_VAULT=https://127.0.0.1:$p2
}
# mamori_backup STEP: one backup of $SRC; records the summary's "suspicious".
mamori_backup() {
    measure mamori "$1" "$bin" backup run --vault "$M_VAULT" --agent-dir "$M_AGENT" --source "$SRC" --json
    local s
    s=$(python3 -c '
import json, sys
doc = None
text = open(sys.argv[1]).read()
try:
    doc = json.loads(text)
except ValueError:
    for line in reversed(text.splitlines()):
        try:
            doc = json.loads(line); break
        except ValueError:
            pass
print(str(doc.get("suspicious", "?")).lower() if isinstance(doc, dict) else "?")' "$WORK/step.out")
    echo "$loc $round $1 $s" >>"$JSONL"
    echo "    suspicious: $s"
    cp "$WORK/step.out" "$LOCDIR/mamori/summary-$1.json"
}
# mamori_restore TARGET: restore of the latest snapshot.
mamori_restore() {
    measure mamori restore "$bin" backup restore --vault "$M_VAULT" --agent-dir "$M_AGENT" --snapshot latest --target "$1"
}
# mamori_teardown: stop the vault server and the manager, then `vault check` (must exit 0).
mamori_teardown() {
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=
    kill "$manager_pid" 2>/dev/null || true
    wait "$manager_pid" 2>/dev/null || true
    manager_pid=
    local t0 t1
    t0=$(date +%s.%N)
    "$bin" vault check --data "$M_REPO" >"$WORK/check.out" 2>&1 ||
        { cat "$WORK/check.out" >&2; fail "mamori vault check ($loc, round $round) exited non-zero"; }
    t1=$(date +%s.%N)
    printf '    vault check: ok (%.1f s)\n' "$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')"
}

# ransomware: a copy of the last version at $SRC, RANSOM_FRACTION of its files encrypted in
# place with an AES-256-CTR keystream (openssl enc; os.urandom if openssl is missing) and
# renamed *.locked.
ransomware() {
    unplace
    cp -a "$CACHE/trees/${versions[2]}" "$CACHE/trees/.ransom"
    mv "$CACHE/trees/.ransom" "$SRC"
    echo ransom >"$CACHE/src.version"
    python3 - "$SRC" "$RANSOM_FRACTION" <<'PY'
import os, random, shutil, subprocess, sys
root, fraction = sys.argv[1], float(sys.argv[2])
files = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs
               if not os.path.islink(os.path.join(d, f)))
rng = random.Random(6)
victims = rng.sample(files, int(len(files) * fraction))
ks = None
if shutil.which("openssl"):
    key, iv = os.urandom(32).hex(), os.urandom(16).hex()
    ks = subprocess.Popen(["openssl", "enc", "-aes-256-ctr", "-nosalt", "-K", key, "-iv", iv,
                           "-in", "/dev/zero"], stdout=subprocess.PIPE)
total = 0
for p in victims:
    with open(p, "r+b") as f:
        data = f.read()
        stream = ks.stdout.read(len(data)) if ks else os.urandom(len(data))
        enc = (int.from_bytes(data, "little") ^ int.from_bytes(stream, "little")).to_bytes(len(data), "little")
        f.seek(0)
        f.write(enc)
    os.rename(p, p + ".locked")
    total += len(data)
if ks:
    ks.kill()
print(f"    ransomware: {len(victims)} of {len(files)} files encrypted in place "
      f"({total / 1e6:.1f} MB, {'openssl aes-256-ctr' if ks else 'os.urandom'}) and renamed *.locked")
PY
}

mamori_run() {
    mamori_setup
    local i=0 step
    for step in full incr1 incr2 nochange; do
        [ $step = nochange ] || place "${versions[i]}"
        i=$((i + 1))
        mamori_backup "$step"
    done
    mkdir "$LOCDIR/mamori/restore"
    mamori_restore "$LOCDIR/mamori/restore"
    verify mamori "$LOCDIR/mamori/restore"
    rm -rf "$LOCDIR/mamori/restore" # room on tmpfs
    # Measured before the ransomware step, which adds to mamori's repo what the peers never see.
    sizes mamori "$M_REPO" "$M_AGENT"
    if [ "$RANSOM" = 1 ]; then
        ransomware
        mamori_backup ransom
    fi
    mamori_teardown
}

# --- header ---------------------------------------------------------------------------
loc_dir() { case $1 in tmpfs) echo "$TMPFS_DIR" ;; disk) echo "$DISK_DIR" ;; *) echo "unknown location $1" >&2; exit 2 ;; esac; }
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), Linux $(uname -r); load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown); $version"
echo "peers: $(command -v restic >/dev/null && restic version | head -n 1 || echo 'restic -'); $(command -v borg >/dev/null && borg --version || echo 'borg -')"
echo "rounds: $ROUNDS, tools: $TOOLS, locations: $LOCATIONS, ransomware step: $RANSOM"
echo "source: $SRC (trees renamed into place); dataset:"
for v in "${versions[@]}"; do
    printf '  %-12s %6d files, %.2f GB\n' "$v" "$(find "$CACHE/trees/$v" -type f | wc -l)" "$(du -sb "$CACHE/trees/$v" | awk '{print $1 / 1e9}')"
done
echo "filesystems:"
df -T "$CACHE" | sed 's/^/  /'
for l in $LOCATIONS; do df -T "$(loc_dir "$l")" | tail -n 1 | sed "s/^/  $l: /"; done

# --- the runs -------------------------------------------------------------------------
for round in $(seq 1 "$ROUNDS"); do
    for loc in $LOCATIONS; do
        for tool in $TOOLS; do
            echo "round $round, $loc, $tool ($(date +%H:%M:%S), load $(cut -d' ' -f1 /proc/loadavg))"
            LOCDIR=$(mktemp -d "$(loc_dir "$loc")/vaultbench-$tool.XXXXXX")
            case $tool in
            mamori) mamori_run ;;
            restic) restic_run ;;
            borg-lz4) borg_run borg-lz4 lz4 ;;
            borg-zstd3) borg_run borg-zstd3 zstd,3 ;;
            esac
            unplace
            rm -rf "$LOCDIR"
            LOCDIR=
        done
    done
done

# --- medians, ratios, goals -----------------------------------------------------------
echo
python3 - "$RES" "$RES.sizes" "$JSONL" "$WORK/verify" "$TOOLS" "$LOCATIONS" "$ROUNDS" <<'PY'
import statistics, sys
from collections import defaultdict
res, sizes, jsonl, verify, tools, locs, rounds = sys.argv[1:]
tools, locs = tools.split(), locs.split()
wall, rss, cpu, srss, scpu, size = (defaultdict(list) for _ in range(6))
for line in open(res):
    f = line.split()
    k = (f[1], f[2], f[3])
    wall[k].append(float(f[4])); rss[k].append(int(f[5])); cpu[k].append(float(f[6]))
    if len(f) > 7:
        srss[k].append(int(f[7])); scpu[k].append(float(f[8]))
for line in open(sizes):
    f = line.split()
    size[(f[1], f[2], f[3])].append(int(f[4]))
med = lambda xs: statistics.median(xs) if xs else None
steps = ["full", "incr1", "incr2", "nochange", "restore"]
print(f"Medians of {rounds} round(s); wall s (CPU s = user + sys; mamori: client + vault server).\n")
for loc in locs:
    print(f"### Repository on {loc}\n")
    print("| tool | " + " | ".join(steps) + " | repo MB | client cache MB | peak RSS MiB (client) | peak RSS MiB (server) |")
    print("|---|" + "---:|" * (len(steps) + 4))
    for t in tools:
        cells = []
        for s in steps:
            k = (loc, t, s)
            if not wall[k]:
                cells.append("–"); continue
            c = med(cpu[k]) + (med(scpu[k]) or 0)
            cells.append(f"{med(wall[k]):.2f} ({c:.1f})")
        peak = max((med(rss[(loc, t, s)]) or 0) for s in steps + ["ransom"])
        speak = max((med(srss[(loc, t, s)]) or 0) for s in steps + ["ransom"])
        rb, cb = med(size[(loc, t, "repo_bytes")]), med(size[(loc, t, "cache_bytes")])
        print(f"| {t} | " + " | ".join(cells) +
              f" | {rb / 1e6:.1f} | {cb / 1e6:.1f} | {peak / 1024:.1f} | " + (f"{speak / 1024:.1f}" if speak else "–") + " |")
    print()
meta = [l.split() for l in open(verify)] if verify else []
bad = [l for l in meta if l[4] != "0"]
print("Restores: all bit-exact (diff -r)." + (" Entries whose mode or mtime differ: " +
      ", ".join(f"{l[2]} on {l[1]}: {l[4]}" for l in bad) if bad else " Mode and mtime of every entry equal."))
print()
if "mamori" not in tools:
    print("mamori not run: no ratios.")
    sys.exit(0)
sus = defaultdict(list)
for line in open(jsonl):
    l, r, s, v = line.split()
    sus[(l, s)].append(v)
def ratio(loc, a, b, key):
    if key == "repo":
        x, y = med(size[(loc, a, "repo_bytes")]), med(size[(loc, b, "repo_bytes")])
    else:
        x, y = med(wall[(loc, a, key)]), med(wall[(loc, b, key)])
    return x / y if x is not None and y else None
fmt = lambda r, goal: ("n/a", "n/a") if r is None else (f"{r:.2f}", "yes" if r <= goal else "NO")
print("| goal | location | measured | met |\n|---|---|---:|---|")
for loc in locs:
    for name, peer, key, goal in [("full backup ≤ 0.7× borg-lz4 wall", "borg-lz4", "full", 0.7),
                                  ("repo size ≤ restic's", "restic", "repo", 1.0),
                                  ("restore ≤ 0.8× restic's wall", "restic", "restore", 0.8)]:
        m, ok = fmt(ratio(loc, "mamori", peer, key) if peer in tools else None, goal)
        print(f"| {name} | {loc} | {m}× | {ok} |")
    for who, d in (("client", rss), ("vault server", srss)):
        peak = max((max(d[(loc, "mamori", s)]) if d[(loc, "mamori", s)] else 0) for s in steps + ["ransom"])
        print(f"| peak RSS ≤ 110 MiB ({who}, max over rounds and steps) | {loc} | {peak / 1024:.1f} MiB | {'yes' if peak <= 110 * 1024 else 'NO'} |")
    legit = [v for s in ("full", "incr1", "incr2", "nochange") for v in sus[(loc, s)]]
    fa = sum(v == "true" for v in legit)
    print(f"| no false alarm on the legitimate versions | {loc} | {fa} of {len(legit)} flagged"
          f"{' (unknown: ' + str(sum(v not in ('true', 'false') for v in legit)) + ')' if any(v not in ('true', 'false') for v in legit) else ''} | {'yes' if fa == 0 and all(v == 'false' for v in legit) else 'NO'} |")
    if sus[(loc, "ransom")]:
        rs = sus[(loc, "ransom")]
        print(f"| ransomware increment flagged | {loc} | {sum(v == 'true' for v in rs)} of {len(rs)} | {'yes' if all(v == 'true' for v in rs) else 'NO'} |")
PY
