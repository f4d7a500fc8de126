package wal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestNewLog(t *testing.T) {
	// A new log: empty, numbered from 1, replayable before any append.
	dir := filepath.Join(t.TempDir(), "wal")
	l := openLog(t, dir, Options{})
	if l.FirstIndex() != 1 || l.LastIndex() != 0 {
		t.Fatalf("new log spans %d..%d, want 1..0", l.FirstIndex(), l.LastIndex())
	}
	if err := l.Replay(1, func(fr Frame) error { _ = fr; return errors.New("called") }); err != nil {
		t.Fatalf("Replay of an empty log: %v", err)
	}
	if l.Repaired().Changed() {
		t.Fatalf("new log repaired: %+v", l.Repaired())
	}
	writeFrames(t, l, 3)
	checkFrames(t, l, 1, 3)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = openLog(t, dir, Options{})
	checkFrames(t, l, 1, 3)
}

func TestAppendRejects(t *testing.T) {
	l := openLog(t, t.TempDir(), Options{Sync: SyncNever})
	for _, c := range []struct {
		payload []byte
		n       int
	}{{nil, 1}, {[]byte{}, 1}, {[]byte("x"), 0}, {[]byte("x"), -5}} {
		if err := l.Append(c.payload, c.n); err == nil || errors.Is(err, ErrClosed) {
			t.Errorf("Append(%q, %d) = %v, want an argument error", c.payload, c.n, err)
		}
	}
	if l.LastIndex() != 0 {
		t.Fatalf("rejected appends wrote frames: LastIndex() = %d", l.LastIndex())
	}
}

// groupPayload is append i of goroutine g: fixed width, so a frame splits
// back into its appends.
func groupPayload(g, i int) []byte { return fmt.Appendf(nil, "%02d:%05d;", g, i) }

const groupPayloadLen = 9

func TestGroupCommit(t *testing.T) {
	// Concurrent appenders share frames: every payload comes back exactly
	// once, with its records counted in its frame, and there are far fewer
	// frames than appends. SyncAlways makes each frame wait for an fsync,
	// during which the next batch fills.
	const goroutines, appends = 64, 200
	l := openLog(t, t.TempDir(), Options{Sync: SyncAlways})
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range appends {
				if err := l.Append(groupPayload(g, i), 1+(g+i)%4); err != nil {
					t.Errorf("Append: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()

	seen := make(map[string]bool)
	var frames, records int
	err := l.Replay(1, func(fr Frame) error {
		index, payload, n := fr.Index, fr.Payload, fr.Records
		frames++
		if len(payload)%groupPayloadLen != 0 {
			return fmt.Errorf("frame %d: payload of %d bytes is not whole appends", index, len(payload))
		}
		sum := 0
		for p := range slicesChunk(payload, groupPayloadLen) {
			var g, i int
			if _, err := fmt.Sscanf(string(p), "%02d:%05d;", &g, &i); err != nil {
				return fmt.Errorf("frame %d: %q: %v", index, p, err)
			}
			if seen[string(p)] {
				return fmt.Errorf("frame %d: %q replayed twice", index, p)
			}
			seen[string(p)] = true
			sum += 1 + (g+i)%4
		}
		if sum != n {
			return fmt.Errorf("frame %d counts %d records, its appends %d", index, n, sum)
		}
		records += n
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != goroutines*appends {
		t.Fatalf("replayed %d distinct appends, want %d", len(seen), goroutines*appends)
	}
	st := l.Stats()
	if uint64(frames) != st.Frames || uint64(records) != st.Records {
		t.Fatalf("replayed %d frames/%d records, Stats says %d/%d", frames, records, st.Frames, st.Records)
	}
	t.Logf("%d appends in %d frames (%.1f appends/frame), %d fsyncs",
		goroutines*appends, frames, float64(goroutines*appends)/float64(frames), st.Syncs)
	if frames > goroutines*appends/4 {
		t.Fatalf("%d appends took %d frames: group commit is not batching", goroutines*appends, frames)
	}
}

func slicesChunk(b []byte, n int) func(func([]byte) bool) {
	return func(yield func([]byte) bool) {
		for len(b) >= n {
			if !yield(b[:n]) {
				return
			}
			b = b[n:]
		}
	}
}

func TestSyncAlwaysReturnsAfterFsync(t *testing.T) {
	// Small segments so that some appends also open a new segment file,
	// whose directory entry must be synced before the append returns.
	l := openLog(t, t.TempDir(), Options{Sync: SyncAlways, SegmentSize: smallSegments})
	for i := uint64(1); i <= 10; i++ {
		if err := l.Append(payloadOf(i), recordsOf(i)); err != nil {
			t.Fatal(err)
		}
		st := l.Stats()
		if st.SyncedIndex != i || st.Syncs != i {
			t.Fatalf("after append %d returned: SyncedIndex %d, Syncs %d; want both %d", i, st.SyncedIndex, st.Syncs, i)
		}
		l.sy.mu.Lock()
		l.segMu.Lock()
		dirSynced := l.sy.dirGen == l.dirGen
		l.segMu.Unlock()
		l.sy.mu.Unlock()
		if !dirSynced {
			t.Fatalf("after append %d returned, a new segment's directory entry is not synced", i)
		}
	}
	if l.Stats().Segments < 3 {
		t.Fatalf("only %d segments: the test did not cross segment boundaries", l.Stats().Segments)
	}
}

func TestSyncInterval(t *testing.T) {
	tick := make(chan time.Time)
	done := make(chan struct{})
	// tickAndWait returns once the syncer has finished with the tick, so
	// that its fsync cannot overlap the appends that follow.
	tickAndWait := func() {
		tick <- time.Time{}
		<-done
	}
	l := openLog(t, t.TempDir(), Options{
		Sync:        SyncEvery(time.Hour),
		SegmentSize: smallSegments,
		hooks:       &testHooks{syncTick: tick, syncDone: done},
	})
	writeFrames(t, l, 3)
	if st := l.Stats(); st.SyncedIndex != 0 || st.Syncs != 0 {
		t.Fatalf("interval mode synced before the interval: %+v", st)
	}
	tickAndWait()
	if st := l.Stats(); st.SyncedIndex != 3 || st.Syncs != 1 {
		t.Fatalf("after a tick: SyncedIndex %d, Syncs %d; want 3, 1", st.SyncedIndex, st.Syncs)
	}
	// Nothing new: no fsync.
	tickAndWait()
	if st := l.Stats(); st.Syncs != 1 {
		t.Fatalf("idle tick fsynced: Syncs = %d", st.Syncs)
	}
	// Across a segment boundary: the tick also syncs the directory.
	writeFrames(t, l, 6)
	tickAndWait()
	if st := l.Stats(); st.SyncedIndex != 9 || st.Syncs != 2 || st.Segments != 3 {
		t.Fatalf("after a tick: %+v; want SyncedIndex 9, Syncs 2, 3 segments", st)
	}
	l.segMu.Lock()
	gen := l.dirGen
	l.segMu.Unlock()
	l.sy.mu.Lock()
	defer l.sy.mu.Unlock()
	if l.sy.dirGen != gen {
		t.Fatalf("directory not synced after new segments")
	}
}

func TestSyncNever(t *testing.T) {
	l := openLog(t, t.TempDir(), Options{Sync: SyncNever})
	writeFrames(t, l, 5)
	if st := l.Stats(); st.Syncs != 0 {
		t.Fatalf("never mode fsynced %d times", st.Syncs)
	}
	// An explicit Sync works in every mode.
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	if st := l.Stats(); st.Syncs != 1 || st.SyncedIndex != 5 {
		t.Fatalf("after Sync: %+v", st)
	}
}

func TestSegmentTableMirrorsTidwall(t *testing.T) {
	// The log predicts tidwall's new segment files from entry sizes instead
	// of listing the directory; the prediction must match the directory for
	// every size mix, including a tail already over SegmentSize at open.
	dir := t.TempDir()
	l := openLog(t, dir, Options{Sync: SyncNever, SegmentSize: 100})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				size := 1 + (g*31+i*17)%90
				if err := l.Append(bytes.Repeat([]byte{'x'}, size), 1); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	checkSegmentTable(t, l)
	l.Close()

	// A tail already over SegmentSize at open (the size was lowered):
	// tidwall starts a new segment before the next write, and another after
	// it, since that one frame fills it.
	l = openLog(t, dir, Options{Sync: SyncNever, SegmentSize: 1 << 20})
	writeFrames(t, l, 1)
	last := l.LastIndex()
	l.Close()
	l = openLog(t, dir, Options{Sync: SyncNever, SegmentSize: 10})
	writeFrames(t, l, 1)
	checkSegmentTable(t, l)
	if got := segmentsKnown(l); !slices.Equal(got[len(got)-2:], []uint64{last + 1, last + 2}) {
		t.Fatalf("segments %v: want ..., %d, %d", got, last+1, last+2)
	}
}

func TestReplayRange(t *testing.T) {
	l := openLog(t, t.TempDir(), Options{Sync: SyncNever})
	writeFrames(t, l, 10)
	replay := func(from uint64) []uint64 {
		t.Helper()
		var got []uint64
		if err := l.Replay(from, func(fr Frame) error {
			index := fr.Index
			got = append(got, index)
			return nil
		}); err != nil {
			t.Fatalf("Replay(%d): %v", from, err)
		}
		return got
	}
	if got := replay(4); len(got) != 7 || got[0] != 4 || got[6] != 10 {
		t.Errorf("Replay(4) = %v, want 4..10", got)
	}
	if got := replay(0); len(got) != 10 || got[0] != 1 {
		t.Errorf("Replay(0) = %v, want 1..10", got)
	}
	// Past the end is not an error: a snapshot may be newer than the log's
	// last frame by exactly one.
	if got := replay(11); len(got) != 0 {
		t.Errorf("Replay(11) = %v, want nothing", got)
	}
	if got := replay(500); len(got) != 0 {
		t.Errorf("Replay(500) = %v, want nothing", got)
	}

	stop := errors.New("stop here")
	calls := 0
	err := l.Replay(1, func(fr Frame) error {
		index := fr.Index
		calls++
		if index == 3 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || calls != 3 {
		t.Fatalf("Replay with a failing fn = %v after %d calls, want the fn's error after 3", err, calls)
	}
}

func TestTruncateFront(t *testing.T) {
	dir := t.TempDir()
	opts := Options{Sync: SyncNever, SegmentSize: smallSegments}
	l := openLog(t, dir, opts)
	writeFrames(t, l, 14) // segments 1, 5, 9, 13

	if err := l.TruncateFront(1); err != nil {
		t.Fatal(err)
	}
	checkFrames(t, l, 1, 14)

	// Frame 7 is in segment 5: only segment 1 can go.
	if err := l.TruncateFront(7); err != nil {
		t.Fatal(err)
	}
	checkFrames(t, l, 5, 10)
	checkSegmentTable(t, l)
	// A reader asking for a truncated frame is told, then goes on.
	c := l.NewCursor(4)
	defer c.Close()
	_, err := c.Next(context.Background())
	var gap *GapError
	if !errors.As(err, &gap) || !errors.Is(err, ErrGap) || gap.First != 4 || gap.Last != 4 {
		t.Fatalf("Next from 4 after truncation = %v, want a gap of frame 4", err)
	}
	if f, err := c.Next(context.Background()); err != nil || f.Index != 5 {
		t.Fatalf("Next after the gap = %d, %v; want frame 5", f.Index, err)
	}

	// Appends go on, numbering continues across a reopen.
	writeFrames(t, l, 1)
	l.Close()
	l = openLog(t, dir, opts)
	checkFrames(t, l, 5, 11)

	// Past the end: everything but the tail segment goes.
	if err := l.TruncateFront(1000); err != nil {
		t.Fatal(err)
	}
	checkFrames(t, l, 13, 3)
	checkSegmentTable(t, l)
	writeFrames(t, l, 1)
	checkFrames(t, l, 13, 4)
}

func TestTruncateFrontDuringAppends(t *testing.T) {
	l := openLog(t, t.TempDir(), Options{Sync: SyncNever, SegmentSize: 256})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 300 {
				if err := l.Append([]byte("concurrent"), 1); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	for range 20 {
		if err := l.TruncateFront(l.LastIndex()); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	checkSegmentTable(t, l)
	n := 0
	if err := l.Replay(l.FirstIndex(), func(fr Frame) error { _ = fr; n++; return nil }); err != nil {
		t.Fatal(err)
	}
	if want := int(l.LastIndex() - l.FirstIndex() + 1); n != want {
		t.Fatalf("replayed %d frames, want %d", n, want)
	}
}

func TestReplayDuringAppends(t *testing.T) {
	// Replay reads through tidwall while the committer writes: the frames
	// it returns must be whole and in order.
	l := openLog(t, t.TempDir(), Options{Sync: SyncNever, SegmentSize: 512})
	done := make(chan struct{})
	go func() {
		defer close(done)
		writeFrames(t, l, 1000)
	}()
	for range 20 {
		atLeast := l.LastIndex()
		next := uint64(1)
		if err := l.Replay(1, func(fr Frame) error {
			index, payload, n := fr.Index, fr.Payload, fr.Records
			if index != next || !bytes.Equal(payload, payloadOf(index)) || n != recordsOf(index) {
				return fmt.Errorf("frame %d (want %d) = %q × %d", index, next, payload, n)
			}
			next++
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if next-1 < atLeast {
			t.Fatalf("replayed %d frames, but %d were written before the replay began", next-1, atLeast)
		}
	}
	<-done
	checkFrames(t, l, 1, 1000)
}

// nextFrames reads a cursor until it has n frames, collecting the gaps it
// reports on the way.
func nextFrames(t *testing.T, c *Cursor, n int) (frames []uint64, gaps []GapError) {
	t.Helper()
	// A guard, not a wait: the frames are all written before the call.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for len(frames) < n {
		f, err := c.Next(ctx)
		var gap *GapError
		switch {
		case errors.As(err, &gap):
			gaps = append(gaps, *gap)
		case err != nil:
			t.Fatalf("Next after %v: %v", frames, err)
		default:
			frames = append(frames, f.Index)
		}
	}
	return frames, gaps
}

func TestReadDamageAfterOpen(t *testing.T) {
	// Damage that appears under an open log costs a reader the frames it
	// hit, no more: the cursor says which, and reads on.
	dir := t.TempDir()
	opts := Options{Sync: SyncNever, SegmentSize: smallSegments}
	l := openLog(t, dir, opts)
	writeFrames(t, l, 14)
	l.Close()
	l = openLog(t, dir, opts)
	locs := layout(t, dir)
	flipBit(t, dir, locs[1].seg, locs[1].frameAt()+headerSize, 0x01)

	c := l.NewCursor(1)
	defer c.Close()
	frames, gaps := nextFrames(t, c, 13)
	if len(gaps) != 1 || gaps[0].First != 2 || gaps[0].Last != 2 || gaps[0].Segment != segmentName(1) || gaps[0].Bytes != locs[2].off-locs[1].off {
		t.Fatalf("gaps %+v, want frame 2 alone, %d bytes in segment 1", gaps, locs[2].off-locs[1].off)
	}
	if want := []uint64{1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14}; !slices.Equal(frames, want) {
		t.Fatalf("frames %v, want %v", frames, want)
	}
	n := 0
	if err := l.Replay(1, func(Frame) error { n++; return nil }); err != nil || n != 13 {
		t.Fatalf("Replay = %d frames, %v; want 13", n, err)
	}
}

func TestReadShrunkSegmentAfterOpen(t *testing.T) {
	// A segment that loses its last frames under an open log: the reader
	// learns which frames are gone when it reaches the next segment.
	dir := t.TempDir()
	opts := Options{Sync: SyncNever, SegmentSize: smallSegments}
	l := openLog(t, dir, opts)
	writeFrames(t, l, 14)
	l.Close()
	l = openLog(t, dir, opts)
	locs := layout(t, dir)
	truncateAt(t, dir, locs[0].seg, locs[2].off)

	c := l.NewCursor(1)
	defer c.Close()
	frames, gaps := nextFrames(t, c, 12)
	if len(gaps) != 1 || gaps[0].First != 3 || gaps[0].Last != 4 {
		t.Fatalf("gaps %+v, want frames 3 and 4", gaps)
	}
	if frames[0] != 1 || frames[1] != 2 || frames[2] != 5 || frames[11] != 14 {
		t.Fatalf("frames %v, want 1, 2, then 5 to 14", frames)
	}
}

func TestStartIndexNewLog(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "wal")
	opts := Options{Sync: SyncNever, StartIndex: 100}
	l := openLog(t, dir, opts)
	if l.FirstIndex() != 100 || l.LastIndex() != 99 {
		t.Fatalf("log started at %d..%d, want 100..99", l.FirstIndex(), l.LastIndex())
	}
	writeFrames(t, l, 2)
	l.Close()
	if _, err := os.Stat(filepath.Join(dir, segmentName(100))); err != nil {
		t.Fatal(err)
	}
	l = openLog(t, dir, opts)
	checkFrames(t, l, 100, 2)
}

func TestStartIndexReplacedLog(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "wal")
	l := openLog(t, dir, Options{Sync: SyncNever})
	writeFrames(t, l, 5)
	l.Close()

	// Frames up to 5 and a snapshot from 6 on: nothing is missing.
	for _, start := range []uint64{3, 6} {
		l = openLog(t, dir, Options{Sync: SyncNever, StartIndex: start})
		checkFrames(t, l, 1, 5)
		l.Close()
	}

	// A snapshot from 50 on: frames 6 to 49 are nowhere, so this log is not
	// the one the snapshot followed. It is kept aside, not deleted.
	var logs logLines
	l = openLog(t, dir, Options{Sync: SyncNever, StartIndex: 50, Logger: logs.logger()})
	checkFrames(t, l, 50, 0)
	writeFrames(t, l, 1)
	checkFrames(t, l, 50, 1)
	warnings := logs.lines(t, slog.LevelWarn)
	if len(warnings) != 1 || warnings[0]["moved_to"] == nil {
		t.Fatalf("want one warning naming where the log went, got %v", warnings)
	}
	aside, _ := filepath.Glob(dir + ".old-*")
	if len(aside) != 1 || aside[0] != warnings[0]["moved_to"] {
		t.Fatalf("old logs %v, warning says %v", aside, warnings[0]["moved_to"])
	}
	old := openLog(t, aside[0], Options{Sync: SyncNever})
	checkFrames(t, old, 1, 5)
}

func TestCloseFlushesWaitingAppends(t *testing.T) {
	// Appends already waiting when Close is called are written, not failed.
	release := make(chan struct{})
	var blocked atomic.Bool
	dir := t.TempDir()
	l := openLog(t, dir, Options{Sync: SyncNever, hooks: &testHooks{write: func(index uint64) error {
		if index == 1 {
			blocked.Store(true)
			<-release
		}
		return nil
	}}})

	const waiting = 10
	errs := make(chan error, waiting+1)
	go func() { errs <- l.Append([]byte("first"), 1) }()
	waitFor(t, "the committer to take the first frame", blocked.Load)
	for i := range waiting {
		go func() { errs <- l.Append(fmt.Appendf(nil, "waiting-%d", i), 1) }()
	}
	waitFor(t, "the appends to join the open batch", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.open.records == waiting
	})
	closed := make(chan error)
	go func() { closed <- l.Close() }()
	waitFor(t, "Close to begin", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.closed
	})
	close(release)
	for range waiting + 1 {
		if err := <-errs; err != nil {
			t.Errorf("Append waiting at Close: %v", err)
		}
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}

	l = openLog(t, dir, Options{Sync: SyncNever})
	records := 0
	if err := l.Replay(1, func(fr Frame) error { n := fr.Records; records += n; return nil }); err != nil {
		t.Fatal(err)
	}
	if l.LastIndex() != 2 || records != waiting+1 {
		t.Fatalf("after Close: %d frames, %d records; want 2 frames, %d records", l.LastIndex(), records, waiting+1)
	}
}

func TestBackpressure(t *testing.T) {
	// With the batch being filled at MaxBatchBytes, the next appender waits
	// for it to be taken rather than grow it.
	release := make(chan struct{})
	var blocked atomic.Bool
	var held atomic.Int32
	l := openLog(t, t.TempDir(), Options{Sync: SyncNever, MaxBatchBytes: 8, hooks: &testHooks{write: func(index uint64) error {
		if index == 1 {
			blocked.Store(true)
			<-release
		}
		return nil
	}, held: func() { held.Add(1) }}})
	errs := make(chan error, 3)
	go func() { errs <- l.Append([]byte("frame--1"), 1) }()
	waitFor(t, "the first frame to be taken", blocked.Load)
	go func() { errs <- l.Append([]byte("frame--2"), 1) }()
	waitFor(t, "the second append to fill the batch", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.open.records == 1
	})
	go func() { errs <- l.Append([]byte("frame--3"), 1) }()
	waitFor(t, "the third append to be held back", func() bool { return held.Load() == 1 })
	close(release)
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	var payloads []string
	if err := l.Replay(1, func(fr Frame) error {
		p := fr.Payload
		payloads = append(payloads, string(p))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if want := []string{"frame--1", "frame--2", "frame--3"}; fmt.Sprint(payloads) != fmt.Sprint(want) {
		t.Fatalf("frames %q, want %q", payloads, want)
	}
}

func TestClosedLog(t *testing.T) {
	l := openLog(t, t.TempDir(), Options{})
	writeFrames(t, l, 2)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := l.Append([]byte("late"), 1); !errors.Is(err, ErrClosed) {
		t.Errorf("Append after Close = %v, want ErrClosed", err)
	}
	if err := l.Sync(); !errors.Is(err, ErrClosed) {
		t.Errorf("Sync after Close = %v, want ErrClosed", err)
	}
	if err := l.TruncateFront(2); !errors.Is(err, ErrClosed) {
		t.Errorf("TruncateFront after Close = %v, want ErrClosed", err)
	}
	if err := l.Replay(1, func(fr Frame) error { _ = fr; return nil }); !errors.Is(err, ErrClosed) {
		t.Errorf("Replay after Close = %v, want ErrClosed", err)
	}
	if l.LastIndex() != 2 || l.Stats().Frames != 2 {
		t.Errorf("indexes and stats must survive Close: %+v", l.Stats())
	}
}

func TestCloseDuringAppends(t *testing.T) {
	// Every Append either made it into the log or says ErrClosed.
	dir := t.TempDir()
	l := openLog(t, dir, Options{Sync: SyncNever})
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := make(map[string]bool)
	for g := range 16 {
		wg.Go(func() {
			for i := 0; ; i++ {
				p := groupPayload(g, i)
				err := l.Append(p, 1)
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				ok[string(p)] = true
				mu.Unlock()
			}
		})
	}
	waitFor(t, "some appends", func() bool { return l.LastIndex() > 50 })
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	l = openLog(t, dir, Options{Sync: SyncNever})
	found := 0
	if err := l.Replay(1, func(fr Frame) error {
		p := fr.Payload
		for c := range slicesChunk(p, groupPayloadLen) {
			if ok[string(c)] {
				found++
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if found != len(ok) {
		t.Fatalf("%d appends succeeded, %d are in the log", len(ok), found)
	}
}

var errInjected = errors.New("injected fault")

func TestWriteFailureReopens(t *testing.T) {
	// A failed write fails its appenders, then the log is repaired and
	// reopened and appends go on; here the failed write left half a frame.
	dir := t.TempDir()
	var fail atomic.Bool
	var logs logLines
	l := openLog(t, dir, Options{Sync: SyncNever, Logger: logs.logger(), hooks: &testHooks{write: func(uint64) error {
		if !fail.Load() {
			return nil
		}
		f, err := os.OpenFile(filepath.Join(dir, segmentName(1)), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		f.Write([]byte{20, frameVersion, 0, 1})
		return errInjected
	}}})
	writeFrames(t, l, 3)
	fail.Store(true)
	if err := l.Append(payloadOf(4), recordsOf(4)); !errors.Is(err, errInjected) {
		t.Fatalf("Append during a fault = %v, want the injected error", err)
	}
	fail.Store(false)
	writeFrames(t, l, 1)
	checkFrames(t, l, 1, 4)
	checkSegmentTable(t, l)
	if st := l.Stats(); st.Repairs != 1 || st.Failed {
		t.Fatalf("after recovery: %+v, want one repair and not failed", st)
	}
	if len(logs.lines(t, slog.LevelError)) == 0 {
		t.Fatal("the failed write was not logged")
	}
}

func TestReopenFailureFailsFast(t *testing.T) {
	retry := make(chan time.Time)
	var failWrite, failReopen atomic.Bool
	reg := prometheus.NewRegistry()
	l := openLog(t, t.TempDir(), Options{Sync: SyncNever, Registerer: reg, hooks: &testHooks{
		retryTick: retry,
		write: func(uint64) error {
			if failWrite.Load() {
				return errInjected
			}
			return nil
		},
		reopen: func() error {
			if failReopen.Load() {
				return fmt.Errorf("open segment: %w", os.ErrPermission)
			}
			return nil
		},
	}})
	writeFrames(t, l, 2)
	failWrite.Store(true)
	failReopen.Store(true)
	if err := l.Append([]byte("lost"), 1); !errors.Is(err, errInjected) {
		t.Fatalf("Append = %v, want the write error", err)
	}
	failWrite.Store(false)
	// The reopen failed: appends fail at once, naming why.
	err := l.Append([]byte("refused"), 1)
	if !errors.Is(err, ErrFailed) || !errors.Is(err, os.ErrPermission) {
		t.Fatalf("Append while failed = %v, want ErrFailed wrapping the reopen error", err)
	}
	if !l.Stats().Failed || gauge(t, reg, "greyhold_wal_failed") != 1 {
		t.Fatal("failed state not reported")
	}
	if err := l.Sync(); !errors.Is(err, ErrFailed) {
		t.Errorf("Sync while failed = %v", err)
	}
	// What is on disk can still be read.
	if err := l.Replay(1, func(Frame) error { return nil }); err != nil {
		t.Errorf("Replay while failed = %v", err)
	}

	// A retry that fails again changes nothing. TruncateFront is handled by
	// the committer after the retry, so it also waits for it.
	retry <- time.Time{}
	if err := l.TruncateFront(1); !errors.Is(err, ErrFailed) {
		t.Fatalf("TruncateFront while failed = %v", err)
	}
	failReopen.Store(false)
	retry <- time.Time{}
	if err := l.TruncateFront(1); err != nil {
		t.Fatalf("TruncateFront after recovery: %v", err)
	}
	if l.Stats().Failed || gauge(t, reg, "greyhold_wal_failed") != 0 {
		t.Fatal("still failed after a successful reopen")
	}
	writeFrames(t, l, 1)
	checkFrames(t, l, 1, 3)
}

// gauge reads a single-series metric from reg.
func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		m := mf.GetMetric()[0]
		switch {
		case m.GetGauge() != nil:
			return m.GetGauge().GetValue()
		case m.GetCounter() != nil:
			return m.GetCounter().GetValue()
		case m.GetHistogram() != nil:
			return float64(m.GetHistogram().GetSampleCount())
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	dir := t.TempDir()
	l := openLog(t, dir, Options{Sync: SyncAlways, Registerer: reg})
	writeFrames(t, l, 3)
	for name, want := range map[string]float64{
		"greyhold_wal_frames_written_total":   3,
		"greyhold_wal_records_written_total":  float64(recordsOf(1) + recordsOf(2) + recordsOf(3)),
		"greyhold_wal_written_bytes_total":    3 * 45,
		"greyhold_wal_fsync_duration_seconds": 3,
		"greyhold_wal_frame_records":          3,
		"greyhold_wal_failed":                 0,
		"greyhold_wal_last_index":             3,
		"greyhold_wal_disk_bytes":             3 * 45,
	} {
		if got := gauge(t, reg, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	// One registry, one log at a time.
	if l2, err := Open(t.TempDir(), Options{Registerer: reg}); err == nil {
		l2.Close()
		t.Fatal("a second log registered the same metrics")
	}
	l.Close()

	// Close unregisters: the next log (here repairing a torn tail) can
	// register, and counts its repair.
	f, err := os.OpenFile(filepath.Join(dir, segmentName(1)), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte{20, frameVersion})
	f.Close()
	openLog(t, dir, Options{Registerer: reg})
	if got := gauge(t, reg, "greyhold_wal_repairs_total"); got != 1 {
		t.Errorf("repairs = %v, want 1", got)
	}
	if got := gauge(t, reg, "greyhold_wal_torn_bytes_total"); got != 2 {
		t.Errorf("torn bytes = %v, want 2", got)
	}
	if got := gauge(t, reg, "greyhold_wal_lost_frames_total"); got != 0 {
		t.Errorf("lost frames = %v, want 0", got)
	}
}

// TestDiskFullWaitsForRoom: a write that finds the disk full fails, and
// the log does not reopen at once (the reopen would work, needing no
// space, and the next write fail the same way: a scan of the whole log
// and three lines of log per append). Appends fail fast, one line says
// why, and retries reopen only once there is room.
func TestDiskFullWaitsForRoom(t *testing.T) {
	retry := make(chan time.Time)
	var full atomic.Bool
	var reopens atomic.Int32
	var free atomic.Int64
	free.Store(1 << 30)
	var logs logLines
	l := openLog(t, t.TempDir(), Options{Sync: SyncNever, Logger: logs.logger(), hooks: &testHooks{
		retryTick: retry,
		write: func(uint64) error {
			if full.Load() {
				return fmt.Errorf("write: %w", syscall.ENOSPC)
			}
			return nil
		},
		reopen: func() error { reopens.Add(1); return nil },
		free:   func() int64 { return free.Load() },
	}})
	writeFrames(t, l, 2)
	full.Store(true)
	free.Store(4096)
	if err := l.Append([]byte("lost"), 1); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Append on a full disk = %v, want ENOSPC", err)
	}
	for range 100 {
		if err := l.Append([]byte("refused"), 1); !errors.Is(err, ErrFailed) || !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("Append while full = %v, want ErrFailed wrapping ENOSPC", err)
		}
	}
	retry <- time.Time{} // still full: no reopen
	if err := l.TruncateFront(1); !errors.Is(err, ErrFailed) {
		t.Fatalf("TruncateFront while full = %v", err)
	}
	if n := reopens.Load(); n != 0 {
		t.Errorf("%d reopens while the disk was full, want 0", n)
	}
	if lines := logs.lines(t, slog.LevelError); len(lines) != 1 || !strings.Contains(fmt.Sprint(lines[0]["msg"]), "the disk is full") {
		t.Errorf("error lines %v, want one saying the disk is full", lines)
	}

	full.Store(false)
	free.Store(1 << 30)
	retry <- time.Time{}
	if err := l.TruncateFront(1); err != nil {
		t.Fatalf("TruncateFront once there is room: %v", err)
	}
	if n := reopens.Load(); n != 1 {
		t.Errorf("%d reopens once there was room, want 1", n)
	}
	writeFrames(t, l, 1)
	checkFrames(t, l, 1, 3)
}
