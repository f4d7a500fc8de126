package snapshot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math"
	"path/filepath"
	"runtime"
	"slices"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// smallSnapshot returns the bytes of the file the damage tests start from:
// two tables (one of them split in chunks) and a blob, a few hundred bytes.
func smallSnapshot(t *testing.T) []byte {
	t.Helper()
	info := writeSnapshot(t, t.TempDir(), testHeader(1), WriterOptions{}, []item{
		{id: 1, ncols: 2, chunks: tripletChunks(40, 2, 9)},
		{blob: true, id: 3, data: []byte("client 192.0.2.0/24")},
		{id: 2, ncols: 1, chunks: []rowSet{{keys: []uint64{9, 3}, cols: cols([]uint32{1, 1<<31 | 2})}}},
	})
	return readFile(t, info.Path)
}

// spyVisitor fails the test if anything is delivered.
func spyVisitor(t *testing.T, what string) Visitor {
	return Visitor{
		Rows: func(uint8, []uint64, [][]uint32) error {
			t.Fatalf("%s: rows delivered from a damaged file", what)
			return nil
		},
		Blob: func(uint8, []byte) error {
			t.Fatalf("%s: blob delivered from a damaged file", what)
			return nil
		},
	}
}

// Every truncation, as a crash or a short copy leaves it, is rejected
// before the visitor sees a row, and List reports it.
func TestTruncation(t *testing.T) {
	b := smallSnapshot(t)
	dir := t.TempDir()
	for n := range len(b) {
		p := writeFile(t, dir, FileName(1), b[:n])
		_, err := Read(p, spyVisitor(t, "truncated"))
		mustCorrupt(t, err, "Read of a truncated file")
		_, err = Verify(p)
		mustCorrupt(t, err, "Verify of a truncated file")
		list, err := List(dir)
		if err != nil || len(list) != 1 {
			t.Fatalf("List = %v, %v", list, err)
		}
		mustCorrupt(t, list[0].Err, "List of a truncated file")
	}
}

// A bit flip at every byte offset, the version field included, is
// ErrCorrupt before the visitor sees a row: CRC32C catches every single-bit
// error, so one bit per byte (rotating through the eight) is enough.
func TestBitFlip(t *testing.T) {
	b := smallSnapshot(t)
	dir := t.TempDir()
	for off := range b {
		c := append([]byte(nil), b...)
		c[off] ^= 1 << (off % 8)
		p := writeFile(t, dir, FileName(1), c)
		_, err := Read(p, spyVisitor(t, "bit flip"))
		mustCorrupt(t, err, "Read after a bit flip")
	}
}

// reseal recomputes the header, directory and file checksums of a
// version-1 file after a test edited it, so the edit reaches the checks
// behind the checksums. Out-of-range lengths are left for the reader.
func reseal(b []byte) []byte {
	hlen := uint64(binary.LittleEndian.Uint32(b[12:]))
	if hlen >= headerFixedLen && hlen <= uint64(len(b)) {
		binary.LittleEndian.PutUint32(b[hlen-4:], crc32.Checksum(b[:hlen-4], castagnoli))
	}
	t := len(b) - trailerLen
	if dirStart := hlen + binary.LittleEndian.Uint64(b[t:]); dirStart <= uint64(t) {
		sum := crc32.Update(crc32.Checksum(b[dirStart:t], castagnoli), castagnoli, b[t:t+12])
		binary.LittleEndian.PutUint32(b[t+12:], sum)
	}
	binary.LittleEndian.PutUint32(b[len(b)-4:], crc32.Checksum(b[:len(b)-4], castagnoli))
	return b
}

// craft assembles a file with valid checksums around arbitrary entries and
// body bytes: what a hostile or buggy writer could produce.
func craft(h Header, body []byte, entries ...entry) []byte {
	b := appendHeader(nil, h)
	b = append(b, body...)
	var dir []byte
	for _, e := range entries {
		dir = appendEntry(dir, e)
	}
	b = append(b, dir...)
	return appendTrailer(b, uint64(len(body)), len(entries), dir, crc32.Checksum(b, castagnoli))
}

// allocated returns the bytes f allocates.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// hostileAllocLimit is what reading a tiny hostile file may allocate: the
// 256 KiB CRC buffer and a zstd decoder (262-268 KiB measured), nowhere
// near what the files below claim (up to gigabytes).
const hostileAllocLimit = 1 << 20

// Files with valid checksums whose fields claim huge counts or sizes are
// rejected from the directory alone, without allocating for the claim.
func TestHostileCounts(t *testing.T) {
	valid := smallSnapshot(t)
	h := testHeader(1)
	tbl := entry{kind: kindTable, id: 1, ncols: 2}
	cases := []struct {
		name string
		file []byte
	}{
		{"header length", func() []byte {
			c := append([]byte(nil), valid...)
			binary.LittleEndian.PutUint32(c[12:], math.MaxUint32)
			return reseal(c)
		}()},
		{"key options length", func() []byte {
			c := append([]byte(nil), valid...)
			binary.LittleEndian.PutUint32(c[40:], math.MaxUint32)
			return reseal(c)
		}()},
		{"entry count", func() []byte {
			c := append([]byte(nil), valid...)
			binary.LittleEndian.PutUint32(c[len(c)-trailerLen+8:], math.MaxUint32)
			return reseal(c)
		}()},
		{"body length", func() []byte {
			c := append([]byte(nil), valid...)
			binary.LittleEndian.PutUint64(c[len(c)-trailerLen:], 1<<62)
			return reseal(c)
		}()},
		{"chunk rows", craft(h, make([]byte, 64), tbl, entry{kind: kindChunk, id: 1, ncols: 2, rows: math.MaxUint32, raw: 1 << 30, frame: 64})},
		// Within every per-chunk bound, but 8 bytes cannot hold 64 Ki rows.
		{"chunk expansion", craft(h, make([]byte, 8), tbl, entry{kind: kindChunk, id: 1, ncols: 2, rows: maxChunkRows, raw: 100_000, frame: 8})},
		{"blob length", craft(h, make([]byte, 64), entry{kind: kindBlob, id: 1, raw: math.MaxUint32, frame: 64})},
		{"blob expansion", craft(h, make([]byte, 64), entry{kind: kindBlob, id: 1, raw: maxBlobLen, frame: 64})},
		{"frames past the body", craft(h, make([]byte, 64), entry{kind: kindBlob, id: 1, raw: 10, frame: 1 << 31})},
		{"chunk without table", craft(h, make([]byte, 64), entry{kind: kindChunk, id: 1, ncols: 2, rows: 1, raw: 50, frame: 64})},
		{"chunk of another table", craft(h, make([]byte, 64), tbl, entry{kind: kindChunk, id: 2, ncols: 2, rows: 1, raw: 50, frame: 64})},
		{"table columns", craft(h, nil, entry{kind: kindTable, id: 1, ncols: maxCols + 1})},
		{"duplicate table", craft(h, nil, tbl, tbl)},
		{"unknown kind", craft(h, nil, entry{kind: 9})},
		{"body not covered", craft(h, make([]byte, 64), entry{kind: kindBlob, id: 1, raw: 10, frame: 60})},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := writeFile(t, t.TempDir(), FileName(1), tc.file)
			var err error
			if n := allocated(func() { _, err = Read(p, spyVisitor(t, tc.name)) }); n > hostileAllocLimit {
				t.Errorf("Read allocated %d bytes", n)
			}
			mustCorrupt(t, err, "Read")
			_, err = Verify(p)
			mustCorrupt(t, err, "Verify")
		})
	}
}

// rawChunk returns the decompressed form of one chunk as the writer makes it.
func rawChunk(t *testing.T, keys []uint64, cs ...[]uint32) []byte {
	t.Helper()
	zenc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	defer zenc.Close()
	e := chunkEncoder{zenc: zenc}
	sorted, _ := sortRows(nil, nil, keys)
	frames, _ := e.encode(nil, sorted, cs)
	zd, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	defer zd.Close()
	raw, err := zd.DecodeAll(frames, nil)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// Chunks that fit their directory entry but whose content lies: only a
// faulty writer makes these, and the file checksum matches, so they are
// caught while decoding.
func TestMalformedChunk(t *testing.T) {
	const rows = 13 // not a multiple of 8: the bitmap has spare bits
	keys := make([]uint64, rows)
	c0, c1 := make([]uint32, rows), make([]uint32, rows)
	for i := range keys {
		keys[i] = uint64(i) << 40
		c0[i] = engineNow - uint32(i)*1000
		c1[i] = uint32(i % 4)
		if i%3 == 0 {
			c1[i] = 1<<31 | engineNow
		}
	}
	good := rawChunk(t, keys, c0, c1)
	kw := int(good[8])
	col0 := chunkHeaderLen
	col1 := chunkHeaderLen + colHeaderLen
	// The class bitmap of column 1 follows the key planes and column 0's
	// planes (column 0 has no bitmap: bit 31 is never set).
	bitmapAt := chunkHeaderLen + 2*colHeaderLen + kw*(rows-1) + int(good[col0+12])*rows

	zenc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(true))
	if err != nil {
		t.Fatal(err)
	}
	defer zenc.Close()
	file := func(raw, frame []byte, rawLen int) []byte {
		if frame == nil {
			frame = zenc.EncodeAll(raw, nil)
		}
		e := entry{kind: kindChunk, id: 1, ncols: 2, rows: rows, raw: uint32(rawLen), frame: uint32(len(frame))}
		e.pad = padFor(uint64(e.raw), e.logicalLen(), uint64(e.frame))
		body := append(frame, make([]byte, e.pad)...)
		return craft(testHeader(1), body, entry{kind: kindTable, id: 1, ncols: 2}, e)
	}
	edit := func(f func(b []byte)) []byte {
		b := append([]byte(nil), good...)
		f(b)
		return file(b, nil, len(b))
	}
	cases := []struct {
		name string
		file []byte
	}{
		{"key width", edit(func(b []byte) { b[8] = 9 })},
		{"value width", edit(func(b []byte) { b[col0+12] = 5 })},
		{"class count", edit(func(b []byte) { binary.LittleEndian.PutUint32(b[col1:], rows+1) })},
		{"reference too small", edit(func(b []byte) { binary.LittleEndian.PutUint32(b[col0+4:], 0) })},
		{"reference has bit 31", edit(func(b []byte) { binary.LittleEndian.PutUint32(b[col0+4:], 1<<31) })},
		{"keys overflow", edit(func(b []byte) { binary.LittleEndian.PutUint64(b, math.MaxUint64) })},
		{"bitmap count", edit(func(b []byte) { b[bitmapAt] ^= 2 })},
		// Row 0 is in class 1; move its bit past the last row so the count
		// still matches.
		{"bitmap spare bits", edit(func(b []byte) { b[bitmapAt] &^= 1; b[bitmapAt+1] |= 0x80 })},
		{"length disagrees with header", func() []byte {
			b := append(append([]byte(nil), good...), 0)
			return file(b, nil, len(b))
		}()},
		{"decompresses short", file(good[:len(good)-1], nil, len(good))},
		{"decompresses long", file(good, nil, len(good)-1)},
		{"garbage after frame", file(nil, append(zenc.EncodeAll(good, nil), 1, 2, 3, 4, 5, 6, 7, 8), len(good))},
		{"not zstd", file(nil, make([]byte, 64), len(good))},
		// A frame whose content size says 1 MiB: the decoder must refuse
		// it from the frame header rather than allocate.
		{"zstd bomb", file(nil, zenc.EncodeAll(make([]byte, 1<<20), nil), len(good))},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := writeFile(t, t.TempDir(), FileName(1), tc.file)
			var err error
			if n := allocated(func() { _, err = Verify(p) }); n > hostileAllocLimit {
				t.Errorf("Verify allocated %d bytes", n)
			}
			mustCorrupt(t, err, "Verify")
			_, err = Read(p, spyVisitor(t, tc.name))
			mustCorrupt(t, err, "Read")
		})
	}
	// The unedited chunk passes, or the cases above prove nothing.
	p := writeFile(t, t.TempDir(), FileName(1), file(good, nil, len(good)))
	got, _, err := collect(p)
	if err != nil {
		t.Fatalf("unedited chunk: %v", err)
	}
	checkContent(t, []item{{id: 1, ncols: 2, chunks: []rowSet{{keys: keys, cols: cols(c0, c1)}}}}, got)
}

// Damage under a valid file checksum (a bad copy resealed, or memory
// corruption between the checksum pass and decoding) is still caught by
// zstd's per-frame checksum, or else changes nothing: zstd ignores a few
// frame header bits (the unused bit, a window larger than the content).
func TestBodyDamageBehindValidChecksum(t *testing.T) {
	b := smallSnapshot(t)
	dir := t.TempDir()
	want, _, err := collect(writeFile(t, dir, FileName(1), b))
	if err != nil {
		t.Fatal(err)
	}
	hlen := int(binary.LittleEndian.Uint32(b[12:]))
	bodyLen := int(binary.LittleEndian.Uint64(b[len(b)-trailerLen:]))
	harmless := 0
	for off := hlen; off < hlen+bodyLen; off++ {
		c := append([]byte(nil), b...)
		c[off] ^= 0x10
		p := writeFile(t, dir, FileName(1), reseal(c))
		if _, err := Verify(p); err != nil {
			mustCorrupt(t, err, "Verify")
			continue
		}
		got, _, err := collect(p)
		if err != nil || describe(got) != describe(want) || !slices.EqualFunc(got, want, sameVisit) {
			t.Fatalf("flip at body offset %d passed Verify but reads differently: %v", off-hlen, err)
		}
		harmless++
	}
	if harmless > bodyLen/10 {
		t.Fatalf("%d of %d body flips went unnoticed", harmless, bodyLen)
	}
}

func sameVisit(a, b visit) bool {
	return a.blob == b.blob && a.id == b.id && bytes.Equal(a.data, b.data) &&
		slices.Equal(a.rows.keys, b.rows.keys) && slices.EqualFunc(a.rows.cols, b.rows.cols, slices.Equal)
}

// A newer format is ErrVersion, not ErrCorrupt, once its checksum matches,
// so the store can refuse to start rather than discard the file.
func TestNewerVersion(t *testing.T) {
	b := smallSnapshot(t)
	binary.LittleEndian.PutUint16(b[8:], formatVersion+1)
	dir := t.TempDir()
	p := writeFile(t, dir, FileName(1), reseal(b))
	if _, err := Read(p, spyVisitor(t, "newer version")); !errors.Is(err, ErrVersion) || errors.Is(err, ErrCorrupt) {
		t.Fatalf("Read = %v, want ErrVersion", err)
	}
	list, err := List(dir)
	if err != nil || len(list) != 1 || !errors.Is(list[0].Err, ErrVersion) || list[0].Header.WALIndex != 1 {
		t.Fatalf("List = %+v, %v", list, err)
	}
}

// A chunk that claims rows but holds no compressed frame (only padding) is
// corrupt: read as valid, it would hand the visitor nothing, or the rows of
// the chunk before it again, while the directory counts them.
func TestChunkWithoutFrame(t *testing.T) {
	h := testHeader(1)
	lo, _ := chunkRawBounds(1000, 2)
	ch := entry{kind: kindChunk, id: 1, ncols: 2, rows: 1000, raw: uint32(lo)}
	ch.pad = padFor(uint64(ch.raw), ch.logicalLen(), 0)
	b := craft(h, make([]byte, ch.pad), entry{kind: kindTable, id: 1, ncols: 2}, ch)
	dir := t.TempDir()
	writeFile(t, dir, FileName(1), b)
	p := filepath.Join(dir, FileName(1))
	if _, err := Verify(p); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Verify: %v, want ErrCorrupt", err)
	}
	if _, err := Read(p, Visitor{}); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Read: %v, want ErrCorrupt", err)
	}
}
