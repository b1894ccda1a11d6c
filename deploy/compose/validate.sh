#!/bin/bash
# validate.sh checks compose.yaml (or the compose files given) without
# running anything or pulling any image: with `docker compose config -q`
# where the compose plugin is installed, otherwise with ./check, a small
# program on the library that command is built on (compose-go: the Compose
# Specification's schema, interpolation, consistency of depends_on...).
# It also checks that the sample file the producer sends holds one CloudTrail
# record per line, exactly one of them a finding (`quarantine-watch scan`,
# built from this repository). Exits non-zero on an invalid file.
#
#   usage: validate.sh [COMPOSE-FILE...]        (default: compose.yaml beside this script)
#
# Needs go and python3, and docker with the compose plugin or else the Go
# module proxy (./check's modules, downloaded once).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
GO="${GO:-go}"
files=("$@")
((${#files[@]} > 0)) || files=("$HERE/compose.yaml")

log() { echo "validate-compose: $*" >&2; }

args=()
for f in "${files[@]}"; do
  [[ -f "$f" ]] || {
    log "FAIL: no file $f"
    exit 1
  }
  args+=(-f "$(cd "$(dirname "$f")" && pwd)/$(basename "$f")")
done

# The base image is the user's choice (see compose.yaml); any name checks.
export DISTROLESS_STATIC="${DISTROLESS_STATIC:-mirror.example/distroless/static-debian12:nonroot}"

if docker compose version >/dev/null 2>&1; then
  log "docker compose config ${files[*]}"
  docker compose "${args[@]}" config -q || {
    log "FAIL: ${files[*]}"
    exit 1
  }
else
  command -v "$GO" >/dev/null 2>&1 || {
    log "neither the docker compose plugin nor $GO is here: cannot check"
    exit 2
  }
  log "compose-go (no compose plugin here): ${files[*]}"
  abs=()
  for f in "${files[@]}"; do abs+=("$(cd "$(dirname "$f")" && pwd)/$(basename "$f")"); done
  (cd "$HERE/check" && GOTOOLCHAIN=local GOFLAGS=-mod=mod "$GO" run . "${abs[@]}") || {
    log "FAIL: ${files[*]}"
    exit 1
  }
fi

python3 - "$HERE/cloudtrail-samples.jsonl" <<'PY' || exit 1
import json, sys
path = sys.argv[1]
with open(path) as f:
    for n, line in enumerate(f, 1):
        try:
            doc = json.loads(line)
        except ValueError as e:
            sys.exit(f"validate-compose: FAIL: {path}:{n}: not one JSON object per line: {e}")
        if not isinstance(doc, dict) or "eventName" not in doc:
            sys.exit(f"validate-compose: FAIL: {path}:{n}: not a CloudTrail record")
PY
# The quickstart promises one alert per round: exactly one of the two
# records is a finding.
bin="$(mktemp -d)"
trap 'rm -rf "$bin"' EXIT
(cd "$HERE/../.." && CGO_ENABLED=0 GOTOOLCHAIN=local "$GO" build -o "$bin/quarantine-watch" ./cmd/quarantine-watch)
findings="$("$bin/quarantine-watch" scan "$HERE/cloudtrail-samples.jsonl" 2>/dev/null | wc -l)"
[[ "$findings" == 1 ]] || {
  log "FAIL: cloudtrail-samples.jsonl gives $findings findings, want 1"
  exit 1
}
log "ok: ${files[*]}; cloudtrail-samples.jsonl: 2 records, 1 finding"
