#!/usr/bin/env bash
# Checks the alerting rules: promtool check rules (syntax, PromQL, templates)
# and promtool test rules (alerts_test.yaml: each alert fires on the series
# it is for, and stays quiet otherwise). promtool comes with Debian's
# prometheus package; .ci/run installs it. That every metric the rules and
# the dashboard use is exported is TestOperatorsKitMetricsExist's job
# (internal/telemetry), in make test.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
if ! command -v promtool >/dev/null 2>&1; then
  echo "deploy/prometheus/check.sh: promtool not found: apt-get install prometheus (Debian), or put a promtool on PATH" >&2
  exit 1
fi
promtool check rules alerts.yaml
promtool test rules alerts_test.yaml
python3 -m json.tool ../grafana/quarantine-watch.json >/dev/null
echo "deploy/prometheus: alerts.yaml checked and its tests pass; deploy/grafana/quarantine-watch.json is JSON"
