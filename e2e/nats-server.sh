#!/usr/bin/env bash
# e2e/nats-server.sh: prints the path of a nats-server binary of the version
# greyhold's go.mod requires (github.com/nats-io/nats-server/v2, the one
# cluster/'s in-process tests embed), building it with go build from the Go
# module proxy the first time and keeping it in a cache directory for the
# next runs. Debian's nats-server package is 2.9, older than the 2.10 the
# stream's S2 compression needs, so it is never used.
#
# The fleet's process tests (cmd/greyhold), deploy/promcheck's fleet
# scenario and e2e/run.sh's step 12 run it; GREYHOLD_NATS_SERVER=PATH makes them
# use another binary instead.
#
# Environment:
#   GO=go            the go command
#   E2E_CACHE=DIR    where the binary is kept (default ~/.cache/greyhold-e2e,
#                    beside e2e/exim.sh's unpacked Exim)
# Build output goes to stderr; only the path goes to stdout.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
GO=${GO:-go}
CACHE=${E2E_CACHE:-${XDG_CACHE_HOME:-${HOME:-/var/tmp}/.cache}/greyhold-e2e}
MOD=github.com/nats-io/nats-server/v2

cd "$ROOT"
ver=$("$GO" list -m -f '{{.Version}}' "$MOD")
dir=$CACHE/nats-server-$ver
bin=$dir/nats-server

if [[ -x $bin ]] && [[ $("$bin" --version 2>/dev/null) == "nats-server: $ver" ]]; then
	echo "$bin"
	exit 0
fi
mkdir -p "$dir"
echo "nats-server.sh: building nats-server $ver into $dir" >&2
# Built beside its final name and renamed, so that two test packages
# building it at once each put a whole binary in place.
tmp=$(mktemp "$dir/nats-server.XXXXXX")
trap 'rm -f "$tmp"' EXIT
# Inside greyhold's module, go build takes the version go.mod requires,
# with go.sum's checksums.
CGO_ENABLED=0 "$GO" build -trimpath -o "$tmp" "$MOD" >&2
got=$("$tmp" --version)
[[ $got == "nats-server: $ver" ]] || { echo "nats-server.sh: built $got, want $ver" >&2; exit 1; }
mv -f "$tmp" "$bin"
trap - EXIT
echo "$bin"
