#!/usr/bin/env bash
# Install what the tests need beyond Python packages, from Debian's packages, when missing:
# PostgreSQL (the PostgreSQL journal's tests start their own server on 127.0.0.1) and Chromium
# (the trace page is tested in headless Chromium). Idempotent; needs root (or sudo) only when
# something is missing.
set -euo pipefail
missing=()
compgen -G "/usr/lib/postgresql/*/bin/initdb" > /dev/null || missing+=(postgresql)
command -v chromium > /dev/null || missing+=(chromium)
if [ "${#missing[@]}" -eq 0 ]; then
  echo "services: PostgreSQL and Chromium are installed"
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo > /dev/null || { echo "services: need root to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
echo "services: installing ${missing[*]} (Debian packages)"
log="/tmp/budgetflow-apt.log"
export DEBIAN_FRONTEND=noninteractive
if ! $sudo apt-get install -y --no-install-recommends "${missing[@]}" > "$log" 2>&1; then
  $sudo apt-get update > "$log" 2>&1
  $sudo apt-get install -y --no-install-recommends "${missing[@]}" >> "$log" 2>&1 ||
    { tail -n 20 "$log"; echo "services: apt-get failed; log in $log" >&2; exit 1; }
fi
