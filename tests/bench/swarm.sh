#!/usr/bin/env bash
# A private single-node Docker Swarm for the lifecycle benchmark's
# side-by-side run: its own dockerd (data, exec root and socket under
# /tmp/orca-swarm), nothing of the host's touched.
#
#   tests/bench/swarm.sh up     installs docker.io if missing, starts dockerd,
#                               `docker swarm init`; prints the DOCKER_HOST
#   tests/bench/swarm.sh down   stops that dockerd (by its PID file)
#
# Then: ORCA_BENCH_DOCKER_HOST=unix:///tmp/orca-swarm/docker.sock \
#       cargo bench --bench lifecycle
set -euo pipefail
DIR=/tmp/orca-swarm
SOCK=unix://$DIR/docker.sock

case "${1:-}" in
  up)
    command -v dockerd >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io >/dev/null
    mkdir -p "$DIR"
    if ! DOCKER_HOST=$SOCK docker info >/dev/null 2>&1; then
      setsid dockerd --data-root "$DIR/data" --exec-root "$DIR/exec" --pidfile "$DIR/docker.pid" \
        -H "$SOCK" >"$DIR/dockerd.log" 2>&1 < /dev/null &
      for _ in $(seq 60); do
        DOCKER_HOST=$SOCK docker info >/dev/null 2>&1 && break
        sleep 0.5
      done
    fi
    if [ "$(DOCKER_HOST=$SOCK docker info --format '{{.Swarm.LocalNodeState}}')" != active ]; then
      DOCKER_HOST=$SOCK docker swarm init --advertise-addr 127.0.0.1 >/dev/null
    fi
    echo "$SOCK"
    ;;
  down)
    [ -f "$DIR/docker.pid" ] && kill "$(cat "$DIR/docker.pid")" 2>/dev/null || true
    ;;
  *)
    echo "usage: $0 up|down" >&2
    exit 2
    ;;
esac
