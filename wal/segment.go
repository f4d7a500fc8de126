package wal

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
)

// segmentNameLen is tidwall/wal's file name: the first index as %020d.
const segmentNameLen = 20

// segmentName is the file name of the segment whose first frame is index.
func segmentName(index uint64) string {
	return fmt.Sprintf("%020d", index)
}

// segmentFile is a file tidwall/wal would load: a plain segment, or a .START
// or .END file left by one of its truncations that was interrupted.
type segmentFile struct {
	name  string
	index uint64
	kind  segmentKind
}

type segmentKind uint8

const (
	plainSegment segmentKind = iota
	startSegment
	endSegment
)

// listSegments returns the files tidwall/wal's load() would consider, in its
// order (by name). It applies the same filter so the two never disagree about
// what is part of the log: anything else, .broken copies included, is
// ignored.
func listSegments(dir string) ([]segmentFile, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list wal directory %s: %w", dir, err)
	}
	var segs []segmentFile
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || len(name) < segmentNameLen {
			continue
		}
		index, err := strconv.ParseUint(name[:segmentNameLen], 10, 64)
		if err != nil || index == 0 {
			continue
		}
		kind := plainSegment
		switch {
		case len(name) == segmentNameLen:
		case name[segmentNameLen:] == ".START":
			kind = startSegment
		case name[segmentNameLen:] == ".END":
			kind = endSegment
		default:
			continue
		}
		segs = append(segs, segmentFile{name: name, index: index, kind: kind})
	}
	return segs, nil
}

// finishTruncation completes a tidwall/wal TruncateFront or TruncateBack that
// a crash interrupted, exactly as tidwall's load() would, so the repair scan
// sees the log tidwall will open. Doing it here rather than leaving it to
// tidwall also lets us fsync the directory afterwards, which tidwall does not.
// tidwall wrote the .START/.END file completely (temp file, fsync, rename)
// before touching anything else, so it is trusted as is.
func finishTruncation(dir string, segs []segmentFile) ([]segmentFile, bool, error) {
	start, end := -1, -1
	for i, s := range segs {
		switch {
		case s.kind == startSegment:
			start = i
		case s.kind == endSegment && end == -1:
			end = i
		}
	}
	if start == -1 && end == -1 {
		return segs, false, nil
	}
	if start != -1 && end != -1 {
		return nil, false, fmt.Errorf("wal directory %s holds both %s and %s: %w", dir,
			segs[start].name, segs[end].name,
			corruptf("two interrupted truncations; move one of them aside by hand after checking which is newer"))
	}
	finish := func(s segmentFile) (segmentFile, error) {
		final := segmentName(s.index)
		if err := os.Rename(filepath.Join(dir, s.name), filepath.Join(dir, final)); err != nil {
			return s, fmt.Errorf("finish interrupted truncation: %w", err)
		}
		return segmentFile{name: final, index: s.index, kind: plainSegment}, nil
	}
	var err error
	if start != -1 {
		// A front truncation: everything before the .START file is gone.
		for _, s := range segs[:start] {
			if err := os.Remove(filepath.Join(dir, s.name)); err != nil {
				return nil, false, fmt.Errorf("finish interrupted truncation: %w", err)
			}
		}
		segs = segs[start:]
		if segs[0], err = finish(segs[0]); err != nil {
			return nil, false, err
		}
	} else {
		// A back truncation: everything after the .END file is gone, and the
		// segment it replaces (same index, sorted just before it) is
		// overwritten by the rename.
		for i := len(segs) - 1; i > end; i-- {
			if err := os.Remove(filepath.Join(dir, segs[i].name)); err != nil {
				return nil, false, fmt.Errorf("finish interrupted truncation: %w", err)
			}
		}
		segs = segs[:end+1]
		if n := len(segs); n > 1 && segs[n-2].index == segs[n-1].index {
			segs = append(segs[:n-2], segs[n-1])
		}
		if segs[len(segs)-1], err = finish(segs[len(segs)-1]); err != nil {
			return nil, false, err
		}
	}
	return segs, true, syncDir(dir)
}

// entryReader walks a segment file with tidwall/wal's binary framing: a
// uvarint length, then that many bytes. Lengths are checked against the bytes
// left in the file before anything is allocated.
type entryReader struct {
	r    *bufio.Reader
	size int64 // file size when opened
	off  int64 // offset of the next entry's length prefix
	buf  []byte
}

// errTorn is a framing failure: nothing after it can be located.
type errTorn struct{ why string }

func (e *errTorn) Error() string { return e.why }

func newEntryReader(f *os.File, size int64, buf *bufio.Reader) *entryReader {
	buf.Reset(f)
	return &entryReader{r: buf, size: size}
}

// next returns the next entry's bytes (valid until the next call) and the
// offset of its length prefix. It returns io.EOF at a clean end, an *errTorn
// if the framing breaks, and any other error for I/O failures.
func (e *entryReader) next() ([]byte, int64, error) {
	start := e.off
	left := e.size - e.off
	if left == 0 {
		return nil, start, io.EOF
	}
	// Collect the prefix bytes, then decode them with binary.Uvarint: the
	// same call tidwall uses, so the two agree on every odd encoding.
	var prefix [binary.MaxVarintLen64]byte
	k := 0
	for {
		if int64(k) == left {
			return nil, start, &errTorn{fmt.Sprintf("length prefix cut off by the end of the file after %d bytes", k)}
		}
		b, err := e.r.ReadByte()
		if err != nil {
			return nil, start, readErr(err)
		}
		prefix[k] = b
		k++
		if b < 0x80 {
			break
		}
		if k == len(prefix) {
			return nil, start, &errTorn{"length prefix longer than 10 bytes"}
		}
	}
	length, n := binary.Uvarint(prefix[:k])
	if n <= 0 {
		return nil, start, &errTorn{"length prefix overflows 64 bits"}
	}
	left -= int64(k)
	if length > uint64(left) {
		return nil, start, &errTorn{fmt.Sprintf("entry of %d bytes runs past the end of the file (%d bytes left)", length, left)}
	}
	if uint64(cap(e.buf)) < length {
		e.buf = make([]byte, length)
	}
	data := e.buf[:length]
	if _, err := io.ReadFull(e.r, data); err != nil {
		return nil, start, readErr(err)
	}
	e.off += int64(k) + int64(length)
	return data, start, nil
}

// readErr reports a file that ended before the size it had when opened:
// something else is changing the directory under us.
func readErr(err error) error {
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("segment shrank while being read: %w", io.ErrUnexpectedEOF)
	}
	return err
}

// syncDir fsyncs a directory so that file creations, renames and removals in
// it survive a power failure.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open directory %s for fsync: %w", dir, err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}

// brokenName is where a damaged segment's bytes are kept for inspection.
// tidwall/wal ignores the name, so the copies never re-enter the log.
func brokenName(name string) string {
	return name + ".broken"
}
