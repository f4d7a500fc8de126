package wal

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
)

const (
	// frameVersion is the only format this package writes or reads. Zero is
	// never a valid version, so an all-zero frame (the zero-filled tail that
	// tidwall/wal would otherwise parse as a run of empty entries) is corrupt.
	frameVersion = 1

	// headerSize is version (1) + flags (1) + record count (4).
	headerSize = 6
	crcSize    = 4

	// minFrameSize is a header, one payload byte and the CRC: the smallest
	// frame Append can produce.
	minFrameSize = headerSize + 1 + crcSize

	// maxRecords is the largest count the header's uint32 can carry.
	maxRecords = math.MaxUint32
)

// castagnoli is CRC32C: hardware-accelerated on amd64 and arm64 and better
// at catching burst errors than IEEE. Built once and never written to.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// corruptf returns an error wrapping ErrCorrupt that says what is wrong.
func corruptf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))
}

// AppendFrame appends the frame holding payload and its record count n to
// dst and returns the extended slice. It is the encoding Append uses, exported
// for tools and fuzz targets; the log itself builds frames in place.
func AppendFrame(dst, payload []byte, n int) ([]byte, error) {
	if err := checkAppend(payload, n); err != nil {
		return dst, err
	}
	start := len(dst)
	dst = append(dst, frameVersion, 0, 0, 0, 0, 0)
	binary.LittleEndian.PutUint32(dst[start+2:], uint32(n))
	dst = append(dst, payload...)
	return sealFrame(dst, start), nil
}

// sealFrame appends the CRC of dst[start:] to dst.
func sealFrame(dst []byte, start int) []byte {
	sum := crc32.Checksum(dst[start:], castagnoli)
	return binary.LittleEndian.AppendUint32(dst, sum)
}

// DecodeFrame verifies frame and returns its payload, which aliases frame,
// and its record count. Any defect returns an error wrapping ErrCorrupt; the
// length is checked before anything else is read, so no input panics.
func DecodeFrame(frame []byte) (payload []byte, n int, err error) {
	if len(frame) < minFrameSize {
		return nil, 0, corruptf("frame of %d bytes is shorter than the minimum of %d", len(frame), minFrameSize)
	}
	if frame[0] != frameVersion {
		return nil, 0, corruptf("frame version %d, want %d", frame[0], frameVersion)
	}
	if frame[1] != 0 {
		return nil, 0, corruptf("frame flags %#02x set, version %d defines none", frame[1], frameVersion)
	}
	body := frame[:len(frame)-crcSize]
	stored := binary.LittleEndian.Uint32(frame[len(body):])
	if sum := crc32.Checksum(body, castagnoli); sum != stored {
		return nil, 0, corruptf("crc32c mismatch: stored %#08x, computed %#08x", stored, sum)
	}
	count := binary.LittleEndian.Uint32(frame[2:headerSize])
	if count == 0 {
		return nil, 0, corruptf("frame claims zero records")
	}
	return body[headerSize:], int(count), nil
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
