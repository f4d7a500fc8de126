package wal

import (
	"encoding/binary"
	"hash/crc32"
)

// Reading a segment: every entry is checked as a frame, and an entry that
// does not verify is damage. After damage the walk resynchronises: it looks,
// byte by byte, for the next place where a whole version 2 frame verifies
// with an index not below the one expected. A frame carries its own index
// and CRC, so a span of bad bytes costs exactly the frames it overlaps, and
// the walk knows which ones.

// walker walks the bytes of one segment, or a run of them, in order.
type walker struct {
	// next is the index the next frame should have: a version 2 frame with
	// a lower index is damage (stale or misplaced), one with a higher index
	// means frames next..index-1 are missing.
	next uint64
	// v1 is true while version 1 frames can be placed: they carry no
	// index, so they take next by position, which only holds until the
	// first damage in the file.
	v1 bool
}

// span is a run of bytes that held no valid frame: [off, end) in the file.
type span struct {
	off, end int64
	// after is the index of the last valid frame before the span in the
	// same file (0: none), next the first after it (0: the file ends in
	// damage). Frames after+1 .. next-1 are lost, or, at the end of a
	// file, after+1 up to the next file's first index.
	after, next uint64
}

// step reads one item at data[p:]: a frame the walker can place, or a span
// of damage. It returns the position after the item; a zero-width span (a
// frame whose index jumps past the expected one) is followed by the frame
// itself on the next step.
func (w *walker) step(data []byte, base int64, p int) (f Frame, s span, isFrame bool, end int) {
	last := uint64(0)
	if w.next > 0 {
		last = w.next - 1
	}
	f, n, ok := w.entryAt(data[p:])
	if ok {
		if f.Index > w.next && w.next > 0 {
			// Frames went missing without a bad byte: a writer never
			// skips an index, so they were lost with bytes that are no
			// longer here.
			w.next = f.Index
			return Frame{}, span{off: base + int64(p), end: base + int64(p), after: last, next: f.Index}, false, p
		}
		w.next = f.Index + 1
		return f, span{}, true, p + n
	}
	q, found := w.resync(data, p+1)
	w.v1 = false
	s = span{off: base + int64(p), end: base + int64(q), after: last}
	if found {
		// The index the resynchronised frame carries: the caller's count
		// of what the span cost, and the index the next step expects.
		s.next = binary.LittleEndian.Uint64(data[q+uvarintAt(data[q:])+offIndex:])
		w.next = s.next
	}
	return Frame{}, s, false, q
}

// walk reads data, the file's bytes from offset base on, calling frame for
// each valid frame (with the offsets of its entry) and damage for each span
// of bad bytes.
func (w *walker) walk(data []byte, base int64, frame func(off, end int64, f Frame) bool, damage func(s span)) {
	for p := 0; p < len(data); {
		f, s, ok, end := w.step(data, base, p)
		if ok {
			if !frame(base+int64(p), base+int64(end), f) {
				return
			}
		} else {
			damage(s)
		}
		p = end
	}
}

// entryAt decodes the entry at the start of b as a frame it can place: a
// version 2 frame whose index is not below w.next, or a version 1 frame while
// positions still hold. n is the entry's length, prefix included.
func (w *walker) entryAt(b []byte) (f Frame, n int, ok bool) {
	length, k := binary.Uvarint(b)
	if k <= 0 || length > uint64(len(b)-k) {
		return Frame{}, 0, false
	}
	f, err := DecodeFrame(b[k : k+int(length)])
	if err != nil {
		return Frame{}, 0, false
	}
	switch {
	case f.Version == frameVersionV1:
		if !w.v1 {
			return Frame{}, 0, false
		}
		f.Index = w.next
	case f.Index < w.next:
		return Frame{}, 0, false
	}
	return f, k + int(length), true
}

// resync finds the first offset at or after from where a whole version 2
// frame verifies with an index of at least w.next, or returns len(data). The
// checks before the CRC (a plausible length, the version and flag bytes, an
// index in range) turn down almost every offset for the price of a few
// loads, so the CRC runs only on real candidates. The range is tight: the
// bad bytes from from-1 to a candidate can have held at most one frame per
// minEntryV1 bytes, so its index is at most that many past w.next.
func (w *walker) resync(data []byte, from int) (int, bool) {
	const minEntryV1 = 1 + minFrameSizeV1
	for p := from; p < len(data); p++ {
		length, k := binary.Uvarint(data[p:])
		if k <= 0 || length < minFrameSize || length > uint64(len(data)-p-k) {
			continue
		}
		fr := data[p+k : p+k+int(length)]
		if fr[0] != frameVersion || fr[1] != 0 {
			continue
		}
		index := binary.LittleEndian.Uint64(fr[offIndex:])
		if index < w.next || index == 0 || index-w.next > uint64(p-from+1)/minEntryV1+1 {
			continue
		}
		body := fr[:len(fr)-crcSize]
		if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(fr[len(body):]) {
			continue
		}
		return p, true
	}
	return len(data), false
}

// uvarintAt is the length of the uvarint at the start of b, which the caller
// knows is valid.
func uvarintAt(b []byte) int {
	_, k := binary.Uvarint(b)
	return k
}
