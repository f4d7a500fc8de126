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
// reach the log and the snapshots; no address is ever written there (log
// lines are the server's, which shows addresses or their hashes as told).
// A fleet of MX hosts shares one secret (copy the file before the first
// start), so their keys agree.
//
// Every log frame carries a short id of the secret, and every snapshot its
// full id: a directory whose secret is not the one its state was written
// with does not open (ErrIncompatible), and a secret is never made beside
// existing state, whose keys it would orphan. A lost greyhold.json is
// written again, with a warning; the key checks above still hold.
//
// # Recovery
//
// Open loads the newest snapshot that verifies (a corrupt one is renamed
// .broken and the one before it is tried), then replays the log from the
// index the snapshot started at. Records carry resulting values and merge,
// so replaying frames the snapshot already holds changes nothing. Open
// returns only once recovery is done: a Store that exists is ready.
//
// # Durability, and what "after the fsync" means
//
// With fsync=always a check returns only once the frame holding its
// changes is on disk. The engine changes memory first and the log follows,
// so a concurrent check of the same triplet can see, and answer from, a
// change whose frame is still being written: for a moment two answers rest
// on one change that is not yet durable. A crash then loses the change and
// both answers were given; that is harmless for greylisting (at worst one
// message passes, or waits, once more), and ordering every check behind
// the fsync of the one before would cost the group commit.
//
// If the log loses frames while the store runs (its tail file removed or
// cut by something else), memory still holds their changes: the store
// writes a snapshot at once, after which nothing is lost.
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
