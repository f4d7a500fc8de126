package wal

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// smallSegments makes several segments out of a handful of frames: each
// entry of writeFrames is 21 bytes, so tidwall starts a new segment after
// every fourth frame (84 ≥ 64), giving segments 1, 5, 9, 13 for 14 frames.
const smallSegments = 64

// corruption is one way a log directory can be damaged, and what must
// survive it.
type corruption struct {
	name        string
	segmentSize int // 0 for the default, which keeps everything in one segment
	frames      int // written before the damage
	damage      func(t *testing.T, dir string, locs []entryLoc)
	first       uint64 // first frame after reopening; 0 means 1
	survivors   int    // frames in the log after reopening
	cut         bool   // Repaired().Cut()
	torn        bool   // Repaired().TornTail, and the log line is a warning
	dropped     int64  // Repaired().DroppedBytes, checked if cut
	broken      []uint64
	// droppedFrames is Repaired().DroppedFrames, checked if cut.
	droppedFrames uint64
}

// testRecovery writes frames, damages the directory, reopens it, and checks
// that exactly the expected frames survive; then appends one more, reopens,
// and checks again, so the repaired log is also a log that works.
func testRecovery(t *testing.T, c corruption) {
	dir := t.TempDir()
	opts := Options{Sync: SyncNever, SegmentSize: c.segmentSize}
	l := openLog(t, dir, opts)
	writeFrames(t, l, c.frames)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	locs := layout(t, dir)
	if len(locs) != c.frames {
		t.Fatalf("wrote %d frames, found %d entries", c.frames, len(locs))
	}
	c.damage(t, dir, locs)

	var logs logLines
	opts.Logger = logs.logger()
	l = openLog(t, dir, opts)
	first := max(c.first, 1)
	checkFrames(t, l, first, c.survivors)
	checkSegmentTable(t, l)

	r := l.Repaired()
	if r.Cut() != c.cut {
		t.Fatalf("Repaired() = %+v, want cut = %v", r, c.cut)
	}
	warnings := logs.lines(t, slog.LevelWarn)
	if c.cut {
		if r.TornTail != c.torn {
			t.Errorf("TornTail = %v, want %v (%+v)", r.TornTail, c.torn, r)
		}
		if r.DroppedBytes != c.dropped {
			t.Errorf("DroppedBytes = %d, want %d", r.DroppedBytes, c.dropped)
		}
		if r.DroppedFrames != c.droppedFrames {
			t.Errorf("DroppedFrames = %d, want %d", r.DroppedFrames, c.droppedFrames)
		}
		if want := first + uint64(c.survivors); r.Index != want {
			t.Errorf("Index = %d, want %d", r.Index, want)
		}
		if !errors.Is(r.Err, ErrCorrupt) {
			t.Errorf("Err = %v, want it to wrap ErrCorrupt", r.Err)
		}
		level := "ERROR"
		if c.torn {
			level = "WARN"
		}
		if len(warnings) != 1 || warnings[0]["level"] != level {
			t.Errorf("want one %s line, got %v", level, warnings)
		} else {
			for _, key := range []string{"segment", "offset", "dropped_frames", "dropped_records", "dropped_bytes", "counts"} {
				if _, ok := warnings[0][key]; !ok {
					t.Errorf("log line lacks %q: %v", key, warnings[0])
				}
			}
		}
		var want []string
		broken := c.broken
		if broken == nil {
			broken = []uint64{1} // the one segment of the single-segment cases
		}
		for _, first := range broken {
			want = append(want, brokenName(segmentName(first)))
		}
		if !slices.Equal(r.Broken, want) {
			t.Errorf("Broken = %v, want %v", r.Broken, want)
		}
		for _, name := range r.Broken {
			if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
				t.Errorf("kept copy: %v", err)
			}
		}
		if got := l.Stats().Repairs; got != 1 {
			t.Errorf("Stats().Repairs = %d, want 1", got)
		}
	} else if len(warnings) != 0 {
		t.Errorf("nothing was cut, but the log says %v", warnings)
	}

	writeFrames(t, l, 1)
	checkSegmentTable(t, l)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = openLog(t, dir, opts)
	if l.Repaired().Cut() {
		t.Fatalf("second reopen cut again: %+v", l.Repaired())
	}
	checkFrames(t, l, first, c.survivors+1)
}

// truncateAt cuts a segment file at size.
func truncateAt(t *testing.T, dir, seg string, size int64) {
	t.Helper()
	if err := os.Truncate(filepath.Join(dir, seg), size); err != nil {
		t.Fatal(err)
	}
}

// flipBit flips one bit of a segment file.
func flipBit(t *testing.T, dir, seg string, off int64, mask byte) {
	t.Helper()
	path := filepath.Join(dir, seg)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data[off] ^= mask
	if err := os.WriteFile(path, data, 0o640); err != nil {
		t.Fatal(err)
	}
}

func TestRecoverTornLastFrame(t *testing.T) {
	// A crash can stop a write at any byte. Every cut inside the last entry
	// must leave exactly the frames before it.
	const frames = 8
	dir := t.TempDir()
	l := openLog(t, dir, Options{Sync: SyncNever})
	writeFrames(t, l, frames)
	l.Close()
	last := layout(t, dir)[frames-1]
	for cut := last.off + 1; cut < last.frameAt()+last.size; cut++ {
		t.Run(fmt.Sprintf("cut at %d", cut), func(t *testing.T) {
			testRecovery(t, corruption{
				frames:    frames,
				damage:    func(t *testing.T, dir string, locs []entryLoc) { truncateAt(t, dir, last.seg, cut) },
				survivors: frames - 1,
				cut:       true,
				torn:      true,
				dropped:   cut - last.off,
			})
		})
	}
}

func TestRecoverCorruption(t *testing.T) {
	lastEntry := func(locs []entryLoc) entryLoc { return locs[len(locs)-1] }
	cases := []corruption{
		{
			// A cut exactly between entries is a clean end, not damage.
			name:   "cut at the last entry's start",
			frames: 8,
			damage: func(t *testing.T, dir string, locs []entryLoc) {
				truncateAt(t, dir, lastEntry(locs).seg, lastEntry(locs).off)
			},
			survivors: 7,
		},
		{
			// A file extended before its data was written reads back as
			// zeros; tidwall alone would take each zero byte as an empty
			// entry.
			name:   "zero-filled tail",
			frames: 8,
			damage: func(t *testing.T, dir string, locs []entryLoc) {
				f, err := os.OpenFile(filepath.Join(dir, locs[0].seg), os.O_WRONLY|os.O_APPEND, 0)
				if err != nil {
					t.Fatal(err)
				}
				f.Write(make([]byte, 4096))
				f.Close()
			},
			survivors: 8, cut: true, torn: true, dropped: 4096,
		},
		{
			// Length 20 becomes 21: the entry runs past the end of the file.
			name:   "length varint low bit",
			frames: 8,
			damage: func(t *testing.T, dir string, locs []entryLoc) {
				flipBit(t, dir, lastEntry(locs).seg, lastEntry(locs).off, 0x01)
			},
			survivors: 7, cut: true, torn: true, dropped: 21,
		},
		{
			// Length 20 becomes 16: the entry frames fine but is not a frame.
			name:   "length varint shorter",
			frames: 8,
			damage: func(t *testing.T, dir string, locs []entryLoc) {
				flipBit(t, dir, lastEntry(locs).seg, lastEntry(locs).off, 0x04)
			},
			survivors: 7, cut: true, torn: true, dropped: 21,
		},
		{
			// The continuation bit: the prefix swallows the frame's first byte.
			name:   "length varint continuation bit",
			frames: 8,
			damage: func(t *testing.T, dir string, locs []entryLoc) {
				flipBit(t, dir, lastEntry(locs).seg, lastEntry(locs).off, 0x80)
			},
			survivors: 7, cut: true, torn: true, dropped: 21,
		},
		{
			name:   "version byte",
			frames: 8,
			damage: func(t *testing.T, dir string, locs []entryLoc) {
				flipBit(t, dir, lastEntry(locs).seg, lastEntry(locs).frameAt(), 0x01)
			},
			survivors: 7, cut: true, torn: true, dropped: 21,
		},
		{
			name:   "flags byte",
			frames: 8,
			damage: func(t *testing.T, dir string, locs []entryLoc) {
				flipBit(t, dir, lastEntry(locs).seg, lastEntry(locs).frameAt()+1, 0x10)
			},
			survivors: 7, cut: true, torn: true, dropped: 21,
		},
		{
			name:   "record count",
			frames: 8,
			damage: func(t *testing.T, dir string, locs []entryLoc) {
				flipBit(t, dir, lastEntry(locs).seg, lastEntry(locs).frameAt()+2, 0x02)
			},
			survivors: 7, cut: true, torn: true, dropped: 21,
		},
		{
			name:   "payload",
			frames: 8,
			damage: func(t *testing.T, dir string, locs []entryLoc) {
				flipBit(t, dir, lastEntry(locs).seg, lastEntry(locs).frameAt()+headerSize+3, 0x20)
			},
			survivors: 7, cut: true, torn: true, dropped: 21,
		},
		{
			name:   "crc",
			frames: 8,
			damage: func(t *testing.T, dir string, locs []entryLoc) {
				e := lastEntry(locs)
				flipBit(t, dir, e.seg, e.frameAt()+e.size-1, 0x80)
			},
			survivors: 7, cut: true, torn: true, dropped: 21,
		},
		{
			// Only the last frame may be torn by a crash; a bad frame with
			// good ones after it in the same (last) segment is still cut
			// there, and the good ones are counted.
			name:   "middle of the only segment",
			frames: 8,
			damage: func(t *testing.T, dir string, locs []entryLoc) {
				flipBit(t, dir, locs[4].seg, locs[4].frameAt()+headerSize, 0x01)
			},
			survivors: 4, cut: true, torn: true, dropped: 4 * 21, droppedFrames: 3,
		},
		{
			// Damage before the tail is data loss, not a torn write: cut
			// there, keep copies of the rest, log an error.
			name:        "frame in an earlier segment",
			segmentSize: smallSegments,
			frames:      14,
			damage: func(t *testing.T, dir string, locs []entryLoc) {
				flipBit(t, dir, locs[5].seg, locs[5].frameAt()+headerSize, 0x01)
			},
			survivors: 5, cut: true, dropped: 9 * 21, droppedFrames: 8,
			broken: []uint64{5, 9, 13},
		},
		{
			// Every entry of a later segment is bad: it goes whole, and the
			// previous segment, already full, is the tail again: the next
			// append must start a new segment before writing.
			name:        "first frame of a later segment",
			segmentSize: smallSegments,
			frames:      14,
			damage: func(t *testing.T, dir string, locs []entryLoc) {
				flipBit(t, dir, locs[8].seg, locs[8].frameAt()+headerSize, 0x01)
			},
			survivors: 8, cut: true, dropped: 6 * 21, droppedFrames: 5,
			broken: []uint64{9, 13},
		},
		{
			// The first segment names the first index: emptied, it stays.
			name:        "first frame of the first segment",
			segmentSize: smallSegments,
			frames:      14,
			damage: func(t *testing.T, dir string, locs []entryLoc) {
				flipBit(t, dir, locs[0].seg, locs[0].frameAt()+headerSize, 0x01)
			},
			survivors: 0, cut: true, dropped: 14 * 21, droppedFrames: 13,
			broken: []uint64{1, 5, 9, 13},
		},
		{
			// A lost segment leaves a hole tidwall would not notice (it
			// reads only the tail's entries) and would misnumber frames
			// across: everything from the hole on is moved aside.
			name:        "missing middle segment",
			segmentSize: smallSegments,
			frames:      14,
			damage: func(t *testing.T, dir string, locs []entryLoc) {
				if err := os.Remove(filepath.Join(dir, segmentName(5))); err != nil {
					t.Fatal(err)
				}
			},
			survivors: 4, cut: true, dropped: 6 * 21, droppedFrames: 6,
			broken: []uint64{9, 13},
		},
		{
			// tidwall's TruncateFront writes <first>.START, then removes the
			// old segments, then renames it. A crash before the removals
			// leaves everything in place; Open must finish the job.
			name:        "leftover .START",
			segmentSize: smallSegments,
			frames:      14,
			damage: func(t *testing.T, dir string, locs []entryLoc) {
				data, err := os.ReadFile(filepath.Join(dir, segmentName(5)))
				if err != nil {
					t.Fatal(err)
				}
				start := locs[6].off // frame 7 in segment 5
				if err := os.WriteFile(filepath.Join(dir, segmentName(7)+".START"), data[start:], 0o640); err != nil {
					t.Fatal(err)
				}
			},
			first: 7, survivors: 8,
		},
		{
			// tidwall's TruncateBack, interrupted the same way: segments
			// after <segment>.END must go and the .END replaces its segment.
			name:        "leftover .END",
			segmentSize: smallSegments,
			frames:      14,
			damage: func(t *testing.T, dir string, locs []entryLoc) {
				data, err := os.ReadFile(filepath.Join(dir, segmentName(9)))
				if err != nil {
					t.Fatal(err)
				}
				end := locs[9].off + locs[9].prefix + locs[9].size // after frame 10
				if err := os.WriteFile(filepath.Join(dir, segmentName(9)+".END"), data[:end-locs[8].off], 0o640); err != nil {
					t.Fatal(err)
				}
			},
			survivors: 10,
		},
		{
			// Copies kept by an earlier repair must never be read back.
			name:   "old .broken copy",
			frames: 8,
			damage: func(t *testing.T, dir string, locs []entryLoc) {
				if err := os.WriteFile(filepath.Join(dir, brokenName(segmentName(1))), []byte("junk"), 0o640); err != nil {
					t.Fatal(err)
				}
			},
			survivors: 8,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { testRecovery(t, c) })
	}
}

func TestRecoverKeepsBrokenCopy(t *testing.T) {
	// The .broken copy holds the damaged segment as it was, so an operator
	// can get at the frames after the damage.
	dir := t.TempDir()
	l := openLog(t, dir, Options{Sync: SyncNever})
	writeFrames(t, l, 8)
	l.Close()
	locs := layout(t, dir)
	flipBit(t, dir, locs[2].seg, locs[2].frameAt()+headerSize, 0x01)
	before, err := os.ReadFile(filepath.Join(dir, locs[2].seg))
	if err != nil {
		t.Fatal(err)
	}
	l = openLog(t, dir, Options{Sync: SyncNever})
	kept, err := os.ReadFile(filepath.Join(dir, brokenName(locs[2].seg)))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(kept, before) {
		t.Fatalf("the .broken copy differs from the segment before repair")
	}
	if r := l.Repaired(); r.Exact || r.DroppedRecords != uint64(recordsOf(4)+recordsOf(5)+recordsOf(6)+recordsOf(7)+recordsOf(8)) {
		t.Fatalf("Repaired() = %+v: want the records of frames 4-8 that still verify, marked inexact", r)
	}
}

func TestOpenRefusesTwoTruncations(t *testing.T) {
	// A .START and an .END at once cannot both be finished: tidwall refuses,
	// and so do we, rather than guess.
	dir := t.TempDir()
	l := openLog(t, dir, Options{Sync: SyncNever})
	writeFrames(t, l, 3)
	l.Close()
	for _, name := range []string{segmentName(2) + ".START", segmentName(1) + ".END"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	if l, err := Open(dir, Options{}); !errors.Is(err, ErrCorrupt) {
		if err == nil {
			l.Close()
		}
		t.Fatalf("Open = %v, want ErrCorrupt", err)
	}
}
