package snapshot

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"
)

// Sentinel errors. Every error the package returns for a bad file wraps one
// of them together with the path and what was wrong; test with errors.Is.
var (
	// ErrCorrupt is returned by Read, Verify and List (in Info.Err) when a
	// file fails a checksum, is truncated, or breaks a structural rule or
	// bound of the format. The file will never become readable: rename it
	// with MarkBroken and fall back to an older snapshot.
	ErrCorrupt = errors.New("snapshot: corrupt")

	// ErrVersion is returned by Read, Verify and List (in Info.Err) for an
	// intact file written in a newer format version than this build reads.
	// Unlike ErrCorrupt it means "upgrade", not "discard": the whole-file
	// checksum has already matched when Read or Verify return it.
	ErrVersion = errors.New("snapshot: unsupported format version")

	// ErrNoSnapshot is returned by Read and Verify (together with
	// fs.ErrNotExist) when the path does not exist, and by MarkBroken when
	// there is nothing to rename.
	ErrNoSnapshot = errors.New("snapshot: no snapshot")
)

// Format constants. doc.go describes the layout they belong to.
const (
	// formatVersion is the version this build writes and the newest it reads.
	formatVersion = 1

	// MaxKeyOptions bounds Header.KeyOptions. The store keeps a short,
	// canonical description of how keys were derived there; 4 KiB is far
	// above that and keeps a hostile header from asking for a big buffer.
	MaxKeyOptions = 4096

	headerFixedLen = 48 // header bytes without KeyOptions
	trailerLen     = 28
	entryLen       = 20

	// maxCols bounds the columns of a table. The engine uses 2 (triplets)
	// and 4 (client networks); 16 leaves room and caps a decoded row at
	// 8+16*4 = 72 bytes.
	maxCols = 16

	// maxChunkRows caps the rows of one stored chunk; WriteRows splits
	// bigger inputs evenly. It bounds the reader's working set per chunk
	// (64 Ki rows of 2 columns is 1 MiB decoded, 4.5 MiB at 16 columns) and
	// keeps each byte plane within one 64 KiB block of SpeedFastest, so
	// every plane gets exactly one Huffman table. Smaller chunks pay more
	// for frame headers and Huffman tables: the file exceeds the planes'
	// order-0 entropy by 0.13 byte/row at 40 Ki rows a chunk and by 0.19
	// at 4 Ki. The store's natural chunk, one shard of ~40 Ki rows at 10M
	// entries and 256 shards, is stored unsplit.
	maxChunkRows = 1 << 16

	// maxBlobLen caps one blob. Blobs hold the whitelist rules, text lines
	// of some tens of bytes; 64 MiB is over a million rules.
	maxBlobLen = 64 << 20

	// maxEntries caps the directory at 20 MiB. 1 Mi entries of at most
	// 64 Ki rows is far beyond any engine (10M triplets need ~300 entries).
	maxEntries = 1 << 20

	// maxExpansion bounds what any entry may decode to relative to the
	// bytes it occupies in the file: max(decompressed length, decoded rows
	// x row width) <= maxExpansion x (frame length + padding). Realistic
	// triplet chunks expand 1.6x (16 bytes a row from ~10 on disk), text
	// such as the rules blob typically 3-6x; the writer pads the rare entry
	// that compresses better (sequential test keys, constant columns) with
	// zero bytes. The reader checks the bound on the directory before
	// decoding, and holds an entry's compressed, decompressed and decoded
	// forms at once, so no file can make it allocate more than about
	// 1+16+16 = 33 times its own size.
	maxExpansion = 16
)

var (
	headerMagic  = [8]byte{0x89, 'G', 'H', 'S', 'N', 'A', 'P', '\n'}
	trailerMagic = [8]byte{0x89, 'G', 'H', 'S', 'E', 'N', 'D', '\n'}

	// castagnoli is built once and never written after package init.
	castagnoli = crc32.MakeTable(crc32.Castagnoli)
)

// Entry kinds in the directory.
const (
	kindTable = 1
	kindChunk = 2
	kindBlob  = 3
)

// Header is the metadata at the start of every snapshot file.
type Header struct {
	WALIndex   uint64    // the store replays WAL frames after this index
	Created    time.Time // whole seconds; the writer drops any fraction
	SecretID   uint64    // which hash secret keyed the rows
	KeyOptions []byte    // opaque to this package, at most MaxKeyOptions bytes
}

// corruptf returns an error wrapping ErrCorrupt.
func corruptf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))
}

func appendHeader(b []byte, h Header) []byte {
	start := len(b)
	b = append(b, headerMagic[:]...)
	b = binary.LittleEndian.AppendUint16(b, formatVersion)
	b = binary.LittleEndian.AppendUint16(b, 0) // flags
	b = binary.LittleEndian.AppendUint32(b, uint32(headerFixedLen+len(h.KeyOptions)))
	b = binary.LittleEndian.AppendUint64(b, h.WALIndex)
	b = binary.LittleEndian.AppendUint64(b, uint64(h.Created.Unix()))
	b = binary.LittleEndian.AppendUint64(b, h.SecretID)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(h.KeyOptions)))
	b = append(b, h.KeyOptions...)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b[start:], castagnoli))
}

// headerPrefixLen is the part of the header every format version keeps:
// magic, version, flags, header length.
const headerPrefixLen = 16

// parseHeaderPrefix checks the magic and returns the version and the
// header length, unchecked: a newer version may lay out the rest
// differently, and the caller decides whether a checksum must match first.
func parseHeaderPrefix(p []byte, fileSize int64) (version uint16, hlen uint32, err error) {
	if len(p) < headerPrefixLen {
		return 0, 0, corruptf("file of %d bytes is shorter than a header", fileSize)
	}
	if [8]byte(p[:8]) != headerMagic {
		return 0, 0, corruptf("bad magic %q", p[:8])
	}
	version = binary.LittleEndian.Uint16(p[8:])
	if version == 0 {
		return 0, 0, corruptf("format version 0")
	}
	return version, binary.LittleEndian.Uint32(p[12:]), nil
}

// checkHeaderLen bounds a version-1 header length before it is read.
func checkHeaderLen(n uint32, fileSize int64) error {
	if n < headerFixedLen || n > headerFixedLen+MaxKeyOptions || int64(n)+trailerLen > fileSize {
		return corruptf("header length %d out of range for a %d-byte file", n, fileSize)
	}
	return nil
}

// parseHeader decodes a complete version-1 header of exactly len(p) bytes.
func parseHeader(p []byte) (Header, error) {
	var h Header
	n := len(p)
	if got, want := binary.LittleEndian.Uint32(p[n-4:]), crc32.Checksum(p[:n-4], castagnoli); got != want {
		return h, corruptf("header checksum %#08x, computed %#08x", got, want)
	}
	if f := binary.LittleEndian.Uint16(p[10:]); f != 0 {
		return h, corruptf("header flags %#04x set", f)
	}
	h.WALIndex = binary.LittleEndian.Uint64(p[16:])
	h.Created = time.Unix(int64(binary.LittleEndian.Uint64(p[24:])), 0).UTC()
	h.SecretID = binary.LittleEndian.Uint64(p[32:])
	kl := binary.LittleEndian.Uint32(p[40:])
	if int64(kl) != int64(n-headerFixedLen) {
		return h, corruptf("key options length %d does not match header length %d", kl, n)
	}
	if kl > 0 {
		h.KeyOptions = append([]byte(nil), p[44:44+kl]...)
	}
	return h, nil
}

// trailer is the fixed-size end of a file, without the file CRC, which
// checkFileCRC reads on its own.
type trailer struct {
	bodyLen uint64
	entries uint32
	dirCRC  uint32 // over the directory and the 12 trailer bytes before it
}

// appendTrailer appends the trailer to b. dir is the directory just
// written and fileCRC the CRC32C of every byte of the file before the
// trailer.
func appendTrailer(b []byte, bodyLen uint64, entries int, dir []byte, fileCRC uint32) []byte {
	start := len(b)
	b = binary.LittleEndian.AppendUint64(b, bodyLen)
	b = binary.LittleEndian.AppendUint32(b, uint32(entries))
	d := crc32.Update(crc32.Checksum(dir, castagnoli), castagnoli, b[start:])
	b = binary.LittleEndian.AppendUint32(b, d)
	b = append(b, trailerMagic[:]...)
	fileCRC = crc32.Update(fileCRC, castagnoli, b[start:])
	return binary.LittleEndian.AppendUint32(b, fileCRC)
}

func parseTrailer(p []byte) (trailer, error) {
	var t trailer
	if [8]byte(p[16:24]) != trailerMagic {
		return t, corruptf("bad trailer magic %q", p[16:24])
	}
	t.bodyLen = binary.LittleEndian.Uint64(p[0:])
	t.entries = binary.LittleEndian.Uint32(p[8:])
	t.dirCRC = binary.LittleEndian.Uint32(p[12:])
	return t, nil
}

// entry is one directory record. Offsets are derived, not stored.
type entry struct {
	kind  uint8
	id    uint8
	ncols uint8
	rows  uint32 // chunk rows
	raw   uint32 // decompressed bytes
	frame uint32 // zstd bytes in the body
	pad   uint32 // zero bytes after the frames

	off int64 // file offset of the frames, set by parseDirectory
}

func appendEntry(b []byte, e entry) []byte {
	b = append(b, e.kind, e.id, e.ncols, 0)
	b = binary.LittleEndian.AppendUint32(b, e.rows)
	b = binary.LittleEndian.AppendUint32(b, e.raw)
	b = binary.LittleEndian.AppendUint32(b, e.frame)
	return binary.LittleEndian.AppendUint32(b, e.pad)
}

func parseEntry(p []byte) entry {
	return entry{
		kind:  p[0],
		id:    p[1],
		ncols: p[2],
		rows:  binary.LittleEndian.Uint32(p[4:]),
		raw:   binary.LittleEndian.Uint32(p[8:]),
		frame: binary.LittleEndian.Uint32(p[12:]),
		pad:   binary.LittleEndian.Uint32(p[16:]),
	}
}

func (e entry) fields() string {
	return fmt.Sprintf("{kind %d id %d ncols %d rows %d raw %d frame %d pad %d}", e.kind, e.id, e.ncols, e.rows, e.raw, e.frame, e.pad)
}

// logicalLen is what an entry occupies once decoded and handed over.
func (e entry) logicalLen() uint64 {
	if e.kind == kindChunk {
		return uint64(e.rows) * (8 + 4*uint64(e.ncols))
	}
	return uint64(e.raw)
}

// padFor returns the zero padding an entry of frame bytes needs so that
// maxExpansion holds.
func padFor(raw, logical, frame uint64) uint32 {
	need := (max(raw, logical) + maxExpansion - 1) / maxExpansion
	if need <= frame {
		return 0
	}
	return uint32(need - frame)
}

// directory is the validated content of a file's directory.
type directory struct {
	entries []entry
	tables  map[uint8]int64
	blobs   map[uint8]int64
	chunks  int
}

// parseDirectory decodes and checks every entry against the format's rules
// and bounds before anything is decompressed. bodyStart is the file offset
// of the body, bodyLen its length from the trailer.
func parseDirectory(p []byte, bodyStart int64, bodyLen uint64) (directory, error) {
	d := directory{
		entries: make([]entry, 0, len(p)/entryLen),
		tables:  make(map[uint8]int64),
		blobs:   make(map[uint8]int64),
	}
	off := bodyStart
	var sum uint64
	inTable := false
	var table entry
	for i := 0; i < len(p); i += entryLen {
		n := i / entryLen
		if p[i+3] != 0 {
			return d, corruptf("directory entry %d: reserved byte %#02x set", n, p[i+3])
		}
		e := parseEntry(p[i : i+entryLen])
		switch e.kind {
		case kindTable:
			if e.ncols > maxCols || e.rows != 0 || e.raw != 0 || e.frame != 0 || e.pad != 0 {
				return d, corruptf("directory entry %d: bad table record %s", n, e.fields())
			}
			if _, dup := d.tables[e.id]; dup {
				return d, corruptf("directory entry %d: table %d appears twice", n, e.id)
			}
			d.tables[e.id] = 0
			inTable, table = true, e
		case kindChunk:
			if !inTable || e.id != table.id || e.ncols != table.ncols {
				return d, corruptf("directory entry %d: chunk of table %d outside that table", n, e.id)
			}
			if e.rows == 0 || e.rows > maxChunkRows {
				return d, corruptf("directory entry %d: chunk of %d rows", n, e.rows)
			}
			if lo, hi := chunkRawBounds(int(e.rows), int(e.ncols)); uint64(e.raw) < lo || uint64(e.raw) > hi {
				return d, corruptf("directory entry %d: chunk of %d rows and %d columns cannot be %d bytes", n, e.rows, e.ncols, e.raw)
			}
			if e.frame == 0 {
				// Rows need data: without a frame the reader would hand on
				// whatever its buffers last held.
				return d, corruptf("directory entry %d: chunk of %d rows without compressed data", n, e.rows)
			}
			d.tables[e.id] += int64(e.rows)
			d.chunks++
		case kindBlob:
			if e.ncols != 0 || e.rows != 0 || e.raw > maxBlobLen || (e.raw == 0) != (e.frame == 0) {
				return d, corruptf("directory entry %d: bad blob record %s", n, e.fields())
			}
			if _, dup := d.blobs[e.id]; dup {
				return d, corruptf("directory entry %d: blob %d appears twice", n, e.id)
			}
			d.blobs[e.id] = int64(e.raw)
			inTable = false
		default:
			return d, corruptf("directory entry %d: unknown kind %d", n, e.kind)
		}
		stored := uint64(e.frame) + uint64(e.pad)
		if max(uint64(e.raw), e.logicalLen()) > maxExpansion*stored {
			return d, corruptf("directory entry %d: %d bytes in the file cannot hold %d decoded bytes", n, stored, max(uint64(e.raw), e.logicalLen()))
		}
		e.off = off
		off += int64(stored)
		sum += stored
		if sum > bodyLen {
			return d, corruptf("directory entry %d ends past the %d-byte body", n, bodyLen)
		}
		d.entries = append(d.entries, e)
	}
	if sum != bodyLen {
		return d, corruptf("entries cover %d of %d body bytes", sum, bodyLen)
	}
	return d, nil
}
