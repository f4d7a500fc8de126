#!/usr/bin/env bash
# run.sh FUZZTIME DIR:TARGET...
#
# Runs each fuzz target for FUZZTIME. A target fails the run when it finds
# an input that breaks it (go test writes it to DIR/testdata/fuzz/TARGET/,
# where it stays as a regression seed) or fails in any other way, with one
# exception: Go 1.26's fuzzing coordinator can fail a target with a bare
# "context deadline exceeded" at the end of its time, having found nothing
# (go.dev/issue/75804, fixed in Go 1.27). That failure is told apart by its
# message and the absence of a written input, and the target's corpus is
# then replayed as a plain test, which must pass.
set -u
go=${GO:-go}
fuzztime=$1
shift
for t in "$@"; do
	dir=${t%%:*} name=${t#*:}
	echo "== $t ($fuzztime)"
	log=$(mktemp)
	"$go" test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "./$dir" 2>&1 | tee "$log"
	rc=${PIPESTATUS[0]}
	if [ "$rc" -ne 0 ]; then
		if grep -q 'context deadline exceeded' "$log" && ! grep -q 'Failing input written' "$log"; then
			echo "== $t: the coordinator's deadline race (go.dev/issue/75804), nothing found; replaying the corpus"
			"$go" test -count=1 -run "^${name}\$" "./$dir" || { rm -f "$log"; exit 1; }
		else
			rm -f "$log"
			exit 1
		fi
	fi
	rm -f "$log"
done
