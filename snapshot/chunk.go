package snapshot

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"slices"

	"github.com/klauspost/compress/zstd"
)

// The chunk encoding is columnar and split into byte planes because the
// data is close to random and zstd's only real lever on it is the order-0
// Huffman coder it applies to literals, one table per block. Measured on
// 10M realistic triplet rows in 256 chunks (SpeedFastest):
//
//	row-major 16-byte rows, one frame per chunk        15.06 bytes/row
//	byte planes, one frame per chunk                   11.05
//	byte planes, one frame per plane                   10.51
//	  + bit 31 split into a class bitmap               10.10
//	  same without WithAllLitEntropyCompression        10.68
//	order-0 entropy of those planes                     9.97
//
// A key delta of sorted uniform 64-bit keys is ~exponential: its low bytes
// are uniform and cost 8 bits each whatever we do, its top byte is small
// and skewed, and the bytes above are zero. A plane gathers one byte
// position of every row, so each plane has a single distribution; giving
// each plane its own zstd frame gives it its own block and Huffman table
// (planes sharing a block share a table fitted to their mix), and zero
// planes are dropped (their width is 0).
//
// Values are uint32. Bit 31 is treated as a tag that splits a column into two
// classes (the engine's word is "attempts" with the bit clear and
// "1<<31 | last-seen" with it set): a bitmap records the class of each row
// and each class is stored as (class max - value) in its own planes. Times
// thus become ages relative to the newest value of the chunk, which packs
// 35 days into 22 bits without this package knowing the engine's epoch, and
// stays non-negative even if a node's clock ran ahead. Keeping the classes
// apart saves 0.4 byte/row over one plane set mixing small counts with
// large ages, whose mixed distributions every plane would pay for.

// valueMask is the payload of a value; bit 31 is its class.
const valueMask = 1<<31 - 1

// colHeaderLen and chunkHeaderLen size the plain header at the start of
// every decompressed chunk: base key (8), key delta width (1), and per
// column n1 (4), ref0 (4), ref1 (4), w0 (1), w1 (1).
const (
	colHeaderLen   = 14
	chunkHeaderLen = 9
)

// keyIdx pairs a key with its input row so the sort can carry the columns.
type keyIdx struct {
	key uint64
	idx uint32
}

type colHeader struct {
	n1         uint32 // rows with bit 31 set
	ref0, ref1 uint32 // per class, the largest payload
	w0, w1     uint8  // per class, bytes per (ref - payload)
}

// chunkRawBounds returns the smallest and largest decompressed size a chunk
// of rows x ncols can have.
func chunkRawBounds(rows, ncols int) (lo, hi uint64) {
	lo = uint64(chunkHeaderLen + colHeaderLen*ncols)
	hi = lo + 8*uint64(rows-1) + uint64(ncols)*(uint64(rows+7)/8+4*uint64(rows))
	return lo, hi
}

// byteWidth returns the bytes needed to hold x.
func byteWidth(x uint64) int { return (bits.Len64(x) + 7) / 8 }

// sortRows returns keys paired with their input rows in ascending key
// order, ties in input order so output bytes are deterministic. pairs and
// tmp are scratch space, reused across calls.
//
// It is an LSD radix sort, one stable pass per key byte, skipping bytes
// that are equal across the chunk (a store chunk is one shard, so its top
// byte or more is constant). On such a chunk of 40 Ki keys it takes 1.0 ms
// against 5.2 ms for slices.SortFunc (BenchmarkSortRows), which would make
// sorting half of the writer's CPU time.
func sortRows(pairs, tmp []keyIdx, keys []uint64) (sorted, scratch []keyIdx) {
	n := len(keys)
	pairs = slices.Grow(pairs[:0], n)[:n]
	for i, k := range keys {
		pairs[i] = keyIdx{k, uint32(i)}
	}
	if n < 64 {
		// Insertion sort is stable and beats the counting passes here.
		for i := 1; i < n; i++ {
			for j := i; j > 0 && pairs[j].key < pairs[j-1].key; j-- {
				pairs[j], pairs[j-1] = pairs[j-1], pairs[j]
			}
		}
		return pairs, tmp
	}
	var counts [8][256]uint32
	for _, k := range keys {
		for d := range 8 {
			counts[d][byte(k>>(8*d))]++
		}
	}
	tmp = slices.Grow(tmp[:0], n)[:n]
	src, dst := pairs, tmp
	for d := range 8 {
		c := &counts[d]
		if c[byte(keys[0]>>(8*d))] == uint32(n) {
			continue
		}
		var off [256]uint32
		var sum uint32
		for b, x := range c {
			off[b] = sum
			sum += x
		}
		shift := 8 * d
		for _, p := range src {
			b := byte(p.key >> shift)
			dst[off[b]] = p
			off[b]++
		}
		src, dst = dst, src
	}
	return src, dst
}

// chunkEncoder holds the scratch space of one encoding goroutine.
type chunkEncoder struct {
	zenc   *zstd.Encoder
	deltas []uint64
	sorted [][]uint32
	cls    [2][]uint32
	bitmap []byte
	plane  []byte
	hdr    []byte
}

// encode appends the zstd frames of one chunk to dst. pairs are the chunk's
// rows in key order, cols the caller's columns indexed by keyIdx.idx. It
// returns the extended dst and the decompressed length.
func (c *chunkEncoder) encode(dst []byte, pairs []keyIdx, cols [][]uint32) ([]byte, int) {
	n := len(pairs)
	raw := 0
	emit := func(p []byte) {
		if len(p) > 0 {
			// One frame per stream: a frame never mixes two planes in one
			// block, so each plane gets its own Huffman table.
			dst = c.zenc.EncodeAll(p, dst)
			raw += len(p)
		}
	}

	c.deltas = slices.Grow(c.deltas[:0], n)[:n-1]
	var maxDelta uint64
	for i := 1; i < n; i++ {
		d := pairs[i].key - pairs[i-1].key
		c.deltas[i-1] = d
		maxDelta = max(maxDelta, d)
	}
	kw := byteWidth(maxDelta)

	if cap(c.sorted) < len(cols) {
		c.sorted = make([][]uint32, len(cols))
	}
	c.sorted = c.sorted[:len(cols)]
	var hs [maxCols]colHeader
	for ci, col := range cols {
		s := slices.Grow(c.sorted[ci][:0], n)[:n]
		for i, p := range pairs {
			s[i] = col[p.idx]
		}
		c.sorted[ci] = s
		hs[ci] = columnHeader(s)
	}

	h := binary.LittleEndian.AppendUint64(c.hdr[:0], pairs[0].key)
	h = append(h, byte(kw))
	for ci := range cols {
		ch := hs[ci]
		h = binary.LittleEndian.AppendUint32(h, ch.n1)
		h = binary.LittleEndian.AppendUint32(h, ch.ref0)
		h = binary.LittleEndian.AppendUint32(h, ch.ref1)
		h = append(h, ch.w0, ch.w1)
	}
	c.hdr = h
	emit(h)

	c.plane = slices.Grow(c.plane[:0], n)
	for j := range kw {
		p := c.plane[:n-1]
		for i, d := range c.deltas {
			p[i] = byte(d >> (8 * j))
		}
		emit(p)
	}

	for ci, s := range c.sorted {
		ch := hs[ci]
		c.cls[0], c.cls[1] = c.cls[0][:0], c.cls[1][:0]
		split := ch.n1 > 0 && int(ch.n1) < n
		if split {
			c.bitmap = slices.Grow(c.bitmap[:0], (n+7)/8)[:(n+7)/8]
			clear(c.bitmap)
		}
		for i, v := range s {
			if v>>31 == 0 {
				c.cls[0] = append(c.cls[0], ch.ref0-v)
			} else {
				c.cls[1] = append(c.cls[1], ch.ref1-v&valueMask)
				if split {
					c.bitmap[i/8] |= 1 << (i % 8)
				}
			}
		}
		if split {
			emit(c.bitmap)
		}
		for k, w := range [2]uint8{ch.w0, ch.w1} {
			for j := range int(w) {
				p := c.plane[:len(c.cls[k])]
				for i, d := range c.cls[k] {
					p[i] = byte(d >> (8 * j))
				}
				emit(p)
			}
		}
	}
	return dst, raw
}

// columnHeader counts a column's classes and picks each class's reference
// (its largest payload) and the width of its largest age.
func columnHeader(s []uint32) colHeader {
	var ch colHeader
	lo := [2]uint32{valueMask, valueMask}
	var hi [2]uint32
	for _, v := range s {
		k := v >> 31
		ch.n1 += k
		p := v & valueMask
		lo[k] = min(lo[k], p)
		hi[k] = max(hi[k], p)
	}
	n0 := uint32(len(s)) - ch.n1
	if n0 > 0 {
		ch.ref0, ch.w0 = hi[0], uint8(byteWidth(uint64(hi[0]-lo[0])))
	}
	if ch.n1 > 0 {
		ch.ref1, ch.w1 = hi[1], uint8(byteWidth(uint64(hi[1]-lo[1])))
	}
	return ch
}

// chunkDecoder holds the output and scratch of one decoding goroutine. Its
// slices are reused from chunk to chunk.
type chunkDecoder struct {
	keys []uint64
	cols [][]uint32
	cls  [2][]uint32
}

// decode parses one decompressed chunk of rows x ncols into c.keys and
// c.cols, checking every length, width and value against the header. Its
// errors describe the damage; the caller marks them ErrCorrupt.
func (c *chunkDecoder) decode(raw []byte, rows, ncols int) error {
	hl := chunkHeaderLen + colHeaderLen*ncols
	if len(raw) < hl {
		return fmt.Errorf("chunk of %d bytes is shorter than its header", len(raw))
	}
	base := binary.LittleEndian.Uint64(raw)
	kw := int(raw[8])
	if kw > 8 {
		return fmt.Errorf("key delta width %d", kw)
	}
	var hs [maxCols]colHeader
	need := hl + kw*(rows-1)
	for ci := range ncols {
		p := raw[chunkHeaderLen+colHeaderLen*ci:]
		ch := colHeader{
			n1:   binary.LittleEndian.Uint32(p),
			ref0: binary.LittleEndian.Uint32(p[4:]),
			ref1: binary.LittleEndian.Uint32(p[8:]),
			w0:   p[12],
			w1:   p[13],
		}
		if ch.n1 > uint32(rows) || ch.ref0 > valueMask || ch.ref1 > valueMask || ch.w0 > 4 || ch.w1 > 4 {
			return fmt.Errorf("column %d header %+v for %d rows", ci, ch, rows)
		}
		n1 := int(ch.n1)
		if n1 > 0 && n1 < rows {
			need += (rows + 7) / 8
		}
		need += int(ch.w0)*(rows-n1) + int(ch.w1)*n1
		hs[ci] = ch
	}
	if need != len(raw) {
		return fmt.Errorf("chunk is %d bytes, its header describes %d", len(raw), need)
	}
	p := raw[hl:]

	c.keys = slices.Grow(c.keys[:0], rows)[:rows]
	c.keys[0] = base
	d := c.keys[1:]
	clear(d)
	for j := range kw {
		for i, b := range p[:len(d)] {
			d[i] |= uint64(b) << (8 * j)
		}
		p = p[len(d):]
	}
	prev := base
	for i, x := range d {
		k := prev + x
		if k < prev {
			return fmt.Errorf("key %d overflows", i+1)
		}
		d[i], prev = k, k
	}

	if cap(c.cols) < ncols {
		c.cols = make([][]uint32, ncols)
	}
	c.cols = c.cols[:ncols]
	for ci := range ncols {
		ch := hs[ci]
		out := slices.Grow(c.cols[ci][:0], rows)[:rows]
		c.cols[ci] = out
		n1 := int(ch.n1)
		var bitmap []byte
		if n1 > 0 && n1 < rows {
			bitmap, p = p[:(rows+7)/8], p[(rows+7)/8:]
			if err := checkBitmap(bitmap, rows, n1); err != nil {
				return fmt.Errorf("column %d: %w", ci, err)
			}
		}
		var err error
		switch {
		case n1 == 0:
			p, err = decodeClass(out, p, ch.w0, ch.ref0, 0)
		case n1 == rows:
			p, err = decodeClass(out, p, ch.w1, ch.ref1, 1<<31)
		default:
			c.cls[0] = slices.Grow(c.cls[0][:0], rows-n1)[:rows-n1]
			c.cls[1] = slices.Grow(c.cls[1][:0], n1)[:n1]
			if p, err = decodeClass(c.cls[0], p, ch.w0, ch.ref0, 0); err != nil {
				break
			}
			if p, err = decodeClass(c.cls[1], p, ch.w1, ch.ref1, 1<<31); err != nil {
				break
			}
			c0, c1 := c.cls[0], c.cls[1]
			for i := range out {
				if bitmap[i/8]>>(i%8)&1 == 0 {
					out[i], c0 = c0[0], c0[1:]
				} else {
					out[i], c1 = c1[0], c1[1:]
				}
			}
		}
		if err != nil {
			return fmt.Errorf("column %d: %w", ci, err)
		}
	}
	return nil
}

// decodeClass rebuilds len(out) values of one class from w planes at the
// front of p and returns the rest of p.
func decodeClass(out []uint32, p []byte, w uint8, ref, tag uint32) ([]byte, error) {
	n := len(out)
	clear(out)
	for j := range int(w) {
		for i, b := range p[:n] {
			out[i] |= uint32(b) << (8 * j)
		}
		p = p[n:]
	}
	var worst uint32
	for _, d := range out {
		worst = max(worst, d)
	}
	if worst > ref {
		return p, fmt.Errorf("age %d exceeds its reference %d", worst, ref)
	}
	for i, d := range out {
		out[i] = (ref - d) | tag
	}
	return p, nil
}

func checkBitmap(b []byte, rows, n1 int) error {
	ones := 0
	for _, x := range b {
		ones += bits.OnesCount8(x)
	}
	if ones != n1 {
		return fmt.Errorf("class bitmap has %d bits set, header says %d", ones, n1)
	}
	if r := rows % 8; r != 0 && b[len(b)-1]>>r != 0 {
		return fmt.Errorf("class bitmap has bits set past row %d", rows)
	}
	return nil
}
