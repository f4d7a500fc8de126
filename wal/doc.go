// Package wal is greyhold's write-ahead log: every engine state change is
// appended here before its answer leaves the server, replayed after the
// newest snapshot on recovery, and read by replication as its outbox.
//
// The package knows nothing of the engine. A caller hands Append an opaque
// payload (the engine's encoded records) and the number of records in it.
// Appends that arrive while a frame is being written are gathered into the
// next one (group commit), so concurrent callers share one write and, in
// SyncAlways mode, one fsync.
//
// # Files
//
// A log is a directory of segment files, written with github.com/tidwall/wal.
// Each file is named after the index of its first frame as 20 decimal digits
// (fmt "%020d", tidwall's naming, so names sort numerically), and holds
// tidwall binary entries back to back: a uvarint length, then that many
// bytes. Each entry is one frame. tidwall only writes: it appends to the
// last segment (the tail) and starts a new one once the tail reaches
// Options.SegmentSize. Reading is this package's own (Cursor, Replay),
// through its own descriptors, so readers never wait for the writer.
//
// Other names in the directory are ignored: <name>.broken links to damaged
// segments, <name>.torn-<offset> holding a cut-off torn tail,
// <name>.stray-<time> for a file found where a new segment was to go.
// <name>.START and <name>.END are tidwall's marks of a truncation a crash
// interrupted; Open finishes it as tidwall would. A segment name that is a
// symbolic link makes Open fail: the log never makes one, and tidwall would
// write through it. New segment files are created here, exclusively and
// without following links, before tidwall opens them.
//
// # Frames
//
// A frame holds one batch: the payloads of every Append in it, concatenated
// in the order the appends took their place in the batch. All integers are
// little-endian.
//
//	field     size      meaning
//	version   1 byte    2
//	flags     1 byte    0; none are defined
//	records   4 bytes   records in payload, at least 1
//	gen       4 bytes   the log's generation when the frame was written
//	key       4 bytes   Options.KeyID: which secret the records are keyed by
//	index     8 bytes   the frame's index, at least 1
//	time      8 bytes   when it was written, unix milliseconds
//	payload   n bytes   the batch, n at least 1
//	crc       4 bytes   CRC-32C (Castagnoli) of all the bytes before it
//
// A frame is therefore at least 35 bytes. Zero is not a valid version, so
// an all-zero frame is corrupt; this is what catches a zero-filled tail (a
// file extended but never written before a crash), which tidwall alone
// would read as a run of empty entries. Version 1 frames (version, flags,
// records, payload, crc: no index, generation, key or time) are still read,
// their index taken from their position; this version never writes them.
//
// Because every frame carries its index and a CRC, damage costs exactly
// the frames it touches: a reader that meets bad bytes looks, byte by byte,
// for the next place where a whole frame verifies with an index not below
// the one expected, and goes on from there, knowing which indexes it lost.
// The checks before the CRC (a plausible length, the version and flag
// bytes, the index range) turn down almost every offset for a few loads.
//
// # Generations
//
// The log takes a new random generation at every Open and every reopen
// after a failure, and stamps it on each frame. A torn tail cut after a
// crash frees indexes that were written once, possibly shipped to other
// hosts already, and are written again with other content: the pair
// (generation, index) still names one frame only. Eras lists where each
// generation begins, so a replicator that knows the last (generation,
// index) it shipped knows where to go on.
//
// # Opening: a torn tail is cut, damage is skipped
//
// Open reads every segment and verifies every frame, then:
//
//   - A torn tail, bad bytes at the very end of the last segment with no
//     valid frame after them, is what a crash during a write leaves. It is
//     cut off (which needs no free space), its bytes kept in
//     <name>.torn-<offset> when there is room for them, and one warning is
//     logged. Nothing counts as lost: the frame was never whole.
//   - Damage anywhere else (bad bytes followed by valid frames, a segment
//     file missing, the end of an earlier segment cut off) is corruption.
//     It is skipped, not cut: only the frames it overlapped are lost, and
//     Open knows which. Damage to frames before Options.StartIndex (the
//     index the caller's snapshot starts from) costs nothing and is
//     reported as covered. Each span is logged with its segment, offset,
//     bytes and frames (an error when frames are lost, a warning when
//     covered) and counted in greyhold_wal_lost_frames_total. A damaged
//     segment is kept for inspection by a hard link, <name>.broken (or
//     -2, -3: an earlier one is never replaced), which costs no space and
//     outlives the segment's removal by truncation.
//   - A last segment with damage inside it is sealed: left as it is, and a
//     new empty segment started after its last valid frame, so that
//     nothing is ever written after damage and tidwall, which reads the
//     tail by position, never reads across it.
//
// The log's frames need not be numbered without a hole: a gap between two
// segments, or inside one, is frames lost, and readers step over it
// (Cursor reports it as a *GapError).
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
// # Durability, and a tail that vanishes
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
// An fsync succeeds on a file that was removed or cut short, so after each
// one (and once a second in SyncNever mode) the log checks that the tail
// file is still linked under its name and as long as what was written, and
// reads back and verifies the frames written since the last look: tidwall
// writes at its own offset, so a file cut short while it is written grows
// back to its length with the next write, the cut bytes reading as zeros.
// If it finds any of this, the log reopens: it goes on from the next index
// in a new segment and a new generation (indexes are never reused while
// the process runs), logs the frames lost, and calls Options.OnLoss, so the
// caller can write a snapshot of its memory at once. In SyncAlways mode the
// append whose fsync found it fails. Reading back costs a read of what was
// written, from the page cache, once a second.
//
// # Truncation and pins
//
// TruncateFront drops whole segments before an index; a Pin holds it back,
// so a replicator's unshipped frames stay in the log.
//
// # Errors
//
// ErrClosed follows Close. ErrCorrupt is wrapped by DecodeFrame's errors.
// ErrGap is wrapped by *GapError. ErrForeignKey says Open found frames
// keyed by another secret. ErrFailed says a write or fsync failed and the
// log could not be reopened; it retries on its own. Everything else is
// wrapped with what was being done.
package wal
