#!/usr/bin/env bash
# deploy/check.sh (make deploy-check, part of make test): holds the Grafana
# dashboard and the Prometheus alerting rules in deploy/ to reality:
#
#   1. promtool check rules: the rules file is valid;
#   2. promtool test rules: every alert fires, with its labels and
#      annotations, on the series of its unit tests, and stays quiet on the
#      healthy ones (deploy/prometheus/greyhold-alerts_test.yml);
#   3. go test in the deploy module: the committed dashboard is what
#      package dashboard builds and reads back through Grafana's schema,
#      every alert has a test and a description, and every series selector
#      of the dashboard and the rules matches a series of a live greyhold's
#      /metrics (deploy/promcheck, which builds and starts the real binary
#      on loopback).
#
# Installs promtool (Debian's prometheus package) with apt-get when it is
# missing; the Prometheus server that comes with it is not started.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NAME=deploy-check
# shellcheck source=deploy/lib.sh
source "$ROOT/deploy/lib.sh"

need promtool:prometheus
cd "$ROOT/deploy/prometheus"
promtool check rules greyhold-alerts.yml
promtool test rules greyhold-alerts_test.yml
cd "$ROOT/deploy"
go test -count=1 ./...
