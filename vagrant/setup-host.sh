#!/usr/bin/env bash
# Sets up this host for orca and runs it: installs containerd and runc when
# missing (and protoc, which the build needs), builds orca, starts containerd
# unless a service manager already runs it, then runs `orca server`.
#
#   sudo vagrant/setup-host.sh [cluster.toml]
#
# The multi-VM lab provisions its machines with this same script.
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${1:-}

need=()
command -v containerd >/dev/null || need+=(containerd)
command -v runc >/dev/null || need+=(runc)
command -v protoc >/dev/null || need+=(protobuf-compiler)
command -v nft >/dev/null || need+=(nftables)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

cargo build --release

SOCKET=/run/containerd/containerd.sock
if ! ctr --address "$SOCKET" version >/dev/null 2>&1; then
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
    systemctl enable --now containerd
  else
    echo "starting containerd (no service manager runs it); log: /var/log/containerd.log"
    nohup containerd >>/var/log/containerd.log 2>&1 &
  fi
  for _ in $(seq 1 100); do
    ctr --address "$SOCKET" version >/dev/null 2>&1 && break
    sleep 0.1
  done
fi

if [ -n "$CONFIG" ]; then
  exec ./target/release/orca server --config "$CONFIG"
else
  exec ./target/release/orca server
fi
