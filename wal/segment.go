package wal

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"github.com/greyhold/greyhold/internal/durable"
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
		if e.Type()&fs.ModeSymlink != 0 {
			// tidwall would open it and write through it. greyhold never
			// makes a link here; someone else did.
			if _, err := strconv.ParseUint(name[:segmentNameLen], 10, 64); err == nil {
				return nil, fmt.Errorf("wal directory %s: %s is a symbolic link, which greyhold never makes; remove it (and check who could write to this directory)", dir, name)
			}
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
	return segs, true, durable.SyncDir(dir)
}

// brokenName is where a damaged segment is kept for inspection: a hard link
// to the file, so it costs no space and outlives the segment's removal from
// the log. tidwall/wal ignores the name, so the file never re-enters the log.
func brokenName(name string) string {
	return name + ".broken"
}
