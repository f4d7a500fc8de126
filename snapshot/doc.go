// Package snapshot writes and reads compressed, checksummed snapshots: a
// header, then tables of fixed-shape rows (a uint64 key and up to 16 uint32
// columns), then opaque blobs. It knows nothing of the engine or the WAL.
// The store maps its state onto it: table 1 holds triplets (key = the
// triplet's xxhash64; columns first-seen and word), table 2 client
// networks (four columns), blob 3 the whitelist rules.
//
// Snapshots are fuzzy. The store writes one shard at a time, one WriteRows
// call per shard, while checks go on, and records in Header.WALIndex the
// WAL frame it started from. Recovery loads the newest snapshot that reads
// cleanly and replays the WAL after that index; WAL records carry resulting
// values, so a change that is both in the snapshot and replayed lands
// twice with the same outcome.
//
// # Files
//
// A snapshot of WAL index N is named snap-N.zst with N as 20 zero-padded
// decimal digits (FileName): every uint64 fits, and names sort as their
// indexes do. A Writer builds the file as snap-N.zst.<random>.tmp in the
// same directory, then Commit fsyncs it, renames it over snap-N.zst (so a
// second snapshot of the same index replaces the first atomically) and
// fsyncs the directory. Only after Commit returns nil may the store drop
// WAL segments the snapshot covers: until the directory entry is durable a
// crash could leave the old snapshot, or none. A crash mid-write leaves a
// .tmp file that List ignores and Prune or RemoveTemp delete. A file that
// fails to read is renamed snap-N.zst.broken by MarkBroken and kept for
// inspection.
//
// # Layout
//
// All integers are little-endian. A file is
//
//	header | body | directory | trailer
//
// Header, 48+K bytes:
//
//	offset  size  field
//	0       8     magic "\x89GHSNAP\n" (89 47 48 53 4e 41 50 0a)
//	8       2     format version, uint16: 1
//	10      2     flags, uint16: 0
//	12      4     header length H = 48+K, uint32
//	16      8     WAL index, uint64
//	24      8     created, int64 Unix seconds
//	32      8     secret ID, uint64
//	40      4     key options length K, uint32, at most 4096
//	44      K     key options, opaque bytes
//	44+K    4     header CRC: CRC32C (Castagnoli) of bytes [0, 44+K)
//
// Body: for each directory entry in order, its frame bytes (one or more
// concatenated zstd frames, each with zstd's content checksum) followed by
// its pad bytes, all zero. Table entries occupy no body bytes.
//
// Directory, 20 bytes per entry, in body order:
//
//	offset  size  field
//	0       1     kind: 1 table, 2 chunk, 3 blob
//	1       1     table or blob id
//	2       1     columns C, 0 to 16 (table and chunk; 0 for a blob)
//	3       1     reserved: 0
//	4       4     rows R, uint32: 1 to 65536 for a chunk, else 0
//	8       4     decompressed bytes, uint32 (0 for a table)
//	12      4     frame bytes in the body, uint32 (0 for a table)
//	16      4     pad bytes in the body, uint32 (0 for a table)
//
// Trailer, 28 bytes at the end of the file:
//
//	offset  size  field
//	0       8     body length, uint64
//	8       4     directory entries N, uint32, at most 2^20
//	12      4     directory CRC: CRC32C of the directory then trailer bytes [0, 12)
//	16      8     magic "\x89GHSEND\n"
//	24      4     file CRC: CRC32C of every byte of the file before it
//
// A chunk's frames decompress, concatenated, to:
//
//	size         field
//	8            base key: the chunk's smallest key, uint64
//	1            key delta width W, 0 to 8
//	14 per col   column header: n1 uint32 (rows with bit 31 set),
//	             ref0 uint32, ref1 uint32 (per class, the largest value
//	             with bit 31 cleared), w0 uint8, w1 uint8 (per class, bytes
//	             per age, 0 to 4)
//	W x    key delta planes: plane j holds byte j (0 = least
//	             significant) of key[i]-key[i-1] for i = 1..R-1
//	per column   if 0 < n1 < R, a class bitmap of ceil(R/8) bytes, bit i%8
//	             of byte i/8 set when row i has bit 31 set; then w0 planes
//	             of the R-n1 class-0 rows' ages ref0-v, then w1 planes of
//	             the n1 class-1 rows' ages ref1-(v&^(1<<31)), rows in order
//
// A value is rebuilt as ref-age, with bit 31 set for class 1. The writer
// starts a new zstd frame for each of these streams so that every byte
// plane gets its own Huffman table; readers decode an entry's frames as one
// stream and do not depend on where frames begin. chunk.go gives the
// measurements behind this encoding: 10.1 bytes a triplet row at 10M rows.
//
// # Invariants
//
//   - File length = H + body length + 20N + 28, and the entries' frame and
//     pad bytes tile the body exactly, in directory order.
//   - A table entry comes before its chunks, which follow it contiguously
//     with the same id and columns. Table ids are unique, and so are blob
//     ids (the two are separate name spaces). Empty chunks are not stored;
//     a table may have none.
//   - Keys within a chunk ascend (equal keys allowed). Chunks of a table
//     may come in any key order and overlap; a reader hands rows over as
//     stored, and the store's idempotent apply copes with any repeat.
//   - For every entry, max(decompressed bytes, R x (8 + 4C)) is at most 16
//     times its frame plus pad bytes. The writer pads the rare entry that compresses better.
//     Reading therefore allocates at most ~32 times the file's size, and
//     much less in practice: decoding streams one chunk at a time.
//   - A chunk's decompressed length is exactly what its header implies;
//     every ref is below 2^31, every age at most its ref, every bitmap has
//     n1 bits set and none past row R, and key sums never overflow.
//
// # Reading and errors
//
// Read first checks the file CRC over the whole file, then the header,
// trailer and directory against every bound above, and only then
// decompresses, so a truncated or bit-flipped file fails with ErrCorrupt
// before the visitor sees a row. zstd's per-frame checksums and the chunk
// invariants then catch what the file CRC cannot (a file resealed around
// bad content, memory damage between the passes). List reads only header,
// trailer and directory, which carry their own CRCs.
//
// Every later format version keeps the magic, version field, flags and
// header length at the same offsets, the header CRC as the header's last
// four bytes, and the file CRC as the file's last four bytes. A reader
// thus verifies any version's file CRC before looking at its version, and
// reports an intact newer file as ErrVersion rather than ErrCorrupt.
package snapshot
