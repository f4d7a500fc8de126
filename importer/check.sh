#!/usr/bin/env bash
# importer/check.sh (make import-check, part of make test): the imports
# against the real programs. Runs traffic through Debian's postgrey and
# sqlgrey (on SQLite, its clock driven through libfaketime), imports what
# they stored, and holds greyhold's verdicts on a further trace to theirs
# (importer/real_test.go); here a missing program fails the tests instead
# of skipping them.
#
# Installs postgrey, db-util (db_dump), sqlgrey, its SQLite driver and
# faketime with apt-get when they are missing; a temporary
# /usr/sbin/policy-rc.d keeps the packages' services from starting while
# they install, and both services are disabled afterwards (the tests run
# their own, on free loopback ports). Root only, when anything is missing.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NAME=import-check
# shellcheck source=deploy/lib.sh
source "$ROOT/deploy/lib.sh"

missing=()
[[ -x /usr/sbin/postgrey ]] || missing+=(postgrey)
command -v db_dump >/dev/null 2>&1 || missing+=(db-util)
[[ -x /usr/sbin/sqlgrey ]] || missing+=(sqlgrey)
[[ -e /usr/share/perl5/DBD/SQLite.pm || -n $(find /usr/lib -path '*/DBD/SQLite.pm' -print -quit 2>/dev/null) ]] || missing+=(libdbd-sqlite3-perl)
compgen -G '/usr/lib/*/faketime/libfaketime.so.1' >/dev/null || missing+=(faketime)
if ((${#missing[@]})); then
	((EUID == 0)) || die "missing ${missing[*]}: install them (apt-get install ${missing[*]}), or run as root to let this script install them"
	made_policy=0
	if [[ ! -e /usr/sbin/policy-rc.d ]]; then
		printf '#!/bin/sh\n# importer/check.sh: no service starts while it installs packages.\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod 755 /usr/sbin/policy-rc.d
		made_policy=1
		trap 'rm -f /usr/sbin/policy-rc.d' EXIT
	fi
	say "installing ${missing[*]} from Debian's packages"
	log=$(mktemp)
	export DEBIAN_FRONTEND=noninteractive
	apt=(apt-get -q -y -o DPkg::Lock::Timeout=300)
	if ! "${apt[@]}" update </dev/null >"$log" 2>&1 ||
		! "${apt[@]}" install --no-install-recommends "${missing[@]}" </dev/null >>"$log" 2>&1; then
		cat "$log" >&2
		die "apt-get could not install ${missing[*]}"
	fi
	rm -f "$log"
	for svc in postgrey sqlgrey; do
		if [[ -d /run/systemd/system ]]; then
			systemctl disable --now "$svc" >/dev/null 2>&1 || true
		fi
		update-rc.d "$svc" disable >/dev/null 2>&1 || true
	done
	((made_policy)) && rm -f /usr/sbin/policy-rc.d
fi
cd "$ROOT"
# -v: the log shows each step of the further trace, both verdicts side by
# side.
GREYHOLD_IMPORT_REAL=1 go test -count=1 -run 'TestImport' -v ./importer
