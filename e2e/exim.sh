#!/usr/bin/env bash
# e2e/exim.sh: greyhold behind a real Exim, through the ACL snippet that
# README.md documents for the line protocol, taken from the README as it
# stands (only its port changed), so the documentation is what is tested.
#
# Exim and Postfix cannot both be installed from Debian's packages (each is
# a mail-transport-agent), and the Postfix test needs Postfix. So Debian's
# exim4-daemon-light is downloaded with apt-get and unpacked into a cache
# directory, never installed: its libraries are installed, and the
# Debian-exim user the binary was built to run deliveries as is created, as
# the package's own scripts would. No Exim daemon runs: each step is one
# `exim -bs` session (SMTP on standard input, as inetd would run it) posing
# as the client with -oMa/-oMs, which only root may do; an accepted message
# is queued and delivered with `exim -M` into a Maildir in the temporary
# directory. Every step prints PASS or FAIL; the first failure prints the
# SMTP session and the Exim and greyhold logs and exits 1. greyhold is
# stopped by PID and the temporary directory removed on success, failure
# and interruption alike.
#
# Environment:
#   E2E_DELAY=3      greyhold's --delay in seconds (2 to 30)
#   E2E_KEEP=1       keep the temporary directory (its path is printed)
#   E2E_NO_INSTALL=1 never run apt-get; fail if Exim is not there
#   E2E_CACHE=DIR    where the unpacked Exim is kept between runs
#                    (default ~/.cache/greyhold-e2e)
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
E2E_NAME=e2e-exim
# shellcheck source=e2e/lib.sh
source "$ROOT/e2e/lib.sh"
trap 'on_error $? $LINENO "$BASH_COMMAND"' ERR

DELAY=${E2E_DELAY:-3}
KEEP=${E2E_KEEP:-0}
CACHE=${E2E_CACHE:-${XDG_CACHE_HOME:-${HOME:-/var/tmp}/.cache}/greyhold-e2e}
EXIM_PKG=exim4-daemon-light
EXIM_USER=Debian-exim

DOMAIN=greyhold.test
RCPT="bob@$DOMAIN"
GH_HOST="greyhold-e2e.$DOMAIN"
V4_CLIENT=192.0.2.10
V4_CLIENT_NAME=mail.example.org
SENDER=alice@example.org
B_CLIENT=198.51.100.20
V6_CLIENT=2001:db8::1
V6_CLIENT_NAME=mail6.example.org
V6_SENDER=dave@example.net

TMP=""
EXIM=""
CONF=""

dump_logs() {
	[[ -n $TMP && -d $TMP ]] || return 0
	local f
	for f in mainlog rejectlog paniclog; do
		[[ -s $TMP/exim-log/$f ]] || continue
		echo "---- Exim $f ($TMP/exim-log/$f, last 40 lines) ----"
		tail -n 40 "$TMP/exim-log/$f"
	done
	echo "---- greyhold log ($TMP/greyhold.log, last 40 lines) ----"
	tail -n 40 "$TMP/greyhold.log" 2>/dev/null || echo "(none)"
}

# stop_mta: e2e_cleanup's hook; no Exim daemon runs (each step is its own
# exim -bs).
stop_mta() { :; }
e2e_traps

# ---------------------------------------------------------------------------
# Exim: an installed exim4 if there is one, else Debian's package unpacked.

# exim_runs BIN: BIN starts (all its libraries found, its user known). It
# exits non-zero here for want of /etc/exim4's configuration, after the
# version line.
exim_runs() {
	[[ -x $1 ]] || return 1
	local out
	out=$("$1" -bV </dev/null 2>&1 || true)
	[[ $out == *$'\n'"Exim version "* || $out == "Exim version "* ]]
}

ensure_exim_user() {
	id "$EXIM_USER" >/dev/null 2>&1 && return 0
	# What exim4-base's postinst does; the name has a capital, which
	# adduser refuses without --allow-bad-names.
	adduser --system --group --home /var/spool/exim4 --no-create-home \
		--quiet --allow-bad-names "$EXIM_USER" >/dev/null 2>&1 ||
		useradd --system --user-group --no-create-home --home-dir /var/spool/exim4 \
			--shell /usr/sbin/nologin "$EXIM_USER"
}

find_exim() {
	local f
	if exim_runs /usr/sbin/exim4; then
		EXIM=/usr/sbin/exim4
		return 0
	fi
	for f in "$CACHE"/exim4-*/usr/sbin/exim4; do
		if exim_runs "$f"; then
			EXIM=$f
			return 0
		fi
	done
	return 1
}

# install_exim unpacks Debian's exim4-daemon-light under $CACHE and
# installs the libraries it needs (its Depends less exim4-base and
# debconf, which only the package's configuration uses).
install_exim() {
	if ((EUID != 0)); then
		say "Exim needs root here: it poses as other clients with -oMa and delivers as $EXIM_USER"
		return 1
	fi
	ensure_exim_user
	find_exim && return 0
	if [[ ${E2E_NO_INSTALL:-0} == 1 ]]; then
		say "Exim is missing and E2E_NO_INSTALL=1"
		return 1
	fi
	local t0 deb ver deps=() d
	t0=$(now_ms)
	say "fetching $EXIM_PKG from Debian's packages (unpacked under $CACHE, not installed)"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q </dev/null >"$TMP/apt.log" 2>&1 ||
		{ cat "$TMP/apt.log"; return 1; }
	(cd "$TMP" && apt-get download -q "$EXIM_PKG" </dev/null >>"$TMP/apt.log" 2>&1) ||
		{ cat "$TMP/apt.log"; return 1; }
	deb=$(ls "$TMP/${EXIM_PKG}"_*.deb)
	ver=$(dpkg-deb -f "$deb" Version)
	# "a (>= 1), b | c" -> a b: the first choice of each, no versions.
	while read -r d; do
		[[ -z $d || $d == exim4-base || $d == debconf* ]] && continue
		dpkg -s "$d" >/dev/null 2>&1 || deps+=("$d")
	done < <(dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed -E 's/\|.*//; s/\(.*\)//; s/^ +//; s/ +$//')
	if ((${#deps[@]} > 0)); then
		apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=300 \
			"${deps[@]}" </dev/null >>"$TMP/apt.log" 2>&1 ||
			{ cat "$TMP/apt.log"; return 1; }
	fi
	mkdir -p "$CACHE"
	rm -rf "$CACHE/exim4-$ver.part"
	dpkg-deb -x "$deb" "$CACHE/exim4-$ver.part"
	rm -rf "$CACHE/exim4-$ver"
	mv "$CACHE/exim4-$ver.part" "$CACHE/exim4-$ver"
	if ! exim_runs "$CACHE/exim4-$ver/usr/sbin/exim4"; then
		"$CACHE/exim4-$ver/usr/sbin/exim4" -bV </dev/null || true
		return 1
	fi
	EXIM=$CACHE/exim4-$ver/usr/sbin/exim4
	say "unpacked Exim $ver${deps:+, installed ${deps[*]},} in $(secs $(($(now_ms) - t0)))"
}

# snippet: the Exim ACL lines of README.md's "Wiring it into Exim".
snippet() {
	awk '/^## Wiring it into Exim/ {f = 1; next}
		f && /^## / {exit}
		f && /^```/ {n++; if (n == 2) exit; next}
		f && n == 1' "$ROOT/README.md"
}

setup_exim() {
	local acl
	acl=$(snippet)
	[[ $acl == *'inet:127.0.0.1:10025'* ]] ||
		fail "README's Exim snippet" "no \${readsocket{inet:127.0.0.1:10025}...} in it: $acl"
	acl=${acl//inet:127.0.0.1:10025/inet:127.0.0.1:$LINE_PORT}
	mkdir -p "$TMP/exim-spool" "$TMP/exim-log" "$TMP/mail"
	# Exim writes its spool and logs as its user once a message is in.
	chown "$EXIM_USER:" "$TMP/exim-spool" "$TMP/exim-log" "$TMP/mail"
	CONF=$TMP/exim.conf
	cat >"$CONF" <<-EOF
		# Private Exim configuration for greyhold's end-to-end test ($TMP).
		primary_hostname = mx.$DOMAIN
		domainlist local_domains = $DOMAIN
		acl_smtp_rcpt = acl_check_rcpt
		spool_directory = $TMP/exim-spool
		log_file_path = $TMP/exim-log/%slog
		keep_environment =
		# No DNS or ident lookups: the clients are made up.
		host_lookup =
		rfc1413_hosts =

		begin acl

		acl_check_rcpt:
		  require domains = +local_domains
		  # ---- README.md's snippet ----
		$acl
		  # ---- end of the snippet ----
		  accept

		begin routers

		local:
		  driver = accept
		  domains = +local_domains
		  transport = maildir

		begin transports

		maildir:
		  driver = appendfile
		  directory = $TMP/mail
		  maildir_format
		  user = $EXIM_USER
	EOF
	"$EXIM" -C "$CONF" -bV </dev/null >"$TMP/exim-bV.txt" 2>&1 ||
		{ cat "$TMP/exim-bV.txt"; fail "Exim reads the configuration" "see above"; }
}

# ---------------------------------------------------------------------------
# SMTP, one exim -bs session a step.
#
# smtp LABEL CLIENT_ADDR CLIENT_NAME FROM TO MODE
#   CLIENT_ADDR "" for a local submission, CLIENT_NAME "" for a client
#   without reverse DNS; MODE is rcpt (quit after RCPT TO) or data (send a
#   message with Subject: LABEL and deliver it). Sets REPLY (the answer to
#   RCPT TO), CODE (its first three characters) and MSG (the delivered
#   message's file, data mode), and SMTP_START and SMTP_END (ms).
SMTP_N=0
SMTP_START=0
SMTP_END=0
REPLY=""
CODE=""
MSG=""
smtp() {
	local label=$1 addr=$2 name=$3 from=$4 to=$5 mode=$6
	SMTP_N=$((SMTP_N + 1))
	LAST_TRANSCRIPT=$(printf '%s/smtp/%03d.txt' "$TMP" "$SMTP_N")
	local args=(-C "$CONF" -bs -odq) in
	[[ -n $addr ]] && args+=(-oMa "$addr")
	[[ -n $name ]] && args+=(-oMs "$name")
	in="EHLO ${name:-client.invalid}"$'\r\n'"MAIL FROM:<$from>"$'\r\n'"RCPT TO:<$to>"$'\r\n'
	if [[ $mode == data ]]; then
		in+="DATA"$'\r\n'"Subject: $label"$'\r\n\r\n'"greyhold e2e: $label"$'\r\n.\r\n'
	fi
	in+="QUIT"$'\r\n'
	local rc=0
	SMTP_START=$(now_ms)
	timeout 30 "$EXIM" "${args[@]}" <<<"$in" >"$LAST_TRANSCRIPT.out" 2>&1 || rc=$?
	SMTP_END=$(now_ms)
	{
		echo "exim ${args[*]}"
		printf '%s' "$in" | sed 's/^/-> /'
		sed 's/^/<- /' "$LAST_TRANSCRIPT.out"
		echo "(exim exit status $rc)"
	} >"$LAST_TRANSCRIPT"
	# The replies in order, the last line of each: greeting, EHLO, MAIL,
	# RCPT, then DATA's 354 and the message's 250.
	local replies=()
	mapfile -t replies < <(tr -d '\r' <"$LAST_TRANSCRIPT.out" | grep -E '^[0-9]{3}( |$)')
	REPLY=${replies[3]:-}
	CODE=${REPLY:0:3}
	MSG=""
	if [[ $mode == data && $CODE == 250 ]]; then
		local id
		id=$(sed -nE 's/^250 OK id=([A-Za-z0-9-]+).*/\1/p' <<<"${replies[5]:-}")
		[[ -n $id ]] || fail "$label" "message not accepted: ${replies[5]:-<no reply after DATA>}"
		timeout 30 "$EXIM" -C "$CONF" -M "$id" </dev/null >>"$LAST_TRANSCRIPT" 2>&1 ||
			fail "$label" "exim -M $id failed"
		MSG=$(grep -l -F -x "Subject: $label" "$TMP"/mail/new/* 2>/dev/null | head -n 1 || true)
		[[ -n $MSG ]] || fail "$label" "message $id accepted but not delivered to $TMP/mail"
	fi
}

# Exim's rendering of greyhold's default defer text, for expect_defer
# (e2e/lib.sh).
DEFER_RE='^451 4\.7\.1 Greylisted, please retry in (([0-9]+)m)?([0-9]+)s$'
DEFER_WANT="451 4.7.1 Greylisted, please retry in <t>"

# bad_requests: greyhold's count of requests it answered with an error.
bad_requests() {
	http_get /metrics | tr -d '\r' | awk '$1 == "greyhold_errors_total{kind=\"bad_request\"}" {print $2; found = 1}
		END {if (!found) print "missing"}'
}

# logged TEXT: greyhold's log has a line with TEXT within 2 s (the log is
# written in batches, every 100 ms).
logged() {
	local deadline=$(($(now_ms) + 2000))
	until grep -q -F -- "$1" "$TMP/greyhold.log"; do
		(($(now_ms) < deadline)) || return 1
		sleep 0.1
	done
}

# ---------------------------------------------------------------------------
# Run.

main() {
	local t0 s t1 tries hdr
	t0=$(now_ms)
	if ! [[ $DELAY =~ ^[0-9]+$ ]] || ((DELAY < 2 || DELAY > 30)); then
		say "E2E_DELAY must be whole seconds from 2 to 30, not '$DELAY'"
		exit 2
	fi
	TMP=$(mktemp -d /tmp/greyhold-e2e-exim.XXXXXX)
	chmod 755 "$TMP"
	mkdir -p "$TMP/smtp"

	install_exim || fail "Exim available" "see above"
	say "building greyhold"
	(cd "$ROOT" && go build -o "$TMP/greyhold" ./cmd/greyhold) ||
		fail "greyhold builds" "go build failed"
	pick_port LINE_PORT || fail "free loopback ports" "none found"
	pick_port HTTP_PORT || fail "free loopback ports" "none found"
	GH_FLAGS=(--line-listen "127.0.0.1:$LINE_PORT" --policy-listen "")
	start_greyhold || fail "greyhold starts (--delay ${DELAY}s, line 127.0.0.1:$LINE_PORT)" "not ready within 30s"
	setup_exim
	say "$(grep -m 1 '^Exim version' "$TMP/exim-bV.txt"), greyhold (delay ${DELAY}s) on 127.0.0.1:$LINE_PORT, in $TMP"

	# 1-2. A new triplet is deferred with greyhold's text, and again at once.
	s="1 first attempt: 451 with greyhold's text"
	smtp "$s" "$V4_CLIENT" "$V4_CLIENT_NAME" "$SENDER" "$RCPT" rcpt
	t1=$SMTP_START
	expect_defer "$s"
	((LEFT >= DELAY - 1 && LEFT <= DELAY)) || fail "$s" "time left ${LEFT}s, want about ${DELAY}s"
	pass "$s" "$REPLY"
	s="2 immediate retry: 451 again"
	smtp "$s" "$V4_CLIENT" "$V4_CLIENT_NAME" "$SENDER" "$RCPT" rcpt
	expect_defer "$s"
	((LEFT <= DELAY)) || fail "$s" "time left ${LEFT}s grew: the clock was reset"
	pass "$s" "$REPLY"

	# 3. After the delay the message is accepted and carries the header
	# greyhold asked for with PREPEND (the snippet's add_header).
	s="3 retry after the delay: 250, delivered with X-Greylist"
	sleep_until_ms $((t1 + DELAY * 1000 + CLOCK_SLACK_MS))
	tries=0
	while :; do
		tries=$((tries + 1))
		smtp "$s" "$V4_CLIENT" "$V4_CLIENT_NAME" "$SENDER" "$RCPT" data
		[[ $CODE == 250 ]] && break
		expect_defer "$s"
		((tries < 5)) || fail "$s" "still deferred after $tries tries: $REPLY"
		sleep 1
	done
	((SMTP_END - t1 >= (DELAY - 1) * 1000)) ||
		fail "$s" "passed $(secs $((SMTP_END - t1))) after the first attempt, before the delay"
	hdr=$(headers "$MSG" | grep -E '^X-Greylist: ' || true)
	[[ $hdr =~ ^X-Greylist:\ delayed\ [0-9]+\ seconds\ by\ greyhold-.+\ at\ $GH_HOST\;\ .+ ]] ||
		fail "$s" "want X-Greylist: delayed N seconds by greyhold-... at $GH_HOST; ...; got: ${hdr:-<none>}"
	pass "$s" "$hdr"

	s="4 same triplet again: 250 at once, no second X-Greylist"
	smtp "$s" "$V4_CLIENT" "$V4_CLIENT_NAME" "$SENDER" "$RCPT" data
	expect_code "$s" 250
	if headers "$MSG" | grep -q '^X-Greylist: '; then
		fail "$s" "a known triplet's message got an X-Greylist header"
	fi
	pass "$s" "$REPLY"

	# 5. A bounce (<>) from a client without reverse DNS: the line ends in
	# "<> <rcpt> " with an empty name, which greyhold reads as a request.
	s="5 bounce <> from a client without reverse DNS: 451"
	smtp "$s" "$B_CLIENT" "" "" "$RCPT" rcpt
	expect_defer "$s"
	logged "client_address=$B_CLIENT sender=\"\" " ||
		fail "$s" "greyhold's log has no decision for $B_CLIENT with the empty sender"
	pass "$s" "$REPLY"

	s="6 IPv6 client $V6_CLIENT: 451"
	smtp "$s" "$V6_CLIENT" "$V6_CLIENT_NAME" "$V6_SENDER" "$RCPT" rcpt
	expect_defer "$s"
	pass "$s" "$REPLY"

	# 7. No client address (a local submission): greyhold answers ERROR
	# and the snippet lets the mail through, so local mail is never
	# greylisted.
	s="7 local submission, no client address: 250"
	local bad0 bad1
	bad0=$(bad_requests)
	smtp "$s" "" "" "root@mx.$DOMAIN" "$RCPT" rcpt
	expect_code "$s" 250
	bad1=$(bad_requests)
	((bad1 == bad0 + 1)) ||
		fail "$s" "greyhold_errors_total{kind=\"bad_request\"} went from $bad0 to $bad1, want one more (an ERROR reply)"
	pass "$s" "$REPLY; greyhold answered ERROR"

	# 8. greyhold down: the snippet's fail string (PASS) accepts the mail.
	s="8 greyhold stopped: Exim accepts (the snippet fails open)"
	stop_greyhold || fail "$s" "greyhold did not stop cleanly: $GH_EXIT"
	smtp "$s" 192.0.2.200 mail.example.com carol@example.com "$RCPT" rcpt
	expect_code "$s" 250
	pass "$s" "$REPLY"

	say "total $(secs $(($(now_ms) - t0)))"
	say "$PASSED passed, $FAILED failed"
}

main "$@"
