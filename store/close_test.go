package store

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/greyhold/greyhold/engine"
	"github.com/greyhold/greyhold/snapshot"
)

// TestCloseAbandonsSlowSnapshot: a final snapshot still being written
// when the stop's context ends (the hook stands for a slow disk: it holds
// the writer at its first shard until then) is abandoned, leaving no file,
// and the log is closed all the same; the next start replays every change
// from it. A context that does not end lets the snapshot be written.
func TestCloseAbandonsSlowSnapshot(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(engine.NewManualClock(t0))
	o.NoFinalSnapshot = false
	started := make(chan struct{})
	var once sync.Once
	o.snapshotShard = func(ctx context.Context, shard int) {
		once.Do(func() { close(started) })
		<-ctx.Done()
	}
	s := mustOpen(t, dir, o)
	const n = 100
	for i := range n {
		expect(t, s, t0, historyRequest(i), engine.Defer, engine.ReasonNew)
	}
	ctx, cancel := context.WithCancel(context.Background())
	type result struct {
		abandoned bool
		err       error
	}
	closed := make(chan result, 1)
	go func() {
		a, err := s.CloseContext(ctx)
		closed <- result{a, err}
	}()
	<-started
	cancel()
	r := <-closed
	if !r.abandoned || r.err != nil {
		t.Fatalf("CloseContext with the snapshot held past its context: abandoned %v, %v", r.abandoned, r.err)
	}
	if st := s.Stats(); st.SnapshotFailures != 0 {
		t.Errorf("an abandoned snapshot counted as %d failures", st.SnapshotFailures)
	}
	left, err := os.ReadDir(filepath.Join(dir, snapDirName))
	if err != nil || len(left) != 0 {
		t.Fatalf("the snapshot directory holds %v (%v), want nothing", left, err)
	}

	o.snapshotShard = nil
	s = mustOpen(t, dir, o)
	if rec := s.Stats().Recovery; rec.Snapshot != "" || rec.Frames != n {
		t.Errorf("after the abandoned snapshot: snapshot %q, %d frames replayed; want none and %d", rec.Snapshot, rec.Frames, n)
	}
	for i := range n {
		expect(t, s, t0+10, historyRequest(i), engine.Defer, engine.ReasonEarlyRetry)
	}
	if abandoned, err := s.CloseContext(context.Background()); abandoned || err != nil {
		t.Fatalf("CloseContext with time to spare: abandoned %v, %v", abandoned, err)
	}
	if infos, err := snapshot.List(filepath.Join(dir, snapDirName)); err != nil || len(infos) != 1 {
		t.Fatalf("snapshots after a close with time to spare: %v, %v; want one", infos, err)
	}
}
