// Package store owns greyhold's durable state: the engine in memory, the
// write-ahead log that makes each change survive a crash, and the snapshots
// that keep recovery short. It is the one place that knows all three;
// each of them knows nothing of the others.
//
// # The data directory
//
//	LOCK             flock held while a server has the directory open
//	secret           the 32-byte hash key, hex, mode 0600; made at first start
//	greyhold.json    format version and the key options the keys were made with
//	wal/             the write-ahead log (package wal)
//	snapshots/       snap-<WAL index>.zst files (package snapshot), newest two kept
//
// Only keyed hashes of triplets, client networks and whitelisted addresses
// reach the log and the snapshots; no address is ever written. A fleet of MX
// hosts shares one secret (copy the file before the first start), so their
// keys agree.
//
// # Recovery
//
// Open loads the newest snapshot that verifies (a corrupt one is renamed
// .broken and the one before it is tried), then replays the log from the
// index the snapshot started at. Records carry resulting values and merge,
// so replaying frames the snapshot already holds changes nothing. Open
// returns only once recovery is done: a Store that exists is ready.
//
// # Snapshots
//
// A snapshot is taken shard by shard while checks go on. It records the
// log's last index at its start: every change in a frame up to that index
// was made in memory before the frame was written, so the snapshot holds it;
// later changes are replayed from the log. Once a snapshot is durable, the
// log segments older than the oldest snapshot kept are dropped (the oldest,
// not the newest: if the newest turns out corrupt, recovery falls back to
// the one before and needs the log from there).
package store
