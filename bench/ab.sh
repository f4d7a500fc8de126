#!/usr/bin/env bash
# ab.sh: a same-run comparison of two builds' Go benchmarks, for machines
# whose speed drifts (bench/RESULTS.md): the two test binaries run in
# turn, ROUNDS times each, and benchstat compares what they measured
# (medians, with the spread and the p-value of each difference).
#
#   go test -c -o old.test ./engine   (in a checkout of the older commit)
#   go test -c -o new.test ./engine
#   bash bench/ab.sh old.test new.test 'CheckRealistic|CheckKnown' 8 2s
#
# A benchmark renamed between the two builds is paired by AB_NEW_SED, a
# sed script applied to the newer build's output before the comparison:
#
#   AB_NEW_SED='s/^BenchmarkCheckBatchNew-/BenchmarkCheckNewBatch-/' \
#     bash bench/ab.sh old.test new.test 'CheckNewBatch|CheckBatchNew' 8 2s
#
# benchstat comes from the Go module proxy into this machine's Go cache.
set -euo pipefail
old=${1:?old test binary}
new=${2:?new test binary}
regex=${3:?benchmark regex}
rounds=${4:-8}
benchtime=${5:-2s}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for i in $(seq "$rounds"); do
	for side in old new; do
		bin=$old
		[ "$side" = new ] && bin=$new
		"$bin" -test.run '^$' -test.bench "$regex" -test.benchtime "$benchtime" -test.count 1 -test.benchmem >>"$out/$side.txt" 2>/dev/null
	done
done
if [ -n "${AB_NEW_SED:-}" ]; then
	sed -i -e "$AB_NEW_SED" "$out/new.txt"
fi
cd "$out" && go run golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da old.txt new.txt
