package wal

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
)

const (
	// frameVersion is the format this package writes. Version 1, which
	// carried no index, generation, key or time, is still read (see
	// doc.go). Zero is never a valid version, so an all-zero frame (the
	// zero-filled tail that tidwall/wal would otherwise parse as a run of
	// empty entries) is corrupt.
	frameVersion   = 2
	frameVersionV1 = 1

	// headerSize is version (1) + flags (1) + records (4) + generation (4)
	// + key id (4) + index (8) + time (8).
	headerSize   = 30
	headerSizeV1 = 6
	crcSize      = 4

	// minFrameSize is a header, one payload byte and the CRC: the smallest
	// frame Append can produce.
	minFrameSize   = headerSize + 1 + crcSize
	minFrameSizeV1 = headerSizeV1 + 1 + crcSize

	// maxRecords is the largest count the header's uint32 can carry.
	maxRecords = math.MaxUint32
)

// Offsets of the version 2 header fields.
const (
	offRecords = 2
	offGen     = 6
	offKey     = 10
	offIndex   = 14
	offTime    = 22
)

// castagnoli is CRC32C: hardware-accelerated on amd64 and arm64 and better
// at catching burst errors than IEEE. Built once and never written to.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// corruptf returns an error wrapping ErrCorrupt that says what is wrong.
func corruptf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))
}

// Frame is one frame as read back: a batch of records and where it sits in
// the log that wrote it.
type Frame struct {
	// Index is the frame's place in its log. A version 1 frame does not
	// carry it: DecodeFrame leaves it 0 and the log fills it in from the
	// frame's position.
	Index uint64
	// Gen is the generation of the log when the frame was written: a log
	// takes a new one whenever it opens or reopens, so (Gen, Index) never
	// names two different frames. 0 for version 1 frames.
	Gen uint32
	// KeyID identifies the key the records were made with
	// (Options.KeyID); 0 for version 1 frames.
	KeyID uint32
	// UnixMilli is when the frame was written; 0 for version 1 frames.
	UnixMilli int64
	// Records is how many records Payload holds, at least 1.
	Records int
	// Payload is the records, aliasing the bytes the frame was decoded
	// from.
	Payload []byte
	// Version is the frame format, 1 or 2.
	Version uint8
}

// AppendFrame appends f as an encoded frame to dst and returns the extended
// slice: f.Payload, f.Records, and the header fields f carries. It is the
// encoding Append uses, exported for replication, tools and fuzz targets;
// the log itself builds frames in place.
func AppendFrame(dst []byte, f Frame) ([]byte, error) {
	if err := checkAppend(f.Payload, f.Records); err != nil {
		return dst, err
	}
	start := len(dst)
	dst = append(dst, make([]byte, headerSize)...)
	putHeader(dst[start:], f)
	dst = append(dst, f.Payload...)
	return sealFrame(dst, start), nil
}

// putHeader writes f's header fields into the first headerSize bytes of b.
func putHeader(b []byte, f Frame) {
	b[0] = frameVersion
	b[1] = 0
	binary.LittleEndian.PutUint32(b[offRecords:], uint32(f.Records))
	binary.LittleEndian.PutUint32(b[offGen:], f.Gen)
	binary.LittleEndian.PutUint32(b[offKey:], f.KeyID)
	binary.LittleEndian.PutUint64(b[offIndex:], f.Index)
	binary.LittleEndian.PutUint64(b[offTime:], uint64(f.UnixMilli))
}

// sealFrame appends the CRC of dst[start:] to dst.
func sealFrame(dst []byte, start int) []byte {
	sum := crc32.Checksum(dst[start:], castagnoli)
	return binary.LittleEndian.AppendUint32(dst, sum)
}

// DecodeFrame verifies an encoded frame and returns it; the payload aliases
// b. Any defect returns an error wrapping ErrCorrupt; lengths are checked
// before anything else is read, so no input panics.
func DecodeFrame(b []byte) (Frame, error) {
	if len(b) == 0 {
		return Frame{}, corruptf("empty frame")
	}
	min, hdr := minFrameSize, headerSize
	switch b[0] {
	case frameVersion:
	case frameVersionV1:
		min, hdr = minFrameSizeV1, headerSizeV1
	default:
		return Frame{}, corruptf("frame version %d, want %d or %d", b[0], frameVersionV1, frameVersion)
	}
	if len(b) < min {
		return Frame{}, corruptf("frame of %d bytes is shorter than the minimum of %d", len(b), min)
	}
	if b[1] != 0 {
		return Frame{}, corruptf("frame flags %#02x set, version %d defines none", b[1], b[0])
	}
	body := b[:len(b)-crcSize]
	stored := binary.LittleEndian.Uint32(b[len(body):])
	if sum := crc32.Checksum(body, castagnoli); sum != stored {
		return Frame{}, corruptf("crc32c mismatch: stored %#08x, computed %#08x", stored, sum)
	}
	f := Frame{
		Version: b[0],
		Records: int(binary.LittleEndian.Uint32(b[offRecords:])),
		Payload: body[hdr:],
	}
	if f.Records == 0 {
		return Frame{}, corruptf("frame claims zero records")
	}
	if f.Version == frameVersion {
		f.Gen = binary.LittleEndian.Uint32(b[offGen:])
		f.KeyID = binary.LittleEndian.Uint32(b[offKey:])
		f.Index = binary.LittleEndian.Uint64(b[offIndex:])
		f.UnixMilli = int64(binary.LittleEndian.Uint64(b[offTime:]))
		if f.Index == 0 {
			return Frame{}, corruptf("frame index 0")
		}
	}
	return f, nil
}

// checkAppend rejects what could never be decoded again: an empty payload or
// a record count outside [1, 2^32-1].
func checkAppend(payload []byte, n int) error {
	if len(payload) == 0 {
		return fmt.Errorf("wal: append of %d records with an empty payload", n)
	}
	if n < 1 || uint64(n) > maxRecords {
		return fmt.Errorf("wal: append of %d records: the count must be in [1, %d]", n, uint64(maxRecords))
	}
	return nil
}

// uvarintLen is the size of tidwall/wal's length prefix for an entry of n
// bytes.
func uvarintLen(n int) int {
	size := 1
	for v := uint64(n); v >= 0x80; v >>= 7 {
		size++
	}
	return size
}
