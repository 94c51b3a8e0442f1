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
# Debian starts smbd (port 445, every interface) when samba is installed. The tests run their own
# smbd on 127.0.0.1, so when this script installs samba the system service stays off.
samba_new=0
for p in "${missing[@]}"; do [ "$p" = samba ] && samba_new=1; done
if [ "$samba_new" -eq 1 ] && [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
  $sudo chmod 755 /usr/sbin/policy-rc.d
  trap '$sudo rm -f /usr/sbin/policy-rc.d' EXIT
fi

echo "installing: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
if [ "$samba_new" -eq 1 ] && command -v systemctl >/dev/null; then
  $sudo systemctl disable smbd nmbd >/dev/null 2>&1 || true
  echo "samba installed for the tests; its smbd/nmbd services are disabled (systemctl enable --now smbd)" >&2
fi
