#!/usr/bin/env bash
# deploy/debian/build.sh [ARCH...] (make deb): builds
# dist/greyhold_<version>_<arch>.deb for each ARCH (default: amd64 arm64)
# with dpkg-deb, from this checkout:
#
#   /usr/bin/greyhold                      cross-compiled, no cgo, stripped
#   /lib/systemd/system/greyhold.service   cmd/greyhold/systemd's, ExecStart=/usr/bin/greyhold
#   /etc/greyhold/greyhold.env             a conffile: settings, every one commented out
#   /usr/share/man/man8/greyhold.8.gz      made by greyhold manpage from the flags
#   /usr/share/greyhold/                   the Grafana dashboard and the Prometheus rules
#   /usr/share/doc/greyhold/               README, changelog, copyright (with the
#                                          licences of the Go modules linked in),
#                                          examples/greylist-suspicious.conf
#   /usr/share/lintian/overrides/greyhold  the lintian tags explained
#   postinst, prerm, postrm                the user, the state directory, the unit
#
# The version comes from git describe (deploy/debian/version.sh); files and
# archive members are dated by the last commit (SOURCE_DATE_EPOCH), so the
# same commit builds the same bytes in the same directory. DEB_MAINTAINER sets the Maintainer
# field (default: the last commit's author). Needs go, git and dpkg-deb.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/deploy/debian
NAME=deb
# shellcheck source=deploy/lib.sh
source "$ROOT/deploy/lib.sh"
# shellcheck source=deploy/debian/version.sh
source "$HERE/version.sh"

OUT=${DEB_OUT:-$ROOT/dist}
GO=${GO:-go}
archs=("$@")
((${#archs[@]} > 0)) || archs=(amd64 arm64)

command -v dpkg-deb >/dev/null || die "dpkg-deb is missing (Debian's dpkg package)"
cd "$ROOT"
describe=$(git describe --tags --always --dirty)
version=$(debian_version "$describe" "$(git rev-list --count HEAD)")
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}
export SOURCE_DATE_EPOCH
maintainer=${DEB_MAINTAINER:-$(git log -1 --format='%an <%ae>')}

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# The man page, from a binary for this machine (the same flags as every
# architecture's).
"$GO" build -o "$TMP/greyhold-host" ./cmd/greyhold
"$TMP/greyhold-host" manpage >"$TMP/greyhold.8"

# copyright: greyhold's own notice, then the licence (and NOTICE) of Go's
# standard library and of each Go module linked into the binary, read from
# the toolchain and the module cache. An Apache-2.0 text is replaced by a
# pointer to Debian's copy in /usr/share/common-licenses, as Debian Policy
# 12.5 asks.
apache_to_common() {
	awk '
		!a && /^[[:space:]]*Apache License[[:space:]]*$/ {
			a = 1
			print "Apache License, Version 2.0: on Debian systems its full text is in /usr/share/common-licenses/Apache-2.0."
			next
		}
		a && /limitations under the License\./ { a = 0; next }
		a && /^-{4,}/ { a = 0; print; next }
		!a { print }
	' "$1"
}
licence_paragraph() {
	local files=$1 holder=$2 name=$3 dir=$4 f
	f=$(find "$dir" -maxdepth 1 -type f \( -iname 'LICENSE*' -o -iname 'LICENCE*' -o -iname 'COPYING*' \) 2>/dev/null | sort | sed -n 1p)
	[[ -n $f ]] || die "no licence file for $files in $dir: run go mod download"
	printf '\nFiles: %s\nCopyright: %s\nLicense: %s\n' "$files" "$holder" "$name"
	{
		apache_to_common "$f"
		for f in "$dir"/NOTICE*; do
			[[ -f $f ]] || continue
			printf '\nNOTICE:\n\n'
			cat "$f"
		done
	} | sed -e 's/^[[:space:]]*$/./' -e 's/^/ /'
}
copyright() {
	local bin=$1 cache kind path ver goversion
	cat "$HERE/copyright"
	goversion=$("$GO" version "$bin")
	goversion=${goversion##* }
	licence_paragraph "Go's standard library and runtime ($goversion)" "The Go Authors" "Go" "$("$GO" env GOROOT)"
	cache=$("$GO" env GOMODCACHE)
	while read -r kind path ver _; do
		[[ $kind == dep ]] || continue
		# The module cache writes capitals as ! and the lower-case letter.
		licence_paragraph "Go module $path $ver" "the authors of $path" "${path//\//-}" \
			"$cache/$(sed 's/[A-Z]/!\L&/g' <<<"$path")@$ver"
	done < <("$GO" version -m "$bin" | sed 's/^[[:space:]]*//')
}

build() {
	local arch=$1 root=$TMP/$1 deb
	rm -rf "$root"
	mkdir -p "$root/DEBIAN"
	install -d "$root/usr/bin" "$root/lib/systemd/system" "$root/etc/greyhold" \
		"$root/usr/share/man/man8" "$root/usr/share/doc/greyhold/examples" "$root/usr/share/lintian/overrides" \
		"$root/usr/share/greyhold/grafana" "$root/usr/share/greyhold/prometheus"

	# An empty build ID: the same commit, built in the same directory,
	# gives the same binary. No -trimpath: it would rebuild the standard
	# library and every module for each architecture instead of taking what
	# the tests compiled from the build cache (on a loaded 2-core machine:
	# 1.6 minutes after make test's own builds, 7.9 with -trimpath from an
	# empty cache), at the price of the build directory in the file names a
	# panic prints.
	CGO_ENABLED=0 GOOS=linux GOARCH=$arch "$GO" build \
		-ldflags "-s -w -buildid= -X main.version=$describe" -o "$root/usr/bin/greyhold" ./cmd/greyhold

	# The unit as make install writes it, with the man page the package
	# brings.
	sed -e 's|^ExecStart=/usr/local/bin/greyhold |ExecStart=/usr/bin/greyhold |' \
		-e 's|^Description=.*|&\nDocumentation=man:greyhold(8)|' cmd/greyhold/systemd/greyhold.service \
		>"$root/lib/systemd/system/greyhold.service"
	grep -q '^ExecStart=/usr/bin/greyhold serve' "$root/lib/systemd/system/greyhold.service" ||
		die "cmd/greyhold/systemd/greyhold.service has no ExecStart=/usr/local/bin/greyhold serve to point at /usr/bin"
	install -m 644 "$HERE/greyhold.env" "$root/etc/greyhold/greyhold.env"
	gzip -9n <"$TMP/greyhold.8" >"$root/usr/share/man/man8/greyhold.8.gz"
	install -m 644 deploy/grafana/greyhold.json "$root/usr/share/greyhold/grafana/"
	install -m 644 deploy/prometheus/greyhold-alerts.yml "$root/usr/share/greyhold/prometheus/"
	gzip -9n <README.md >"$root/usr/share/doc/greyhold/README.md.gz"
	install -m 644 examples/greylist-suspicious.conf "$root/usr/share/doc/greyhold/examples/"
	copyright "$root/usr/bin/greyhold" >"$root/usr/share/doc/greyhold/copyright"
	{
		printf 'greyhold (%s) unstable; urgency=medium\n\n' "$version"
		printf '  * Built from greyhold %s (commit %s).\n\n' "$describe" "$(git rev-parse --short HEAD)"
		printf ' -- %s  %s\n' "$maintainer" "$(date -u -R -d "@$SOURCE_DATE_EPOCH")"
	} | gzip -9n >"$root/usr/share/doc/greyhold/changelog.gz"
	install -m 644 "$HERE/lintian-overrides" "$root/usr/share/lintian/overrides/greyhold"
	install -m 755 "$HERE/postinst" "$HERE/prerm" "$HERE/postrm" "$root/DEBIAN/"
	echo /etc/greyhold/greyhold.env >"$root/DEBIAN/conffiles"

	local size
	size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
	cat >"$root/DEBIAN/control" <<-EOF
		Package: greyhold
		Version: $version
		Architecture: $arch
		Maintainer: $maintainer
		Installed-Size: $size
		Depends: adduser
		Section: mail
		Priority: optional
		Description: greylisting policy server for Postfix and Exim
		 greyhold tells the MTA to defer mail from a (client network, sender,
		 recipient) triplet it has not seen before; real mail servers retry and
		 get through after the delay, most spam engines never do. It does what
		 postgrey does, with postgrey's defaults and whitelist files, and is
		 built for large MX fleets: state in memory with a write-ahead log and
		 snapshots, millions of checks a second, and only keyed hashes of
		 addresses on disk.
		 .
		 It speaks the Postfix policy protocol (TCP or a unix socket), a
		 one-line protocol for Exim, and an HTTP API with Prometheus metrics; a
		 Grafana dashboard and alerting rules come in /usr/share/greyhold.
	EOF
	(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
	chmod 644 "$root/DEBIAN/md5sums" "$root/DEBIAN/control" "$root/DEBIAN/conffiles"
	find "$root" -type d -exec chmod 755 {} +
	find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

	deb=$OUT/greyhold_${version}_$arch.deb
	mkdir -p "$OUT"
	dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
	say "built $deb ($(du -k "$deb" | cut -f1) KiB)"
}

for a in "${archs[@]}"; do
	case $a in
	amd64 | arm64) build "$a" ;;
	*) die "architecture $a: this script builds amd64 and arm64" ;;
	esac
done
