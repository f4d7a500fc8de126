// Package wal is greyhold's write-ahead log: every engine state change is
// appended here before its answer leaves the server, and replayed after the
// newest snapshot on recovery.
//
// The package knows nothing of the engine. A caller hands Append an opaque
// payload (the engine's encoded records) and the number of records in it.
// Appends that arrive while a frame is being written are gathered into the
// next one (group commit), so concurrent callers share one write and, in
// SyncAlways mode, one fsync.
//
// # Files
//
// A log is a directory of segment files, stored with github.com/tidwall/wal.
// Each file is named after the index of its first frame as 20 decimal digits
// (fmt "%020d", tidwall's naming, so names sort numerically), and holds
// tidwall binary entries back to back: a uvarint length, then that many
// bytes. Each entry is one frame, and the entry's tidwall index is the frame
// index: consecutive from the first file's name, with no gaps. A snapshot
// names the frame index it started from; recovery replays from there.
//
// A new segment is started once the current one reaches Options.SegmentSize.
// The last segment (the tail) is the only one written to. Other names in the
// directory are ignored, among them <name>.broken, the copies repairs keep of
// what they cut. <name>.START and <name>.END are tidwall's marks of a
// truncation a crash interrupted; Open finishes it as tidwall would.
//
// # Frames
//
// A frame holds one batch: the payloads of every Append in it, concatenated
// in the order the appends took their place in the batch.
//
//	field     size      encoding                   meaning
//	version   1 byte    unsigned                   1; anything else is corrupt
//	flags     1 byte    bits                       0; none are defined in version 1
//	records   4 bytes   uint32, little-endian      records in payload, at least 1
//	payload   n bytes   opaque                     the batch, n at least 1
//	crc       4 bytes   uint32, little-endian      CRC-32C (Castagnoli) of all the bytes before it
//
// A frame is therefore at least 11 bytes. Zero is not a valid version, so an
// all-zero frame is corrupt; this is what catches a zero-filled tail (a file
// extended but never written before a crash), which tidwall alone would read
// as a run of empty entries. A frame of another version is corrupt too: no
// other version exists, and one that comes must be introduced so that an
// older binary never sees it (one that does cuts it off, keeping a .broken
// copy).
//
// # Reading: three outcomes
//
// Open reads every segment and verifies every frame before handing the
// directory to tidwall. Reading a segment ends one of three ways:
//
//   - Clean end: the file ends exactly after a valid frame.
//   - Torn tail: the first bad entry (a length prefix cut short, a length
//     running past the end of the file, a frame that does not verify) is in
//     the last segment. This is what a crash during a write leaves. The
//     segment is copied to <name>.broken, cut after the last good frame,
//     fsynced, and one warning is logged.
//   - Corruption: the first bad entry is in an earlier segment, or a segment
//     does not start where the one before it ended. A crash does not explain
//     this. The damaged segment is copied to <name>.broken and cut, every
//     later segment is renamed to <name>.broken, and one error is logged.
//
// Either way, nothing after the first damage is kept in the log, even frames
// that still verify: the log cannot have a hole in its numbering. The line
// logged and Log.Repaired say how many frames and records were dropped
// (those that still verify, so at least that many) and how many bytes.
//
// Replay verifies every frame again; one that fails there (the disk changed
// after Open) stops the replay with a *CorruptionError.
//
// # Replaying twice is harmless
//
// The engine's records carry resulting values (first seen = T, passed at =
// T, client count = N), never deltas. Applying a frame twice, or frames that
// a fuzzy snapshot already covers, ends in the same state. That is why a
// snapshot may name an index some of whose frames it already contains, why
// an Append that returned an error may still be replayed later (the frame
// can have reached the disk), and why truncation by whole segments, which
// keeps a few frames the snapshot covers, is correct.
//
// # Durability
//
// SyncAlways returns from Append after the frame is fsynced, and after the
// directory is fsynced when the frame opened a new segment file. The
// interval mode (the default: every second) returns after write(2) and
// fsyncs from a separate goroutine, through a separate descriptor, so
// writing goes on during the fsync. SyncNever returns after write(2) and
// leaves flushing to the operating system. In every mode a written frame
// survives the process being killed; only a power failure or a kernel crash
// can lose frames not yet fsynced.
//
// # Errors
//
// ErrClosed follows Close. ErrCorrupt is wrapped by a *CorruptionError from
// Replay, and by DecodeFrame. ErrGap says Replay was asked for frames no
// longer in the log. ErrFailed says a write or fsync failed and the log could
// not be reopened; it retries on its own. Everything else is wrapped with
// what was being done.
package wal
