package wal

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

// guard bounds a test that reads what is already written or is being
// written by the test itself: it fails instead of hanging.
func guard(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestCursorFollowsAppends(t *testing.T) {
	// A cursor at the end of the log gets each frame as it is written,
	// across segment changes, with the payload it was appended with.
	l := openLog(t, t.TempDir(), Options{Sync: SyncNever, SegmentSize: smallSegments})
	c := l.NewCursor(1)
	defer c.Close()
	const frames = 300
	done := make(chan error, 1)
	go func() {
		for i := uint64(1); i <= frames; i++ {
			if err := l.Append(payloadOf(i), recordsOf(i)); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	ctx := guard(t)
	for i := uint64(1); i <= frames; i++ {
		f, err := c.Next(ctx)
		if err != nil {
			t.Fatalf("Next for frame %d: %v", i, err)
		}
		if f.Index != i || string(f.Payload) != string(payloadOf(i)) || f.Gen != l.Generation() || f.UnixMilli == 0 {
			t.Fatalf("frame %d = %+v", i, f)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := len(segmentsKnown(l)); n < 70 {
		t.Fatalf("%d segments: the cursor was meant to cross many", n)
	}
}

func TestCursorWaitsAndCloses(t *testing.T) {
	l := openLog(t, t.TempDir(), Options{Sync: SyncNever})
	writeFrames(t, l, 2)
	c := l.NewCursor(2)
	defer c.Close()
	if f, err := c.Next(guard(t)); err != nil || f.Index != 2 {
		t.Fatalf("Next = %d, %v", f.Index, err)
	}
	// Caught up: a cancelled context ends the wait.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Next(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Next with a cancelled context = %v", err)
	}
	// Closing the log ends the wait of a cursor that has read everything.
	got := make(chan error, 1)
	go func() {
		_, err := c.Next(context.Background())
		got <- err
	}()
	l.Close()
	if err := <-got; !errors.Is(err, ErrClosed) {
		t.Fatalf("Next after Close = %v, want ErrClosed", err)
	}
}

func TestPinHoldsTruncation(t *testing.T) {
	l := openLog(t, t.TempDir(), Options{Sync: SyncNever, SegmentSize: smallSegments})
	writeFrames(t, l, 14) // segments 1, 5, 9, 13
	p := l.Pin(6)
	if err := l.TruncateFront(14); err != nil {
		t.Fatal(err)
	}
	if got := segmentsKnown(l); !slices.Equal(got, []uint64{5, 9, 13}) {
		t.Fatalf("segments %v with frame 6 pinned, want 5, 9, 13", got)
	}
	if st := l.Stats(); st.PinnedIndex != 6 {
		t.Fatalf("PinnedIndex = %d, want 6", st.PinnedIndex)
	}
	p.Move(10)
	if err := l.TruncateFront(14); err != nil {
		t.Fatal(err)
	}
	if got := segmentsKnown(l); !slices.Equal(got, []uint64{9, 13}) {
		t.Fatalf("segments %v with frame 10 pinned, want 9, 13", got)
	}
	p.Release()
	if err := l.TruncateFront(14); err != nil {
		t.Fatal(err)
	}
	if got := segmentsKnown(l); !slices.Equal(got, []uint64{13}) {
		t.Fatalf("segments %v after the pin's release, want 13", got)
	}
	checkSegmentTable(t, l)
}

func TestCursorReadsOnAfterTruncation(t *testing.T) {
	// A cursor inside a segment that truncation removes reads it to its
	// end through its own descriptor, then goes on.
	l := openLog(t, t.TempDir(), Options{Sync: SyncNever, SegmentSize: smallSegments})
	writeFrames(t, l, 14)
	c := l.NewCursor(1)
	defer c.Close()
	ctx := guard(t)
	if f, err := c.Next(ctx); err != nil || f.Index != 1 {
		t.Fatalf("Next = %d, %v", f.Index, err)
	}
	if err := l.TruncateFront(14); err != nil {
		t.Fatal(err)
	}
	frames, gaps := nextFrames(t, c, 3)
	if !slices.Equal(frames, []uint64{2, 3, 4}) || len(gaps) != 0 {
		t.Fatalf("frames %v, gaps %v: want the rest of the removed segment", frames, gaps)
	}
	frames, gaps = nextFrames(t, c, 2)
	if !slices.Equal(frames, []uint64{13, 14}) || len(gaps) != 1 || gaps[0].First != 5 || gaps[0].Last != 12 {
		t.Fatalf("frames %v, gaps %+v: want a gap of 5-12, then 13 and 14", frames, gaps)
	}
}

func TestGenerations(t *testing.T) {
	// Every open starts a generation; frames keep the one they were
	// written in, and Eras says where each began.
	dir := t.TempDir()
	gens := []uint32{11, 22, 33}
	next := 0
	opts := Options{Sync: SyncNever, hooks: &testHooks{gen: func() uint32 { next++; return gens[next-1] }}}
	for round := range 3 {
		l := openLog(t, dir, opts)
		if l.Generation() != gens[round] {
			t.Fatalf("open %d: generation %d, want %d", round, l.Generation(), gens[round])
		}
		if round < 2 {
			writeFrames(t, l, 2)
		}
		l.Close()
	}
	l := openLog(t, dir, Options{Sync: SyncNever, hooks: &testHooks{gen: func() uint32 { return 44 }}})
	want := []Era{{Gen: 11, First: 1}, {Gen: 22, First: 3}, {Gen: 44, First: 5}}
	if got := l.Eras(); !slices.Equal(got, want) {
		t.Fatalf("Eras() = %v, want %v (an era without frames is dropped)", got, want)
	}
	var got []uint32
	l.Replay(1, func(f Frame) error { got = append(got, f.Gen); return nil })
	if !slices.Equal(got, []uint32{11, 11, 22, 22}) {
		t.Fatalf("frame generations %v", got)
	}
}

func TestPlantedLinkAtNextSegment(t *testing.T) {
	// A link at the name of the segment the next write starts is removed,
	// not followed: its target keeps its bytes.
	dir := t.TempDir()
	var logs logLines
	l := openLog(t, dir, Options{Sync: SyncNever, SegmentSize: smallSegments, Logger: logs.logger()})
	writeFrames(t, l, 3)
	target := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(target, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, filepath.Join(dir, segmentName(5))); err != nil {
		t.Fatal(err)
	}
	writeFrames(t, l, 3) // frame 4 fills segment 1 and starts segment 5
	if b, err := os.ReadFile(target); err != nil || string(b) != "precious" {
		t.Fatalf("the link's target holds %q, %v", b, err)
	}
	if fi, err := os.Lstat(filepath.Join(dir, segmentName(5))); err != nil || !fi.Mode().IsRegular() {
		t.Fatalf("segment 5 is %v, %v: want a regular file", fi, err)
	}
	if len(logs.lines(t, slog.LevelError)) != 1 {
		t.Fatalf("want one error line for the link")
	}
	checkFrames(t, l, 1, 6)
}

func TestCursorsBesideAppends(t *testing.T) {
	// Several cursors read while appenders write and truncation runs;
	// each sees every frame after its start, in order, or a gap where
	// truncation took frames before it got to them.
	l := openLog(t, t.TempDir(), Options{Sync: SyncNever, SegmentSize: 1024})
	const frames = 2000
	var wg sync.WaitGroup
	ctx := guard(t)
	for r := range 3 {
		c := l.NewCursor(uint64(1 + r*100))
		wg.Go(func() {
			defer c.Close()
			next := c.Position()
			for next <= frames {
				f, err := c.Next(ctx)
				var gap *GapError
				switch {
				case errors.As(err, &gap):
					if gap.First != next {
						t.Errorf("gap %+v, want it to start at %d", gap, next)
						return
					}
					next = gap.Last + 1
					continue
				case err != nil:
					t.Error(err)
					return
				}
				if f.Index != next {
					t.Errorf("frame %d, want %d", f.Index, next)
					return
				}
				next++
			}
		})
	}
	wg.Go(func() {
		for i := uint64(1); i <= frames; i++ {
			if err := l.Append(payloadOf(i), 1); err != nil {
				t.Error(err)
				return
			}
			if i%300 == 0 {
				if err := l.TruncateFront(i - 100); err != nil {
					t.Error(err)
					return
				}
			}
		}
	})
	wg.Wait()
}
