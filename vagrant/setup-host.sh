#!/usr/bin/env bash
# Sets up this host for orca and runs it: installs containerd and runc when
# missing (and protoc, which the build needs), builds orca, starts containerd
# unless a service manager already runs it, then runs `orca server`, or with
# --agent an `orca agent` that joins a server.
#
#   sudo vagrant/setup-host.sh [cluster.toml]
#   sudo vagrant/setup-host.sh --agent --join SERVER:6881 --token TOKEN [agent.toml]
#
# The multi-VM lab (vagrant/Vagrantfile) provisions its machines with this
# same script.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=server
JOIN=
TOKEN=
CONFIG=
while [ $# -gt 0 ]; do
  case "$1" in
    --agent) MODE=agent ;;
    --join) JOIN=$2; shift ;;
    --token) TOKEN=$2; shift ;;
    -*) echo "setup-host.sh: unknown option $1" >&2; exit 2 ;;
    *) CONFIG=$1 ;;
  esac
  shift
done

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

args=("$MODE")
if [ "$MODE" = agent ]; then
  [ -n "$JOIN" ] && args+=(--join "$JOIN")
  [ -n "$TOKEN" ] && args+=(--token "$TOKEN")
fi
[ -n "$CONFIG" ] && args+=(--config "$CONFIG")
exec ./target/release/orca "${args[@]}"
