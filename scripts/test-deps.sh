#!/usr/bin/env bash
# Installs the system packages the tests use. As root on Debian it installs
# what is missing; otherwise it only says what is missing, since the tests
# that need these (root-only network-namespace and real-node tests) skip
# without root. Nothing installed here starts a service: the real node runs
# containerd itself, with a configuration of its own.
set -euo pipefail

need=()
command -v iptables >/dev/null 2>&1 || need+=(iptables)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
# The real node (internal/testenv StartNode, test/realnode): the container
# runtime, the CNI plugins it wires pods with, and conntrack, which kube-proxy
# runs to flush stale UDP entries.
command -v containerd >/dev/null 2>&1 || need+=(containerd)
command -v runc >/dev/null 2>&1 || need+=(runc)
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
command -v conntrack >/dev/null 2>&1 || need+=(conntrack)
command -v kubectl >/dev/null 2>&1 || { echo "test-deps: kubectl is not on PATH; the tests run it against the test API server" >&2; exit 1; }

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "test-deps: missing ${need[*]}; the root-only tests will skip without them" >&2
  exit 0
fi
echo "test-deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
