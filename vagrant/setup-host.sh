#!/usr/bin/env bash
# Sets up this host for orca and runs it: installs containerd and runc when
# missing (and protoc and a C compiler, which the build needs), builds orca,
# starts containerd unless a service manager already runs it, then runs
# `orca server`, or with --agent an `orca agent` that joins a server.
#
#   sudo vagrant/setup-host.sh [--install] [cluster.toml]
#   sudo vagrant/setup-host.sh [--install] --agent --join SERVER:6881 --token TOKEN [agent.toml]
#   sudo vagrant/setup-host.sh [--install] --join-server SERVER:6881 --token TOKEN [cluster.toml]
#     (another server of a control plane on etcd, with a server join token)
#
# --install puts the binary in /usr/local/bin and the config in /etc/orca
# (cluster.toml, or agent.toml with the join address and token), and where
# systemd runs, installs orca.service (or orca-agent.service) and enables
# and starts it. Without systemd, the installed binary runs in the
# foreground. Without --install, ./target/release/orca runs in the
# foreground.
#
# The multi-VM lab (vagrant/Vagrantfile) provisions its machines with this
# same script.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=server
INSTALL=0
JOIN=
JOIN_SERVER=
TOKEN=
CONFIG=
while [ $# -gt 0 ]; do
  case "$1" in
    --agent) MODE=agent ;;
    --install) INSTALL=1 ;;
    --join) JOIN=$2; shift ;;
    --join-server) JOIN_SERVER=$2; shift ;;
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
[ -f /usr/include/google/protobuf/descriptor.proto ] || need+=(libprotobuf-dev)
command -v nft >/dev/null || need+=(nftables)
command -v conntrack >/dev/null || need+=(conntrack)
command -v cc >/dev/null || need+=(gcc libc6-dev)
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
elif [ -n "$JOIN_SERVER" ]; then
  args+=(--join-server "$JOIN_SERVER" --token "$TOKEN")
fi
[ -n "$CONFIG" ] && args+=(--config "$CONFIG")
if [ "$INSTALL" = 0 ]; then
  exec ./target/release/orca "${args[@]}"
fi

# --install
install -m 0755 target/release/orca /usr/local/bin/orca
install -d -m 0755 /etc/orca
if [ "$MODE" = server ]; then
  unit=orca.service
  conf=/etc/orca/cluster.toml
  [ -n "$CONFIG" ] && install -m 0600 "$CONFIG" "$conf"
else
  unit=orca-agent.service
  conf=/etc/orca/agent.toml
  [ -n "$CONFIG" ] && install -m 0600 "$CONFIG" "$conf"
  if [ -n "$JOIN$TOKEN" ]; then
    if [ -f "$conf" ] && grep -q '^\[agent\]' "$conf"; then
      echo "setup-host.sh: $conf has an [agent] section: put join and token there, or drop it" >&2
      exit 2
    fi
    umask 077
    {
      echo "[agent]"
      [ -n "$JOIN" ] && echo "join = \"$JOIN\""
      [ -n "$TOKEN" ] && echo "token = \"$TOKEN\""
    } >>"$conf"
  fi
fi
echo "installed /usr/local/bin/orca${CONFIG:+ and $conf}"
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
  install -m 0644 "vagrant/$unit" "/etc/systemd/system/$unit"
  if [ -n "$JOIN_SERVER" ]; then
    # The join runs at each start: once the key is kept, an expired
    # token only says so (the store's CA checks the key).
    install -d -m 0700 /etc/systemd/system/orca.service.d
    umask 077
    printf '[Service]\nExecStart=\nExecStart=/usr/local/bin/orca server --config %s --join-server %s --token %s\n' \
      "$conf" "$JOIN_SERVER" "$TOKEN" >/etc/systemd/system/orca.service.d/join.conf
  fi
  systemctl daemon-reload
  systemctl enable --now "$unit"
  echo "orca runs as $unit (journalctl -u ${unit%.service} -f)"
  exit 0
fi
echo "no systemd here: running /usr/local/bin/orca $MODE --config $conf in the foreground"
args=("$MODE" --config "$conf")
exec /usr/local/bin/orca "${args[@]}"
