#!/usr/bin/env bash
# Builds orca's test images from Debian's static busybox, with no network,
# writes them as OCI layouts (plus OCI and `docker save` archives for the
# import tests) and pushes them to the local registry with skopeo.
#
#   tests/images/build.sh [OUT_DIR]       (default: target/test-images)
#
# ORCA_TEST_REGISTRY names the registry (default 127.0.0.1:5000). Set
# ORCA_IMAGES_NO_PUSH=1 to only build.
#
# Images (all under <registry>/orca-test/ unless noted):
#   web:v1, web:v2   busybox httpd on $PORT (default 8080): "/" answers
#                    "web v1"/"web v2", "/healthz" answers "ok"; PID 1 ignores
#                    SIGTERM like any busybox PID 1. web:v2's app layer is an
#                    uncompressed tar, so both layer kinds get unpacked.
#   logger:latest    prints "line N" every 200 ms to stdout, every 5th line
#                    also "err N" to stderr; exits on SIGTERM.
#   crasher:latest   prints, exits 3 after 2 s.
#   hog:latest       after 1 s, grows memory until the OOM killer stops it.
#   multi:latest     an index for linux/amd64 and linux/arm64 (the arm64
#                    entry says "wrong platform" if ever run).
#   kaweb:v1         tests/images/kaweb.rs, a keep-alive HTTP/1.1 server on
#                    $PORT (default 8080), built here with rustc and a static
#                    C runtime: "/" answers "kaweb v1", "/healthz" "ok".
#                    Also /bin/udpecho PORT (tests/images/udpecho.rs): answers
#                    each UDP datagram with the host name and the datagram.
#                    Also /bin/sockprobe (tests/images/sockprobe.rs): opens
#                    a socket of a given family, prints ok or the errno.
#   stateful:v1, :v2 a database-like replica with /data owned by 70:71
#                    (copy-up tests), serving "stateful vN" on $PORT, a
#                    second to stop on SIGTERM.
#   hostile:ok, :fifo, :device, :escape, :big, :shadowed   User by name,
#                    /etc/passwd a plain file (ok) or hostile (see below).
#   library/nginx:alpine   the web:v1 image, so `nginx:alpine` resolves
#                    through a docker.io mirror pointing at the registry.
set -euo pipefail

OUT=${1:-target/test-images}
REGISTRY=${ORCA_TEST_REGISTRY:-127.0.0.1:5000}
BUSYBOX=${BUSYBOX:-/bin/busybox}
EPOCH=1700000000

[ -x "$BUSYBOX" ] || { echo "build.sh: $BUSYBOX missing (apt-get install busybox-static)" >&2; exit 1; }
file "$BUSYBOX" 2>/dev/null | grep -q 'dynamically linked' && { echo "build.sh: $BUSYBOX is not static" >&2; exit 1; }

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

case "$(uname -m)" in
  x86_64) ARCH=amd64 ;;
  aarch64) ARCH=arm64 ;;
  *) ARCH=$(uname -m) ;;
esac
OTHER_ARCH=$([ "$ARCH" = amd64 ] && echo arm64 || echo amd64)

sha() { sha256sum "$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }

# tar_dir DIR FILE: a reproducible tar of DIR's contents (owned by root
# unless KEEP_OWNERS=1).
tar_dir() {
  local owners="--owner=0 --group=0"
  [ "${KEEP_OWNERS:-}" = 1 ] && owners=""
  # shellcheck disable=SC2086
  tar --sort=name $owners --numeric-owner --mtime="@$EPOCH" \
    --format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    -C "$1" -cf "$2" .
}

# add_blob LAYOUT FILE: moves FILE into LAYOUT's blob store, prints its digest.
add_blob() {
  local d
  d=$(sha "$2")
  mkdir -p "$1/blobs/sha256"
  mv "$2" "$1/blobs/sha256/$d"
  echo "$d"
}

# Base layer: busybox and its applets, /etc/passwd, /tmp. Shared by all images.
BASE=$WORK/base
mkdir -p "$BASE/bin" "$BASE/etc" "$BASE/tmp" "$BASE/www"
cp "$BUSYBOX" "$BASE/bin/busybox"
for applet in $("$BUSYBOX" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$BASE/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$BASE/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$BASE/etc/group"
chmod 1777 "$BASE/tmp"
tar_dir "$BASE" "$WORK/base.tar"
BASE_DIFF=$(sha "$WORK/base.tar")
gzip -n -c "$WORK/base.tar" > "$WORK/base.tar.gz"

# make_image NAME TAG APPDIR ENTRYPOINT_JSON ENV_JSON EXTRA_CONFIG_JSON [plain]
# Writes an OCI layout at $OUT/NAME-TAG and prints nothing. The lower layer
# is the base, or $LOWER_GZ (with diff id $LOWER_DIFF) when set.
make_image() {
  local name=$1 tag=$2 app=$3 entry=$4 env=$5 extra=$6 plain=${7:-}
  local lower_gz=${LOWER_GZ:-$WORK/base.tar.gz} lower_diff=${LOWER_DIFF:-$BASE_DIFF}
  local layout=$OUT/$name-$tag
  rm -rf "$layout"
  mkdir -p "$layout/blobs/sha256"
  printf '{"imageLayoutVersion":"1.0.0"}' > "$layout/oci-layout"

  cp "$lower_gz" "$WORK/l0"
  local base_size base_digest
  base_size=$(size "$WORK/l0")
  base_digest=$(add_blob "$layout" "$WORK/l0")

  tar_dir "$app" "$WORK/app.tar"
  local app_diff app_media app_size app_digest
  app_diff=$(sha "$WORK/app.tar")
  if [ -n "$plain" ]; then
    app_media=application/vnd.oci.image.layer.v1.tar
    cp "$WORK/app.tar" "$WORK/l1"
  else
    app_media=application/vnd.oci.image.layer.v1.tar+gzip
    gzip -n -c "$WORK/app.tar" > "$WORK/l1"
  fi
  app_size=$(size "$WORK/l1")
  app_digest=$(add_blob "$layout" "$WORK/l1")

  cat > "$WORK/config" <<EOF
{"architecture":"$ARCH","os":"linux","created":"2023-11-14T22:13:20Z",
 "config":{"Entrypoint":$entry,"Env":$env$extra},
 "rootfs":{"type":"layers","diff_ids":["sha256:$lower_diff","sha256:$app_diff"]},
 "history":[{"created":"2023-11-14T22:13:20Z","created_by":"tests/images/build.sh"}]}
EOF
  local config_size config_digest
  config_size=$(size "$WORK/config")
  config_digest=$(add_blob "$layout" "$WORK/config")

  cat > "$WORK/manifest" <<EOF
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
 "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:$config_digest","size":$config_size},
 "layers":[
  {"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:$base_digest","size":$base_size},
  {"mediaType":"$app_media","digest":"sha256:$app_digest","size":$app_size}]}
EOF
  local manifest_size manifest_digest
  manifest_size=$(size "$WORK/manifest")
  manifest_digest=$(add_blob "$layout" "$WORK/manifest")

  cat > "$layout/index.json" <<EOF
{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:$manifest_digest","size":$manifest_size,
 "annotations":{"org.opencontainers.image.ref.name":"$tag"},"platform":{"architecture":"$ARCH","os":"linux"}}]}
EOF
}

# web:v1 and web:v2
for v in v1 v2; do
  app=$WORK/web-$v
  mkdir -p "$app/www" "$app/bin"
  printf 'web %s\n' "$v" > "$app/www/index.html"
  printf 'ok\n' > "$app/www/healthz"
  cat > "$app/bin/web" <<'EOF'
#!/bin/sh
echo "web $VERSION listening on ${PORT:-8080}"
exec httpd -f -v -p "${PORT:-8080}" -h /www
EOF
  chmod 755 "$app/bin/web"
  plain=""
  [ "$v" = v2 ] && plain=plain
  make_image web "$v" "$app" '["/bin/web"]' "[\"PATH=/bin\",\"VERSION=$v\",\"PORT=8080\"]" \
    ',"WorkingDir":"/www","ExposedPorts":{"8080/tcp":{}}' $plain
done

# kaweb: a static std-only binary, so the image needs no libraries.
app=$WORK/kaweb
mkdir -p "$app/bin"
RUSTC=${RUSTC:-rustc}
command -v "$RUSTC" >/dev/null || { echo "build.sh: rustc missing" >&2; exit 1; }
"$RUSTC" --edition 2021 -O -C target-feature=+crt-static -C strip=symbols \
  -o "$app/bin/kaweb" "$(dirname "$0")/kaweb.rs"
file "$app/bin/kaweb" | grep -Eq 'static(-pie)? linked|statically linked' || { echo "build.sh: kaweb is not static" >&2; exit 1; }
"$RUSTC" --edition 2021 -O -C target-feature=+crt-static -C strip=symbols \
  -o "$app/bin/sockprobe" "$(dirname "$0")/sockprobe.rs"
"$RUSTC" --edition 2021 -O -C target-feature=+crt-static -C strip=symbols \
  -o "$app/bin/udpecho" "$(dirname "$0")/udpecho.rs"
make_image kaweb v1 "$app" '["/bin/kaweb"]' '["PATH=/bin","VERSION=v1","PORT=8080"]' \
  ',"ExposedPorts":{"8080/tcp":{}}'

# logger
app=$WORK/logger
mkdir -p "$app/bin"
cat > "$app/bin/logger-loop" <<'EOF'
#!/bin/sh
trap 'echo "logger stopping"; exit 0' TERM
i=0
while :; do
  i=$((i+1))
  echo "line $i"
  [ $((i % 5)) -eq 0 ] && echo "err $i" >&2
  usleep 200000
done
EOF
chmod 755 "$app/bin/logger-loop"
make_image logger latest "$app" '["/bin/logger-loop"]' '["PATH=/bin"]' ''

# crasher
app=$WORK/crasher
mkdir -p "$app/bin"
printf '#!/bin/sh\necho "crasher starting"\nsleep 2\necho "crasher exiting with 3" >&2\nexit 3\n' > "$app/bin/crash"
chmod 755 "$app/bin/crash"
make_image crasher latest "$app" '["/bin/crash"]' '["PATH=/bin"]' ''

# hog: tail keeps every byte of a newline-free stream in memory. It waits a
# second first: containerd's shim starts watching a task for OOM kills only
# after the task has started, and a kill before that is never reported.
app=$WORK/hog
mkdir -p "$app/bin"
printf '#!/bin/sh\necho "hog starting"\nsleep 1\nexec tail /dev/zero\n' > "$app/bin/hog"
chmod 755 "$app/bin/hog"
make_image hog latest "$app" '["/bin/hog"]' '["PATH=/bin"]' ''

# hostile:*: images whose User is a name and whose /etc/passwd tries to make
# the host read what it must not: a FIFO (hangs a reader), a device node
# (endless zeros), a link climbing out to the host's own /etc/passwd (which
# knows "daemon"), 2 MiB of text. hostile:ok is the control: a plain file
# naming the user. Device nodes need root, as CI has.
for kind in ok fifo device escape big; do
  app=$WORK/hostile-$kind
  mkdir -p "$app/etc"
  user=app
  case $kind in
    ok) printf 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/:/bin/sh\n' > "$app/etc/passwd" ;;
    fifo) mkfifo "$app/etc/passwd" ;;
    device) mknod "$app/etc/passwd" c 1 5 ;;
    escape) ln -s "$(printf '../%.0s' $(seq 1 24))etc/passwd" "$app/etc/passwd"; user=daemon ;;
    big) head -c 2097152 /dev/zero | tr '\0' 'x' > "$app/etc/passwd" ;;
  esac
  make_image hostile "$kind" "$app" '["/bin/sleep","600"]' '["PATH=/bin"]' ",\"User\":\"$user\""
done

# hostile:shadowed: the lower layer has busybox and `etc -> /etc`, the upper
# an empty `etc/`, and User is `_apt`, a name only the host's own
# /etc/passwd knows. Followed through the lower layer's link, the lookup
# would find the host's account and run the replica as its uid.
lower=$WORK/shadowed-lower
mkdir -p "$lower/bin" "$lower/tmp"
cp -a "$BASE/bin/." "$lower/bin/"
ln -s /etc "$lower/etc"
tar_dir "$lower" "$WORK/shadowed-lower.tar"
shadowed_diff=$(sha "$WORK/shadowed-lower.tar")
gzip -n -c "$WORK/shadowed-lower.tar" > "$WORK/shadowed-lower.tar.gz"
app=$WORK/hostile-shadowed
mkdir -p "$app/etc"
LOWER_GZ=$WORK/shadowed-lower.tar.gz LOWER_DIFF=$shadowed_diff \
  make_image hostile shadowed "$app" '["/bin/sleep","600"]' '["PATH=/bin"]' ',"User":"_apt"'

# multi: an index with this host's platform and one other.
make_multi() {
  local layout=$OUT/multi-latest host_layout=$OUT/web-v1
  rm -rf "$layout"
  cp -r "$host_layout" "$layout"
  local host_entry other_config other_manifest
  host_entry=$(sed -e 's/^{"schemaVersion":2,"manifests":\[//' -e 's/\]}$//' "$host_layout/index.json" | tr -d '\n')
  host_entry=$(printf '%s' "$host_entry" | sed -E 's/, ?"annotations":\{[^}]*\}//')
  printf '{"architecture":"%s","os":"linux","config":{"Cmd":["/bin/echo","wrong platform"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$OTHER_ARCH" "$BASE_DIFF" > "$WORK/oconfig"
  local ocs ocd bsz bd
  ocs=$(size "$WORK/oconfig"); ocd=$(add_blob "$layout" "$WORK/oconfig")
  bsz=$(size "$WORK/base.tar.gz"); bd=$(sha "$WORK/base.tar.gz")
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
    "$ocd" "$ocs" "$bd" "$bsz" > "$WORK/omanifest"
  local oms omd
  oms=$(size "$WORK/omanifest"); omd=$(add_blob "$layout" "$WORK/omanifest")
  # The other platform comes first, so picking the first entry would be wrong.
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"%s","os":"linux"}},%s]}' \
    "$omd" "$oms" "$OTHER_ARCH" "$host_entry" > "$WORK/index"
  local is id
  is=$(size "$WORK/index"); id=$(add_blob "$layout" "$WORK/index")
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"latest"}}]}' \
    "$id" "$is" > "$layout/index.json"
}
make_multi

# Archives for the import tests.
rm -f "$OUT/web-v1.oci.tar" "$OUT/web-v1.docker.tar"
# stateful:v1, :v2: a database-like replica. /data ships files owned by
# 70:71 (seed.txt 0640, sub/ 0750, link -> seed.txt) for the copy-up; the
# process serves /www ("stateful v1") with httpd on $PORT and, on SIGTERM,
# takes a second to stop, as a database flushing does.
for v in v1 v2; do
  app=$WORK/stateful-$v
  mkdir -p "$app/bin" "$app/www" "$app/data/sub"
  printf 'seeded\n' > "$app/data/seed.txt"
  printf 'deep\n' > "$app/data/sub/deep.txt"
  ln -s seed.txt "$app/data/link"
  chown -R 70:71 "$app/data"
  chmod 0640 "$app/data/seed.txt"
  chmod 0750 "$app/data/sub"
  printf 'stateful %s\n' "$v" > "$app/www/index.html"
  cat > "$app/bin/db" <<'SCRIPT'
#!/bin/sh
httpd -f -p "${PORT:-8080}" -h /www &
web=$!
trap 'sleep 1; kill $web; exit 0' TERM
while true; do sleep 1 & wait $!; done
SCRIPT
  chmod 755 "$app/bin/db"
  KEEP_OWNERS=1 make_image stateful "$v" "$app" '["/bin/db"]' "[\"PATH=/bin\",\"VERSION=$v\",\"PORT=8080\"]" ''
done

(cd "$OUT/web-v1" && tar --owner=0 --group=0 -cf "$OUT/web-v1.oci.tar" oci-layout index.json blobs)
skopeo copy -q "oci:$OUT/web-v1:v1" "docker-archive:$OUT/web-v1.docker.tar:orca-test/imported:docker"

echo "built test images in $OUT"

if [ "${ORCA_IMAGES_NO_PUSH:-}" = 1 ]; then
  exit 0
fi

push() {
  skopeo copy -q --retry-times 3 --dest-tls-verify=false "$@"
}
push "oci:$OUT/web-v1:v1" "docker://$REGISTRY/orca-test/web:v1"
push "oci:$OUT/web-v2:v2" "docker://$REGISTRY/orca-test/web:v2"
push "oci:$OUT/kaweb-v1:v1" "docker://$REGISTRY/orca-test/kaweb:v1"
push "oci:$OUT/logger-latest:latest" "docker://$REGISTRY/orca-test/logger:latest"
push "oci:$OUT/crasher-latest:latest" "docker://$REGISTRY/orca-test/crasher:latest"
push "oci:$OUT/hog-latest:latest" "docker://$REGISTRY/orca-test/hog:latest"
push "oci:$OUT/stateful-v1:v1" "docker://$REGISTRY/orca-test/stateful:v1"
push "oci:$OUT/stateful-v2:v2" "docker://$REGISTRY/orca-test/stateful:v2"
push --all "oci:$OUT/multi-latest:latest" "docker://$REGISTRY/orca-test/multi:latest"
for kind in ok fifo device escape big shadowed; do
  push "oci:$OUT/hostile-$kind:$kind" "docker://$REGISTRY/orca-test/hostile:$kind"
done
push "oci:$OUT/web-v1:v1" "docker://$REGISTRY/library/nginx:alpine"
echo "pushed test images to $REGISTRY"
