# deploy/lib.sh: what deploy/check.sh and deploy/debian/*.sh share: messages
# and Debian packages installed when a command is missing. A script sets
# NAME (the prefix of its messages) before sourcing it.
# shellcheck shell=bash

NAME=${NAME:-deploy}

say() { printf '%s: %s\n' "$NAME" "$*"; }
die() {
	say "$*" >&2
	exit 1
}

# need COMMAND:PACKAGE...: installs, with apt-get, the packages whose
# command is not on PATH. Root only; apt-get waits up to 5 minutes for a
# lock that another install holds, and reads nothing from stdin.
need() {
	local want=() pair
	for pair in "$@"; do
		command -v "${pair%%:*}" >/dev/null 2>&1 || want+=("${pair#*:}")
	done
	((${#want[@]} == 0)) && return 0
	((EUID == 0)) || die "missing ${want[*]}: install them (apt-get install ${want[*]}), or run as root to let this script install them"
	say "installing ${want[*]} from Debian's packages"
	local log
	log=$(mktemp)
	export DEBIAN_FRONTEND=noninteractive
	local apt=(apt-get -q -y -o DPkg::Lock::Timeout=300)
	if ! "${apt[@]}" update </dev/null >"$log" 2>&1 ||
		! "${apt[@]}" install --no-install-recommends "${want[@]}" </dev/null >>"$log" 2>&1; then
		cat "$log" >&2
		rm -f "$log"
		die "apt-get could not install ${want[*]}"
	fi
	rm -f "$log"
	for pair in "$@"; do
		command -v "${pair%%:*}" >/dev/null 2>&1 || die "${pair#*:} is installed but ${pair%%:*} is still not on PATH"
	done
}
