#!/usr/bin/env bash
# cmd/greyhold/systemd/check.sh (make unit-check): holds greyhold.service
# to what systemd and greyhold make of it, without starting systemd:
#
#   1. systemd-analyze verify says nothing about it (no unknown setting, no
#      warning);
#   2. systemd-analyze security --offline scores its exposure at most
#      UNIT_MAX_EXPOSURE tenths (default 20: 2.0, "OK"; it is 1.2);
#   3. every system call greyhold makes is one its SystemCallFilter allows:
#      greyhold is run under strace through all it does in service (policy
#      requests over TCP and the unix socket, the line protocol under load,
#      HTTP checks, a batch, a whitelist rule added and removed, a
#      snapshot, /metrics, SIGHUP, SIGTERM with its final snapshot), and the
#      calls it made are compared with the filter's sets as this systemd
#      expands them. A filtered call would fail with EPERM in service.
#
# Installs systemd-analyze (Debian's systemd package), strace, curl,
# python3 (for a policy request that reads only its reply) and pgrep
# (procps) with apt-get when they are missing. Everything runs on loopback, in a
# temporary directory removed at the end.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
UNIT=$ROOT/cmd/greyhold/systemd/greyhold.service
MAX=${UNIT_MAX_EXPOSURE:-20} # tenths, as --threshold takes it
TMP=""
ST_PID="" # strace's
GH_PID="" # greyhold's, strace's child: signals go to it, not to strace

# Processes by PID (wait_gone PID MS) and free loopback ports (pick_port)
# come from the end-to-end tests' helpers; say and die are this script's.
# shellcheck source=e2e/lib.sh
source "$ROOT/e2e/lib.sh"

say() { printf 'unit-check: %s\n' "$*"; }
die() {
	say "$*"
	exit 1
}
cleanup() {
	local rc=$?
	trap - EXIT
	local p
	for p in $GH_PID $ST_PID; do
		kill -KILL "$p" 2>/dev/null || true
	done
	[[ -n $ST_PID ]] && wait "$ST_PID" 2>/dev/null
	[[ -n $TMP ]] && rm -rf "$TMP"
	exit "$rc"
}
trap cleanup EXIT

install_tools() {
	local need=()
	command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
	command -v strace >/dev/null 2>&1 || need+=(strace)
	command -v curl >/dev/null 2>&1 || need+=(curl)
	command -v python3 >/dev/null 2>&1 || need+=(python3)
	command -v pgrep >/dev/null 2>&1 || need+=(procps)
	((${#need[@]} == 0)) && return 0
	((EUID == 0)) || die "missing ${need[*]}: install them, or run as root to let this script install them"
	say "installing ${need[*]} from Debian's packages"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q </dev/null >"$TMP/apt.log" 2>&1 || { cat "$TMP/apt.log"; die "apt-get update failed"; }
	apt-get install -y -q --no-install-recommends "${need[@]}" </dev/null >>"$TMP/apt.log" 2>&1 ||
		{ cat "$TMP/apt.log"; die "apt-get install failed"; }
}

# expand SET...: the system calls of the filter sets (and plain names), one
# a line, as this systemd defines them.
expand() {
	local item
	for item in "$@"; do
		if [[ $item == @* ]]; then
			# Members are indented; "#" lines describe the set.
			systemd-analyze syscall-filter "$item" | awk 'NR > 1 && $1 !~ /^#/ && NF {print $1}' |
				while read -r m; do expand "$m"; done
		else
			echo "$item"
		fi
	done
}

# allowed: the calls the unit's SystemCallFilter lines let through (an
# allow list, then "~" lines taking calls out of it).
allowed() {
	local allow=() deny=() line v
	while IFS= read -r line; do
		v=${line#SystemCallFilter=}
		if [[ $v == "~"* ]]; then
			read -r -a parts <<<"${v#\~}"
			deny+=("${parts[@]}")
		else
			read -r -a parts <<<"$v"
			allow+=("${parts[@]}")
		fi
	done < <(grep '^SystemCallFilter=' "$UNIT")
	((${#allow[@]} > 0)) || die "$UNIT has no SystemCallFilter allow list"
	sort -u <(expand "${allow[@]}") >"$TMP/allow"
	if ((${#deny[@]} > 0)); then
		sort -u <(expand "${deny[@]}") >"$TMP/deny"
	else
		: >"$TMP/deny"
	fi
	comm -23 "$TMP/allow" "$TMP/deny"
}

# ask ADDR REQUEST: sends a policy request to ADDR (host:port, or a unix
# socket's path) and prints the reply's first line, without waiting for the
# connection to close (greyhold keeps it open for the next request).
ask() {
	timeout 10 python3 -c '
import socket, sys
addr, req = sys.argv[1], sys.argv[2].encode()
if addr.startswith("/"):
    s = socket.socket(socket.AF_UNIX); s.connect(addr)
else:
    host, port = addr.rsplit(":", 1); s = socket.create_connection((host, int(port)))
s.sendall(req)
buf = b""
while b"\n\n" not in buf:
    chunk = s.recv(4096)
    if not chunk:
        break
    buf += chunk
print(buf.decode().split("\n")[0])' "$1" "$2"
}

# exercise: greyhold under strace, through what it does in service.
exercise() {
	local policy line http sock out
	pick_port policy || die "no free loopback port found"
	pick_port line || die "no free loopback port found"
	pick_port http || die "no free loopback port found"
	sock=$TMP/policy.sock
	mkdir -p "$TMP/data"
	strace -f -qq -c -o "$TMP/strace.txt" "$TMP/greyhold" serve --data-dir "$TMP/data" \
		--policy-listen "127.0.0.1:$policy" --line-listen "127.0.0.1:$line" \
		--http-listen "127.0.0.1:$http" --policy-socket "$sock" \
		--whitelist-clients "$ROOT/whitelist/default_clients.txt" \
		--fsync 1s --snapshot-interval 1s --log-decisions all \
		>"$TMP/greyhold.log" 2>&1 &
	ST_PID=$!
	local _
	for _ in $(seq 1 100); do
		GH_PID=$(pgrep -P "$ST_PID" -x greyhold || true)
		[[ -n $GH_PID ]] && curl -sf "http://127.0.0.1:$http/readyz" >/dev/null 2>&1 && break
		sleep 0.1
	done
	[[ -n $GH_PID ]] || die "greyhold did not start under strace"
	curl -sf "http://127.0.0.1:$http/readyz" >/dev/null || { cat "$TMP/greyhold.log"; die "greyhold did not get ready"; }
	local req=$'request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=192.0.2.10\nclient_name=mail.example.org\nsender=a@example.org\nrecipient=b@example.net\n\n'
	out=$(ask "127.0.0.1:$policy" "$req")
	[[ $out == action=DEFER_IF_PERMIT* ]] || die "policy over TCP answered: $out"
	out=$(ask "$sock" "$req")
	[[ $out == action=DEFER_IF_PERMIT* ]] || die "policy over the unix socket answered: $out"
	curl -sf -XPOST "http://127.0.0.1:$http/v1/check" \
		-d '{"client_address":"198.51.100.7","sender":"c@example.org","recipient":"d@example.net"}' >/dev/null
	curl -sf -XPOST "http://127.0.0.1:$http/v1/check/batch" \
		-d '[{"client_address":"198.51.100.8","sender":"e@example.org","recipient":"f@example.net"}]' >/dev/null
	curl -sf -XPOST "http://127.0.0.1:$http/v1/whitelist" -d '{"kind":"client","value":"203.0.113.0/24"}' >/dev/null
	curl -sf -XDELETE "http://127.0.0.1:$http/v1/whitelist" -d '{"kind":"client","value":"203.0.113.0/24"}' >/dev/null
	curl -sf -XPOST "http://127.0.0.1:$http/v1/whitelist/reload" >/dev/null
	curl -sf -XPOST "http://127.0.0.1:$http/v1/snapshot" >/dev/null
	curl -sf "http://127.0.0.1:$http/metrics" >/dev/null
	curl -sf "http://127.0.0.1:$http/v1/stats" >/dev/null
	# Load, so that the collector, preemption and the log's group commit
	# and fsync all run.
	(cd "$ROOT" && "$TMP/load" --proto line --target "127.0.0.1:$line" --conns 8 --pipeline 32 \
		--duration 3s --new-fraction 0.5 >"$TMP/load.log" 2>&1) || { cat "$TMP/load.log"; die "load run failed"; }
	kill -HUP "$GH_PID"
	# A timed snapshot too (--snapshot-interval 1s): one more than the
	# POST's, within 10 s (the log is written every 100 ms).
	local deadline=$(($(now_ms) + 10000))
	until (($(grep -c 'snapshot written' "$TMP/greyhold.log") >= 2)); do
		(($(now_ms) < deadline)) || die "no timed snapshot within 10 s"
		sleep 0.1
	done
	kill -TERM "$GH_PID"
	local rc=0
	# strace exits with its tracee's status once the tracee is gone.
	wait_gone "$ST_PID" 60000 || die "greyhold still running 60 s after SIGTERM"
	wait "$ST_PID" || rc=$?
	ST_PID="" GH_PID=""
	((rc == 0)) || { tail -n 20 "$TMP/greyhold.log"; die "greyhold exited $rc under strace"; }
	grep -q 'stopped cleanly' "$TMP/greyhold.log" || { tail -n 20 "$TMP/greyhold.log"; die "no clean stop in greyhold's log"; }
}

main() {
	TMP=$(mktemp -d)
	install_tools
	(cd "$ROOT" && go build -o "$TMP/greyhold" ./cmd/greyhold && go build -o "$TMP/load" ./bench/load)

	# 1. verify, with ExecStart pointing at the binary just built (verify
	# checks that it exists).
	local unit=$TMP/greyhold.service out
	sed "s|^ExecStart=/usr/local/bin/greyhold |ExecStart=$TMP/greyhold |" "$UNIT" >"$unit"
	grep -q "^ExecStart=$TMP/greyhold serve" "$unit" || die "no ExecStart=/usr/local/bin/greyhold serve in $UNIT"
	out=$(systemd-analyze verify "$unit" 2>&1) || die "systemd-analyze verify failed: $out"
	[[ -z $out ]] || die "systemd-analyze verify: $out"
	say "systemd-analyze verify: no warnings"

	# 2. exposure.
	out=$(systemd-analyze security --offline=yes --threshold="$MAX" "$unit" 2>&1) ||
		die "exposure over $((MAX / 10)).$((MAX % 10)): $(grep -o 'Overall exposure level.*' <<<"$out" || echo "$out")"
	say "$(grep -o 'Overall exposure level.*' <<<"$out")"

	# 3. the calls greyhold makes against the filter.
	allowed >"$TMP/allowed"
	exercise
	awk 'NF >= 5 && $NF ~ /^[a-z_0-9]+$/ && $NF != "total" && $NF != "syscall" {print $NF}' "$TMP/strace.txt" | sort -u >"$TMP/used"
	[[ -s $TMP/used ]] || die "strace recorded no system calls"
	local blocked
	blocked=$(comm -23 "$TMP/used" "$TMP/allowed")
	if [[ -n $blocked ]]; then
		say "greyhold makes system calls that greyhold.service's SystemCallFilter refuses:"
		while read -r c; do echo "  $c"; done <<<"$blocked"
		die "widen the filter or drop the call"
	fi
	say "the $(wc -l <"$TMP/used") system calls greyhold made are all within the filter ($(wc -l <"$TMP/allowed") allowed)"
	say "1 passed, 0 failed"
}

main "$@"
