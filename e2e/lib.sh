# e2e/lib.sh: what the end-to-end tests (run.sh behind Postfix, exim.sh
# behind Exim) share, sourced by both (bench/peers.sh and
# cmd/greyhold/systemd/check.sh take its processes and ports): step
# reporting and the checks of a reply, waits, processes, free loopback
# ports, the cleanup trap, and starting and stopping greyhold. A script sets
# E2E_NAME (the prefix of its messages), TMP, DELAY, GH_HOST and GH_FLAGS
# before it starts greyhold, DEFER_RE and DEFER_WANT for expect_defer, and
# defines dump_logs and stop_mta for e2e_cleanup.
# shellcheck shell=bash
# shellcheck disable=SC2034 # CLOCK_SLACK_MS, GH_EXIT, LEFT: read by the scripts that source this

E2E_NAME=${E2E_NAME:-e2e}
PASSED=0
FAILED=0
LAST_TRANSCRIPT=""
GH_PID=""
GH_FLAGS=()
GH_RUN=()
GH_DATA=""

# CLOCK_SLACK_MS: greyhold reads the time from a clock refreshed five times
# a second (engine.CoarseClock), so it may see a second boundary up to
# 200 ms late, later still on a busy machine. Every wait for "at least N
# seconds after" adds this.
CLOCK_SLACK_MS=600

say() { printf '%s: %s\n' "$E2E_NAME" "$*"; }
now_ms() { local t; t=$(date +%s%N); echo $((t / 1000000)); }
secs() { printf '%d.%03ds' $(($1 / 1000)) $(($1 % 1000)); }

# sleep_until_ms T sleeps until the clock reads T (ms since the epoch); the
# waits here are the greylisting delay itself, never more than a few seconds.
sleep_until_ms() {
	local left=$(($1 - $(now_ms)))
	if ((left > 0)); then
		sleep "$((left / 1000)).$(printf '%03d' $((left % 1000)))"
	fi
}

pass() {
	PASSED=$((PASSED + 1))
	printf 'PASS  %-58s %s\n' "$1" "${2:-}"
}

# fail prints the step, why, the last SMTP transcript, and exits; the
# script's EXIT trap prints the MTA's and greyhold's logs and cleans up.
fail() {
	FAILED=$((FAILED + 1))
	printf 'FAIL  %-58s %s\n' "$1" "${2:-}"
	if [[ -n $LAST_TRANSCRIPT && -f $LAST_TRANSCRIPT ]]; then
		echo "---- SMTP transcript ($LAST_TRANSCRIPT) ----"
		cat "$LAST_TRANSCRIPT"
	fi
	exit 1
}

# expect_defer STEP: REPLY, the MTA's answer to RCPT TO, must be its
# rendering of greyhold's default defer (DEFER_RE, whose groups 2 and 3 are
# the minutes and seconds left; DEFER_WANT describes it); sets LEFT
# (seconds).
LEFT=0
expect_defer() {
	if [[ $REPLY =~ $DEFER_RE ]]; then
		LEFT=$((10#${BASH_REMATCH[2]:-0} * 60 + 10#${BASH_REMATCH[3]}))
		return 0
	fi
	fail "$1" "want $DEFER_WANT; got: ${REPLY:-<no RCPT reply>}"
}

# expect_code STEP CODE: the answer to RCPT TO has that code.
expect_code() {
	[[ $CODE == "$2" ]] || fail "$1" "want $2; got: ${REPLY:-<no RCPT reply>}"
}

on_error() {
	echo "$E2E_NAME: command failed (status $1) at line $2: $3" >&2
}

# ---------------------------------------------------------------------------
# Processes: alive, children, stopping by PID.

proc_alive() {
	local st
	st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
	[[ -n $st && $st != Z ]]
}

children_of() {
	local f pid ppid
	for f in /proc/[0-9]*/stat; do
		read -r pid _ _ ppid _ <"$f" 2>/dev/null || continue
		[[ $ppid == "$1" ]] && echo "$pid"
	done
	return 0
}

# wait_gone PID MS: wait up to MS milliseconds for PID to exit.
wait_gone() {
	local deadline=$(($(now_ms) + $2))
	while proc_alive "$1"; do
		(($(now_ms) < deadline)) || return 1
		sleep 0.05
	done
}

# e2e_cleanup is both scripts' EXIT trap (set by e2e_traps): on failure the
# script's dump_logs and the count, then greyhold, the script's stop_mta,
# and the temporary directory (kept with E2E_KEEP=1).
e2e_cleanup() {
	local rc=$?
	trap - ERR EXIT INT TERM
	set +e
	if ((rc != 0)); then
		dump_logs
		((INTERRUPTED)) && say "interrupted"
		say "$PASSED passed, $((FAILED > 0 ? FAILED : 1)) failed"
	fi
	kill_greyhold
	stop_mta
	if [[ -n $TMP && -d $TMP ]]; then
		if [[ ${KEEP:-0} == 1 ]]; then
			say "kept $TMP"
		else
			rm -rf "$TMP"
		fi
	fi
	exit "$rc"
}

INTERRUPTED=0
e2e_traps() {
	trap e2e_cleanup EXIT
	trap 'INTERRUPTED=1; exit 130' INT
	trap 'INTERRUPTED=1; exit 143' TERM
}

kill_greyhold() {
	[[ -n $GH_PID ]] || return 0
	if proc_alive "$GH_PID"; then
		kill -TERM "$GH_PID" 2>/dev/null || true
		wait_gone "$GH_PID" 10000 || kill -KILL "$GH_PID" 2>/dev/null || true
	fi
	wait "$GH_PID" 2>/dev/null || true
	GH_PID=""
}

# ---------------------------------------------------------------------------
# Ports.

USED_PORTS=" "

# port_taken PORT: some TCP socket, in any state, on any address, has PORT as
# its local port (so a listener could fail to bind it).
port_taken() {
	local hex
	hex=$(printf '%04X' "$1")
	awk -v h="$hex" 'NR > 1 { split($2, a, ":"); if (a[length(a)] == h) { found = 1; exit } }
		END { exit !found }' /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# pick_port VAR [PREFERRED]: sets VAR to a loopback port that no socket uses,
# below the kernel's ephemeral range (so no outgoing connection takes it
# meanwhile), and not handed out before in this run.
pick_port() {
	local -n out=$1
	local p i lo=20000 hi
	hi=$(awk '{print $1 - 1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32767)
	((hi > lo + 1000)) || { lo=10000; hi=19999; }
	for i in $(seq 1 200); do
		if ((i == 1)) && [[ -n ${2:-} ]]; then p=$2; else p=$((lo + RANDOM % (hi - lo + 1))); fi
		[[ $USED_PORTS == *" $p "* ]] && continue
		port_taken "$p" && continue
		USED_PORTS+="$p "
		# shellcheck disable=SC2034 # out is a nameref to the caller's variable
		out=$p
		return 0
	done
	return 1
}

# ---------------------------------------------------------------------------
# greyhold.

# shellcheck disable=SC2016 # the inner script takes its arguments as $1, $2
http_get() {
	timeout 5 bash -c '
		exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
		printf "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" "$2" >&3
		cat <&3' _ "$HTTP_PORT" "$1" 2>/dev/null
}

# start_greyhold: starts $TMP/greyhold with its data in $GH_DATA, the HTTP
# API on $HTTP_PORT, --delay ${DELAY}s, --hostname $GH_HOST, every decision
# logged to $TMP/greyhold.log, and the script's GH_FLAGS (its listeners),
# through GH_RUN (a command that execs it, e.g. setpriv, or nothing); waits
# up to 30 s for /readyz. Sets GH_PID.
start_greyhold() {
	echo "==== $E2E_NAME: greyhold start $(date -u +%FT%TZ) ====" >>"$TMP/greyhold.log"
	"${GH_RUN[@]}" "$TMP/greyhold" serve \
		--data-dir "${GH_DATA:-$TMP/greyhold-data}" \
		--http-listen "127.0.0.1:$HTTP_PORT" \
		"${GH_FLAGS[@]}" \
		--delay "${DELAY}s" \
		--hostname "$GH_HOST" \
		--log-decisions all \
		</dev/null >>"$TMP/greyhold.log" 2>&1 &
	GH_PID=$!
	local deadline=$(($(now_ms) + 30000)) status
	while :; do
		proc_alive "$GH_PID" || { wait "$GH_PID" || true; GH_PID=""; return 1; }
		status=$(http_get /readyz | head -n 1 | tr -d '\r' || true)
		[[ $status == "HTTP/1."?" 200"* ]] && return 0
		(($(now_ms) < deadline)) || return 1
		sleep 0.1
	done
}

# stop_greyhold: SIGTERM, then wait for a clean exit; sets GH_EXIT.
GH_EXIT=""
stop_greyhold() {
	GH_EXIT=""
	kill -TERM "$GH_PID"
	if ! wait_gone "$GH_PID" 20000; then
		GH_EXIT="still running 20s after SIGTERM"
		kill -KILL "$GH_PID" 2>/dev/null || true
		wait "$GH_PID" 2>/dev/null || true
		GH_PID=""
		return 1
	fi
	local rc=0
	wait "$GH_PID" || rc=$?
	GH_PID=""
	GH_EXIT="exit status $rc"
	((rc == 0))
}

# headers FILE: the header section, folded lines joined.
headers() {
	awk '/^\r?$/ {exit}
		/^[ \t]/ {sub(/^[ \t]+/, " "); buf = buf $0; next}
		{if (buf != "") print buf; buf = $0}
		END {if (buf != "") print buf}' "$1" | tr -d '\r'
}
