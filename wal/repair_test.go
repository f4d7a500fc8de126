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
// entry of writeFrames is 45 bytes (a 1-byte length, a 30-byte header, 10
// bytes of payload, the CRC), so tidwall starts a new segment after every
// fourth frame (180 ≥ 180), giving segments 1, 5, 9, 13 for 14 frames.
const smallSegments = 180

// indexes returns the frame indexes first..last without those in skip.
func indexes(first, last uint64, skip ...uint64) []uint64 {
	var out []uint64
	for i := first; i <= last; i++ {
		if !slices.Contains(skip, i) {
			out = append(out, i)
		}
	}
	return out
}

// corruption is one way a log directory can be damaged, and what must
// survive it.
type corruption struct {
	name        string
	segmentSize int // 0 for the default, which keeps everything in one segment
	frames      int // written before the damage
	start       uint64
	damage      func(t *testing.T, dir string, locs []entryLoc)
	survivors   []uint64 // frames replayed after reopening, in order
	lost        uint64   // Repaired().LostFrames
	covered     uint64   // Repaired().CoveredFrames
	torn        int64    // bytes of torn tail cut; 0: none
	sealed      bool     // the last segment was sealed
	broken      []uint64 // segments kept as .broken links
}

// checkSurvivors replays l from 1 and asserts it holds exactly want, each
// frame with the payload writeFrames gave it.
func checkSurvivors(t testing.TB, l *Log, want []uint64) {
	t.Helper()
	var got []uint64
	err := l.Replay(1, func(f Frame) error {
		if !bytes.Equal(f.Payload, payloadOf(f.Index)) || f.Records != recordsOf(f.Index) {
			return fmt.Errorf("frame %d = %q × %d, want %q × %d", f.Index, f.Payload, f.Records, payloadOf(f.Index), recordsOf(f.Index))
		}
		got = append(got, f.Index)
		return nil
	})
	if err != nil {
		t.Fatalf("Replay: %v", err)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("replayed frames %v, want %v", got, want)
	}
}

// testRecovery writes frames, damages the directory, reopens it, and checks
// that exactly the expected frames survive and that the report and the log
// lines say what was lost; then appends one more, reopens, and checks again,
// so the repaired log is also a log that works.
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
	opts.StartIndex = c.start
	l = openLog(t, dir, opts)
	checkSurvivors(t, l, c.survivors)
	checkSegmentTable(t, l)

	r := l.Repaired()
	if r.LostFrames != c.lost || r.CoveredFrames != c.covered {
		t.Errorf("lost %d, covered %d frames; want %d and %d (%+v)", r.LostFrames, r.CoveredFrames, c.lost, c.covered, r)
	}
	if got := l.Stats().LostFrames; got != c.lost {
		t.Errorf("Stats().LostFrames = %d, want %d", got, c.lost)
	}
	switch {
	case c.torn == 0 && r.Torn != nil:
		t.Errorf("torn tail cut: %+v, want none", *r.Torn)
	case c.torn != 0 && (r.Torn == nil || r.Torn.Bytes != c.torn):
		t.Errorf("torn tail %+v, want %d bytes cut", r.Torn, c.torn)
	}
	if (r.Sealed != "") != c.sealed {
		t.Errorf("sealed %q, want sealed = %v", r.Sealed, c.sealed)
	}
	var broken []string
	for _, first := range c.broken {
		broken = append(broken, brokenName(segmentName(first)))
	}
	if !slices.Equal(r.Broken, broken) {
		t.Errorf("kept %v, want %v", r.Broken, broken)
	}
	for _, name := range r.Broken {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("kept copy: %v", err)
		}
	}
	// Lost frames are errors; damage that cost nothing needed, and a torn
	// tail, are warnings; a whole log says nothing.
	errs, warns := logs.lines(t, slog.LevelError), logs.lines(t, slog.LevelWarn)
	switch {
	case c.lost > 0 && len(errs) == 0:
		t.Errorf("%d frames lost without an error line: %v", c.lost, warns)
	case c.lost == 0 && len(errs) > 0:
		t.Errorf("nothing lost, but the log says %v", errs)
	case r.Changed() && len(warns) == 0:
		t.Errorf("repaired without a log line")
	case !r.Changed() && len(warns) > 0:
		t.Errorf("nothing repaired, but the log says %v", warns)
	}
	for _, line := range errs {
		for _, key := range []string{"segment", "offset", "skipped_bytes", "frames_skipped"} {
			if _, ok := line[key]; !ok && line["msg"] != "wal frames missing: their changes are lost" {
				t.Errorf("log line lacks %q: %v", key, line)
			}
		}
	}
	if r.Changed() && l.Stats().Repairs != 1 {
		t.Errorf("Stats().Repairs = %d, want 1", l.Stats().Repairs)
	}

	next := l.LastIndex() + 1
	writeFrames(t, l, 1)
	checkSegmentTable(t, l)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	opts.Logger = nil
	l = openLog(t, dir, opts)
	if r := l.Repaired(); r.Torn != nil || r.Sealed != "" {
		t.Fatalf("second reopen repaired the tail again: %+v", r)
	}
	if got := l.Repaired().Broken; !slices.Equal(got, broken) {
		t.Fatalf("second reopen kept %v, want the same %v", got, broken)
	}
	checkSurvivors(t, l, append(slices.Clone(c.survivors), next))
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

// zeroRange overwrites bytes [from, to) of a segment file with zeros.
func zeroRange(t *testing.T, dir, seg string, from, to int64) {
	t.Helper()
	path := filepath.Join(dir, seg)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	clear(data[from:to])
	if err := os.WriteFile(path, data, 0o640); err != nil {
		t.Fatal(err)
	}
}

func removeSegment(t *testing.T, dir string, first uint64) {
	t.Helper()
	if err := os.Remove(filepath.Join(dir, segmentName(first))); err != nil {
		t.Fatal(err)
	}
}

func TestRecoverTornLastFrame(t *testing.T) {
	// A crash can stop a write at any byte. Every cut inside the last entry
	// must leave exactly the frames before it, and cost nothing counted as
	// lost: the frame was never whole.
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
				survivors: indexes(1, frames-1),
				torn:      cut - last.off,
			})
		})
	}
}

// TestRecoverCorruption is the table of damage a log can suffer, each with
// exactly the frames that must survive it. Frames carry their index and a
// CRC, so damage costs the frames it overlaps and no more; what the
// snapshot covers (start) costs nothing.
func TestRecoverCorruption(t *testing.T) {
	lastEntry := func(locs []entryLoc) entryLoc { return locs[len(locs)-1] }
	payloadAt := func(e entryLoc) int64 { return e.frameAt() + headerSize }
	cases := []corruption{
		{
			// A cut exactly between entries is a clean end, not damage.
			name:   "cut at the last entry's start",
			frames: 8,
			damage: func(t *testing.T, dir string, locs []entryLoc) {
				truncateAt(t, dir, lastEntry(locs).seg, lastEntry(locs).off)
			},
			survivors: indexes(1, 7),
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
			survivors: indexes(1, 8), torn: 4096,
		},
		{
			name:   "crc of the last frame",
			frames: 8,
			damage: func(t *testing.T, dir string, locs []entryLoc) {
				e := lastEntry(locs)
				flipBit(t, dir, e.seg, e.frameAt()+e.size-1, 0x80)
			},
			survivors: indexes(1, 7), torn: 45,
		},
		{
			// The snapshot starts at 10: frame 3 is covered.
			name:        "flip in a covered frame",
			segmentSize: smallSegments,
			frames:      14,
			start:       10,
			damage: func(t *testing.T, dir string, locs []entryLoc) {
				flipBit(t, dir, locs[2].seg, payloadAt(locs[2]), 0x01)
			},
			survivors: indexes(1, 14, 3), covered: 1, broken: []uint64{1},
		},
		{
			name:        "flip after the snapshot start",
			segmentSize: smallSegments,
			frames:      14,
			start:       10,
			damage: func(t *testing.T, dir string, locs []entryLoc) {
				flipBit(t, dir, locs[10].seg, payloadAt(locs[10]), 0x01)
			},
			survivors: indexes(1, 14, 11), lost: 1, broken: []uint64{9},
		},
		{
			// One damaged byte in the last segment, with good frames
			// after it: not a torn tail. The segment is left as it is and
			// sealed, so nothing is written after damage.
			name:   "flip in the middle of the last segment",
			frames: 8,
			damage: func(t *testing.T, dir string, locs []entryLoc) {
				flipBit(t, dir, locs[4].seg, payloadAt(locs[4]), 0x01)
			},
			survivors: indexes(1, 8, 5), lost: 1, sealed: true, broken: []uint64{1},
		},
		{
			// Length 44 becomes 45: the entry swallows the next frame's
			// length byte; the walk finds frame 7 by its own framing.
			name:        "flipped length prefix, longer",
			segmentSize: smallSegments,
			frames:      14,
			damage: func(t *testing.T, dir string, locs []entryLoc) {
				flipBit(t, dir, locs[5].seg, locs[5].off, 0x01)
			},
			survivors: indexes(1, 14, 6), lost: 1, broken: []uint64{5},
		},
		{
			name:        "flipped length prefix, shorter",
			segmentSize: smallSegments,
			frames:      14,
			damage: func(t *testing.T, dir string, locs []entryLoc) {
				flipBit(t, dir, locs[5].seg, locs[5].off, 0x08)
			},
			survivors: indexes(1, 14, 6), lost: 1, broken: []uint64{5},
		},
		{
			// The continuation bit: the prefix swallows the frame's first
			// byte and claims more than the file holds.
			name:        "flipped length prefix, continuation bit",
			segmentSize: smallSegments,
			frames:      14,
			damage: func(t *testing.T, dir string, locs []entryLoc) {
				flipBit(t, dir, locs[5].seg, locs[5].off, 0x80)
			},
			survivors: indexes(1, 14, 6), lost: 1, broken: []uint64{5},
		},
		{
			// Zeros from inside frame 5 to inside frame 7: those three go.
			name:        "zeroed middle",
			segmentSize: smallSegments,
			frames:      14,
			damage: func(t *testing.T, dir string, locs []entryLoc) {
				zeroRange(t, dir, locs[4].seg, payloadAt(locs[4]), payloadAt(locs[6]))
			},
			survivors: indexes(1, 14, 5, 6, 7), lost: 3, broken: []uint64{5},
		},
		{
			// The first frame of a later segment: the segment's name and
			// the frames' own indexes keep the numbering.
			name:        "first frame of a later segment",
			segmentSize: smallSegments,
			frames:      14,
			damage: func(t *testing.T, dir string, locs []entryLoc) {
				flipBit(t, dir, locs[8].seg, payloadAt(locs[8]), 0x01)
			},
			survivors: indexes(1, 14, 9), lost: 1, broken: []uint64{9},
		},
		{
			name:        "first frame of the first segment",
			segmentSize: smallSegments,
			frames:      14,
			damage: func(t *testing.T, dir string, locs []entryLoc) {
				flipBit(t, dir, locs[0].seg, payloadAt(locs[0]), 0x01)
			},
			survivors: indexes(2, 14), lost: 1, broken: []uint64{1},
		},
		{
			// The end of a segment that is not the last: what it lost is
			// known from the next segment's name.
			name:        "cut end of an earlier segment",
			segmentSize: smallSegments,
			frames:      14,
			damage: func(t *testing.T, dir string, locs []entryLoc) {
				truncateAt(t, dir, locs[6].seg, locs[6].off+3)
			},
			survivors: indexes(1, 14, 7, 8), lost: 2, broken: []uint64{5},
		},
		{
			// The snapshot starts at 10; segment 5 (frames 5-8) is gone.
			name:        "deleted covered segment",
			segmentSize: smallSegments,
			frames:      14,
			start:       10,
			damage:      func(t *testing.T, dir string, locs []entryLoc) { removeSegment(t, dir, 5) },
			survivors:   indexes(1, 14, 5, 6, 7, 8), covered: 4,
		},
		{
			name:        "deleted uncovered segment",
			segmentSize: smallSegments,
			frames:      14,
			start:       5,
			damage:      func(t *testing.T, dir string, locs []entryLoc) { removeSegment(t, dir, 9) },
			survivors:   indexes(1, 14, 9, 10, 11, 12), lost: 4,
		},
		{
			// The log's first segment is gone and the snapshot needs it.
			name:        "deleted first segment",
			segmentSize: smallSegments,
			frames:      14,
			start:       3,
			damage:      func(t *testing.T, dir string, locs []entryLoc) { removeSegment(t, dir, 1) },
			survivors:   indexes(5, 14), lost: 2,
		},
		{
			// A write the committer made a segment for, cut short by a
			// crash before it began: the empty file is removed.
			name:        "empty segment made before a write",
			segmentSize: smallSegments,
			frames:      14,
			damage: func(t *testing.T, dir string, locs []entryLoc) {
				if err := os.WriteFile(filepath.Join(dir, segmentName(16)), nil, 0o640); err != nil {
					t.Fatal(err)
				}
			},
			survivors: indexes(1, 14),
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
			survivors: indexes(7, 14),
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
			survivors: indexes(1, 10),
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
			survivors: indexes(1, 8),
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { testRecovery(t, c) })
	}
}

func TestRecoverKeepsBrokenLink(t *testing.T) {
	// The damaged segment is kept as it was, under a .broken name that
	// outlives its removal from the log, and an earlier .broken file is
	// never replaced.
	dir := t.TempDir()
	opts := Options{Sync: SyncNever, SegmentSize: smallSegments}
	l := openLog(t, dir, opts)
	writeFrames(t, l, 14)
	l.Close()
	locs := layout(t, dir)
	old := filepath.Join(dir, brokenName(segmentName(1)))
	if err := os.WriteFile(old, []byte("an earlier repair's copy"), 0o640); err != nil {
		t.Fatal(err)
	}
	flipBit(t, dir, locs[2].seg, locs[2].frameAt()+headerSize, 0x01)
	before, err := os.ReadFile(filepath.Join(dir, locs[2].seg))
	if err != nil {
		t.Fatal(err)
	}
	l = openLog(t, dir, opts)
	if r := l.Repaired(); !slices.Equal(r.Broken, []string{brokenName(segmentName(1)) + "-2"}) {
		t.Fatalf("kept %v, want the damaged segment beside the earlier copy", r.Broken)
	}
	if b, _ := os.ReadFile(old); string(b) != "an earlier repair's copy" {
		t.Fatalf("the earlier .broken file was overwritten")
	}
	if err := l.TruncateFront(14); err != nil {
		t.Fatal(err)
	}
	kept, err := os.ReadFile(filepath.Join(dir, brokenName(segmentName(1))+"-2"))
	if err != nil || !bytes.Equal(kept, before) {
		t.Fatalf("after truncation, the kept segment reads %d bytes, %v; want it as it was", len(kept), err)
	}
}

func TestRecoverKeepsTornBytes(t *testing.T) {
	// The cut-off tail is kept in a file of its own, small and new: an
	// earlier one at the same offset is not replaced.
	dir := t.TempDir()
	l := openLog(t, dir, Options{Sync: SyncNever})
	writeFrames(t, l, 4)
	l.Close()
	good := layout(t, dir)[3]
	end := good.off + good.prefix + good.size
	for round := range 2 {
		f, err := os.OpenFile(filepath.Join(dir, segmentName(1)), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(f, "\x40torn-%d", round)
		f.Close()
		l := openLog(t, dir, Options{Sync: SyncNever})
		r := l.Repaired()
		want := fmt.Sprintf("%s.torn-%d", segmentName(1), end)
		if round == 1 {
			want += "-2"
		}
		if r.Torn == nil || r.Torn.Kept != want || r.Torn.Offset != end {
			t.Fatalf("round %d: torn %+v, want the bytes kept in %s", round, r.Torn, want)
		}
		b, err := os.ReadFile(filepath.Join(dir, want))
		if err != nil || string(b) != fmt.Sprintf("\x40torn-%d", round) {
			t.Fatalf("round %d: kept %q, %v", round, b, err)
		}
		l.Close()
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

func TestOpenRefusesForeignKey(t *testing.T) {
	// A log written under one key id does not open under another: its
	// records would be keyed by a secret this server does not have.
	dir := t.TempDir()
	l := openLog(t, dir, Options{Sync: SyncNever, KeyID: 0xaaaa})
	writeFrames(t, l, 3)
	l.Close()
	if l, err := Open(dir, Options{KeyID: 0xbbbb}); !errors.Is(err, ErrForeignKey) {
		if err == nil {
			l.Close()
		}
		t.Fatalf("Open with another key id = %v, want ErrForeignKey", err)
	}
	l = openLog(t, dir, Options{KeyID: 0xaaaa})
	checkFrames(t, l, 1, 3)
}

func TestOpenRefusesLinkedSegment(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, Options{Sync: SyncNever})
	writeFrames(t, l, 3)
	l.Close()
	target := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(target, []byte("not a segment"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, filepath.Join(dir, segmentName(4))); err != nil {
		t.Fatal(err)
	}
	if l, err := Open(dir, Options{}); err == nil {
		l.Close()
		t.Fatal("Open accepted a segment that is a symbolic link")
	}
	if b, _ := os.ReadFile(target); string(b) != "not a segment" {
		t.Fatalf("the link's target was changed: %q", b)
	}
}

func TestMissingLog(t *testing.T) {
	// A log that should exist and does not: the log starts anew, loudly.
	var logs logLines
	l := openLog(t, filepath.Join(t.TempDir(), "wal"), Options{MustExist: true, StartIndex: 40, Logger: logs.logger()})
	if !l.Repaired().Missing || l.FirstIndex() != 40 {
		t.Fatalf("repair %+v, first index %d: want missing, starting at 40", l.Repaired(), l.FirstIndex())
	}
	if len(logs.lines(t, slog.LevelError)) != 1 {
		t.Fatalf("want one error line, got %v", logs.lines(t, slog.LevelWarn))
	}
}
