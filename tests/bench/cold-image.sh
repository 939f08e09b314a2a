#!/usr/bin/env bash
# Builds and pushes an image no one has pulled yet, for cold-pull timings:
# the web:v1 layout (busybox httpd on $PORT) with a random file in each of
# its two layers, so every blob is new to containerd's content store.
#
#   tests/bench/cold-image.sh REGISTRY TAG   -> REGISTRY/orca-test/cold:TAG
set -euo pipefail
REGISTRY=$1 TAG=$2
BUSYBOX=${BUSYBOX:-/bin/busybox}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
case "$(uname -m)" in x86_64) ARCH=amd64 ;; aarch64) ARCH=arm64 ;; *) ARCH=$(uname -m) ;; esac
sha() { sha256sum "$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }
layer() { # DIR -> prints "diff_id digest size" and leaves the blob in the layout
  tar --sort=name --owner=0 --group=0 --numeric-owner -C "$1" -cf "$WORK/l.tar" .
  local diff; diff=$(sha "$WORK/l.tar")
  gzip -n -c "$WORK/l.tar" > "$WORK/l.tgz"
  local d; d=$(sha "$WORK/l.tgz")
  mkdir -p "$WORK/oci/blobs/sha256"
  mv "$WORK/l.tgz" "$WORK/oci/blobs/sha256/$d"
  echo "$diff $d $(size "$WORK/oci/blobs/sha256/$d")"
}
mkdir -p "$WORK/base/bin" "$WORK/base/etc" "$WORK/app/www" "$WORK/app/bin"
cp "$BUSYBOX" "$WORK/base/bin/busybox"
for a in sh httpd; do ln -s busybox "$WORK/base/bin/$a"; done
head -c 64 /dev/urandom | od -An -tx1 > "$WORK/base/etc/cold-id"
printf 'cold %s\n' "$TAG" > "$WORK/app/www/index.html"
head -c 64 /dev/urandom | od -An -tx1 > "$WORK/app/www/cold-id"
printf '#!/bin/sh\nexec httpd -f -p "${PORT:-8080}" -h /www\n' > "$WORK/app/bin/web"
chmod 755 "$WORK/app/bin/web"
read -r b_diff b_dig b_size < <(layer "$WORK/base")
read -r a_diff a_dig a_size < <(layer "$WORK/app")
printf '{"architecture":"%s","os":"linux","config":{"Entrypoint":["/bin/web"],"Env":["PATH=/bin"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s","sha256:%s"]}}' \
  "$ARCH" "$b_diff" "$a_diff" > "$WORK/config"
c_dig=$(sha "$WORK/config"); c_size=$(size "$WORK/config"); mv "$WORK/config" "$WORK/oci/blobs/sha256/$c_dig"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s},{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
  "$c_dig" "$c_size" "$b_dig" "$b_size" "$a_dig" "$a_size" > "$WORK/manifest"
m_dig=$(sha "$WORK/manifest"); m_size=$(size "$WORK/manifest"); mv "$WORK/manifest" "$WORK/oci/blobs/sha256/$m_dig"
printf '{"imageLayoutVersion":"1.0.0"}' > "$WORK/oci/oci-layout"
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"%s"}}]}' \
  "$m_dig" "$m_size" "$TAG" > "$WORK/oci/index.json"
skopeo copy -q --dest-tls-verify=false "oci:$WORK/oci:$TAG" "docker://$REGISTRY/orca-test/cold:$TAG"
