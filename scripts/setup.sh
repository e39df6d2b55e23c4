#!/usr/bin/env bash
# Installs what building and testing mamori needs on a fresh Debian machine.
# Idempotent: packages already present are left alone. Run as root (or with sudo).
set -euo pipefail

# Build: a C compiler for crates with C parts (sqlite, zstd, bzip2), pkg-config, libssl-dev
# (webauthn-rs, the passkey ceremonies, checks signatures with OpenSSL).
# Tests: util-linux (setpriv, to run scans unprivileged), clamav-testfiles (real samples in
# zip/gzip/tar containers), nftables and iproute2 (host isolation, tested in network namespaces).
# Console (issue 7): python3-aiosmtpd (a real SMTP server on loopback for the mail tests),
# poppler-utils (pdftotext reads the reports back), fonts-ipaexfont-gothic (the Japanese font
# embedded in PDF reports; also needed at run time), chromium (the end-to-end browser test).
packages=(build-essential pkg-config libssl-dev util-linux clamav-testfiles nftables iproute2
  python3-aiosmtpd poppler-utils fonts-ipaexfont-gothic chromium)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  echo "setup: installing ${missing[*]}"
  "${sudo_cmd[@]}" apt-get update -q
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Playwright's driver library (no browsers downloaded: the tests use Debian's chromium).
if command -v npm >/dev/null; then
  (cd tests/e2e && { [ -d node_modules/playwright-core ] || npm ci --no-audit --no-fund --silent; })
else
  echo "setup: npm not found; the browser test will skip" >&2
fi

command -v cargo >/dev/null || { echo "setup: cargo not found; install Rust (rustup) first" >&2; exit 1; }
echo "setup: ok"
