#!/usr/bin/env bash
# bench/peers.sh (make bench-peers): greyhold side by side with postgrey,
# gross and the null server, on the same workloads, in one table.
#
# Installs postgrey and gross from Debian's packages when they are missing
# (apt-get, non-interactive; a temporary /usr/sbin/policy-rc.d keeps their
# system services from starting, and the services of every package the
# install brought in are disabled afterwards), builds greyhold, bench/load
# and bench/peers once into a temporary directory, then for each server in
# turn: starts it on a free loopback port with its own temporary state,
# warms a pool of triplets up so that they are known, runs every workload
# against it, reads its VmRSS after each run, and stops it. The workloads are
# every combination of connections (1, 8, 64), pipelined requests per
# connection (1, 32) and fraction of never-seen triplets (0, 0.1, 1), each
# for BENCH_PEERS_DURATION, with realistic Postfix 3.7 requests from
# bench/load. The conns=1 pipeline=1 runs, a single round trip at a time,
# pin the server and bench/load to one CPU (see PIN_SINGLE below).
#
# All greylisters get the same delay, BENCH_PEERS_DELAY seconds (5 by
# default: postgrey and gross have no test clock, so their warm-up really
# waits it out). greyhold runs with --test-clock --log-decisions=off and is
# warmed up with dated requests (bench/load --warmup); postgrey and gross are
# warmed up with bench/load --warmup-delay one request at a time
# (--warmup-pipeline 1), since postgrey loses pipelined requests. A server that
# fails a pipelined run gets "n/a" there, with the reason, and its remaining
# pipelined runs are not attempted.
#
# The table goes to stdout and, as Markdown with the versions, the machine
# and each server's command line, to BENCH_PEERS_OUT (default: a new file
# under /tmp whose path is printed). Everything started here is stopped by
# PID on success, failure and interruption, and the temporary directory is
# removed.
#
# What the peers do differently (measured with this script, postgrey
# 1.37-2 and gross 1.0.2-4.1~deb12u1 on Debian 12):
#   - postgrey loses pipelined requests: its mux_input keeps the attributes
#     of a request begun at the end of one read in a hash it has already
#     replaced, so that request arrives without request=smtpd_access_policy,
#     is logged as "unrecognized request type: ''" and never answered.
#     Postfix never pipelines, so this costs nothing in production, but the
#     pipeline=32 rows are n/a for postgrey.
#   - postgrey writes every decision to Berkeley DB with a synchronous
#     commit (one fdatasync per request); greyhold runs with its default
#     --fsync=1s (written before answering, fsynced once a second).
#   - gross keeps no per-triplet record, only Bloom filters (8 x 2^24 bits
#     by default, hence its flat RSS). It cannot parse IPv6 client
#     addresses ("invalid ipaddress") and answers dunno for them, so about
#     a tenth of bench/load's clients, the IPv6 ones, are never deferred.
#   - gross reads its input one byte per read(2) and writes each reply
#     with its own write(2) without TCP_NODELAY: a pipelined window waits
#     about 40 ms for the client's delayed ACK.
#   - gross logs every decision whatever log_level says (with -d, to its
#     standard error: $TMP/gross.log); its listen backlog is 5; its status
#     listener is fixed at localhost:5522 in 1.0.2 (status_host and
#     status_port are rejected; when the port is taken it logs "Bind failed
#     in statmgr" and carries on).
#   - gross once (in about 20 warm-ups) left a request unanswered for 30 s;
#     a failed warm-up is therefore retried once, on a fresh server.
#
# Environment:
#   BENCH_PEERS_OUT=FILE         where the Markdown goes (e.g. bench/peers-latest.md)
#   BENCH_PEERS_DELAY=5          greylisting delay in seconds, the same for all
#   BENCH_PEERS_DURATION=4       seconds each measured run lasts
#   BENCH_PEERS_POOL=10000       known triplets each workload draws from
#   BENCH_PEERS_SERVERS="null greyhold postgrey gross"   which, in this order
#   BENCH_PEERS_CONNS="1 8 64"   BENCH_PEERS_PIPELINES="1 32"   BENCH_PEERS_NEW="0 0.1 1"
#   BENCH_PEERS_BUDGET=570       seconds the whole run may take; runs that
#                                would end later are skipped and marked so
#   BENCH_PEERS_PIN_SINGLE=0     do not pin the conns=1 pipeline=1 runs to one CPU
#   BENCH_PEERS_KEEP=1           keep the temporary directory (logs, raw JSON)
#   BENCH_PEERS_NO_INSTALL=1     never run apt-get; a missing peer is skipped
#   GO=go                        the Go toolchain
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
GO=${GO:-go}
DELAY=${BENCH_PEERS_DELAY:-5}
DURATION=${BENCH_PEERS_DURATION:-4}
POOL=${BENCH_PEERS_POOL:-10000}
SERVERS=${BENCH_PEERS_SERVERS:-"null greyhold postgrey gross"}
CONNS_LIST=${BENCH_PEERS_CONNS:-"1 8 64"}
PIPELINE_LIST=${BENCH_PEERS_PIPELINES:-"1 32"}
NEW_LIST=${BENCH_PEERS_NEW:-"0 0.1 1"}
BUDGET=${BENCH_PEERS_BUDGET:-570}
KEEP=${BENCH_PEERS_KEEP:-0}
NO_INSTALL=${BENCH_PEERS_NO_INSTALL:-0}
OUT=${BENCH_PEERS_OUT:-}

# The seed of bench/load's pool: warm-up and measurements must agree on it.
SEED=1
# How long a pipelined window may wait for its replies before the run
# counts as failed (bench/load --reply-timeout); the slowest server here
# answers 64 x 32 requests in about 1.5 s.
REPLY_TIMEOUT=5s
# With one connection and one request in flight, client and server wake
# each other for every request, and on this 2-vCPU VM a wake-up on the
# other CPU costs about 0.13 ms more than one on the same CPU: unpinned,
# the null server's req/s swung between 5,600 and 27,000 from one run to
# the next depending on where the scheduler put the two processes. So the
# conns=1 pipeline=1 runs pin the server (all its threads) and bench/load
# to CPU PIN_CPU, and the server's affinity is restored after the run.
# BENCH_PEERS_PIN_SINGLE=0 turns this off.
PIN_SINGLE=${BENCH_PEERS_PIN_SINGLE:-1}
PIN_CPU=0
command -v taskset >/dev/null 2>&1 || PIN_SINGLE=0
(($(nproc) > 1)) || PIN_SINGLE=0
# Warm-ups wait this much longer than the delay: postgrey counts whole
# seconds and gross's delay queue is checked about once a second.
WARMUP_MARGIN=2

POSTGREY=/usr/sbin/postgrey
GROSSD=/usr/sbin/grossd

TMP=""
BIN=""
START_S=$SECONDS
POLICY_RC_CREATED=0
INTERRUPTED=0
# name -> PID of every process started here that may still run.
declare -A PIDS=()
LOAD_PID=""

# Processes by PID (proc_alive, wait_gone PID MS) and free loopback ports
# (pick_port) come from the end-to-end tests' helpers; say and die below
# are this script's own.
# shellcheck source=e2e/lib.sh
source "$ROOT/e2e/lib.sh"
say() { printf 'bench-peers: %s\n' "$*" >&2; }
die() {
	say "$*"
	exit 1
}
elapsed() { echo $((SECONDS - START_S)); }

on_error() {
	echo "bench-peers: command failed (status $1) at line $2: $3" >&2
}
trap 'on_error $? $LINENO "$BASH_COMMAND"' ERR

# ---------------------------------------------------------------------------
# Processes, by PID only.

# stop_pid NAME: SIGTERM, up to 10 s, then SIGKILL; reaps it.
stop_pid() {
	local name=$1 pid=${PIDS[$1]:-}
	[[ -n $pid ]] || return 0
	if proc_alive "$pid"; then
		kill -TERM "$pid" 2>/dev/null || true
		if ! wait_gone "$pid" 10000; then
			say "$name (PID $pid) still running 10 s after SIGTERM: SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
		fi
	fi
	wait "$pid" 2>/dev/null || true
	unset "PIDS[$name]"
}

rss_kb() {
	awk '$1 == "VmRSS:" {print $2}' "/proc/$1/status" 2>/dev/null || true
}

CLK_TCK=$(getconf CLK_TCK)

# cpu_ticks PID: user and system time of all the process's threads so far.
cpu_ticks() {
	# The command name, field 2, may hold spaces: count from its ")".
	sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $12 + $13}' || true
}

# cpu_sample: total, idle (with iowait) and steal jiffies of all CPUs.
cpu_sample() {
	awk '$1 == "cpu" {t = 0; for (i = 2; i <= 9; i++) t += $i; print t, $5 + $6, $9; exit}' /proc/stat
}

cleanup() {
	local rc=$?
	trap - ERR EXIT INT TERM
	set +e
	if [[ -n $LOAD_PID ]] && proc_alive "$LOAD_PID"; then
		kill -TERM "$LOAD_PID" 2>/dev/null
		wait_gone "$LOAD_PID" 5000 || kill -KILL "$LOAD_PID" 2>/dev/null
		wait "$LOAD_PID" 2>/dev/null
	fi
	local name
	for name in "${!PIDS[@]}"; do
		stop_pid "$name"
	done
	if ((POLICY_RC_CREATED)); then
		rm -f /usr/sbin/policy-rc.d
	fi
	if [[ -n $TMP && -d $TMP ]]; then
		if [[ $KEEP == 1 ]]; then
			say "kept $TMP"
		else
			rm -rf "$TMP"
		fi
	fi
	((INTERRUPTED)) && say "interrupted after $(elapsed) s"
	((rc != 0 && !INTERRUPTED)) && say "failed after $(elapsed) s"
	exit "$rc"
}
trap cleanup EXIT
trap 'INTERRUPTED=1; exit 130' INT
trap 'INTERRUPTED=1; exit 143' TERM

# bg_wait OUT ERR CMD...: runs CMD in the background with its standard
# output in OUT and its standard error in ERR (the same file if equal) and
# waits for it, so that a signal reaches the traps at once instead of after
# CMD; returns its status. (The files are not redirections of bg_wait itself:
# a trap that fires inside it would write there too.)
bg_wait() {
	local out=$1 err=$2
	shift 2
	if [[ $err == "$out" ]]; then
		"$@" </dev/null >"$out" 2>&1 &
	else
		"$@" </dev/null >"$out" 2>"$err" &
	fi
	LOAD_PID=$!
	local rc=0
	wait "$LOAD_PID" || rc=$?
	LOAD_PID=""
	return "$rc"
}

# ---------------------------------------------------------------------------
# Ports.

# port_taken and pick_port are e2e/lib.sh's.

# listening PORT: a socket listens on 127.0.0.1:PORT.
listening() {
	local hex
	hex=$(printf '0100007F:%04X' "$1")
	awk -v a="$hex" 'NR > 1 && $2 == a && $4 == "0A" { found = 1; exit } END { exit !found }' /proc/net/tcp
}

# wait_listen NAME PORT LOG: until NAME's process listens on PORT (30 s).
wait_listen() {
	local name=$1 port=$2 log=$3 i
	for ((i = 0; i < 600; i++)); do
		if ! proc_alive "${PIDS[$name]}"; then
			say "$name exited before listening on port $port; its log ($log):"
			tail -n 30 "$log" >&2 || true
			wait "${PIDS[$name]}" 2>/dev/null || true
			unset "PIDS[$name]"
			return 1
		fi
		listening "$port" && return 0
		sleep 0.05
	done
	say "$name does not listen on port $port after 30 s; its log ($log):"
	tail -n 30 "$log" >&2 || true
	return 1
}

# ---------------------------------------------------------------------------
# Installing postgrey and gross.

installed_packages() {
	dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' 2>/dev/null | awk '$1 == "ii" {print $2}' | sort
}

# disable_services PKG...: every init script and systemd unit the packages
# ship is disabled, and any of their daemons that started anyway (after
# INSTALL_T0) is stopped, by PID.
disable_services() {
	local pkg f name pid exe arg0 start
	local -a daemons=()
	for pkg in "$@"; do
		while IFS= read -r f; do
			case $f in
			/etc/init.d/*)
				name=${f#/etc/init.d/}
				if [[ -d /run/systemd/system ]]; then
					systemctl stop "$name" >/dev/null 2>&1 || true
				fi
				update-rc.d "$name" disable >/dev/null 2>&1 || true
				say "disabled the $name service of $pkg"
				;;
			/lib/systemd/system/*.service | /usr/lib/systemd/system/*.service)
				name=${f##*/}
				[[ $name == *@.service ]] && continue
				if command -v systemctl >/dev/null 2>&1; then
					[[ -d /run/systemd/system ]] && { systemctl stop "$name" >/dev/null 2>&1 || true; }
					systemctl disable --quiet "$name" >/dev/null 2>&1 || true
				fi
				;;
			/usr/sbin/* | /usr/bin/* | /sbin/* | /bin/*)
				daemons+=("${f##*/}")
				;;
			esac
		done < <(dpkg -L "$pkg" 2>/dev/null)
	done
	((${#daemons[@]})) || return 0
	# Anything that runs one of these programs and started after the
	# install began was started by it.
	for f in /proc/[0-9]*; do
		pid=${f#/proc/}
		((pid == $$)) && continue
		start=$(awk '{print $22}' "$f/stat" 2>/dev/null) || continue
		if [[ -z $start ]] || ((start < INSTALL_T0)); then
			continue
		fi
		exe=$(readlink "$f/exe" 2>/dev/null || true)
		arg0=$(tr '\0' '\n' <"$f/cmdline" 2>/dev/null | head -n 1 || true)
		arg0=${arg0%% *}
		for name in "${daemons[@]}"; do
			if [[ ${exe##*/} == "$name" || ${arg0##*/} == "$name" ]]; then
				say "stopping $name (PID $pid), started by the install"
				kill -TERM "$pid" 2>/dev/null || true
				wait_gone "$pid" 10000 || kill -KILL "$pid" 2>/dev/null || true
			fi
		done
	done
}

install_peers() {
	local need=() want
	for want in $SERVERS; do
		case $want in
		postgrey) [[ -x $POSTGREY ]] || need+=(postgrey) ;;
		gross) [[ -x $GROSSD ]] || need+=(gross) ;;
		esac
	done
	((${#need[@]})) || return 0
	if [[ $NO_INSTALL == 1 ]]; then
		say "missing ${need[*]} and BENCH_PEERS_NO_INSTALL=1: skipping them"
		return 0
	fi
	((EUID == 0)) || die "missing ${need[*]}; run as root (or install them) to let bench-peers install them"
	local t0=$SECONDS before after new
	say "installing ${need[*]} from Debian's packages"
	export DEBIAN_FRONTEND=noninteractive
	# gross depends on an MTA; should Postfix come in with it, it comes
	# without a configuration and so without a system instance.
	if ! dpkg-query -W -f='${Status}' postfix 2>/dev/null | grep -q 'ok installed'; then
		echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
	fi
	if [[ ! -e /usr/sbin/policy-rc.d ]]; then
		printf '#!/bin/sh\n# bench/peers.sh: no service starts while it installs packages.\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod 755 /usr/sbin/policy-rc.d
		POLICY_RC_CREATED=1
	fi
	before=$(installed_packages)
	INSTALL_T0=$(awk -v hz="$CLK_TCK" '{printf "%d", $1 * hz}' /proc/uptime)
	apt-get update -q </dev/null >"$TMP/apt.log" 2>&1 ||
		{ cat "$TMP/apt.log" >&2; die "apt-get update failed"; }
	apt-get install -y -q --no-install-recommends \
		-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
		-o DPkg::Lock::Timeout=300 \
		"${need[@]}" </dev/null >>"$TMP/apt.log" 2>&1 ||
		{ cat "$TMP/apt.log" >&2; die "apt-get install ${need[*]} failed"; }
	if ((POLICY_RC_CREATED)); then
		rm -f /usr/sbin/policy-rc.d
		POLICY_RC_CREATED=0
	fi
	after=$(installed_packages)
	mapfile -t new < <(comm -13 <(echo "$before") <(echo "$after"))
	disable_services "${new[@]}"
	say "installed ${new[*]} in $((SECONDS - t0)) s"
}

# ---------------------------------------------------------------------------
# The servers. start_X sets PORT[X], PIDS[X], LOGF[X], WARMUP[X] and CMDLINE[X].

declare -A PORT=() CMDLINE=() LOGF=() WARMUP=()

# show_args ARG...: the arguments as one line for the report, "" for an
# empty one.
show_args() {
	local a out=""
	for a; do
		if [[ -z $a ]]; then out+=' ""'; else out+=" $a"; fi
	done
	echo "${out# }"
}

start_null() {
	local port
	pick_port port || die "no free loopback port found"
	LOGF[null]=$TMP/null.log
	CMDLINE[null]="load --null-server 127.0.0.1:$port"
	"$BIN/load" --null-server "127.0.0.1:$port" </dev/null >"${LOGF[null]}" 2>&1 &
	PIDS[null]=$!
	PORT[null]=$port
	wait_listen null "$port" "${LOGF[null]}"
	WARMUP[null]=none
}

start_greyhold() {
	local port http
	pick_port port || die "no free loopback port found"
	pick_port http || die "no free loopback port found"
	LOGF[greyhold]=$TMP/greyhold.log
	local args=(serve --data-dir "$TMP/greyhold-data" --policy-listen "127.0.0.1:$port"
		--line-listen "" --http-listen "127.0.0.1:$http" --delay "${DELAY}s"
		--test-clock --log-decisions=off)
	CMDLINE[greyhold]="greyhold $(show_args "${args[@]}")"
	"$BIN/greyhold" "${args[@]}" </dev/null >"${LOGF[greyhold]}" 2>&1 &
	PIDS[greyhold]=$!
	PORT[greyhold]=$port
	wait_listen greyhold "$port" "${LOGF[greyhold]}"
	WARMUP[greyhold]=test-clock
}

start_postgrey() {
	local port user group
	pick_port port || die "no free loopback port found"
	mkdir -p "$TMP/postgrey"
	# As root, postgrey switches to the postgrey user, as its service does.
	if ((EUID == 0)); then user=postgrey group=postgrey; else user=$(id -un) group=$(id -gn); fi
	chown "$user:$group" "$TMP/postgrey"
	chmod 700 "$TMP/postgrey"
	LOGF[postgrey]=$TMP/postgrey.log
	# --quiet: no log line per decision (as greyhold --log-decisions=off);
	# everything else at postgrey's defaults (max-age 35 d, retry-window
	# 2 d, auto-whitelist-clients 5, /24 and /64 networks, the package's
	# whitelists).
	local args=(--inet="127.0.0.1:$port" --dbdir="$TMP/postgrey" --delay="$DELAY" --quiet
		--user="$user" --group="$group")
	CMDLINE[postgrey]="postgrey $(show_args "${args[@]}")"
	"$POSTGREY" "${args[@]}" </dev/null >"${LOGF[postgrey]}" 2>&1 &
	PIDS[postgrey]=$!
	PORT[postgrey]=$port
	wait_listen postgrey "$port" "${LOGF[postgrey]}"
	WARMUP[postgrey]=delay
}

start_gross() {
	local port conf=$TMP/gross/grossd.conf
	pick_port port || die "no free loopback port found"
	mkdir -p "$TMP/gross"
	chmod 755 "$TMP/gross"
	cat >"$conf" <<EOF
# grossd for bench/peers.sh: a traditional greylister (no check = no
# DNSBL: every new triplet is greylisted), on loopback, with the same delay
# and client network (/24) as the others.
host = 127.0.0.1
port = $port
protocol = postfix
grey_delay = $DELAY
grey_mask = 24
update = grey
filter_bits = 24
number_buffers = 8
rotate_interval = 3600
stat_type = none
# No log line per decision (as greyhold --log-decisions=off).
log_level = warning
EOF
	chmod 644 "$conf"
	LOGF[gross]=$TMP/gross.log
	# -d foreground (logs to stderr), -r no replication; as root it runs as
	# the package's gross user, as its service does.
	local args=(-d -r -f "$conf")
	((EUID == 0)) && args+=(-u gross)
	CMDLINE[gross]="grossd $(show_args "${args[@]}")"
	"$GROSSD" "${args[@]}" </dev/null >"${LOGF[gross]}" 2>&1 &
	PIDS[gross]=$!
	PORT[gross]=$port
	wait_listen gross "$port" "${LOGF[gross]}"
	WARMUP[gross]=delay
}

# ---------------------------------------------------------------------------
# Runs.

RUNS=""     # runs.tsv
declare -A PIPELINE_NA=()

# record SERVER CONNS PIPELINE NEW STATUS RSS_KB CPU_S JSON NOTE: one line
# of runs.tsv (bench/peers/table.go reads it).
record() {
	local note=${9//$'\t'/ }
	note=${note//$'\n'/ }
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$6" "$7" "$8" "$note" >>"$RUNS"
}

# warm_up SERVER: makes the pool known (--requests 1: the measurement that
# follows bench/load's warm-up is a single request).
warm_up() {
	local s=$1 rc=0
	local log=$TMP/warmup-$s.log
	local args=(--target "127.0.0.1:${PORT[$s]}" --conns 16 --pipeline 1 --requests 1 --duration 5s
		--pool "$POOL" --seed "$SEED" --reply-timeout 30s)
	case ${WARMUP[$s]} in
	none) return 0 ;;
	test-clock) args+=(--warmup) ;;
	delay) args+=(--warmup-delay "$((DELAY + WARMUP_MARGIN))s" --warmup-pipeline 1) ;;
	esac
	local t0=$SECONDS left=$((BUDGET - $(elapsed)))
	((left > 10)) || left=10
	bg_wait "$log" "$log" timeout "$left" "$BIN/load" "${args[@]}" || rc=$?
	if ((rc != 0)); then
		say "warm-up of $s failed (status $rc):"
		tail -n 5 "$log" >&2
		say "$s's log (${LOGF[$s]}):"
		tail -n 5 "${LOGF[$s]}" >&2
		return 1
	fi
	say "$s: warmed up $POOL triplets in $((SECONDS - t0)) s ($(grep -o 'first pass.*' "$log" | tail -n 1))"
}

# log_evidence SERVER OFFSET: the commonest line the server logged after
# byte OFFSET, with its count, for a failure's note.
log_evidence() {
	local line
	line=$(tail -c +"$(($2 + 1))" "${LOGF[$1]}" 2>/dev/null | sed 's/^.*#[0-9a-f]*: //' |
		sort | uniq -c | sort -rn | head -n 1 | sed 's/^ *\([0-9]*\) \(.*\)$/"\2" (x\1)/' || true)
	[[ -n $line ]] && printf '; %s logged %s' "$1" "${line:0:160}"
	return 0
}

# measure SERVER CONNS PIPELINE NEW
measure() {
	local s=$1 c=$2 p=$3 n=$4 pid=${PIDS[$1]:-}
	local tag="$s-c$c-p$p-n$n"
	local json=$TMP/runs/$tag.json err=$TMP/runs/$tag.err rc=0 rss=""
	if ((p > 1)) && [[ -n ${PIPELINE_NA[$s]:-} ]]; then
		record "$s" "$c" "$p" "$n" na "" "" "" "${PIPELINE_NA[$s]}"
		return 0
	fi
	if [[ -z $pid ]] || ! proc_alive "$pid"; then
		record "$s" "$c" "$p" "$n" na "" "" "" "$s is no longer running"
		return 0
	fi
	if (($(elapsed) + DURATION + 5 > BUDGET)); then
		record "$s" "$c" "$p" "$n" skip "" "" "" "not run: the whole comparison is bounded to $BUDGET s (BENCH_PEERS_BUDGET)"
		return 0
	fi
	local logsize t0 t1 cpu="" pin=() affinity=""
	logsize=$(stat -c %s "${LOGF[$s]}" 2>/dev/null || echo 0)
	if ((c == 1 && p == 1)) && [[ $PIN_SINGLE == 1 ]]; then
		# One request at a time: pinned to one CPU with bench/load, or
		# the figure says more about where the scheduler put the two
		# processes than about the server (see PIN_SINGLE).
		affinity=$(taskset -p -c "$pid" 2>/dev/null | sed 's/.*: *//' || true)
		if [[ -n $affinity ]] && taskset -a -p -c "$PIN_CPU" "$pid" >/dev/null 2>&1; then
			pin=(taskset -c "$PIN_CPU")
		else
			affinity=""
		fi
	fi
	t0=$(cpu_ticks "$pid")
	bg_wait "$json" "$err" timeout $((DURATION + 60)) "${pin[@]}" "$BIN/load" --target "127.0.0.1:${PORT[$s]}" \
		--conns "$c" --pipeline "$p" --new-fraction "$n" --duration "${DURATION}s" \
		--pool "$POOL" --seed "$SEED" --reply-timeout "$REPLY_TIMEOUT" --json || rc=$?
	if [[ -n $affinity ]]; then
		taskset -a -p -c "$affinity" "$pid" >/dev/null 2>&1 || say "could not restore $s's CPU affinity ($affinity)"
	fi
	rss=$(rss_kb "$pid")
	t1=$(cpu_ticks "$pid")
	if [[ -n $t0 && -n $t1 ]]; then
		cpu=$(awk -v a="$t0" -v b="$t1" -v hz="$CLK_TCK" 'BEGIN {printf "%.2f", (b - a) / hz}')
	fi
	local line
	line=$(grep -m 1 '^proto=' "$err" || true)
	if ((rc == 0)); then
		record "$s" "$c" "$p" "$n" ok "$rss" "$cpu" "$json" ""
		printf '  %-8s conns=%-2s pipeline=%-2s new=%-3s %s\n' "$s" "$c" "$p" "$n" \
			"$(sed -E 's/.* (req\/s=[^ ]+ p50=[^ ]+ p99=[^ ]+).*(replies:.*)/\1 \2/' <<<"$line")" >&2
		return 0
	fi
	local why
	why=$(grep '^load: ' "$err" | grep -v '^load: realistic\|^load: minimal' | tail -n 1 | sed 's/^load: //')
	[[ -n $why ]] || why="bench/load exited with status $rc"
	why+=$(log_evidence "$s" "$logsize")
	if ! proc_alive "$pid"; then
		why+="; $s exited"
	fi
	printf '  %-8s conns=%-2s pipeline=%-2s new=%-3s n/a: %s\n' "$s" "$c" "$p" "$n" "$why" >&2
	if ((p > 1)); then
		PIPELINE_NA[$s]="pipelined requests failed at conns=$c pipeline=$p new=$n: $why; its other pipelined runs were not attempted"
		record "$s" "$c" "$p" "$n" na "$rss" "" "" "${PIPELINE_NA[$s]}"
	else
		record "$s" "$c" "$p" "$n" na "$rss" "" "" "$why"
	fi
}

# ---------------------------------------------------------------------------
# Main.

for v in DELAY DURATION POOL BUDGET; do
	[[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "BENCH_PEERS_$v=${!v}: want a positive whole number"
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/greyhold-bench-peers.XXXXXX")
# postgrey and gross run as their own users and must reach their files.
chmod 711 "$TMP"
BIN=$TMP/bin
mkdir -p "$BIN" "$TMP/runs"
RUNS=$TMP/runs.tsv
: >"$RUNS"

declare -A NOTE=()
for s in $SERVERS; do
	case $s in
	null | greyhold | postgrey | gross) ;;
	*) die "BENCH_PEERS_SERVERS: unknown server $s (null, greyhold, postgrey, gross)" ;;
	esac
done

install_peers

say "building greyhold, bench/load and bench/peers into $BIN"
VERSION=$(git -C "$ROOT" describe --tags --always --dirty 2>/dev/null || echo dev)
(
	cd "$ROOT"
	"$GO" build -ldflags "-X main.version=$VERSION" -o "$BIN/greyhold" ./cmd/greyhold
	"$GO" build -o "$BIN/load" ./bench/load
	"$GO" build -o "$BIN/peers" ./bench/peers
) </dev/null || die "go build failed"

pkg_version() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo "not installed"; }
say "greyhold $VERSION, postgrey $(pkg_version postgrey), gross $(pkg_version gross);" \
	"delay ${DELAY} s, ${DURATION} s a run, pool of $POOL, budget $BUDGET s"

[[ -x $POSTGREY ]] || NOTE[postgrey]="postgrey is not installed"
[[ -x $GROSSD ]] || NOTE[gross]="gross is not installed"

# reset_state SERVER: removes what the server kept, for a fresh start.
reset_state() {
	case $1 in
	greyhold) rm -rf "$TMP/greyhold-data" ;;
	postgrey) rm -rf "$TMP/postgrey" ;;
	esac
}

# warm_error SERVER: the warm-up's own word on why it failed.
warm_error() {
	grep '^load: ' "$TMP/warmup-$1.log" 2>/dev/null | tail -n 1 | sed 's/^load: //'
}

# Is the machine quiet? Another busy process skews every figure here.
read -r c0_total c0_idle _ < <(cpu_sample)
sleep 1
read -r c1_total c1_idle _ < <(cpu_sample)
BUSY_BEFORE=$(awk -v t=$((c1_total - c0_total)) -v i=$((c1_idle - c0_idle)) 'BEGIN {printf "%.0f", (t > 0 ? 100 * (t - i) / t : 0)}')
if ((BUSY_BEFORE > 10)); then
	say "warning: the CPUs were ${BUSY_BEFORE}% busy before anything started: the figures will be low and noisy"
fi
read -r CPU_T0 _ STEAL_T0 < <(cpu_sample)

declare -A RETRIED=()
for s in $SERVERS; do
	say "== $s"
	if [[ -z ${NOTE[$s]:-} ]] && (($(elapsed) + 2 * DURATION + 10 > BUDGET)); then
		NOTE[$s]="not run: the whole comparison is bounded to $BUDGET s (BENCH_PEERS_BUDGET)"
	fi
	if [[ -z ${NOTE[$s]:-} ]]; then
		if ! "start_$s"; then
			NOTE[$s]="$s did not start (see the run's output)"
		elif ! warm_up "$s"; then
			# Once more from scratch: gross has been seen to leave one
			# warm-up request unanswered (see bench/peers.sh's notes).
			RETRIED[$s]=$(warm_error "$s")
			say "restarting $s with fresh state for a second warm-up"
			stop_pid "$s"
			reset_state "$s"
			if ! "start_$s"; then
				NOTE[$s]="$s did not start again after a failed warm-up (see the run's output)"
			elif ! warm_up "$s"; then
				NOTE[$s]="the warm-up of $s failed twice: ${RETRIED[$s]}; then: $(warm_error "$s")"
			fi
		fi
	fi
	for p in $PIPELINE_LIST; do
		for c in $CONNS_LIST; do
			for n in $NEW_LIST; do
				if [[ -n ${NOTE[$s]:-} ]]; then
					record "$s" "$c" "$p" "$n" skip "" "" "" "${NOTE[$s]}"
				else
					measure "$s" "$c" "$p" "$n"
				fi
			done
		done
	done
	stop_pid "$s"
done

TOTAL=$(elapsed)
read -r CPU_T1 _ STEAL_T1 < <(cpu_sample)
STEAL=$(awk -v t=$((CPU_T1 - CPU_T0)) -v s=$((STEAL_T1 - STEAL_T0)) 'BEGIN {printf "%.1f", (t > 0 ? 100 * s / t : 0)}')
TABLE_MD=$TMP/table.md
if [[ -z $OUT ]]; then
	OUT=$(mktemp "${TMPDIR:-/tmp}/greyhold-bench-peers-XXXXXX.md")
fi
echo
"$BIN/peers" table --runs "$RUNS" --md "$TABLE_MD" --servers "${SERVERS// /,}"
echo
{
	echo "## greyhold, postgrey, gross and the null server"
	echo
	echo "\`make bench-peers\` on $(date -u +'%Y-%m-%d %H:%M UTC'): $(nproc) cores" \
		"($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null || echo unknown CPU))," \
		"Linux $(uname -r), $(sed -n 's/^PRETTY_NAME=//p' /etc/os-release 2>/dev/null | tr -d '"')."
	echo "greyhold $VERSION, postgrey $(pkg_version postgrey), gross $(pkg_version gross) (Debian packages)."
	echo "Delay $DELAY s for all; each run $DURATION s of realistic Postfix 3.7 policy requests from bench/load" \
		"(pool of $POOL triplets, seed $SEED, all known after the warm-up; \`new\` is the fraction never seen before);" \
		"bench/load runs on the same cores (\`load cores\`). RSS is the server's VmRSS after the run" \
		"(each server keeps its state through its runs, in the table's order, so it grows with the new triplets);" \
		"\`server cores\` is the CPU time the server used over the run's length," \
		"\`greyhold/this\` is greyhold's req/s divided by this server's on the same workload." \
		"$( ((PIN_SINGLE)) && echo "Rows with conns=1 and pipeline=1 ran with the server and bench/load pinned to one CPU (taskset): unpinned, where the scheduler puts the two processes decides that figure (the null server's swung between 5,600 and 27,000 req/s from run to run).")" \
		"CPUs ${BUSY_BEFORE}% busy before the start, ${STEAL}% stolen by the hypervisor during the runs." \
		"Whole comparison: $TOTAL s."
	echo
	cat "$TABLE_MD"
	echo
	echo "Servers:"
	echo
	for s in $SERVERS; do
		[[ -n ${CMDLINE[$s]:-} ]] || continue
		echo "- $s: \`${CMDLINE[$s]//$TMP/\$TMP}\`"
	done
	if [[ -f $TMP/gross/grossd.conf ]]; then
		echo "- grossd.conf: $(grep -v '^#' "$TMP/gross/grossd.conf" | grep . | sed 's/ = /=/' | paste -sd ';' | sed 's/;/; /g')"
	fi
	for s in "${!RETRIED[@]}"; do
		echo "- $s: the first warm-up failed (${RETRIED[$s]}); $s was restarted with fresh state and warmed up again."
	done
} >"$OUT"
say "Markdown table: $OUT"
say "total time: $TOTAL s"
