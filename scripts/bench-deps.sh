#!/usr/bin/env bash
# Installs what the load harness compares meshproxy with, and the tools it
# pins proxies to cores with. Needs root (the harness builds network
# namespaces); elsewhere it only says what is missing.
set -euo pipefail

need=()
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
command -v nginx >/dev/null 2>&1 || need+=(nginx-light)
command -v taskset >/dev/null 2>&1 || need+=(util-linux)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
command -v ip >/dev/null 2>&1 || need+=(iproute2)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "bench-deps: missing ${need[*]}: install them, as root, with apt-get" >&2
  exit 1
fi
echo "bench-deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# The packages start their services; the harness runs its own instances.
systemctl disable --now haproxy nginx >/dev/null 2>&1 || true
