#!/bin/bash
# validate.sh checks the Kubernetes manifests against the Kubernetes API's
# JSON schemas, offline, and exits non-zero if any object is invalid.
#
#   usage: validate.sh [DIR]        (default: the directory of this script)
#
# Three checks of DIR; the first two against every Kubernetes version in
# $KUBERNETES_VERSIONS, with kubeconform in strict mode, so that a field the
# API does not know (`replica: 3`), a wrong type, a missing required field or
# an unknown kind is an error:
#   1. every *.yaml file but kustomization.yaml, as written;
#   2. every kustomization (a directory holding kustomization.yaml), rendered
#      with `kubectl kustomize` (or `kustomize build`): what
#      `kubectl apply -k` would send, generated ConfigMap included;
#   3. every QW_* variable named in DIR's *.yaml and *.env files is one that
#      `quarantine-watch run -h` lists (built from this repository): the
#      binary ignores unknown variables, so a misspelt one would silently
#      leave its flag at the default.
#
# Nothing is fetched from a container registry or from GitHub. The tools and
# schemas come from package registries, pinned, and are kept under
# $QW_CACHE_DIR (default ~/.cache/quarantine-watch)/kubeconform:
#   - kubeconform, built with `go install` from the Go module proxy;
#   - the API's JSON schemas, from the kubernetes-validate wheel on PyPI,
#     fetched with `pip download` and checked against its sha256. They are
#     split into one file per type that refers to a shared _definitions.json
#     by an absolute URL; prepare_schemas makes those references relative,
#     so that the schema library resolves them from disk;
#   - kustomize (only where kubectl is missing), with `go install`.
# Needs go, python3 with pip, and kubectl or kustomize (or go to build it).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DIR="$(cd "${1:-$HERE}" && pwd)"
# The oldest and newest minors we claim to support.
KUBERNETES_VERSIONS="${KUBERNETES_VERSIONS:-1.30.0 1.37.0}"
KUBECONFORM_VERSION=v0.8.0
KUSTOMIZE_VERSION=v5.8.1
SCHEMA_WHEEL=kubernetes_validate-1.37.0-py3-none-any.whl
SCHEMA_WHEEL_SHA256=85136d018a27b50ec7fc049d902bfa5193f5976807e6c0f408e3ab6fe078cad9
CACHE_DIR="${QW_CACHE_DIR:-${HOME:-/root}/.cache/quarantine-watch}/kubeconform"
GO="${GO:-go}"

log() { echo "validate: $*" >&2; }
die() {
  echo "validate: error: $*" >&2
  exit 2
}

# go_install MODULE@VERSION BINARY prints the path of BINARY, built once
# into the cache. GOTOOLCHAIN=local: never download a Go toolchain.
go_install() {
  local bin="$CACHE_DIR/bin/$2-${1##*@}"
  if [[ ! -x "$bin" ]]; then
    command -v "$GO" >/dev/null 2>&1 || die "$GO not found: needed to build $2"
    log "building $1 (once; kept in $CACHE_DIR/bin)"
    local tmp
    tmp="$(mktemp -d)"
    GOBIN="$tmp" GOTOOLCHAIN=local GOFLAGS=-mod=mod "$GO" install "$1" >&2 ||
      die "go install $1 failed"
    mkdir -p "$CACHE_DIR/bin"
    mv "$tmp/$2" "$bin"
    rm -rf "$tmp"
  fi
  printf '%s\n' "$bin"
}

# prepare_schemas VERSION prints the directory kubeconform's template names
# for VERSION, made from the wheel once.
prepare_schemas() {
  local version="$1"
  local out="$CACHE_DIR/schemas/v$version-standalone-strict"
  if [[ -f "$out.done" ]]; then
    printf '%s\n' "$CACHE_DIR/schemas"
    return
  fi
  local wheel="$CACHE_DIR/$SCHEMA_WHEEL"
  if [[ ! -f "$wheel" ]] || ! echo "$SCHEMA_WHEEL_SHA256  $wheel" | sha256sum -c --status; then
    command -v python3 >/dev/null 2>&1 || die "python3 not found: needed to fetch the schemas"
    log "fetching the Kubernetes JSON schemas ($SCHEMA_WHEEL) with pip"
    local tmp
    tmp="$(mktemp -d)"
    local name="${SCHEMA_WHEEL%%-*}" version_of_wheel="${SCHEMA_WHEEL#*-}"
    version_of_wheel="${version_of_wheel%%-*}"
    python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" \
      "${name//_/-}==$version_of_wheel" >&2 || die "pip download ${name//_/-}==$version_of_wheel failed"
    echo "$SCHEMA_WHEEL_SHA256  $tmp/$SCHEMA_WHEEL" | sha256sum -c --status ||
      die "$SCHEMA_WHEEL does not have the pinned sha256 $SCHEMA_WHEEL_SHA256"
    mkdir -p "$CACHE_DIR"
    mv "$tmp/$SCHEMA_WHEEL" "$wheel"
    rm -rf "$tmp"
  fi
  log "extracting the schemas of Kubernetes $version"
  rm -rf "$out" "$out.tmp"
  python3 - "$wheel" "v$version-local-strict" "$out.tmp" <<'EOF' || die "no schemas for Kubernetes $version in $SCHEMA_WHEEL"
import json, os, sys, zipfile

wheel, want, out = sys.argv[1:]
prefix = "kubernetes_validate/kubernetes-json-schema/" + want + "/"
absolute = "/api/_definitions.json#"

def relative(node):
    # "/api/_definitions.json#/$defs/X" resolves against the schema's
    # https://kubernetes.io $id; "_definitions.json#/$defs/X" against the file.
    if isinstance(node, dict):
        node.pop("$id", None)
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(absolute):
            node["$ref"] = "_definitions.json#" + ref[len(absolute):]
        for v in node.values():
            relative(v)
    elif isinstance(node, list):
        for v in node:
            relative(v)

n = 0
with zipfile.ZipFile(wheel) as z:
    os.makedirs(out)
    for name in z.namelist():
        if not name.startswith(prefix) or not name.endswith(".json"):
            continue
        doc = json.loads(z.read(name))
        relative(doc)
        with open(os.path.join(out, name[len(prefix):]), "w") as f:
            json.dump(doc, f)
        n += 1
if n == 0 or not os.path.exists(os.path.join(out, "_definitions.json")):
    sys.exit("no schemas under " + prefix)
EOF
  mv "$out.tmp" "$out"
  touch "$out.done"
  printf '%s\n' "$CACHE_DIR/schemas"
}

# render DIR writes the output of `kubectl apply -k DIR` without a cluster.
render() {
  if command -v kubectl >/dev/null 2>&1; then
    kubectl kustomize "$1"
  elif command -v kustomize >/dev/null 2>&1; then
    kustomize build "$1"
  else
    "$(go_install sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION kustomize)" build "$1"
  fi
}

# check_env_names prints the QW_* names used under DIR that `run` does not
# know, and fails if there are any.
check_env_names() {
  local bin="$rendered/quarantine-watch" known used unknown
  (cd "$HERE/../.." && CGO_ENABLED=0 GOTOOLCHAIN=local "$GO" build -o "$bin" ./cmd/quarantine-watch) ||
    die "cannot build quarantine-watch to list its flags"
  known="$("$bin" run -h 2>&1 | grep -oE '\(env QW_[A-Z0-9_]+\)' | sed 's/^(env //; s/)$//' | sort -u || true)"
  [[ -n "$known" ]] || die "quarantine-watch run -h lists no QW_ variables"
  # Names ending in _ are prose ("the QW_SASL_* entries"), not variables.
  used="$(find "$DIR" -type f \( -name '*.yaml' -o -name '*.yml' -o -name '*.env' \) -exec grep -hoE 'QW_[A-Z0-9_]+' {} + | grep -v '_$' | sort -u || true)"
  unknown="$(comm -23 <(echo "$used") <(echo "$known"))"
  if [[ -n "$unknown" ]]; then
    log "FAIL: quarantine-watch run has no flag for: $(tr '\n' ' ' <<<"$unknown")"
    return 1
  fi
  log "env: the $(echo "$used" | wc -l) QW_ variables named under $(basename "$DIR") are all flags of run"
}

main() {
  local kubeconform schemas
  kubeconform="$(go_install github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION kubeconform)"

  local files=() kustomizations=() f out
  while IFS= read -r -d '' f; do
    if [[ "$(basename "$f")" == kustomization.yaml ]]; then
      kustomizations+=("$(dirname "$f")")
    else
      files+=("$f")
    fi
  done < <(find "$DIR" -type f \( -name '*.yaml' -o -name '*.yml' \) -print0 | sort -z)
  ((${#files[@]} + ${#kustomizations[@]} > 0)) || die "no YAML under $DIR"

  local failed=0 version k rel
  rendered="$(mktemp -d)" # global: the EXIT trap removes it
  trap 'rm -rf "$rendered"' EXIT
  for k in "${kustomizations[@]}"; do
    rel="$(basename "$DIR")${k#"$DIR"}"
    # kubeconform names each object by its file: say which kustomization.
    out="$rendered/kustomize-build-of-${rel//\//_}.yaml"
    if ! render "$k" >"$out" 2>"$rendered/err"; then
      log "FAIL $rel/kustomization.yaml: $(cat "$rendered/err")"
      rm -f "$out"
      failed=1
    fi
  done
  local outputs=()
  shopt -s nullglob
  outputs=("$rendered"/kustomize-build-of-*.yaml)
  shopt -u nullglob
  ((${#files[@]} + ${#outputs[@]} > 0)) || return 1

  for version in $KUBERNETES_VERSIONS; do
    schemas="$(prepare_schemas "$version")"
    log "Kubernetes $version: ${#files[@]} files, ${#outputs[@]} rendered kustomizations"
    "$kubeconform" -strict -summary -output text \
      -kubernetes-version "$version" \
      -schema-location "$schemas/{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
      "${files[@]}" "${outputs[@]}" || failed=1
  done
  check_env_names || failed=1
  if ((failed)); then
    log "FAIL: invalid manifests under $DIR"
    return 1
  fi
  log "ok: every manifest under $DIR is valid for Kubernetes $KUBERNETES_VERSIONS"
}

main
