package wal

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// lossLog opens a log whose syncer runs on the test's ticks and whose
// losses are collected.
type lossLog struct {
	*Log
	tick   chan time.Time
	done   chan struct{}
	mu     sync.Mutex
	losses []Loss
	logs   logLines
}

func openLossLog(t *testing.T, dir string, mode SyncMode) *lossLog {
	t.Helper()
	ll := &lossLog{tick: make(chan time.Time), done: make(chan struct{})}
	ll.Log = openLog(t, dir, Options{
		Sync:        mode,
		SegmentSize: smallSegments,
		Logger:      ll.logs.logger(),
		OnLoss: func(l Loss) {
			ll.mu.Lock()
			ll.losses = append(ll.losses, l)
			ll.mu.Unlock()
		},
		hooks: &testHooks{syncTick: ll.tick, syncDone: ll.done},
	})
	return ll
}

// sync makes the syncer take one tick and waits until it has handled it
// and the committer has acted on what it found (an append after the tick
// is queued behind the committer's reopen).
func (ll *lossLog) syncTick() {
	ll.tick <- time.Time{}
	<-ll.done
}

func (ll *lossLog) lossList() []Loss {
	ll.mu.Lock()
	defer ll.mu.Unlock()
	return append([]Loss(nil), ll.losses...)
}

// tailDamage is what something outside the process does to the tail file.
var tailDamage = []struct {
	name string
	do   func(t *testing.T, path string)
	// lost frames of the tail segment 13 (frames 13 and 14)
	first uint64
}{
	{"removed", func(t *testing.T, path string) {
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
	}, 13},
	{"cut short", func(t *testing.T, path string) {
		if err := os.Truncate(path, 45+10); err != nil { // frame 13 whole, 14 cut
			t.Fatal(err)
		}
	}, 14},
	{"replaced", func(t *testing.T, path string) {
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, nil, 0o640); err != nil {
			t.Fatal(err)
		}
	}, 13},
}

func TestTailLostUnderRunningLog(t *testing.T) {
	for _, mode := range []SyncMode{SyncEvery(time.Second), SyncNever} {
		for _, d := range tailDamage {
			t.Run(mode.String()+"/"+d.name, func(t *testing.T) {
				dir := t.TempDir()
				ll := openLossLog(t, dir, mode)
				writeFrames(t, ll.Log, 14) // segments 1, 5, 9, 13
				gen := ll.Generation()
				d.do(t, filepath.Join(dir, segmentName(13)))
				ll.syncTick()
				// The committer acts on the syncer's finding before it
				// takes this append.
				if err := ll.Append(payloadOf(15), recordsOf(15)); err != nil {
					t.Fatalf("append after the loss: %v", err)
				}
				losses := ll.lossList()
				if len(losses) != 1 || losses[0].First != d.first || losses[0].Last != 14 {
					t.Fatalf("losses %+v, want frames %d to 14", losses, d.first)
				}
				if ll.Generation() == gen {
					t.Error("the log went on in the same generation")
				}
				if got := ll.Stats().LostFrames; got != 14-d.first+1 {
					t.Errorf("Stats().LostFrames = %d, want %d", got, 14-d.first+1)
				}
				if len(ll.logs.lines(t, slog.LevelError)) == 0 {
					t.Error("the loss was not logged as an error")
				}
				checkSegmentTable(t, ll.Log)
				want := indexes(1, 15, indexes(d.first, 14)...)
				checkSurvivors(t, ll.Log, want)
				ll.Close()

				// A restart with a snapshot taken after the loss (start
				// 16) finds the gap covered.
				l := openLog(t, dir, Options{Sync: SyncNever, StartIndex: 16})
				r := l.Repaired()
				if r.LostFrames != 0 || r.CoveredFrames != 14-d.first+1 {
					t.Fatalf("restart: %+v, want the lost frames covered", r)
				}
				checkSurvivors(t, l, want)
			})
		}
	}
}

func TestTailLostSyncAlways(t *testing.T) {
	// In fsync=always mode the append whose fsync finds the file gone is
	// told so, and the one after it is written to a new segment.
	dir := t.TempDir()
	ll := openLossLog(t, dir, SyncAlways)
	writeFrames(t, ll.Log, 14)
	if err := os.Remove(filepath.Join(dir, segmentName(13))); err != nil {
		t.Fatal(err)
	}
	var lost *errTailLost
	if err := ll.Append(payloadOf(15), recordsOf(15)); !errors.As(err, &lost) {
		t.Fatalf("append into a removed tail = %v, want the loss", err)
	}
	if err := ll.Append(payloadOf(16), recordsOf(16)); err != nil {
		t.Fatalf("append after the reopen: %v", err)
	}
	if losses := ll.lossList(); len(losses) != 1 || losses[0].First != 13 || losses[0].Last != 15 {
		t.Fatalf("losses %+v, want frames 13 to 15", losses)
	}
	checkSurvivors(t, ll.Log, append(indexes(1, 12), 16))
}

// TestTailCutAndWrittenPast: the tail file cut short and then written
// past, as a truncation under load leaves it (tidwall writes at its own
// offset, so the file is as long as written again and the cut bytes read
// as zeros). The size check alone misses it; reading back what was
// written since the last look finds it, and the frames lost in the hole
// are reported, whether the cut came before or after that look.
func TestTailCutAndWrittenPast(t *testing.T) {
	for _, mode := range []SyncMode{SyncEvery(time.Second), SyncNever} {
		for _, lookFirst := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/looked before the cut %v", mode, lookFirst), func(t *testing.T) {
				dir := t.TempDir()
				ll := openLossLog(t, dir, mode)
				writeFrames(t, ll.Log, 14) // segments 1, 5, 9, 13
				if lookFirst {
					ll.syncTick()
				}
				if err := os.Truncate(filepath.Join(dir, segmentName(13)), 45+10); err != nil { // frame 13 whole, 14 cut
					t.Fatal(err)
				}
				if err := ll.Append(payloadOf(15), recordsOf(15)); err != nil {
					t.Fatal(err)
				}
				if fi, err := os.Stat(filepath.Join(dir, segmentName(13))); err != nil || fi.Size() != 3*45 { // frames 13 to 15
					t.Fatalf("the tail is not as long as written: %v, %v", fi, err)
				}
				ll.syncTick()
				if err := ll.Append(payloadOf(16), recordsOf(16)); err != nil {
					t.Fatalf("append after the loss: %v", err)
				}
				if losses := ll.lossList(); len(losses) != 1 || losses[0].First != 14 || losses[0].Last != 14 {
					t.Fatalf("losses %+v, want frame 14", losses)
				}
				if got := ll.Stats().LostFrames; got != 1 {
					t.Errorf("Stats().LostFrames = %d, want 1", got)
				}
				checkSegmentTable(t, ll.Log)
				checkSurvivors(t, ll.Log, append(indexes(1, 13), 15, 16))
			})
		}
	}
}
