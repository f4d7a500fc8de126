#!/usr/bin/env bash
# bench/day.sh (make bench-day): a simulated day of traffic (bench/day)
# through the policy protocol against postgrey, greyhold keying clients by
# network and greyhold keying them by name, in one run, and per kind of
# sender the median and p90 delay to acceptance and the share delayed over
# 15 minutes and over an hour.
#
# Installs postgrey and faketime from Debian's packages when they are
# missing (a temporary /usr/sbin/policy-rc.d keeps postgrey's service from
# starting, and it is disabled afterwards). Each server runs on a free
# loopback port with its own temporary state, delay 300 s, postgrey's
# defaults otherwise, no client whitelist (the day's names are made up).
# greyhold runs with --test-clock and the requests carry their time;
# postgrey, which has no test clock, runs under libfaketime with its clock
# read from a file that bench/day rewrites before each request, and its
# defer text gives the seconds left, from which bench/day measures how
# faithfully it kept the simulated clock. A day of 4,000 messages takes a
# few seconds against greyhold and about a minute against postgrey.
#
# Environment:
#   BENCH_DAY_MESSAGES=4000   messages in the day
#   BENCH_DAY_SEED=1          the day's seed
#   BENCH_DAY_OUT=FILE        also write the Markdown report there
#   BENCH_DAY_NO_INSTALL=1    never run apt-get; skip postgrey if missing
set -Eeuo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
MESSAGES=${BENCH_DAY_MESSAGES:-4000}
SEED=${BENCH_DAY_SEED:-1}
OUT=${BENCH_DAY_OUT:-}
NO_INSTALL=${BENCH_DAY_NO_INSTALL:-0}
DELAY=300
port="" # set by pick_port (e2e/lib.sh)
POSTGREY=/usr/sbin/postgrey
LIBFAKETIME=/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1
TMP=""
POLICY_RC_CREATED=0
declare -A PIDS=()

# shellcheck source=e2e/lib.sh
source "$ROOT/e2e/lib.sh"
say() { printf 'bench-day: %s\n' "$*" >&2; }
die() {
	say "$*"
	exit 1
}

cleanup() {
	local rc=$? name
	trap - ERR EXIT INT TERM
	set +e
	for name in "${!PIDS[@]}"; do
		kill -TERM "${PIDS[$name]}" 2>/dev/null
		wait_gone "${PIDS[$name]}" 10000 || kill -KILL "${PIDS[$name]}" 2>/dev/null
		wait "${PIDS[$name]}" 2>/dev/null
	done
	((POLICY_RC_CREATED)) && rm -f /usr/sbin/policy-rc.d
	[[ -n $TMP && -d $TMP ]] && rm -rf "$TMP"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

install_packages() {
	local need=()
	[[ -x $POSTGREY ]] || need+=(postgrey)
	[[ -e $LIBFAKETIME ]] || need+=(faketime)
	((${#need[@]})) || return 0
	if [[ $NO_INSTALL == 1 ]]; then
		say "missing ${need[*]} and BENCH_DAY_NO_INSTALL=1: postgrey is skipped"
		return 0
	fi
	((EUID == 0)) || die "installing ${need[*]} needs root"
	if [[ ! -e /usr/sbin/policy-rc.d ]]; then
		printf '#!/bin/sh\n# bench/day.sh: no service starts while it installs packages.\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod 755 /usr/sbin/policy-rc.d
		POLICY_RC_CREATED=1
	fi
	say "installing ${need[*]} from Debian's packages"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q </dev/null >"$TMP/apt.log" 2>&1 || { cat "$TMP/apt.log" >&2; die "apt-get update failed"; }
	apt-get install -y -q --no-install-recommends "${need[@]}" </dev/null >>"$TMP/apt.log" 2>&1 ||
		{ cat "$TMP/apt.log" >&2; die "apt-get install ${need[*]} failed"; }
	if [[ -d /run/systemd/system ]]; then
		systemctl disable --now postgrey >/dev/null 2>&1 || true
	fi
	update-rc.d postgrey disable >/dev/null 2>&1 || true
	rm -f /usr/sbin/policy-rc.d
	POLICY_RC_CREATED=0
}

# wait_port NAME PORT: until something listens on 127.0.0.1:PORT.
wait_port() {
	local deadline=$(($(now_ms) + 30000))
	until port_taken "$2"; do
		proc_alive "${PIDS[$1]}" || die "$1 exited; its log: $(tail -n 20 "$TMP/$1.log")"
		(($(now_ms) < deadline)) || die "$1 does not listen on $2 after 30 s"
		sleep 0.05
	done
}

TMP=$(mktemp -d /tmp/greyhold-day.XXXXXX)
chmod 755 "$TMP"
install_packages
say "building greyhold and bench/day"
(cd "$ROOT" && go build -o "$TMP/greyhold" ./cmd/greyhold && go build -o "$TMP/day" ./bench/day)

# The fourth greyhold greylists only suspicious clients, with the rules
# of examples/greylist-suspicious.conf that apply to the day.
SUSPICIOUS=(--rule-default pass --rule "no-rdns: no-name => greylist" --rule "dynamic: generic-name => greylist"
	--rule "bad-helo: bad-helo => greylist")
ARGS=()
for mode in network name suspicious; do
	pick_port port || die "no free loopback port"
	extra=(--client-identity "$mode")
	label="greyhold, identity $mode"
	if [[ $mode == suspicious ]]; then
		extra=(--client-identity name "${SUSPICIOUS[@]}")
		label="greyhold, identity name, greylisting only suspicious clients"
	fi
	"$TMP/greyhold" serve --data-dir "$TMP/gh-$mode" "${extra[@]}" --policy-listen "127.0.0.1:$port" \
		--line-listen "" --http-listen "" --test-clock --delay "$DELAY" --whitelist-clients none --whitelist-recipients none \
		--log-decisions off </dev/null >"$TMP/greyhold-$mode.log" 2>&1 &
	PIDS[greyhold-$mode]=$!
	wait_port "greyhold-$mode" "$port"
	ARGS+=(--server "$label=test-clock:127.0.0.1:$port")
done

if [[ -x $POSTGREY && -e $LIBFAKETIME ]]; then
	pick_port port || die "no free loopback port"
	mkdir -p "$TMP/postgrey"
	user=$(id -un) group=$(id -gn)
	((EUID == 0)) && user=postgrey group=postgrey
	chown "$user:$group" "$TMP/postgrey"
	: >"$TMP/empty"
	echo "@2026-06-01 00:00:00" >"$TMP/stamp"
	chmod 644 "$TMP/stamp"
	FAKETIME_TIMESTAMP_FILE="$TMP/stamp" FAKETIME_NO_CACHE=1 LD_PRELOAD=$LIBFAKETIME \
		"$POSTGREY" --inet="127.0.0.1:$port" --dbdir="$TMP/postgrey" --delay="$DELAY" --quiet \
		--user="$user" --group="$group" --whitelist-clients="$TMP/empty" --whitelist-recipients="$TMP/empty" \
		--greylist-text="Greylisted, please retry in %ss" </dev/null >"$TMP/postgrey.log" 2>&1 &
	PIDS[postgrey]=$!
	wait_port postgrey "$port"
	ARGS=(--server "postgrey $(dpkg-query -W -f='${Version}' postgrey 2>/dev/null)=faketime:$TMP/stamp:127.0.0.1:$port" "${ARGS[@]}")
fi

say "a day of $MESSAGES messages (seed $SEED) through ${#PIDS[@]} servers"
"$TMP/day" --seed "$SEED" --messages "$MESSAGES" --delay "$DELAY" ${OUT:+--out "$OUT"} "${ARGS[@]}"
