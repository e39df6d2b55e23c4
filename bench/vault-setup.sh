#!/usr/bin/env bash
# Setup for bench/vault.sh (idempotent): installs the peers (apt: restic, borgbackup; GNU time)
# and prepares the dataset, three successive Debian linux-source-6.1 trees, each extracted once
# into $CACHE/trees/<version>/ (the tarball's top directory, linux-source-6.1/, stripped; file
# mtimes come from the tarball).
#
#   bench/vault-setup.sh
#   VERSIONS="6.1.170-3 6.1.176-1 6.1.187-1" MAMORI_BENCH_CACHE=/var/tmp/mb bench/vault-setup.sh
#
# Without VERSIONS, the three oldest versions that apt can still download are taken (Debian
# drops old point releases from its mirrors, so a fixed list stops working) and recorded in
# $CACHE/versions, which bench/vault.sh reads; once extracted, a recorded set is kept.
# Prints the cache directory on its last line ("trees: DIR").
set -euo pipefail
CACHE=${MAMORI_BENCH_CACHE:-$HOME/.cache/mamori-bench}/linux-source
SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo

missing=()
command -v restic >/dev/null || missing+=(restic)
command -v borg >/dev/null || missing+=(borgbackup)
[ -x /usr/bin/time ] || missing+=(time)
command -v xz >/dev/null || missing+=(xz-utils)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "peers: $(restic version | head -n 1); $(borg --version)"

mkdir -p "$CACHE/debs" "$CACHE/trees"
if [ -z "${VERSIONS:-}" ] && [ -s "$CACHE/versions" ]; then
    VERSIONS=$(cat "$CACHE/versions")
    for v in $VERSIONS; do [ -d "$CACHE/trees/$v" ] || VERSIONS=; done
fi
if [ -z "${VERSIONS:-}" ]; then
    VERSIONS=$(apt-cache madison linux-source-6.1 | awk -F'|' '{gsub(/ /, "", $2); print $2}' |
        sort -u -V | head -n 3 | xargs)
    [ "$(wc -w <<<"$VERSIONS")" -eq 3 ] ||
        { echo "ERROR: apt offers fewer than three linux-source-6.1 versions (got: '$VERSIONS'; run apt-get update?)" >&2; exit 1; }
fi
echo "versions: $VERSIONS"
for v in $VERSIONS; do
    deb=$CACHE/debs/linux-source-6.1_${v}_all.deb
    if [ ! -s "$deb" ]; then
        echo "downloading linux-source-6.1=$v..."
        tmp=$(mktemp -d "$CACHE/debs/.dl.XXXXXX")
        # apt-get download writes into the current directory (as _apt if it can, else as root
        # with a warning): a fresh world-writable directory avoids the sandbox warning.
        chmod 777 "$tmp"
        if ! (cd "$tmp" && apt-get download "linux-source-6.1=$v" >"$tmp/log" 2>&1); then
            echo "ERROR: apt-get download linux-source-6.1=$v failed:" >&2
            cat "$tmp/log" >&2
            echo "available versions (apt-cache madison linux-source-6.1):" >&2
            apt-cache madison linux-source-6.1 >&2 || true
            rm -rf "$tmp"
            exit 1
        fi
        got=$(ls "$tmp"/linux-source-6.1_*_all.deb 2>/dev/null | head -n 1)
        [ -n "$got" ] || { echo "ERROR: no .deb for linux-source-6.1=$v after apt-get download" >&2; exit 1; }
        mv "$got" "$deb"
        rm -rf "$tmp"
    fi
    tree=$CACHE/trees/$v
    if [ ! -d "$tree" ]; then
        echo "extracting $v..."
        tmp=$(mktemp -d "$CACHE/trees/.x.XXXXXX")
        # The .deb carries usr/src/linux-source-6.1.tar.xz: take that member only, then the tree.
        (cd "$tmp" && dpkg-deb --fsys-tarfile "$deb" | tar -x --wildcards '*/linux-source-6.1.tar.xz')
        tarball=$(find "$tmp" -name linux-source-6.1.tar.xz | head -n 1)
        [ -n "$tarball" ] || { echo "ERROR: linux-source-6.1.tar.xz not found in $deb" >&2; exit 1; }
        mkdir "$tmp/tree"
        tar -xJf "$tarball" -C "$tmp/tree" --strip-components=1 --no-same-owner
        rm -f "$tarball"
        mv "$tmp/tree" "$tree" # atomic: an interrupted run leaves only a .x.* directory
        rm -rf "$tmp"
    fi
done
rm -rf "$CACHE"/trees/.x.* "$CACHE"/debs/.dl.* 2>/dev/null || true
echo "$VERSIONS" >"$CACHE/versions"

for v in $VERSIONS; do
    tree=$CACHE/trees/$v
    printf '%-12s %7d files  %6.2f GB (%s bytes of file content)\n' "$v" \
        "$(find "$tree" -type f | wc -l)" \
        "$(du -sb "$tree" | awk '{print $1 / 1e9}')" \
        "$(find "$tree" -type f -printf '%s\n' | awk '{s += $1} END {print s}')"
done
echo "trees: $CACHE/trees"
