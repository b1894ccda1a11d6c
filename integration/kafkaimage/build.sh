#!/bin/bash
# build.sh builds a local Apache Kafka broker image without pulling any image:
# a Debian bookworm root filesystem made by debootstrap (with a Java 17
# runtime), the broker's jars collected by Maven from pom.xml, and
# entrypoint.sh, which takes the official apache/kafka image's environment
# variables. The result is imported with `docker import`.
#
#   usage: build.sh [TAG]          (default: $KAFKA_IMAGE_TAG or quarantine-watch/kafka:4.1.1)
#
# It does nothing when the image already exists. The root filesystem and the
# jars are kept under $QW_CACHE_DIR (default ~/.cache/quarantine-watch), so a
# rebuild after `docker rmi` takes seconds. Remove that directory to start over.
#
# The Debian mirror is the one this machine's apt uses (read from
# /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list); set
# DEBIAN_MIRROR to override. Maven uses its own configuration.
#
# Needs root (debootstrap), docker, debootstrap, mvn.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TAG="${1:-${KAFKA_IMAGE_TAG:-quarantine-watch/kafka:4.1.1}}"
SUITE=bookworm
PACKAGES=openjdk-17-jre-headless
CACHE_DIR="${QW_CACHE_DIR:-${HOME:-/root}/.cache/quarantine-watch}/kafka-image"

log() { echo "kafka-image: $*" >&2; }
die() {
  echo "kafka-image: error: $*" >&2
  exit 1
}

need() {
  command -v "$1" >/dev/null 2>&1 || die "$1 not found: $2"
}

# debian_mirror prints the first Debian archive URI that apt is configured
# with (a security archive only if there is nothing else).
debian_mirror() {
  if [[ -n "${DEBIAN_MIRROR:-}" ]]; then
    printf '%s\n' "$DEBIAN_MIRROR"
    return
  fi
  local files=() f
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f "$f" ]] && files+=("$f")
  done
  local uris=()
  if ((${#files[@]} > 0)); then
    # deb822 stanzas: take the URIs of "Types: deb" stanzas.
    mapfile -t uris < <(awk '
      function flush() { if (isdeb && uris != "") print uris; isdeb = 0; uris = "" }
      /^[[:space:]]*$/ { flush(); next }
      /^[[:space:]]*#/ { next }
      tolower($1) == "types:" { for (i = 2; i <= NF; i++) if ($i == "deb") isdeb = 1 }
      tolower($1) == "uris:" { uris = $2 }
      END { flush() }
    ' "${files[@]}")
  fi
  local lists=()
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f "$f" ]] && lists+=("$f")
  done
  if ((${#lists[@]} > 0)); then
    # One-line style: deb [options] URI suite components...
    mapfile -t -O "${#uris[@]}" uris < <(awk '
      $1 == "deb" {
        i = 2
        if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
        if (i <= NF) print $i
      }
    ' "${lists[@]}")
  fi
  local u
  for u in "${uris[@]}"; do
    [[ "$u" == *security* ]] || {
      printf '%s\n' "${u%/}"
      return
    }
  done
  ((${#uris[@]} > 0)) || return 1
  printf '%s\n' "${uris[0]%/}"
}

build_rootfs() {
  local rootfs="$CACHE_DIR/rootfs-$SUITE"
  local stamp="$rootfs.done"
  local want="$SUITE minbase $PACKAGES"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -d "$rootfs" ]]; then
    log "reusing root filesystem $rootfs"
    printf '%s\n' "$rootfs"
    return
  fi
  need debootstrap "install it with: apt-get install -y debootstrap"
  ((EUID == 0)) || die "debootstrap needs root"
  local mirror
  mirror="$(debian_mirror)" || die "no Debian mirror found in the apt configuration; set DEBIAN_MIRROR"
  local keyring=()
  [[ -f /usr/share/keyrings/debian-archive-keyring.gpg ]] &&
    keyring=(--keyring=/usr/share/keyrings/debian-archive-keyring.gpg)
  rm -rf "$rootfs" "$stamp" "$rootfs.tmp"
  mkdir -p "$CACHE_DIR"
  log "debootstrap $SUITE (minbase + $PACKAGES) from the apt mirror; this takes a few minutes"
  if ! debootstrap --variant=minbase --include="$PACKAGES" "${keyring[@]}" \
    "$SUITE" "$rootfs.tmp" "$mirror" >"$CACHE_DIR/debootstrap.log" 2>&1; then
    tail -n 30 "$CACHE_DIR/debootstrap.log" >&2
    die "debootstrap failed (full log: $CACHE_DIR/debootstrap.log)"
  fi
  # What a broker never needs: downloaded packages, package lists, docs.
  rm -rf "$rootfs.tmp"/var/cache/apt/archives/*.deb "$rootfs.tmp"/var/lib/apt/lists/* \
    "$rootfs.tmp"/usr/share/doc/* "$rootfs.tmp"/usr/share/man/* "$rootfs.tmp"/usr/share/locale/*
  [[ -x "$rootfs.tmp/usr/lib/jvm/java-17-openjdk-amd64/bin/java" || -e "$rootfs.tmp/usr/bin/java" ]] ||
    die "no java in the root filesystem after debootstrap"
  mv "$rootfs.tmp" "$rootfs"
  printf '%s\n' "$want" >"$stamp"
  printf '%s\n' "$rootfs"
}

collect_jars() {
  local jars="$CACHE_DIR/jars"
  local sum
  sum="$(sha256sum "$HERE/pom.xml" | cut -d' ' -f1)"
  if [[ -f "$jars.done" && "$(cat "$jars.done")" == "$sum" && -d "$jars" ]]; then
    log "reusing jars in $jars"
    printf '%s\n' "$jars"
    return
  fi
  need mvn "install it with: apt-get install -y maven"
  rm -rf "$jars" "$jars.done" "$jars.tmp"
  mkdir -p "$CACHE_DIR"
  log "collecting the broker's jars with Maven"
  if ! mvn -B -q -f "$HERE/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$jars.tmp" >"$CACHE_DIR/mvn.log" 2>&1; then
    tail -n 30 "$CACHE_DIR/mvn.log" >&2
    die "mvn dependency:copy-dependencies failed (full log: $CACHE_DIR/mvn.log)"
  fi
  ls "$jars.tmp"/kafka_2.13-*.jar >/dev/null 2>&1 || die "Maven brought no kafka_2.13 jar"
  mv "$jars.tmp" "$jars"
  printf '%s\n' "$sum" >"$jars.done"
  printf '%s\n' "$jars"
}

main() {
  need docker "install it with: apt-get install -y docker.io"
  docker info >/dev/null 2>&1 || die "docker is not reachable; start it with: make docker-up"
  if docker image inspect "$TAG" >/dev/null 2>&1; then
    log "image $TAG already exists; nothing to do (docker rmi $TAG to rebuild)"
    return
  fi
  local start=$SECONDS rootfs jars
  rootfs="$(build_rootfs)"
  jars="$(collect_jars)"

  # /opt/kafka is rewritten on every build, so the cached root filesystem
  # never carries an old entrypoint or jar.
  rm -rf "$rootfs/opt/kafka"
  mkdir -p "$rootfs/opt/kafka/libs" "$rootfs/opt/kafka/config"
  cp "$jars"/*.jar "$rootfs/opt/kafka/libs/"
  install -m 0755 "$HERE/entrypoint.sh" "$rootfs/opt/kafka/entrypoint.sh"

  log "importing $TAG"
  tar --numeric-owner -C "$rootfs" -c . |
    docker import \
      --change 'ENTRYPOINT ["/opt/kafka/entrypoint.sh"]' \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV LANG=C.UTF-8' \
      --change 'ENV JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64' \
      --change 'WORKDIR /opt/kafka' \
      --change 'EXPOSE 9092' \
      - "$TAG" >/dev/null
  log "built $TAG in $((SECONDS - start)) s ($(docker image inspect --format '{{.Size}}' "$TAG" | awk '{printf "%d MB", $1 / 1000000}'))"
}

main "$@"
