package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/greyhold/greyhold/engine"
	"github.com/greyhold/greyhold/internal/testutil"
	"github.com/greyhold/greyhold/wal"
)

// withFailingLog makes o open a failingLog and returns where it will be.
func withFailingLog(o *Options) **testutil.FailingLog {
	var fl *testutil.FailingLog
	o.OpenLog = func(dir string, wo wal.Options) (Log, error) {
		l, err := wal.Open(dir, wo)
		if err != nil {
			return nil, err
		}
		fl = &testutil.FailingLog{Log: l}
		return fl, nil
	}
	return &fl
}

// TestFailingLogFailsOpen: while the log cannot be written, every check
// still gets its decision, marked not logged, and is counted; once the log
// heals, checks are logged again.
func TestFailingLogFailsOpen(t *testing.T) {
	o := testOptions(engine.NewManualClock(t0))
	fl := withFailingLog(&o)
	s := mustOpen(t, t.TempDir(), o)
	defer s.Close()
	expect(t, s, t0, historyRequest(1), engine.Defer, engine.ReasonNew)
	(*fl).Fail.Store(true)
	d, err := s.CheckAt(t0, historyRequest(2))
	if !errors.Is(err, ErrNotLogged) || !errors.Is(err, testutil.ErrDiskFull) || d.Verdict != engine.Defer {
		t.Fatalf("check while the log fails = %+v, %v; want a defer marked not logged", d, err)
	}
	res := s.CheckBatch(t0, []engine.Request{*historyRequest(3), *historyRequest(4)}, nil)
	for i, r := range res {
		if !errors.Is(r.Err, ErrNotLogged) {
			t.Fatalf("batch answer %d while the log fails: %v", i, r.Err)
		}
	}
	if _, err := s.SetRule(engine.Rule{Kind: engine.RuleClient, Value: "192.0.2.0/24"}, true); !errors.Is(err, ErrNotLogged) {
		t.Fatalf("rule while the log fails: %v", err)
	}
	st := s.Stats()
	if st.NotLogged != 3 || !st.WAL.Failed {
		t.Fatalf("not logged %d, failed %v; want 3 and true", st.NotLogged, st.WAL.Failed)
	}
	(*fl).Fail.Store(false)
	before := s.Stats().WAL.LastIndex
	expect(t, s, t0, historyRequest(5), engine.Defer, engine.ReasonNew)
	if s.Stats().WAL.LastIndex != before+1 || s.Stats().NotLogged != 3 {
		t.Fatal("the healed log did not take the next check")
	}
}

// TestFollowAndHold: a cursor on the store's log sees the checks made
// while it reads; a pin keeps the frames a snapshot would drop.
func TestFollowAndHold(t *testing.T) {
	o := testOptions(engine.NewManualClock(t0))
	o.WALSegmentSize = 1024
	s := mustOpen(t, t.TempDir(), o)
	defer s.Close()
	pin := s.HoldLog(1)
	defer pin.Release()
	c := s.Follow(1)
	defer c.Close()
	const checks = 300
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range checks {
			if _, err := s.CheckAt(t0, historyRequest(i)); err != nil {
				t.Error(err)
				return
			}
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	fresh, err := engine.New(o.Engine, []byte("not the store's secret: keys are opaque"))
	if err != nil {
		t.Fatal(err)
	}
	records := 0
	for f := uint64(1); f <= checks; f++ {
		fr, err := c.Next(ctx)
		if err != nil || fr.Index != f {
			t.Fatalf("frame %d: %+v, %v", f, fr, err)
		}
		n, err := fresh.Apply(fr.Payload)
		if err != nil {
			t.Fatal(err)
		}
		records += n
	}
	wg.Wait()
	if records < checks {
		t.Fatalf("%d records in %d frames", records, checks)
	}
	if _, err := s.Snapshot(); err != nil {
		t.Fatal(err)
	}
	if first := s.Stats().WAL.FirstIndex; first != 1 {
		t.Fatalf("the log starts at %d after a snapshot with frame 1 pinned", first)
	}
}

// TestApplyRemote: records from another node change memory, not the log.
func TestApplyRemote(t *testing.T) {
	o := testOptions(engine.NewManualClock(t0))
	dirA, dirB := t.TempDir(), t.TempDir()
	a := mustOpen(t, dirA, o)
	defer a.Close()
	// Nodes of one fleet share the secret.
	copySecret(t, dirA, dirB)
	b := mustOpen(t, dirB, o)
	defer b.Close()
	expect(t, a, t0, historyRequest(1), engine.Defer, engine.ReasonNew)
	c := a.Follow(1)
	defer c.Close()
	fr, err := c.Next(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	before := b.Stats().WAL.LastIndex
	if n, err := b.ApplyRemote(fr.Payload); err != nil || n != fr.Records {
		t.Fatalf("ApplyRemote = %d, %v", n, err)
	}
	if b.Stats().WAL.LastIndex != before {
		t.Fatal("a remote record was logged locally")
	}
	// The retry on the other node passes.
	expect(t, b, t0+300, historyRequest(1), engine.Pass, engine.ReasonPassed)
}

// copySecret gives dst the secret of src, as an operator joining an MX
// host to a fleet does.
func copySecret(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(src, secretName))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dst, secretName), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestSnapshotStateAndHooks: the state blob rides in each snapshot and
// comes back with the one loaded; hooks hear of each snapshot.
func TestSnapshotStateAndHooks(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(engine.NewManualClock(t0))
	s := mustOpen(t, dir, o)
	var pos atomic.Uint64
	s.SetSnapshotState(func() []byte { return fmt.Appendf(nil, "stream=%d", pos.Load()) })
	var heard []string
	s.OnSnapshot(func(info SnapshotInfo) { heard = append(heard, filepath.Base(info.Path)) })
	expect(t, s, t0, historyRequest(1), engine.Defer, engine.ReasonNew)
	pos.Store(41)
	info, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if len(heard) != 1 || heard[0] != filepath.Base(info.Path) {
		t.Fatalf("hooks heard %v, want %s", heard, filepath.Base(info.Path))
	}
	s.Close()
	s = mustOpen(t, dir, o)
	defer s.Close()
	if got := string(s.Stats().Recovery.State); got != "stream=41" {
		t.Fatalf("recovered state %q", got)
	}
}

// TestImportSnapshot: another node's snapshot merges into memory; one from
// another fleet does not.
func TestImportSnapshot(t *testing.T) {
	o := testOptions(engine.NewManualClock(t0))
	dirA, dirB, dirC := t.TempDir(), t.TempDir(), t.TempDir()
	a := mustOpen(t, dirA, o)
	defer a.Close()
	copySecret(t, dirA, dirB)
	b := mustOpen(t, dirB, o)
	defer b.Close()
	c := mustOpen(t, dirC, o) // a secret of its own
	defer c.Close()
	for i := range 50 {
		expect(t, a, t0, historyRequest(i), engine.Defer, engine.ReasonNew)
	}
	expect(t, b, t0, historyRequest(100), engine.Defer, engine.ReasonNew)
	a.SetSnapshotState(func() []byte { return []byte("pos") })
	info, err := a.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	got, err := b.ImportSnapshot(info.Path)
	if err != nil || got.Triplets != 50 || string(got.State) != "pos" {
		t.Fatalf("ImportSnapshot = %+v, %v", got, err)
	}
	for i := range 50 {
		expect(t, b, t0+300, historyRequest(i), engine.Pass, engine.ReasonPassed)
	}
	expect(t, b, t0+300, historyRequest(100), engine.Pass, engine.ReasonPassed)
	if _, err := c.ImportSnapshot(info.Path); !errors.Is(err, ErrNotFleet) {
		t.Fatalf("a snapshot keyed by another secret imported: %v", err)
	}
}

// TestSecretFile: the secret comes from the file named, which is never
// made, and keys agree with a node reading the same file.
func TestSecretFile(t *testing.T) {
	o := testOptions(engine.NewManualClock(t0))
	o.SecretFile = filepath.Join(t.TempDir(), "fleet-secret")
	if s, err := Open(t.TempDir(), o); err == nil {
		s.Close()
		t.Fatal("opened with a secret file that does not exist")
	}
	if _, err := os.Stat(o.SecretFile); !os.IsNotExist(err) {
		t.Fatal("the secret file was made")
	}
	if err := os.WriteFile(o.SecretFile, []byte(strings.Repeat("5e", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a := mustOpen(t, t.TempDir(), o)
	defer a.Close()
	b := mustOpen(t, t.TempDir(), o)
	defer b.Close()
	if a.Identity() != b.Identity() {
		t.Fatalf("identities %+v and %+v", a.Identity(), b.Identity())
	}
	if _, err := os.Stat(filepath.Join(a.Dir(), secretName)); !os.IsNotExist(err) {
		t.Fatal("a secret was made in the data directory beside --secret-file")
	}
}

// TestMissingLogIsReported: a data directory whose log is gone while its
// metadata says it had one opens (mail keeps flowing), but as a loss: an
// error line that says the log is missing and what was lost, and
// Recovery's repair report; never as the quiet start of a new log.
func TestMissingLogIsReported(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(engine.NewManualClock(t0))
	o.NoFinalSnapshot = true
	s := mustOpen(t, dir, o)
	expect(t, s, t0, historyRequest(1), engine.Defer, engine.ReasonNew)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(dir, "wal")); err != nil {
		t.Fatal(err)
	}
	var logs testutil.SyncBuffer
	o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	s = mustOpen(t, dir, o)
	defer s.Close()
	if !s.Stats().Recovery.WALRepair.Missing {
		t.Errorf("recovery %+v does not report the log missing", s.Stats().Recovery.WALRepair)
	}
	if out := logs.String(); !strings.Contains(out, `level=ERROR msg="the write-ahead log is missing: starting a new one"`) || strings.Contains(out, "starting a new wal") {
		t.Errorf("the start's log:\n%s", out)
	}
	// What the lost log held is gone: the triplet is new again.
	expect(t, s, t0+1, historyRequest(1), engine.Defer, engine.ReasonNew)
}
