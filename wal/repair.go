package wal

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// RepairReport says what was cut off the log when it was opened. The zero
// value means nothing was.
type RepairReport struct {
	// Segment is the file holding the first entry that did not verify, or the
	// first file that did not continue the numbering of the one before it.
	Segment string
	// Offset is where Segment was cut; everything from it on was dropped.
	Offset int64
	// Index is the index the first dropped frame had: the log now ends at
	// Index-1 and the next Append gets Index.
	Index uint64
	// Err says what was wrong there; it wraps ErrCorrupt.
	Err error
	// TornTail is true when the damage was in the last segment: the
	// signature of a crash during a write, where only frames that had not
	// been fsynced can be lost. False means frames were lost from before the
	// tail: the disk or something other than this process damaged the log.
	TornTail bool
	// DroppedFrames and DroppedRecords count the dropped frames that still
	// verified, and their records.
	DroppedFrames  uint64
	DroppedRecords uint64
	// Exact is false when some dropped bytes did not verify as frames (the
	// damaged entry itself, always, unless only whole segments were moved
	// away): their records are unknown, so DroppedFrames and DroppedRecords
	// are lower bounds.
	Exact bool
	// DroppedBytes is how many bytes were cut, over all segments.
	DroppedBytes int64
	// Broken lists the copies kept of what was cut (file names in the log
	// directory): the damaged segment as it was, and every later segment.
	// Nothing reads them again; remove them once inspected.
	Broken []string
}

// Cut reports whether anything was cut off.
func (r RepairReport) Cut() bool { return r.Segment != "" }

// segInfo is one segment file of the open log.
type segInfo struct {
	first uint64 // index of its first frame, and its name
	size  int64  // bytes on disk
}

func (s segInfo) name() string { return segmentName(s.first) }

// dirState is a log directory after repair: what tidwall/wal will open.
type dirState struct {
	segs        []segInfo // ascending; empty if the directory holds no log
	first, last uint64    // frame range; first == last+1 when empty
	report      RepairReport
	finished    bool // an interrupted tidwall truncation was completed
}

// segScan is what one pass over a segment file found.
type segScan struct {
	size    int64
	frames  uint64 // valid frames before the first bad entry
	records uint64
	goodEnd int64 // offset just past the last of those frames
	bad     error // defect of the first bad entry; nil if the file is clean
	badOff  int64
	// Frames after the first bad entry that still verify, walked as far as
	// the framing allows. Only for the report.
	laterFrames, laterRecords uint64
}

// scanSegment reads a whole segment file, verifying every frame.
func scanSegment(path string, br *bufio.Reader) (segScan, error) {
	f, err := os.Open(path)
	if err != nil {
		return segScan{}, fmt.Errorf("open segment %s: %w", filepath.Base(path), err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return segScan{}, fmt.Errorf("stat segment %s: %w", filepath.Base(path), err)
	}
	s := segScan{size: fi.Size()}
	r := newEntryReader(f, s.size, br)
	for {
		data, off, err := r.next()
		if err == io.EOF {
			return s, nil
		}
		var torn *errTorn
		if errors.As(err, &torn) {
			if s.bad == nil {
				s.bad, s.badOff = corruptf("%s", torn.why), off
			}
			// Nothing after a broken length prefix can be located.
			return s, nil
		}
		if err != nil {
			return s, fmt.Errorf("read segment %s at offset %d: %w", filepath.Base(path), off, err)
		}
		_, n, ferr := DecodeFrame(data)
		switch {
		case ferr != nil && s.bad == nil:
			s.bad, s.badOff = ferr, off
		case ferr != nil:
		case s.bad == nil:
			s.frames++
			s.records += uint64(n)
			s.goodEnd = r.off
		default:
			s.laterFrames++
			s.laterRecords += uint64(n)
		}
	}
}

// repairDir brings a log directory into the state tidwall/wal opens safely:
// interrupted truncations finished, then every segment verified in order and
// the log cut at the first entry that is not a valid frame or the first file
// that breaks the numbering. tidwall itself checks none of this: it loads
// only the last segment, has no checksum, reads a zero-filled tail as empty
// entries and refuses to open a torn one.
//
// Nothing after the first damage is kept, even frames that still verify: a
// log with a hole cannot be numbered, and which later frames are trustworthy
// is a guess. They are kept in .broken copies instead.
func repairDir(dir string) (dirState, error) {
	files, err := listSegments(dir)
	if err != nil {
		return dirState{}, err
	}
	var st dirState
	if files, st.finished, err = finishTruncation(dir, files); err != nil {
		return dirState{}, err
	}
	if len(files) == 0 {
		return st, nil
	}

	br := bufio.NewReaderSize(nil, 1<<20)
	scans := make([]segScan, len(files))
	cut := -1 // index into files of the damaged segment
	gap := false
	var next uint64
	for i, file := range files {
		sc, err := scanSegment(filepath.Join(dir, file.name), br)
		if err != nil {
			return dirState{}, err
		}
		scans[i] = sc
		if cut != -1 {
			continue
		}
		if i > 0 && file.index != next {
			// tidwall maps an index to the segment whose name is the
			// largest not above it, so a file that does not start where
			// the previous one ended would make it return wrong frames,
			// or panic. A segment was lost or a file was copied in.
			cut, gap = i, true
			st.report.Err = corruptf("segment %s does not continue the numbering: expected %s", file.name, segmentName(next))
			st.report.Offset = 0
			st.report.Index = next
			continue
		}
		next = file.index + sc.frames
		if sc.bad != nil {
			cut = i
			st.report.Err = sc.bad
			st.report.Offset = sc.badOff
			st.report.Index = next
		}
	}

	if cut == -1 {
		for i, file := range files {
			st.segs = append(st.segs, segInfo{first: file.index, size: scans[i].size})
		}
		st.last = files[len(files)-1].index + scans[len(files)-1].frames - 1
	} else {
		if err := st.cut(dir, files, scans, cut, gap); err != nil {
			return dirState{}, err
		}
		st.last = st.report.Index - 1
	}
	st.first = st.segs[0].first
	return st, nil
}

// cut drops everything from the damage in files[k] on: the damaged segment is
// copied to .broken and truncated (or, when nothing in it is good, moved to
// .broken outright), every later segment is moved to .broken. Later segments
// go first, so a crash halfway leaves a log that the next scan cuts the same
// way.
func (st *dirState) cut(dir string, files []segmentFile, scans []segScan, k int, gap bool) error {
	r := &st.report
	r.Segment = files[k].name
	r.TornTail = !gap && k == len(files)-1
	r.Exact = true

	// Count what goes, for the report.
	account := func(sc segScan, from int64) {
		r.DroppedBytes += sc.size - from
		if from == 0 {
			r.DroppedFrames += sc.frames
			r.DroppedRecords += sc.records
		}
		r.DroppedFrames += sc.laterFrames
		r.DroppedRecords += sc.laterRecords
		if sc.bad != nil {
			r.Exact = false
		}
	}
	keep := r.Offset // bytes of files[k] that stay
	account(scans[k], keep)
	for i := k + 1; i < len(files); i++ {
		account(scans[i], 0)
	}

	// Keep the damaged segment as it was before changing anything.
	name := files[k].name
	path := filepath.Join(dir, name)
	removeWhole := keep == 0 && k > 0
	if !removeWhole {
		if err := copyFile(path, filepath.Join(dir, brokenName(name))); err != nil {
			return fmt.Errorf("keep copy of damaged segment %s: %w", name, err)
		}
	}
	for i := len(files) - 1; i > k; i-- {
		if err := moveBroken(dir, files[i].name); err != nil {
			return err
		}
		r.Broken = append(r.Broken, brokenName(files[i].name))
	}
	if removeWhole {
		// Every entry was bad: remove it so the previous segment is the
		// tail. The first segment is never removed, even when emptied: its
		// name is the log's first index and keeps the numbering.
		if err := moveBroken(dir, name); err != nil {
			return err
		}
	} else if err := truncateFile(path, keep); err != nil {
		return err
	}
	r.Broken = append(r.Broken, brokenName(name))
	// Oldest first reads better in a log line.
	for i, j := 0, len(r.Broken)-1; i < j; i, j = i+1, j-1 {
		r.Broken[i], r.Broken[j] = r.Broken[j], r.Broken[i]
	}
	if err := syncDir(dir); err != nil {
		return err
	}

	for i := range k {
		st.segs = append(st.segs, segInfo{first: files[i].index, size: scans[i].size})
	}
	if !removeWhole {
		st.segs = append(st.segs, segInfo{first: files[k].index, size: keep})
	}
	return nil
}

func moveBroken(dir, name string) error {
	if err := os.Rename(filepath.Join(dir, name), filepath.Join(dir, brokenName(name))); err != nil {
		return fmt.Errorf("move segment %s aside: %w", name, err)
	}
	return nil
}

// truncateFile cuts a segment at size and fsyncs it.
func truncateFile(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("open segment %s to cut it: %w", filepath.Base(path), err)
	}
	err = f.Truncate(size)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("cut segment %s at offset %d: %w", filepath.Base(path), size, err)
	}
	return nil
}

// copyFile copies src over dst and fsyncs dst: the copy must be on disk
// before the original is cut.
func copyFile(src, dst string) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
	}()
	if _, err := io.Copy(out, in); err != nil {
		return err
	}
	return out.Sync()
}
