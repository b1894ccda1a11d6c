#!/bin/bash
# smoke.sh checks a quarantine-watch image the way Kubernetes will run it
# (deploy/kubernetes): read-only root filesystem, every capability dropped,
# no privilege escalation, host networking (so any traffic stays on this
# machine; the demo needs none). It fails unless
#   - `version` prints a version,
#   - `demo --duration 5s` exits 0, and
#   - the demo's process runs as uid and gid 65532, read from /proc on the
#     host while it runs (the image has no shell or ps to ask from inside).
#
#   usage: smoke.sh [TAG]                (default: $QW_IMAGE or quarantine-watch:dev)
set -euo pipefail

TAG="${1:-${QW_IMAGE:-quarantine-watch:dev}}"
HARDENED=(--network host --read-only --cap-drop ALL --security-opt no-new-privileges)

log() { echo "smoke: $*" >&2; }
die() {
  echo "smoke: FAIL: $*" >&2
  exit 1
}

docker image inspect "$TAG" >/dev/null 2>&1 || die "no image $TAG; build it with deploy/image/build-scratch.sh"
user="$(docker image inspect --format '{{.Config.User}}' "$TAG")"
[[ "$user" == 65532:65532 || "$user" == nonroot || "$user" == nonroot:nonroot ]] ||
  die "image user is ${user:-root}, want 65532:65532 (nonroot)"

log "docker run $TAG version"
out="$(docker run --rm "${HARDENED[@]}" "$TAG" version)" || die "version exited non-zero"
echo "$out"
[[ "$out" == "quarantine-watch "* ]] || die "version printed $out"

name="qw-smoke-$$-$RANDOM"
cleanup() { docker rm -f "$name" >/dev/null 2>&1 || true; }
trap cleanup EXIT

log "docker run $TAG demo --duration 5s"
docker run -d --name "$name" "${HARDENED[@]}" "$TAG" demo --duration 5s --progress 2s >/dev/null
pid=""
for _ in $(seq 50); do
  pid="$(docker inspect --format '{{.State.Pid}}' "$name" 2>/dev/null || true)"
  [[ -n "$pid" && "$pid" != 0 ]] && break
  sleep 0.1
done
[[ -n "$pid" && "$pid" != 0 ]] || die "the demo container did not start"
ids="$(awk '/^Uid:|^Gid:/ {printf "%s=%s ", $1, $2}' "/proc/$pid/status")" ||
  die "could not read /proc/$pid/status"
log "demo process $pid: $ids"
[[ "$ids" == "Uid:=65532 Gid:=65532 " ]] || die "demo runs as $ids, want uid and gid 65532"

rc="$(docker wait "$name")"
# stdout holds one finding per line, stderr the progress and the summary.
findings="$(docker logs "$name" 2>/dev/null | grep -c '"kind":"alert"' || true)"
docker logs "$name" 2>&1 >/dev/null | grep '^demo:' || true
log "demo printed $findings findings on stdout"
[[ "$rc" == 0 ]] || {
  docker logs "$name" 2>&1 >/dev/null | tail -n 20 >&2
  die "demo exited $rc"
}
log "ok: $TAG runs version and demo as 65532:65532 on a read-only root filesystem"
