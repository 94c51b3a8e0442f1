#!/usr/bin/env bash
# Installs the Debian 12 packages smbdirect builds with, only those missing.
# Usage: tools/install-deps.sh [extra-package ...]   (needs root, or sudo)
set -euo pipefail

packages=(bazel-bootstrap bazel-rules-java libasio-dev doctest-dev libibverbs-dev librdmacm-dev libisal-dev g++ "$@")

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "error: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
echo "installing: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
