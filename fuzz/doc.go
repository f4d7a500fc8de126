// Package fuzz holds greyhold's fuzz targets, one for each parser that
// reads bytes from outside: the policy protocol, the compact line protocol,
// the HTTP check and batch JSON, WAL frames and segments, snapshots,
// whitelist files, and address normalisation. Each asserts invariants, not
// only the absence of panics: rejected input changes no state, what parses
// and has a format formats back the same, decoding stays within a bound of
// the input's size, normalising twice equals normalising once.
//
// Seeds live in testdata/fuzz/<FuzzName>/, named by where their shape comes
// from (postfix37_*, batv_*, wal_torn_*); corpus_gen regenerates them:
//
//	go run ./fuzz/corpus_gen
//
// Run one target with go test -fuzz, or all of them with make fuzz
// (FUZZTIME=60s each by default; CI runs 10s each). A crasher the fuzzer
// finds lands in testdata/fuzz/<FuzzName>/ and, once fixed, stays there as
// a regression seed.
package fuzz
