#!/usr/bin/env bash
# e2e/run.sh: greyhold behind a real Postfix, driven over real SMTP by swaks.
#
# Installs Postfix and swaks from Debian's packages when they are missing,
# starts a private Postfix instance on loopback (its own config, queue, data
# and log in a temporary directory; the system instance is never touched),
# points its check_policy_service at a freshly built greyhold with a short
# delay, and walks through the behaviour a postmaster relies on: defer, defer
# again, pass after the delay with X-Greylist, known triplets, the /24
# neighbour, new senders, IPv6 clients, a restart on the same data directory,
# a pool and a dynamic-name client each retrying from another /24 (who the
# client is), Postfix's own 451 4.3.5 when greyhold is down, and two MX
# listeners each asking a node of one fleet (two greyholds joined through a
# real nats-server): a retry through the second passes after a first
# attempt through the first. Every step prints a
# PASS or FAIL line; the first failure prints the SMTP transcript and the
# Postfix and greyhold logs and exits nonzero. Everything started here is
# stopped, by PID, and the temporary directory removed, on success and on
# failure.
#
# Environment:
#   E2E_DELAY=3      greyhold's --delay in seconds (2 or 3 keeps the run short)
#   E2E_KEEP=1       keep the temporary directory (its path is printed)
#   E2E_IPV6=0       do not listen on or connect over [::1] even if it exists
#   E2E_NO_INSTALL=1 never run apt-get; fail if Postfix or swaks is missing
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
E2E_NAME=e2e
# shellcheck source=e2e/lib.sh
source "$ROOT/e2e/lib.sh"
trap 'on_error $? $LINENO "$BASH_COMMAND"' ERR
DELAY=${E2E_DELAY:-3}
KEEP=${E2E_KEEP:-0}

POSTFIX=/usr/sbin/postfix
POSTCONF=/usr/sbin/postconf

# The test world: an inbound MX for greyhold.test, clients from the
# documentation ranges (RFC 5737, RFC 3849), posed with XCLIENT.
DOMAIN=greyhold.test
RCPT="bob@$DOMAIN"
PF_HOST="mx.$DOMAIN"
GH_HOST="greyhold-e2e.$DOMAIN"
V4_CLIENT=192.0.2.10
V4_CLIENT_NAME=mail.example.org
V4_NEIGHBOUR=192.0.2.77
V4_NEIGHBOUR_NAME=mail2.example.org
V6_CLIENT=2001:db8::1
V6_CLIENT_NAME=mail6.example.org
SENDER=alice@example.org
NEW_SENDER=carol@example.com
V6_SENDER=dave@example.net
Q_CLIENT=198.51.100.20
Q_CLIENT_NAME=mx.example.net
Q_SENDER=erin@example.net
K_CLIENT=203.0.113.30
K_CLIENT_NAME=mx.example.com
K_SENDER=frank@example.com
# Step 11: a sending pool whose retry comes from another /24 under a name
# of the same identity (pool.example.com), and a client with a dynamic
# name doing the same (each name spells its address).
POOL_CLIENT=198.51.100.40
POOL_CLIENT_NAME=mail-a1-f40.outbound.example.com
POOL_RETRY=203.0.113.41
POOL_RETRY_NAME=mail-b7-f41.outbound.example.com
POOL_SENDER=noreply@accounts.example.com
DYN_CLIENT=192.0.2.55
DYN_CLIENT_NAME=dyn-192-0-2-55.isp.example.net
DYN_RETRY=198.51.100.56
DYN_RETRY_NAME=dyn-198-51-100-56.isp.example.net
DYN_SENDER=grace@example.net

# Step 12: the fleet. Two MX listeners, each asking a greyhold node of its
# own; the nodes share their state through a nats-server.
FLEET_CLIENT=203.0.113.80
FLEET_CLIENT_NAME=mta.example.org
FLEET_SENDER=heidi@example.org
NATS_PID=""
FLEET_PIDS=()

TMP=""
PF_STARTED=0
POLICY_RC_CREATED=0
RUN_START_MS=0

# ---------------------------------------------------------------------------
# Cleanup, on success and failure alike.

dump_logs() {
	[[ -n $TMP && -d $TMP ]] || return 0
	echo "---- Postfix log ($TMP/log/maillog, last 80 lines) ----"
	tail -n 80 "$TMP/log/maillog" 2>/dev/null || echo "(none)"
	echo "---- greyhold log ($TMP/greyhold.log, last 80 lines) ----"
	tail -n 80 "$TMP/greyhold.log" 2>/dev/null || echo "(none)"
	local f
	for f in "$TMP"/fleet-mx*.log "$TMP/nats-server.log"; do
		[[ -f $f ]] || continue
		echo "---- $(basename "$f") (last 40 lines) ----"
		tail -n 40 "$f"
	done
}

stop_postfix() {
	((PF_STARTED)) || return 0
	PF_STARTED=0
	local master="" kids=() p
	master=$(tr -d ' \n' <"$TMP/spool/pid/master.pid" 2>/dev/null || true)
	if [[ -n $master ]] && proc_alive "$master"; then
		mapfile -t kids < <(children_of "$master")
	fi
	timeout 30 "$POSTFIX" -c "$TMP/etc" stop >/dev/null 2>&1 || true
	if [[ -n $master ]] && ! wait_gone "$master" 10000; then
		kill -KILL "$master" 2>/dev/null || true
	fi
	for p in "${kids[@]}"; do
		if proc_alive "$p" && [[ $(awk '{print $4}' "/proc/$p/stat" 2>/dev/null) == "$master" || $(awk '{print $4}' "/proc/$p/stat" 2>/dev/null) == 1 ]]; then
			kill -KILL "$p" 2>/dev/null || true
		fi
	done
}

# stop_fleet stops step 12's greyhold nodes (each must exit 0 on SIGTERM)
# and then its nats-server, by PID; it fails if a node did not stop
# cleanly.
stop_fleet() {
	local p rc=0 st
	for p in "${FLEET_PIDS[@]}"; do
		kill -TERM "$p" 2>/dev/null || continue
		if ! wait_gone "$p" 20000; then
			kill -KILL "$p" 2>/dev/null || true
			rc=1
		fi
		st=0
		wait "$p" 2>/dev/null || st=$?
		((st == 0)) || rc=1
	done
	FLEET_PIDS=()
	if [[ -n $NATS_PID ]]; then
		kill -TERM "$NATS_PID" 2>/dev/null || true
		wait_gone "$NATS_PID" 20000 || kill -KILL "$NATS_PID" 2>/dev/null || true
		wait "$NATS_PID" 2>/dev/null || true
		NATS_PID=""
	fi
	return "$rc"
}

# stop_mta: e2e_cleanup's hook (e2e/lib.sh).
stop_mta() {
	stop_fleet || true
	stop_postfix
	if ((POLICY_RC_CREATED)); then
		rm -f /usr/sbin/policy-rc.d
	fi
}
e2e_traps

# ---------------------------------------------------------------------------
# Install Postfix and swaks when missing.

install_packages() {
	local need=()
	[[ -x $POSTFIX && -x $POSTCONF ]] || need+=(postfix)
	command -v swaks >/dev/null 2>&1 || need+=(swaks)
	# swaks speaks IPv6 only with IO::Socket::INET6.
	perl -MIO::Socket::INET6 -e 1 >/dev/null 2>&1 || need+=(libio-socket-inet6-perl)
	if ((${#need[@]} == 0)); then
		say "Postfix $("$POSTCONF" -d -h mail_version 2>/dev/null) and swaks already installed"
		return 0
	fi
	if [[ ${E2E_NO_INSTALL:-0} == 1 ]]; then
		say "missing ${need[*]} and E2E_NO_INSTALL=1"
		return 1
	fi
	if ((EUID != 0)); then
		say "missing ${need[*]}; run as root (or install them) to let e2e install them"
		return 1
	fi
	local t0
	t0=$(now_ms)
	say "installing ${need[*]} from Debian's packages"
	export DEBIAN_FRONTEND=noninteractive
	# "No configuration": the package installs without a main.cf and starts
	# no system instance; the private instance below has its own config.
	echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
	# Belt and braces: no service may start during the install.
	if [[ ! -e /usr/sbin/policy-rc.d ]]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod 755 /usr/sbin/policy-rc.d
		POLICY_RC_CREATED=1
	fi
	apt-get update -q </dev/null >"$TMP/apt.log" 2>&1 ||
		{ cat "$TMP/apt.log"; return 1; }
	apt-get install -y -q --no-install-recommends \
		-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
		-o DPkg::Lock::Timeout=300 \
		"${need[@]}" </dev/null >>"$TMP/apt.log" 2>&1 ||
		{ cat "$TMP/apt.log"; return 1; }
	if ((POLICY_RC_CREATED)); then
		rm -f /usr/sbin/policy-rc.d
		POLICY_RC_CREATED=0
	fi
	if [[ ! -x $POSTFIX ]] || ! command -v swaks >/dev/null 2>&1; then
		cat "$TMP/apt.log"
		return 1
	fi
	say "installed Postfix $("$POSTCONF" -d -h mail_version) and swaks in $(secs $(($(now_ms) - t0)))"
}

# ---------------------------------------------------------------------------
# Postfix, private instance.

setup_postfix() {
	local etc=$TMP/etc
	# data_directory is made by Postfix itself, owned by mail_owner.
	mkdir -p "$etc" "$TMP/spool" "$TMP/log" "$TMP/mail"
	# The virtual delivery agent writes the Maildir as nobody:nogroup.
	chown 65534:65534 "$TMP/mail"
	local listeners="127.0.0.1:$SMTP_PORT inet n - n - - smtpd"
	# Step 10's listener asks greyhold over its unix socket instead.
	listeners+=$'\n'"127.0.0.1:$SOCK_SMTP_PORT inet n - n - - smtpd -o smtpd_recipient_restrictions=\$greyhold_socket_restrictions"
	# Step 12's two MX hosts, each asking its own node of the fleet.
	listeners+=$'\n'"127.0.0.1:$MX1_SMTP_PORT inet n - n - - smtpd -o smtpd_recipient_restrictions=\$greyhold_mx1_restrictions"
	listeners+=$'\n'"127.0.0.1:$MX2_SMTP_PORT inet n - n - - smtpd -o smtpd_recipient_restrictions=\$greyhold_mx2_restrictions"
	if ((HAVE_V6)); then
		listeners+=$'\n'"[::1]:$SMTP_PORT inet n - n - - smtpd"
	fi
	cat >"$etc/main.cf" <<EOF
# Private Postfix instance for greyhold's end-to-end test ($TMP).
compatibility_level = 3.6
queue_directory = $TMP/spool
data_directory = $TMP/data
mail_owner = postfix
myhostname = $PF_HOST
mydomain = $DOMAIN
myorigin = \$myhostname
mydestination =
inet_interfaces = loopback-only
# all, even without the [::1] listener: XCLIENT takes IPv6 addresses only then.
inet_protocols = all
mynetworks = 127.0.0.0/8
relayhost =
alias_maps =
alias_database =
local_recipient_maps =
biff = no
smtpd_banner = \$myhostname ESMTP greyhold-e2e
maillog_file = $TMP/log/maillog
maillog_file_prefixes = $TMP
smtpd_peername_lookup = no
smtpd_authorized_xclient_hosts = 127.0.0.0/8, [::1]/128
smtpd_recipient_restrictions =
    reject_unauth_destination,
    check_policy_service inet:127.0.0.1:$POLICY_PORT
smtpd_policy_service_default_action = 451 4.3.5 Server configuration problem
# The README's unix socket recipe (step 10): relative to queue_directory.
greyhold_socket_restrictions =
    reject_unauth_destination,
    check_policy_service unix:greyhold/policy
# Step 12: the fleet's two nodes, one for each MX listener.
greyhold_mx1_restrictions =
    reject_unauth_destination,
    check_policy_service inet:127.0.0.1:$MX1_POLICY_PORT
greyhold_mx2_restrictions =
    reject_unauth_destination,
    check_policy_service inet:127.0.0.1:$MX2_POLICY_PORT
smtpd_policy_service_timeout = 20s
# Delivery of the test domain into a Maildir in the temporary directory.
virtual_mailbox_domains = $DOMAIN
virtual_mailbox_base = $TMP/mail
virtual_mailbox_maps = static:inbox/
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
virtual_minimum_uid = 100
EOF
	cat >"$etc/master.cf" <<EOF
# service type  private unpriv  chroot  wakeup  maxproc command
$listeners
pickup     unix  n       -       n       60      1       pickup
cleanup    unix  n       -       n       -       0       cleanup
qmgr       unix  n       -       n       300     1       qmgr
rewrite    unix  -       -       n       -       -       trivial-rewrite
bounce     unix  -       -       n       -       0       bounce
defer      unix  -       -       n       -       0       bounce
trace      unix  -       -       n       -       0       bounce
verify     unix  -       -       n       -       1       verify
flush      unix  n       -       n       1000?   0       flush
proxymap   unix  -       -       n       -       -       proxymap
proxywrite unix  -       -       n       -       1       proxymap
smtp       unix  -       -       n       -       -       smtp
relay      unix  -       -       n       -       -       smtp
showq      unix  n       -       n       -       -       showq
error      unix  -       -       n       -       -       error
retry      unix  -       -       n       -       -       error
discard    unix  -       -       n       -       -       discard
local      unix  -       n       n       -       -       local
virtual    unix  -       n       n       -       -       virtual
anvil      unix  -       -       n       -       1       anvil
scache     unix  -       -       n       -       1       scache
postlog    unix-dgram n  -       n       -       1       postlogd
EOF
	"$POSTFIX" -c "$etc" check >"$TMP/postfix-start.log" 2>&1 ||
		{ cat "$TMP/postfix-start.log"; return 1; }
	"$POSTFIX" -c "$etc" start >>"$TMP/postfix-start.log" 2>&1 ||
		{ cat "$TMP/postfix-start.log"; return 1; }
	PF_STARTED=1
	local deadline=$(($(now_ms) + 30000)) greeting
	while :; do
		# shellcheck disable=SC2016
		greeting=$(timeout 3 bash -c '
			exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
			IFS= read -r line <&3; printf "%s\n" "$line"; printf "QUIT\r\n" >&3' _ "$SMTP_PORT" 2>/dev/null | tr -d '\r' || true)
		[[ $greeting == "220 "* ]] && return 0
		(($(now_ms) < deadline)) || { cat "$TMP/postfix-start.log"; return 1; }
		sleep 0.1
	done
}

# ---------------------------------------------------------------------------
# SMTP with swaks.
#
# smtp LABEL SERVER CLIENT_ADDR CLIENT_NAME FROM TO MODE [PORT]
#   SERVER is 127.0.0.1 or [::1], PORT $SMTP_PORT unless given; CLIENT_ADDR
#   is posed with XCLIENT (IPV6:...
#   for IPv6); MODE is rcpt (quit after RCPT TO) or data (deliver a message
#   with Subject: LABEL). Sets REPLY (the answer to RCPT TO, without the
#   swaks prefix), CODE (its first three characters) and DATA_REPLY, and
#   SMTP_START and SMTP_END (ms): greyhold saw the request between the two.
SMTP_N=0
SMTP_START=0
SMTP_END=0
REPLY=""
CODE=""
DATA_REPLY=""
smtp() {
	local label=$1 server=$2 addr=$3 name=$4 from=$5 to=$6 mode=$7 port=${8:-$SMTP_PORT}
	SMTP_N=$((SMTP_N + 1))
	LAST_TRANSCRIPT=$(printf '%s/swaks/%03d.txt' "$TMP" "$SMTP_N")
	local args=(--server "$server:$port" --timeout 15
		--ehlo "$name" --xclient-addr "$addr" --xclient-name "$name"
		--from "$from" --to "$to")
	if [[ $mode == rcpt ]]; then
		args+=(--quit-after RCPT)
	else
		args+=(--header "Subject: $label" --header "X-E2E-Run: $RUN_ID"
			--body "greyhold e2e: $label")
	fi
	local rc=0
	SMTP_START=$(now_ms)
	timeout 45 swaks "${args[@]}" </dev/null >"$LAST_TRANSCRIPT" 2>&1 || rc=$?
	SMTP_END=$(now_ms)
	echo "(swaks exit status $rc)" >>"$LAST_TRANSCRIPT"
	REPLY=$(awk '/^ *-> RCPT TO:/ {want = 1; next}
		want && /^<(-|\*\*) / {sub(/^<(-|\*\*) +/, ""); sub(/\r$/, ""); print; exit}' "$LAST_TRANSCRIPT")
	CODE=${REPLY:0:3}
	DATA_REPLY=$(awk '/^ *-> \.$/ {want = 1; next}
		want && /^<(-|\*\*) / {sub(/^<(-|\*\*) +/, ""); sub(/\r$/, ""); print; exit}' "$LAST_TRANSCRIPT")
}

# Postfix's rendering of greyhold's default DEFER_IF_PERMIT text, for
# expect_defer (e2e/lib.sh).
DEFER_RE="^450 4\\.7\\.1 <${RCPT//./\\.}>: Recipient address rejected: Greylisted, please retry in (([0-9]+)m)?([0-9]+)s$"
DEFER_WANT="450 4.7.1 ... Greylisted, please retry in <t>"

# logged PATTERN: whether greyhold's log has a line matching PATTERN, waiting
# up to 10 s for its log writer, which writes behind the answers.
logged() { logged_in "$TMP/greyhold.log" "$1"; }

# logged_in FILE PATTERN: logged, in another greyhold's log.
logged_in() {
	local deadline=$(($(now_ms) + 10000))
	until grep -q "$2" "$1"; do
		(($(now_ms) < deadline)) || return 1
		sleep 0.1
	done
}

# delivered SUBJECT: path of the delivered message with that subject (waits
# up to 20 s for Postfix to deliver it).
delivered() {
	local deadline=$(($(now_ms) + 20000)) f
	while :; do
		f=$(grep -l -F -x "Subject: $1" "$TMP"/mail/inbox/new/* 2>/dev/null | head -n 1 || true)
		[[ -n $f ]] && { echo "$f"; return 0; }
		(($(now_ms) < deadline)) || return 1
		sleep 0.1
	done
}

# ---------------------------------------------------------------------------
# The fleet (step 12).

# get_on PORT PATH: an HTTP GET of 127.0.0.1:PORT, headers and body.
# shellcheck disable=SC2016 # the inner script takes its arguments as $1, $2
get_on() {
	timeout 5 bash -c '
		exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
		printf "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" "$2" >&3
		cat <&3' _ "$1" "$2" 2>/dev/null
}

# wait_200 PORT PATH MS PID: waits up to MS milliseconds for PATH on PORT
# to answer 200, failing at once if PID exits.
wait_200() {
	local deadline=$(($(now_ms) + $3)) status
	while :; do
		proc_alive "$4" || return 1
		status=$(get_on "$1" "$2" | head -n 1 | tr -d '\r' || true)
		[[ $status == "HTTP/1."?" 200"* ]] && return 0
		(($(now_ms) < deadline)) || return 1
		sleep 0.1
	done
}

# fleet_stat PORT FIELD: a number of the fleet section of /v1/stats
# (indented JSON, "field": N), or nothing if it is not there yet.
fleet_stat() {
	{ get_on "$1" /v1/stats | tr -d '\r\n' | grep -o "\"fleet\": *{.*" |
		grep -o "\"$2\": *[0-9]*" | head -n 1 | grep -o '[0-9]*$'; } || true
}

# start_nats: a nats-server with JetStream on loopback, the one
# e2e/nats-server.sh builds (cached between runs); sets NATS_PID.
start_nats() {
	local bin
	bin=${GREYHOLD_NATS_SERVER:-$(bash "$ROOT/e2e/nats-server.sh")} || return 1
	"$bin" -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$TMP/nats" -m "$NATS_MON_PORT" \
		</dev/null >>"$TMP/nats-server.log" 2>&1 &
	NATS_PID=$!
	wait_200 "$NATS_MON_PORT" /healthz 30000 "$NATS_PID"
}

# start_fleet_node ID POLICY_PORT HTTP_PORT: greyhold joined to the fleet
# on the nats-server, with the fleet's secret; waits for /readyz.
start_fleet_node() {
	"$TMP/greyhold" serve \
		--data-dir "$TMP/fleet-$1" \
		--policy-listen "127.0.0.1:$2" --line-listen "" --http-listen "127.0.0.1:$3" \
		--nats "nats://127.0.0.1:$NATS_PORT" --node-id "$1" --secret-file "$TMP/fleet-secret" \
		--delay "${DELAY}s" --hostname "$GH_HOST" --log-decisions all \
		</dev/null >>"$TMP/fleet-$1.log" 2>&1 &
	local pid=$!
	FLEET_PIDS+=("$pid")
	wait_200 "$3" /readyz 30000 "$pid"
}

# ---------------------------------------------------------------------------
# Run.

main() {
	RUN_START_MS=$(now_ms)
	if ! [[ $DELAY =~ ^[0-9]+$ ]] || ((DELAY < 2 || DELAY > 30)); then
		say "E2E_DELAY must be whole seconds from 2 to 30, not '$DELAY'"
		exit 2
	fi
	TMP=$(mktemp -d /tmp/greyhold-e2e.XXXXXX)
	chmod 755 "$TMP"
	mkdir -p "$TMP/swaks"
	RUN_ID="$$-$(date +%s)"

	HAVE_V6=0
	if [[ ${E2E_IPV6:-1} != 0 ]] && grep -qi '^0\{31\}1 ' /proc/net/if_inet6 2>/dev/null; then
		HAVE_V6=1
	fi

	install_packages
	local t_setup
	t_setup=$(now_ms)

	say "building greyhold"
	(cd "$ROOT" && go build -o "$TMP/greyhold" ./cmd/greyhold)

	pick_port SMTP_PORT 2525 || fail "free loopback ports" "none found"
	pick_port SOCK_SMTP_PORT || fail "free loopback ports" "none found"
	pick_port POLICY_PORT || fail "free loopback ports" "none found"
	pick_port HTTP_PORT || fail "free loopback ports" "none found"
	local v
	for v in MX1_SMTP_PORT MX2_SMTP_PORT MX1_POLICY_PORT MX2_POLICY_PORT MX1_HTTP_PORT MX2_HTTP_PORT NATS_PORT NATS_MON_PORT; do
		pick_port "$v" || fail "free loopback ports" "none found"
	done
	GH_FLAGS=(--policy-listen "127.0.0.1:$POLICY_PORT" --line-listen "")

	start_greyhold || fail "greyhold starts (--delay ${DELAY}s, policy 127.0.0.1:$POLICY_PORT)" "not ready within 30s"
	setup_postfix || fail "private Postfix starts on 127.0.0.1:$SMTP_PORT" "see $TMP/postfix-start.log"
	local where="127.0.0.1:$SMTP_PORT"
	((HAVE_V6)) && where+=" and [::1]:$SMTP_PORT"
	say "Postfix $("$POSTCONF" -d -h mail_version) on $where, greyhold (delay ${DELAY}s) on 127.0.0.1:$POLICY_PORT, in $TMP"
	local v6_server=127.0.0.1
	((HAVE_V6)) && v6_server="[::1]"

	# tN is when step N's request had surely reached greyhold (the end of
	# its SMTP session): waits measured from there are never too short.
	local t_tests t1 t6 t7 t
	t_tests=$(now_ms)

	# 1. A new triplet is deferred with greyhold's text.
	local s="1 first attempt: 450 with greyhold's text"
	smtp "$s" 127.0.0.1 "$V4_CLIENT" "$V4_CLIENT_NAME" "$SENDER" "$RCPT" rcpt
	t1=$SMTP_END
	expect_defer "$s"
	((LEFT >= 1 && LEFT <= DELAY)) || fail "$s" "time left ${LEFT}s not in 1..${DELAY}s: $REPLY"
	pass "$s" "$REPLY"

	# 2. Retrying at once is deferred again; the clock is not reset.
	s="2 immediate retry: 450 again"
	smtp "$s" 127.0.0.1 "$V4_CLIENT" "$V4_CLIENT_NAME" "$SENDER" "$RCPT" rcpt
	expect_defer "$s"
	((LEFT <= DELAY)) || fail "$s" "time left ${LEFT}s above the delay: $REPLY"
	pass "$s" "$REPLY"

	# 3. After the delay the retry passes and the message carries X-Greylist.
	# Poll with real deliveries: each early one must be a clean 450, the
	# first 250 must be the delivery with the header.
	s="3 retry after the delay: 250, delivered with X-Greylist"
	local subject="e2e $RUN_ID step 3" tries=0 deadline=$((t1 + DELAY * 1000 + 15000))
	while :; do
		tries=$((tries + 1))
		smtp "$subject" 127.0.0.1 "$V4_CLIENT" "$V4_CLIENT_NAME" "$SENDER" "$RCPT" data
		t=$SMTP_START
		[[ $CODE == 250 ]] && break
		expect_defer "$s"
		(($(now_ms) < deadline)) || fail "$s" "still deferred $(secs $((t - t1))) after the first attempt: $REPLY"
		sleep 0.5
	done
	# At least this long passed between greyhold's first sight of the
	# triplet and the pass; greyhold counts whole seconds, so a pass may
	# come up to 1 s before the delay.
	local waited=$((t - t1))
	((waited >= (DELAY - 1) * 1000)) || fail "$s" "passed only $(secs "$waited") after the first attempt, delay is ${DELAY}s"
	[[ $DATA_REPLY == "250 "* ]] || fail "$s" "message not accepted after DATA: ${DATA_REPLY:-<none>}"
	local msg hdr
	msg=$(delivered "$subject") || fail "$s" "no delivered message with Subject: $subject in $TMP/mail/inbox/new"
	hdr=$(headers "$msg" | grep -i '^X-Greylist:' || true)
	local hre="^X-Greylist: delayed ([0-9]+) seconds by greyhold-[^ ]+ at ${GH_HOST//./\\.}; .+"
	[[ $hdr =~ $hre ]] || fail "$s" "delivered message $msg has no greyhold X-Greylist header; headers: $(headers "$msg" | tr '\n' '|')"
	((BASH_REMATCH[1] >= DELAY)) || fail "$s" "X-Greylist says delayed ${BASH_REMATCH[1]} s, delay is ${DELAY}s: $hdr"
	pass "$s" "at least $(secs "$waited") after the first, try $tries; $hdr"

	# 4. The known triplet passes at once, and without a second header.
	s="4 same triplet again: 250 at once, no second X-Greylist"
	subject="e2e $RUN_ID step 4"
	smtp "$subject" 127.0.0.1 "$V4_CLIENT" "$V4_CLIENT_NAME" "$SENDER" "$RCPT" data
	expect_code "$s" 250
	[[ $DATA_REPLY == "250 "* ]] || fail "$s" "message not accepted after DATA: ${DATA_REPLY:-<none>}"
	msg=$(delivered "$subject") || fail "$s" "no delivered message with Subject: $subject"
	if headers "$msg" | grep -qi '^X-Greylist:'; then
		fail "$s" "a known triplet's message carries X-Greylist again: $(headers "$msg" | grep -i '^X-Greylist:')"
	fi
	pass "$s" "$REPLY"

	# 5. Another host of the same /24 is the same client network.
	s="5 /24 neighbour $V4_NEIGHBOUR: 250"
	smtp "$s" 127.0.0.1 "$V4_NEIGHBOUR" "$V4_NEIGHBOUR_NAME" "$SENDER" "$RCPT" rcpt
	expect_code "$s" 250
	pass "$s" "$REPLY"

	# 6. A new sender from the passed client is a new triplet.
	s="6 new sender from the same client: 450"
	smtp "$s" 127.0.0.1 "$V4_CLIENT" "$V4_CLIENT_NAME" "$NEW_SENDER" "$RCPT" rcpt
	t6=$SMTP_END
	expect_defer "$s"
	pass "$s" "$REPLY"

	# 7. An IPv6 client (over [::1] when the host has IPv6).
	s="7 IPv6 client $V6_CLIENT: 450"
	smtp "$s" "$v6_server" "IPV6:$V6_CLIENT" "$V6_CLIENT_NAME" "$V6_SENDER" "$RCPT" rcpt
	t7=$SMTP_END
	expect_defer "$s"
	pass "$s" "$REPLY (via $v6_server:$SMTP_PORT)"

	# 8. Restart on the same data directory: what greyhold knew survives.
	# Q is a triplet made pending right before the restart; the triplets of
	# steps 6 and 7 went pending earlier and are not asked about again until
	# their delay is over.
	s="8 before restart: triplet Q from $Q_CLIENT: 450"
	smtp "$s" 127.0.0.1 "$Q_CLIENT" "$Q_CLIENT_NAME" "$Q_SENDER" "$RCPT" rcpt
	local tq_start=$SMTP_START tq=$SMTP_END
	expect_defer "$s"
	pass "$s" "$REPLY"

	s="8 SIGTERM: greyhold exits 0"
	t=$(now_ms)
	stop_greyhold || fail "$s" "$GH_EXIT"
	pass "$s" "in $(secs $(($(now_ms) - t)))"
	s="8 greyhold starts again on the same data dir"
	t=$(now_ms)
	start_greyhold || fail "$s" "not ready within 30s"
	pass "$s" "ready in $(secs $(($(now_ms) - t)))"

	# Q, asked at least 1 s after greyhold first saw it, is still pending
	# with less than the whole delay left: its first-seen time was kept (a
	# forgotten triplet would be new again, with the whole delay to wait).
	# Only when this run was so slow that Q's delay may already be over
	# (greyhold counts whole seconds) is a pass accepted instead.
	s="8 after restart: Q still pending, its clock kept: 450"
	sleep_until_ms $((tq + 1000 + CLOCK_SLACK_MS))
	smtp "$s" 127.0.0.1 "$Q_CLIENT" "$Q_CLIENT_NAME" "$Q_SENDER" "$RCPT" rcpt
	if [[ $CODE == 250 ]] && ((SMTP_END - tq_start > (DELAY - 1) * 1000)); then
		pass "$s" "(slow run: Q's delay may be over, $(secs $((SMTP_END - tq_start))) since it was asked) $REPLY"
	else
		expect_defer "$s"
		((LEFT < DELAY)) || fail "$s" "time left ${LEFT}s is the whole delay: Q was forgotten ($REPLY)"
		pass "$s" "$REPLY"
	fi

	s="8 after restart: known triplet 250 at once"
	smtp "$s" 127.0.0.1 "$V4_CLIENT" "$V4_CLIENT_NAME" "$SENDER" "$RCPT" rcpt
	expect_code "$s" 250
	pass "$s" "$REPLY"

	# The triplets of steps 6 and 7, first asked about after their delay
	# (counted from before the restart), pass at the first try; forgotten,
	# they would be new and deferred.
	s="8 after restart: step 6 triplet passes after its delay"
	sleep_until_ms $((t6 + DELAY * 1000 + CLOCK_SLACK_MS))
	subject="e2e $RUN_ID step 8"
	smtp "$subject" 127.0.0.1 "$V4_CLIENT" "$V4_CLIENT_NAME" "$NEW_SENDER" "$RCPT" data
	expect_code "$s" 250
	[[ $DATA_REPLY == "250 "* ]] || fail "$s" "message not accepted after DATA: ${DATA_REPLY:-<none>}"
	msg=$(delivered "$subject") || fail "$s" "no delivered message with Subject: $subject"
	hdr=$(headers "$msg" | grep -i '^X-Greylist:' || true)
	[[ $hdr =~ $hre ]] || fail "$s" "first pass without X-Greylist: $(headers "$msg" | tr '\n' '|')"
	pass "$s" "$hdr"
	s="8 after restart: IPv6 triplet passes after its delay"
	sleep_until_ms $((t7 + DELAY * 1000 + CLOCK_SLACK_MS))
	smtp "$s" "$v6_server" "IPV6:$V6_CLIENT" "$V6_CLIENT_NAME" "$V6_SENDER" "$RCPT" rcpt
	expect_code "$s" 250
	pass "$s" "$REPLY"
	s="8 after restart: Q passes after its delay"
	sleep_until_ms $((tq + DELAY * 1000 + CLOCK_SLACK_MS))
	smtp "$s" 127.0.0.1 "$Q_CLIENT" "$Q_CLIENT_NAME" "$Q_SENDER" "$RCPT" rcpt
	expect_code "$s" 250
	pass "$s" "$REPLY"

	# 8b. A crash: kill -9 right after a triplet went pending. No final
	# snapshot is written; the log alone brings the triplet back.
	s="8b before kill -9: triplet K from $K_CLIENT: 450"
	smtp "$s" 127.0.0.1 "$K_CLIENT" "$K_CLIENT_NAME" "$K_SENDER" "$RCPT" rcpt
	local tk_start=$SMTP_START tk=$SMTP_END
	expect_defer "$s"
	pass "$s" "$REPLY"
	s="8b kill -9, then greyhold starts again on the same data dir"
	kill -KILL "$GH_PID"
	wait "$GH_PID" 2>/dev/null || true
	GH_PID=""
	t=$(now_ms)
	start_greyhold || fail "$s" "not ready within 30s"
	pass "$s" "ready in $(secs $(($(now_ms) - t)))"
	s="8b after kill -9: K still pending, its clock kept: 450"
	sleep_until_ms $((tk + 1000 + CLOCK_SLACK_MS))
	smtp "$s" 127.0.0.1 "$K_CLIENT" "$K_CLIENT_NAME" "$K_SENDER" "$RCPT" rcpt
	if [[ $CODE == 250 ]] && ((SMTP_END - tk_start > (DELAY - 1) * 1000)); then
		pass "$s" "(slow run: K's delay may be over, $(secs $((SMTP_END - tk_start))) since it was asked) $REPLY"
	else
		expect_defer "$s"
		((LEFT < DELAY)) || fail "$s" "time left ${LEFT}s is the whole delay: K was forgotten ($REPLY)"
		pass "$s" "$REPLY"
	fi
	s="8b after kill -9: known triplet 250 at once"
	smtp "$s" 127.0.0.1 "$V4_CLIENT" "$V4_CLIENT_NAME" "$SENDER" "$RCPT" rcpt
	expect_code "$s" 250
	pass "$s" "$REPLY"
	s="8b after kill -9: K passes after its delay"
	sleep_until_ms $((tk + DELAY * 1000 + CLOCK_SLACK_MS))
	smtp "$s" 127.0.0.1 "$K_CLIENT" "$K_CLIENT_NAME" "$K_SENDER" "$RCPT" rcpt
	expect_code "$s" 250
	pass "$s" "$REPLY"

	# 11. Who the client is (--client-identity=name, a new data
	# directory's default), with the verified name posed by XCLIENT NAME=.
	# A pool retries from another /24 under a name of the same identity:
	# 250 on its first retry after the delay. A client with a dynamic name
	# retrying from another /24 is a new triplet: 450.
	s="11 pool $POOL_CLIENT ($POOL_CLIENT_NAME): 450"
	smtp "$s" 127.0.0.1 "$POOL_CLIENT" "$POOL_CLIENT_NAME" "$POOL_SENDER" "$RCPT" rcpt
	local tpool=$SMTP_END
	expect_defer "$s"
	pass "$s" "$REPLY"
	s="11 dynamic name $DYN_CLIENT ($DYN_CLIENT_NAME): 450"
	smtp "$s" 127.0.0.1 "$DYN_CLIENT" "$DYN_CLIENT_NAME" "$DYN_SENDER" "$RCPT" rcpt
	local tdyn=$SMTP_END
	expect_defer "$s"
	pass "$s" "$REPLY"
	s="11 pool retries from another /24 ($POOL_RETRY, $POOL_RETRY_NAME) after the delay: 250 at the first retry"
	sleep_until_ms $((tpool + DELAY * 1000 + CLOCK_SLACK_MS))
	smtp "$s" 127.0.0.1 "$POOL_RETRY" "$POOL_RETRY_NAME" "$POOL_SENDER" "$RCPT" rcpt
	expect_code "$s" 250
	logged "reason=passed .*identity=name:outbound.example.com client_name=$POOL_RETRY_NAME" ||
		fail "$s" "greyhold did not log the pass under identity=name:outbound.example.com"
	pass "$s" "$REPLY"
	s="11 dynamic name retries from another /24 ($DYN_RETRY, $DYN_RETRY_NAME) after the delay: 450"
	sleep_until_ms $((tdyn + DELAY * 1000 + CLOCK_SLACK_MS))
	smtp "$s" 127.0.0.1 "$DYN_RETRY" "$DYN_RETRY_NAME" "$DYN_SENDER" "$RCPT" rcpt
	expect_defer "$s"
	logged "reason=new .*identity=net:198.51.100.0/24 client_name=$DYN_RETRY_NAME" ||
		fail "$s" "greyhold did not log a new triplet under its network"
	pass "$s" "$REPLY"

	# 9. greyhold down: Postfix's own temporary failure, no mail lost.
	s="9 greyhold stopped: Postfix's own 451 4.3.5"
	stop_greyhold || fail "$s" "greyhold did not stop cleanly: $GH_EXIT"
	smtp "$s" 127.0.0.1 "$V4_CLIENT" "$V4_CLIENT_NAME" "$SENDER" "$RCPT" rcpt
	[[ $REPLY =~ ^451\ 4\.3\.5\ .*Server\ configuration\ problem$ ]] ||
		fail "$s" "want 451 4.3.5 ... Server configuration problem; got: ${REPLY:-<no RCPT reply>}"
	grep -q "problem talking to server 127.0.0.1:$POLICY_PORT" "$TMP/log/maillog" ||
		fail "$s" "Postfix did not log a problem talking to 127.0.0.1:$POLICY_PORT"
	pass "$s" "$REPLY"

	# 10. The README's unix socket recipe: greyhold as an unprivileged user
	# (nobody here), its socket in a directory of the queue directory that
	# is setgid postfix, so the socket is postfix's group and smtpd, which
	# runs as postfix, may connect; Postfix's private/ (0700, postfix's
	# own) would refuse greyhold the socket.
	s="10 unix socket: greyhold as nobody, socket group postfix"
	local sockdir=$TMP/spool/greyhold
	install -d -o nobody -g postfix -m 2750 "$sockdir"
	install -d -o nobody -g nogroup -m 0700 "$TMP/greyhold-sock-data"
	GH_RUN=(setpriv --reuid=nobody --regid=nogroup --clear-groups --)
	GH_DATA=$TMP/greyhold-sock-data
	GH_FLAGS=(--policy-listen "" --line-listen "" --policy-socket "$sockdir/policy")
	start_greyhold || fail "$s" "not ready within 30s"
	local perm
	perm=$(stat -c '%U:%G %a' "$sockdir/policy" 2>/dev/null || echo "no socket")
	[[ $perm == "nobody:postfix 660" ]] || fail "$s" "socket $sockdir/policy is $perm, want nobody:postfix 660"
	pass "$s" "$sockdir/policy $perm"
	s="10 unix socket: new triplet via check_policy_service unix: 450"
	smtp "$s" 127.0.0.1 "$V4_CLIENT" "$V4_CLIENT_NAME" "$SENDER" "$RCPT" rcpt "$SOCK_SMTP_PORT"
	local tsock=$SMTP_START
	expect_defer "$s"
	pass "$s" "$REPLY"
	s="10 unix socket: passes after the delay"
	sleep_until_ms $((tsock + DELAY * 1000 + CLOCK_SLACK_MS))
	smtp "$s" 127.0.0.1 "$V4_CLIENT" "$V4_CLIENT_NAME" "$SENDER" "$RCPT" rcpt "$SOCK_SMTP_PORT"
	expect_code "$s" 250
	pass "$s" "$REPLY"

	# 12. The fleet: MX 1 and MX 2, each asking its own greyhold node; the
	# nodes share their state through a nats-server. A first attempt
	# through MX 1 is deferred, and the retry through MX 2 after the delay
	# passes there, delivered with X-Greylist.
	s="12 fleet: nats-server and two greyhold nodes, one per MX listener"
	start_nats || fail "$s" "nats-server not healthy within 30s (see $TMP/nats-server.log)"
	(umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$TMP/fleet-secret")
	start_fleet_node mx1 "$MX1_POLICY_PORT" "$MX1_HTTP_PORT" || fail "$s" "node mx1 not ready within 30s"
	start_fleet_node mx2 "$MX2_POLICY_PORT" "$MX2_HTTP_PORT" || fail "$s" "node mx2 not ready within 30s"
	pass "$s" "nats 127.0.0.1:$NATS_PORT; MX 1 127.0.0.1:$MX1_SMTP_PORT asks mx1, MX 2 127.0.0.1:$MX2_SMTP_PORT asks mx2"
	s="12 fleet: first attempt through MX 1: 450"
	smtp "$s" 127.0.0.1 "$FLEET_CLIENT" "$FLEET_CLIENT_NAME" "$FLEET_SENDER" "$RCPT" rcpt "$MX1_SMTP_PORT"
	local tfleet=$SMTP_END
	expect_defer "$s"
	logged_in "$TMP/fleet-mx1.log" "reason=new .*sender=$FLEET_SENDER" || fail "$s" "mx1 did not log the defer"
	pass "$s" "$REPLY"
	s="12 fleet: mx2 applies what mx1 shipped"
	local pub applied deadline=$(($(now_ms) + 20000))
	while :; do
		pub=$(fleet_stat "$MX1_HTTP_PORT" published_sequence)
		applied=$(fleet_stat "$MX2_HTTP_PORT" applied_sequence)
		[[ -n $pub && -n $applied ]] && ((pub > 0 && applied >= pub)) && break
		(($(now_ms) < deadline)) || fail "$s" "mx1 published up to sequence ${pub:-?}, mx2 applied ${applied:-?} after 20s"
		sleep 0.1
	done
	pass "$s" "mx1's sequence $pub, mx2 applied $applied"
	s="12 fleet: retry through MX 2 after the delay: 250, delivered with X-Greylist"
	sleep_until_ms $((tfleet + DELAY * 1000 + CLOCK_SLACK_MS))
	subject="e2e $RUN_ID step 12"
	smtp "$subject" 127.0.0.1 "$FLEET_CLIENT" "$FLEET_CLIENT_NAME" "$FLEET_SENDER" "$RCPT" data "$MX2_SMTP_PORT"
	expect_code "$s" 250
	[[ $DATA_REPLY == "250 "* ]] || fail "$s" "message not accepted after DATA: ${DATA_REPLY:-<none>}"
	msg=$(delivered "$subject") || fail "$s" "no delivered message with Subject: $subject"
	hdr=$(headers "$msg" | grep -i '^X-Greylist:' || true)
	[[ $hdr =~ $hre ]] || fail "$s" "the first pass has no X-Greylist: $(headers "$msg" | tr '\n' '|')"
	logged_in "$TMP/fleet-mx2.log" "reason=passed .*sender=$FLEET_SENDER" || fail "$s" "mx2 did not log the pass"
	pass "$s" "$hdr"
	s="12 fleet: both nodes stop cleanly"
	stop_fleet || fail "$s" "a node did not exit 0 on SIGTERM"
	pass "$s"

	local t_end
	t_end=$(now_ms)
	say "setup $(secs $((t_tests - t_setup))), steps $(secs $((t_end - t_tests))), total $(secs $((t_end - RUN_START_MS)))"
	say "$PASSED passed, $FAILED failed"
}

main "$@"
