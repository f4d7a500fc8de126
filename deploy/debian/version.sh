# deploy/debian/version.sh: debian_version DESCRIBE COUNT prints the Debian
# version of a build from `git describe --tags --always --dirty` and the
# number of commits (git rev-list --count HEAD), so that versions sort as
# the builds do:
#
#   v1.2.3                  1.2.3
#   v1.2.3-4-gabc1234       1.2.3+4.gabc1234         after 1.2.3, before 1.2.4
#   v1.2.3-rc1              1.2.3~rc1                before 1.2.3
#   v1.2.3-rc1-2-gabc1234   1.2.3~rc1+2.gabc1234
#   abc1234 (no tag)        0.0.0~git73.gabc1234     before any release
#   ...-dirty               ...+dirty, or .dirty after a +
#
# The package is the project's own (native: no Debian revision). Tags are
# v1.2.3 (or 1.2.3); one that maps to no valid version is an error.
# shellcheck shell=bash

debian_version() {
	local d=$1 count=$2 dirty="" v
	if [[ $d == *-dirty ]]; then
		dirty=1
		d=${d%-dirty}
	fi
	# A tag is v and a digit, or digits and a dot; an abbreviated hash has
	# neither a v nor a dot.
	if [[ $d =~ ^(v[0-9][0-9A-Za-z.]*|[0-9]+\.[0-9A-Za-z.]*)(-([A-Za-z][0-9A-Za-z.]*))?(-([0-9]+)-g([0-9a-f]+))?$ ]]; then
		v=${BASH_REMATCH[1]#v}
		[[ -n ${BASH_REMATCH[3]} ]] && v+="~${BASH_REMATCH[3]}"
		[[ -n ${BASH_REMATCH[5]} ]] && v+="+${BASH_REMATCH[5]}.g${BASH_REMATCH[6]}"
	elif [[ $d =~ ^[0-9a-f]{4,}$ ]]; then
		v="0.0.0~git${count}.g$d"
	else
		echo "debian_version: cannot map git describe output '$1' to a Debian version (tags look like v1.2.3 or v1.2.3-rc1)" >&2
		return 1
	fi
	if [[ -n $dirty ]]; then
		if [[ $v == *+* ]]; then v+=".dirty"; else v+="+dirty"; fi
	fi
	if ! dpkg --validate-version "$v" 2>/dev/null; then
		echo "debian_version: '$1' maps to '$v', which dpkg does not take as a version" >&2
		return 1
	fi
	echo "$v"
}
