# Sourced by .ci/run (and usable by hand: `source tests/env.sh`): installs
# what the tests need, starts a private containerd and a local registry unless
# ones are given, builds and pushes the test images, and exports:
#
#   ORCA_TEST_CONTAINERD  containerd socket the tests use
#   ORCA_TEST_REGISTRY    host:port of the plain-HTTP registry on loopback
#   ORCA_TEST_IMAGES      directory of the test images' OCI layouts and archives
#   ORCA_TEST_SCHEMATHESIS  the schemathesis program (in a virtualenv)
#
# `orca_env_stop` stops what this script started (only those PIDs).

ORCA_ENV_PIDS=()
ORCA_ENV_DIR=""

orca_env_log() { echo "[env] $*" >&2; }

orca_env_install() {
  local need=()
  command -v containerd >/dev/null || need+=(containerd)
  command -v runc >/dev/null || need+=(runc)
  [ -x /bin/busybox ] && ! file /bin/busybox | grep -q 'dynamically linked' || need+=(busybox-static)
  command -v docker-registry >/dev/null || need+=(docker-registry)
  command -v skopeo >/dev/null || need+=(skopeo)
  command -v protoc >/dev/null || need+=(protobuf-compiler)
  [ -f /usr/include/google/protobuf/descriptor.proto ] || need+=(libprotobuf-dev)
  command -v curl >/dev/null || need+=(curl)
  command -v file >/dev/null || need+=(file)
  command -v promtool >/dev/null || need+=(prometheus)
  command -v nft >/dev/null || need+=(nftables)
  command -v conntrack >/dev/null || need+=(conntrack)
  command -v nsenter >/dev/null || need+=(util-linux)
  command -v ip >/dev/null || need+=(iproute2)
  command -v ping >/dev/null || need+=(iputils-ping)
  command -v systemd-analyze >/dev/null || need+=(systemd)
  command -v chromium >/dev/null || need+=(chromium)
  command -v chromedriver >/dev/null || need+=(chromium-driver)
  command -v pebble >/dev/null || need+=(pebble)
  command -v etcd >/dev/null || need+=(etcd-server)
  if [ ${#need[@]} -gt 0 ] || [ "${ORCA_ENV_FORCE_APT:-}" = 1 ]; then
    orca_env_log "apt-get install ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      containerd runc busybox-static docker-registry skopeo protobuf-compiler libprotobuf-dev curl file prometheus \
      nftables util-linux iproute2 iputils-ping "${need[@]}" >/dev/null
  fi
  orca_env_install_schemathesis
}

# schemathesis (from PyPI, pinned) in a virtualenv of its own, kept between
# runs: the OpenAPI fuzz test runs it against a live server.
ORCA_SCHEMATHESIS_VERSION=4.32.5
orca_env_install_schemathesis() {
  local venv=${XDG_CACHE_HOME:-$HOME/.cache}/orca-test/schemathesis-$ORCA_SCHEMATHESIS_VERSION
  if [ ! -x "$venv/bin/schemathesis" ]; then
    orca_env_log "pip install schemathesis==$ORCA_SCHEMATHESIS_VERSION"
    rm -rf "$venv"
    python3 -m venv "$venv" &&
      "$venv/bin/pip" install -q "schemathesis==$ORCA_SCHEMATHESIS_VERSION" || return 1
  fi
  export ORCA_TEST_SCHEMATHESIS=$venv/bin/schemathesis
}

orca_env_containerd_answers() {
  [ -S "$1" ] && ctr --address "$1" version >/dev/null 2>&1
}

orca_env_start_containerd() {
  if [ -n "${ORCA_TEST_CONTAINERD:-}" ] && orca_env_containerd_answers "$ORCA_TEST_CONTAINERD"; then
    orca_env_log "using containerd at $ORCA_TEST_CONTAINERD"
    return 0
  fi
  local dir=$ORCA_ENV_DIR/containerd
  mkdir -p "$dir/root" "$dir/state"
  cat > "$dir/config.toml" <<EOF
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$dir/containerd.sock"
[ttrpc]
  address = "$dir/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
EOF
  containerd --config "$dir/config.toml" >"$dir/containerd.log" 2>&1 &
  ORCA_ENV_PIDS+=($!)
  local i
  for i in $(seq 1 100); do
    if orca_env_containerd_answers "$dir/containerd.sock"; then
      export ORCA_TEST_CONTAINERD=$dir/containerd.sock
      orca_env_log "containerd up at $ORCA_TEST_CONTAINERD ($(ctr --address "$ORCA_TEST_CONTAINERD" version | awk '/Version/{print $2; exit}'))"
      return 0
    fi
    sleep 0.1
  done
  orca_env_log "containerd did not start; its log:"
  tail -n 30 "$dir/containerd.log" >&2
  return 1
}

orca_env_registry_answers() {
  curl -fsS -o /dev/null --max-time 2 "http://$1/v2/" 2>/dev/null
}

orca_env_start_registry() {
  local addr=${ORCA_TEST_REGISTRY:-127.0.0.1:5000}
  if orca_env_registry_answers "$addr"; then
    export ORCA_TEST_REGISTRY=$addr
    orca_env_log "using registry at $addr"
    return 0
  fi
  local dir=$ORCA_ENV_DIR/registry
  mkdir -p "$dir/storage"
  cat > "$dir/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
http:
  addr: $addr
EOF
  docker-registry serve "$dir/config.yml" >"$dir/registry.log" 2>&1 &
  ORCA_ENV_PIDS+=($!)
  local i
  for i in $(seq 1 100); do
    if orca_env_registry_answers "$addr"; then
      export ORCA_TEST_REGISTRY=$addr
      orca_env_log "registry up at $addr"
      return 0
    fi
    sleep 0.1
  done
  orca_env_log "registry did not start at $addr; its log:"
  tail -n 30 "$dir/registry.log" >&2
  return 1
}

orca_env_stop() {
  local pid
  for pid in "${ORCA_ENV_PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${ORCA_ENV_PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  ORCA_ENV_PIDS=()
  if [ -n "$ORCA_ENV_DIR" ] && [ -d "$ORCA_ENV_DIR" ]; then
    # Snapshots of containers the tests did not clean up may still be mounted.
    grep " $ORCA_ENV_DIR/" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf "$ORCA_ENV_DIR" 2>/dev/null || true
  fi
}

orca_env_start() {
  ORCA_ENV_DIR=$(mktemp -d /tmp/orca-env.XXXXXX)
  orca_env_install || return 1
  orca_env_start_containerd || return 1
  orca_env_start_registry || return 1
  export ORCA_TEST_IMAGES=${ORCA_TEST_IMAGES:-$PWD/target/test-images}
  bash tests/images/build.sh "$ORCA_TEST_IMAGES" || return 1
}
