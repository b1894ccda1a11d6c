#!/bin/bash
# build-scratch.sh builds the quarantine-watch image without pulling anything:
# the static binary is built with the local Go toolchain and imported, with
# `docker import`, as the only program of a root filesystem equivalent to
# FROM scratch. It is the offline twin of the Dockerfile at the top of the
# repository, whose base images need a container registry.
#
#   usage: build-scratch.sh [TAG]        (default: $QW_IMAGE or quarantine-watch:dev)
#
# The root filesystem holds only:
#   /quarantine-watch                    the binary (CGO_ENABLED=0, -trimpath)
#   /etc/passwd, /etc/group              root, nonroot (65532) and nobody, as distroless has them
#   /etc/ssl/certs/ca-certificates.crt   the host's CA bundle, for TLS to MSK
#   /tmp                                 mode 1777
# and the image runs as 65532:65532 with ENTRYPOINT ["/quarantine-watch"],
# CMD ["run"]. Files are owned by root and carry the last commit's time, so
# the same commit gives the same layer.
#
# Environment: VERSION (default: git describe, as `make build`), GOARCH
# (default: the host's), GO (default: go). Needs go, docker and the host's
# ca-certificates.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
TAG="${1:-${QW_IMAGE:-quarantine-watch:dev}}"
GO="${GO:-go}"
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt

log() { echo "build-scratch: $*" >&2; }
die() {
  echo "build-scratch: error: $*" >&2
  exit 1
}

command -v "$GO" >/dev/null 2>&1 || die "$GO not found"
command -v docker >/dev/null 2>&1 || die "docker not found; install it with: apt-get install -y docker.io"
docker info >/dev/null 2>&1 || die "docker is not reachable; start it with: make docker-up"
[[ -r "$CA_BUNDLE" ]] || die "$CA_BUNDLE not found; install it with: apt-get install -y ca-certificates"

cd "$ROOT"
VERSION="${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo devel)}"
# The commit time, not now, so that a rebuild of one commit is identical.
EPOCH="$(git log -1 --format=%ct 2>/dev/null || echo 0)"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"
mkdir -p "$rootfs/etc/ssl/certs" "$rootfs/tmp"
chmod 1777 "$rootfs/tmp"

log "building quarantine-watch $VERSION ($("$GO" env GOOS)/${GOARCH:-$("$GO" env GOARCH)})"
# GOTOOLCHAIN=local: build with this toolchain or fail, never download one.
CGO_ENABLED=0 GOTOOLCHAIN=local "$GO" build -trimpath \
  -ldflags "-s -w -X main.version=$VERSION" \
  -o "$rootfs/quarantine-watch" ./cmd/quarantine-watch

cat >"$rootfs/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
cat >"$rootfs/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
nonroot:x:65532:
EOF
install -m 0644 "$CA_BUNDLE" "$rootfs/etc/ssl/certs/ca-certificates.crt"
chmod 0644 "$rootfs/etc/passwd" "$rootfs/etc/group"
chmod 0755 "$rootfs/quarantine-watch" "$rootfs/etc" "$rootfs/etc/ssl" "$rootfs/etc/ssl/certs"

old_id="$(docker image inspect --format '{{.Id}}' "$TAG" 2>/dev/null || true)"
log "importing $TAG"
tar --sort=name --mtime="@$EPOCH" --owner=0 --group=0 --numeric-owner -C "$rootfs" -c . |
  docker import \
    --change 'USER 65532:65532' \
    --change 'WORKDIR /' \
    --change 'EXPOSE 9090' \
    --change 'ENTRYPOINT ["/quarantine-watch"]' \
    --change 'CMD ["run"]' \
    --message "quarantine-watch $VERSION, built by deploy/image/build-scratch.sh" \
    - "$TAG" >/dev/null
# The image this tag named before is left untagged: remove it if this
# script made it and nothing else uses it, so that rebuilds do not pile up.
if [[ -n "$old_id" && "$old_id" != "$(docker image inspect --format '{{.Id}}' "$TAG")" &&
  "$(docker image inspect --format '{{.Comment}}' "$old_id" 2>/dev/null)" == *build-scratch.sh* ]]; then
  docker rmi "$old_id" >/dev/null 2>&1 || true
fi
log "built $TAG ($(docker image inspect --format '{{.Size}}' "$TAG" | awk '{printf "%.1f MB", $1 / 1000000}'))"
