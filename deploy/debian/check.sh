#!/usr/bin/env bash
# deploy/debian/check.sh (make deb-check, part of make test): builds the
# packages (deploy/debian/build.sh) and holds them to what a postmaster
# expects of a Debian package, on this machine, as root:
#
#   1. the version mapping from git describe sorts as the builds do;
#   2. each package (amd64, arm64) holds the right files, for the right
#      architecture, /etc/greyhold/greyhold.env as a conffile, and passes
#      lintian (every tag, info and pedantic ones included, fixed or
#      explained in deploy/debian/lintian-overrides);
#   3. this machine's package installs with dpkg -i: the system user, the
#      state directory, the unit enabled, the man page; and with no
#      systemd as PID 1, the packaged binary, started as the unit would
#      start it (its User, Environment, EnvironmentFile, WorkingDirectory,
#      UMask and ExecStart, read from the installed unit; only the
#      listeners moved to free loopback ports), answers a policy request
#      and stops cleanly, its state owned by its user;
#   4. a reinstall keeps a changed conffile, without asking;
#   5. dpkg -r removes the program and keeps the state and the settings;
#      dpkg -P then removes both.
#
# DEB_CHECK_DEBS=DIR checks the packages in DIR instead of building them
# (on a machine without Go, or packages built elsewhere). Installs lintian
# and adduser with apt-get when they are missing. A greyhold package
# already installed stops the check (under CI=true it is purged first).
# One check at a time per machine: a lock file serialises concurrent runs.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/deploy/debian
NAME="deb-check"
# shellcheck source=deploy/lib.sh
source "$ROOT/deploy/lib.sh"
# shellcheck source=deploy/debian/version.sh
source "$HERE/version.sh"
# pick_port, wait_gone, now_ms: the end-to-end tests' helpers. They print
# with E2E_NAME.
E2E_NAME=$NAME
# shellcheck source=e2e/lib.sh
source "$ROOT/e2e/lib.sh"

PASSED=0
TMP=""
GH_PID=""
INSTALLED=0

pass() {
	PASSED=$((PASSED + 1))
	say "ok: $*"
}
fail() {
	say "FAIL: $*" >&2
	say "$PASSED passed, 1 failed"
	exit 1
}
cleanup() {
	local rc=$?
	trap - EXIT
	set +e
	if [[ -n $GH_PID ]]; then
		kill -KILL "$GH_PID" 2>/dev/null
		wait "$GH_PID" 2>/dev/null
	fi
	if ((rc != 0)) && [[ -f $TMP/greyhold.log ]]; then
		echo "---- greyhold's log ----"
		tail -n 30 "$TMP/greyhold.log"
	fi
	((INSTALLED)) && dpkg_ -P greyhold >/dev/null 2>&1
	[[ -n $TMP ]] && rm -rf "$TMP"
	exit "$rc"
}
trap cleanup EXIT

# dpkg_ runs dpkg, waiting up to 5 minutes for a lock that an apt or dpkg
# run elsewhere on the machine holds; nothing is read from stdin.
dpkg_() {
	local deadline=$(($(now_ms) + 300000)) out rc
	while :; do
		rc=0
		out=$(dpkg "$@" </dev/null 2>&1) || rc=$?
		if ((rc != 0)) && grep -q 'lock' <<<"$out" && (($(now_ms) < deadline)); then
			sleep 1
			continue
		fi
		printf '%s\n' "$out"
		return "$rc"
	done
}

check_versions() {
	local d count want got prev=""
	# git describe, commits, Debian version; each sorts after the one before.
	while read -r d count want; do
		got=$(debian_version "$d" "$count") || fail "version of $d: no mapping"
		[[ $got == "$want" ]] || fail "version of $d: $got, want $want"
		if [[ -n $prev ]]; then
			dpkg --compare-versions "$prev" lt "$got" || fail "version $prev does not sort before $got"
		fi
		prev=$got
	done <<-EOF
		abc1234 40 0.0.0~git40.gabc1234
		def5678 41 0.0.0~git41.gdef5678
		v1.0.0-rc1 50 1.0.0~rc1
		v1.0.0-rc1-3-g1234abc 53 1.0.0~rc1+3.g1234abc
		v1.0.0 60 1.0.0
		v1.0.0-2-g0a1b2c3 62 1.0.0+2.g0a1b2c3
		v1.0.1 70 1.0.1
		v1.10.0 90 1.10.0
	EOF
	# A build from a changed tree sorts after the commit's own.
	while read -r d count want; do
		got=$(debian_version "$d" "$count") || fail "version of $d: no mapping"
		[[ $got == "$want" ]] || fail "version of $d: $got, want $want"
		dpkg --compare-versions "$(debian_version "${d%-dirty}" "$count")" lt "$got" || fail "$got does not sort after its clean build"
	done <<-EOF
		def5678-dirty 41 0.0.0~git41.gdef5678+dirty
		v1.0.0-dirty 60 1.0.0+dirty
		v1.0.0-2-g0a1b2c3-dirty 62 1.0.0+2.g0a1b2c3.dirty
	EOF
	debian_version "release-2" 1 >/dev/null 2>&1 && fail "a tag that is no version was mapped"
	pass "git describe maps to Debian versions that sort as the builds do"
}

# elf_machine FILE: the ELF e_machine field (62 x86-64, 183 AArch64).
elf_machine() { od -An -t u2 -j 18 -N 2 "$1" | tr -d ' '; }

check_contents() {
	local deb=$1 arch=$2 x=$TMP/x-$2 want
	rm -rf "$x"
	dpkg-deb -x "$deb" "$x"
	dpkg-deb -e "$deb" "$x/DEBIAN"
	for f in usr/bin/greyhold lib/systemd/system/greyhold.service etc/greyhold/greyhold.env \
		usr/share/man/man8/greyhold.8.gz usr/share/doc/greyhold/copyright usr/share/doc/greyhold/changelog.gz \
		usr/share/doc/greyhold/examples/greylist-suspicious.conf \
		usr/share/greyhold/grafana/greyhold.json usr/share/greyhold/prometheus/greyhold-alerts.yml; do
		[[ -f $x/$f ]] || fail "$deb has no /$f"
	done
	[[ $(dpkg-deb -f "$deb" Architecture) == "$arch" ]] || fail "$deb: Architecture is not $arch"
	case $arch in amd64) want=62 ;; arm64) want=183 ;; esac
	[[ $(elf_machine "$x/usr/bin/greyhold") == "$want" ]] || fail "$deb: /usr/bin/greyhold is not an $arch binary"
	[[ $(cat "$x/DEBIAN/conffiles") == /etc/greyhold/greyhold.env ]] || fail "$deb: conffiles is not /etc/greyhold/greyhold.env"
	grep -qx 'ExecStart=/usr/bin/greyhold serve' "$x/lib/systemd/system/greyhold.service" || fail "$deb: the unit's ExecStart is not /usr/bin/greyhold serve"
	cmp -s "$x/etc/greyhold/greyhold.env" "$HERE/greyhold.env" || fail "$deb: greyhold.env differs from deploy/debian/greyhold.env"
	# Every setting the file shows is one greyhold serve has.
	local v
	zcat "$x/usr/share/man/man8/greyhold.8.gz" >"$x/greyhold.8"
	for v in $(sed -En 's/^#?(GREYHOLD_[A-Z0-9_]+)=.*/\1/p' "$x/etc/greyhold/greyhold.env" | sort -u); do
		grep -qF "Environment: \\fB$v\\fR." "$x/greyhold.8" ||
			fail "greyhold.env sets $v, which is no flag's variable (man greyhold lists them)"
	done
	pass "$arch: files, architecture, conffile and unit of $(basename "$deb")"
}

check_lintian() {
	local deb=$1 out
	out=$(lintian --pedantic --display-info --display-experimental "$deb" 2>&1 | grep -v '^running with root privileges' || true)
	[[ -z $out ]] || fail "lintian on $(basename "$deb") (fix it, or explain it in deploy/debian/lintian-overrides):
$out"
	pass "lintian --pedantic: no tag on $(basename "$deb") but the $(grep -c '^greyhold:' "$HERE/lintian-overrides") explained in lintian-overrides"
}

# unit_value KEY: the last KEY= line of the installed unit.
unit_value() { grep "^$1=" /lib/systemd/system/greyhold.service | tail -n 1 | cut -d= -f2-; }

# run_packaged: starts /usr/bin/greyhold as the installed unit would, with
# the listeners on free loopback ports; sets GH_PID, POLICY, HTTP.
run_packaged() {
	local user group envs=() line k v exec_start wd umask_
	user=$(unit_value User)
	group=$(unit_value Group)
	wd=$(unit_value WorkingDirectory)
	umask_=$(unit_value UMask)
	exec_start=$(unit_value ExecStart)
	while IFS= read -r line; do envs+=("${line#Environment=}"); done < <(grep '^Environment=' /lib/systemd/system/greyhold.service)
	local ef
	ef=$(unit_value EnvironmentFile)
	ef=${ef#-}
	[[ -f $ef ]] || fail "the unit's EnvironmentFile $ef is not installed"
	while IFS= read -r line || [[ -n $line ]]; do
		[[ $line =~ ^[[:space:]]*(#|$) ]] && continue
		k=${line%%=*}
		v=${line#*=}
		envs+=("$k=$v")
	done <"$ef"
	pick_port POLICY || fail "no free port"
	pick_port LINE || fail "no free port"
	pick_port HTTP || fail "no free port"
	envs+=("GREYHOLD_POLICY_LISTEN=127.0.0.1:$POLICY" "GREYHOLD_LINE_LISTEN=127.0.0.1:$LINE" "GREYHOLD_HTTP_LISTEN=127.0.0.1:$HTTP")
	local cmd
	read -r -a cmd <<<"$exec_start"
	(
		cd "$wd"
		umask "$umask_"
		exec env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "${envs[@]}" \
			setpriv --reuid="$user" --regid="$group" --init-groups --inh-caps=-all --no-new-privs -- "${cmd[@]}"
	) </dev/null >"$TMP/greyhold.log" 2>&1 &
	GH_PID=$!
	local deadline=$(($(now_ms) + 30000)) status
	while :; do
		status=$(HTTP_PORT=$HTTP http_get /readyz | head -n 1 || true)
		[[ $status == "HTTP/1."?" 200"* ]] && break
		proc_alive "$GH_PID" || fail "the packaged greyhold exited at start"
		(($(now_ms) < deadline)) || fail "the packaged greyhold not ready within 30 s"
		sleep 0.1
	done
}

check_install() {
	local deb=$1 out
	local st
	st=$(dpkg-query -W -f='${Status}' greyhold 2>/dev/null || true)
	if [[ $st == *installed* || $st == *config-files* ]]; then
		[[ ${CI:-} == true ]] || die "a greyhold package is installed on this machine: dpkg -P greyhold first (this check installs, removes and purges its own)"
		say "purging the greyhold package a previous run left (CI=true)"
		dpkg_ -P greyhold >/dev/null || fail "dpkg -P of the leftover package failed"
	fi
	# A purge leaves the user (as Debian's packages do): a user greyhold
	# without a data directory is an earlier run's, and goes, so that this
	# run sees postinst make it.
	if getent passwd greyhold >/dev/null && [[ ! -e /var/lib/greyhold ]]; then
		userdel greyhold || fail "userdel greyhold (left by an earlier run) failed"
		! getent group greyhold >/dev/null || groupdel greyhold || fail "groupdel greyhold failed"
	fi
	getent passwd greyhold >/dev/null && say "the user greyhold exists already (with /var/lib/greyhold): postinst's making it is not checked"
	INSTALLED=1 # from here on, the EXIT trap purges it, whatever state it is in
	out=$(dpkg_ -i "$deb") || fail "dpkg -i $deb: $out"
	local pw
	pw=$(getent passwd greyhold) || fail "dpkg -i made no user greyhold"
	IFS=: read -r _ _ uid _ _ home shell <<<"$pw"
	((uid < 1000)) || fail "greyhold is not a system user (uid $uid)"
	[[ $home == /var/lib/greyhold && $shell == */nologin ]] || fail "user greyhold: home $home, shell $shell"
	getent group greyhold >/dev/null || fail "no group greyhold"
	[[ $(stat -c '%U:%G %a' /var/lib/greyhold) == "greyhold:greyhold 700" ]] ||
		fail "/var/lib/greyhold is $(stat -c '%U:%G %a' /var/lib/greyhold), want greyhold:greyhold 700"
	[[ -x /usr/bin/greyhold ]] || fail "no /usr/bin/greyhold"
	[[ $(dpkg-query -W -f='${Conffiles}\n' greyhold) == *" /etc/greyhold/greyhold.env "* ]] || fail "dpkg does not list greyhold.env as a conffile"
	[[ -L /etc/systemd/system/multi-user.target.wants/greyhold.service ]] || fail "postinst did not enable greyhold.service"
	[[ $(zcat /usr/share/man/man8/greyhold.8.gz | grep -c '^\.TH GREYHOLD 8') == 1 ]] || fail "no man page in /usr/share/man/man8"
	if command -v systemd-analyze >/dev/null; then
		out=$(systemd-analyze verify /lib/systemd/system/greyhold.service 2>&1) && [[ -z $out ]] ||
			fail "systemd-analyze verify on the installed unit: $out"
	fi
	pass "dpkg -i: user and group greyhold, /var/lib/greyhold 0700, the unit enabled, man greyhold, greyhold.env a conffile"

	run_packaged
	local rc=0
	out=$(/usr/bin/greyhold check --server "127.0.0.1:$POLICY" --client 192.0.2.10 --sender alice@example.org --recipient bob@example.net) || rc=$?
	((rc == 75)) && [[ $out == DEFER_IF_PERMIT* ]] || fail "policy request to the packaged greyhold: exit $rc, $out"
	out=$(/usr/bin/greyhold stats --http "127.0.0.1:$HTTP") || fail "greyhold stats: $out"
	kill -TERM "$GH_PID"
	wait_gone "$GH_PID" 30000 || fail "the packaged greyhold still runs 30 s after SIGTERM"
	rc=0
	wait "$GH_PID" || rc=$?
	GH_PID=""
	((rc == 0)) && grep -q 'stopped cleanly' "$TMP/greyhold.log" || fail "the packaged greyhold exited $rc without a clean stop"
	[[ -f /var/lib/greyhold/secret ]] || fail "no secret in /var/lib/greyhold"
	out=$(find /var/lib/greyhold ! -user greyhold)
	[[ -z $out ]] || fail "files in /var/lib/greyhold not greyhold's: $out"
	pass "the packaged greyhold, as the unit runs it (user $(unit_value User), greyhold.env), deferred a new triplet (exit 75) and stopped cleanly"

	echo "GREYHOLD_DELAY=10m" >>/etc/greyhold/greyhold.env
	out=$(dpkg_ -i "$deb") || fail "dpkg -i again: $out"
	grep -qx 'GREYHOLD_DELAY=10m' /etc/greyhold/greyhold.env || fail "a reinstall lost the change to greyhold.env"
	pass "a reinstall keeps a changed greyhold.env without asking"
}

check_remove() {
	local out
	out=$(dpkg_ -r greyhold) || fail "dpkg -r: $out"
	[[ ! -e /usr/bin/greyhold && ! -e /lib/systemd/system/greyhold.service && ! -e /usr/share/man/man8/greyhold.8.gz ]] ||
		fail "dpkg -r left the program, the unit or the man page"
	[[ -f /var/lib/greyhold/secret ]] || fail "dpkg -r removed the state in /var/lib/greyhold"
	grep -qx 'GREYHOLD_DELAY=10m' /etc/greyhold/greyhold.env || fail "dpkg -r removed the settings"
	[[ $(dpkg-query -W -f='${db:Status-Abbrev}' greyhold) == "rc " ]] || fail "after dpkg -r the package is not in state rc"
	pass "dpkg -r: the program gone, the state and the settings kept"

	out=$(dpkg_ -P greyhold) || fail "dpkg -P: $out"
	INSTALLED=0
	[[ ! -e /var/lib/greyhold && ! -e /etc/greyhold ]] || fail "dpkg -P left /var/lib/greyhold or /etc/greyhold"
	[[ ! -e /etc/systemd/system/multi-user.target.wants/greyhold.service ]] || fail "dpkg -P left the unit enabled"
	! dpkg-query -W greyhold >/dev/null 2>&1 || fail "dpkg still knows greyhold after a purge"
	pass "dpkg -P: the state, the settings and the unit's links gone (the user greyhold stays, as Debian's packages leave theirs)"
}

main() {
	((EUID == 0)) || die "needs root: it installs and removes the package"
	TMP=$(mktemp -d)
	mkdir -p /run/lock
	exec 9>/run/lock/greyhold-deb-check.lock
	flock -w 600 9 || die "another deb-check has held /run/lock/greyhold-deb-check.lock for 10 minutes"
	need lintian:lintian adduser:adduser
	check_versions
	local dist=${DEB_CHECK_DEBS:-$TMP/dist}
	[[ -n ${DEB_CHECK_DEBS:-} ]] || DEB_OUT=$dist bash "$HERE/build.sh" amd64 arm64
	local host deb
	host=$(dpkg --print-architecture)
	for deb in "$dist"/greyhold_*.deb; do
		[[ -f $deb ]] || fail "no greyhold_*.deb in $dist"
		local arch=${deb##*_}
		arch=${arch%.deb}
		check_contents "$deb" "$arch"
		check_lintian "$deb"
	done
	local mine
	mine=$(ls "$dist"/greyhold_*_"$host".deb 2>/dev/null) || fail "no package for this machine's architecture ($host)"
	check_install "$mine"
	check_remove
	say "$PASSED passed, 0 failed"
}

main "$@"
