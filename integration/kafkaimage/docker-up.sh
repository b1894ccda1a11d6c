#!/bin/bash
# docker-up.sh starts a Docker daemon for the integration tests unless one
# already answers, and waits until it does. The daemon gets no bridge network
# and no iptables rules: every container runs with host networking, so all
# test traffic stays on 127.0.0.1. Idempotent. Needs root and docker.io.
#
# Its log goes to $DOCKERD_LOG (default /tmp/dockerd.log); its pid is in
# /var/run/docker.pid, written by dockerd itself.
set -euo pipefail

LOG="${DOCKERD_LOG:-/tmp/dockerd.log}"
PIDFILE=/var/run/docker.pid

if docker info >/dev/null 2>&1; then
  echo "docker-up: Docker is running"
  exit 0
fi
command -v dockerd >/dev/null 2>&1 || {
  echo "docker-up: dockerd not found; install it with: apt-get install -y docker.io" >&2
  exit 1
}
((EUID == 0)) || {
  echo "docker-up: starting dockerd needs root" >&2
  exit 1
}
# A pid file left by a daemon that died makes dockerd refuse to start.
if [[ -f "$PIDFILE" ]] && ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
  rm -f "$PIDFILE"
fi
if [[ -f "$PIDFILE" ]]; then
  echo "docker-up: dockerd (pid $(cat "$PIDFILE")) runs but does not answer yet; waiting"
else
  echo "docker-up: starting dockerd (no bridge, no iptables; log: $LOG)"
  setsid nohup dockerd --bridge=none --iptables=false --ip6tables=false >"$LOG" 2>&1 </dev/null &
fi
for _ in $(seq 120); do
  if docker info >/dev/null 2>&1; then
    echo "docker-up: Docker is ready (dockerd pid $(cat "$PIDFILE" 2>/dev/null || echo '?'))"
    exit 0
  fi
  sleep 0.5
done
echo "docker-up: dockerd did not answer within 60 s; last lines of $LOG:" >&2
tail -n 20 "$LOG" >&2 || true
exit 1
