package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/greyhold/greyhold/engine"
	"github.com/greyhold/greyhold/internal/testutil"
	"github.com/greyhold/greyhold/snapshot"
	"github.com/greyhold/greyhold/wal"
)

func TestMain(m *testing.M) {
	if os.Getenv(crashChildEnv) != "" {
		crashChild()
		return
	}
	goleak.VerifyTestMain(m)
}

// testOptions: a manual clock, no timers, no final snapshot (a test that
// wants one calls Snapshot), the log written without fsync (the crash test
// covers the sync modes).
func testOptions(clock engine.Clock) Options {
	o := DefaultOptions()
	o.Clock = clock
	o.Sync = wal.SyncNever
	o.SnapshotInterval = 0
	o.SnapshotLogBytes = 0
	o.NoFinalSnapshot = true
	o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	return o
}

func mustOpen(t testing.TB, dir string, o Options) *Store {
	t.Helper()
	s, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func req(client, sender, rcpt string) *engine.Request {
	return &engine.Request{ClientAddr: client, ClientName: "mail.example", Sender: sender, Recipient: rcpt}
}

func expect(t testing.TB, s *Store, now engine.Time, r *engine.Request, v engine.Verdict, reason engine.Reason) {
	t.Helper()
	d, err := s.CheckAt(now, r)
	if err != nil {
		t.Fatal(err)
	}
	if d.Verdict != v || d.Reason != reason {
		t.Fatalf("%+v at %d: %v/%v, want %v/%v", r, now, d.Verdict, d.Reason, v, reason)
	}
}

const t0 = testutil.T0

func TestReopenKeepsState(t *testing.T) {
	dir := t.TempDir()
	clock := engine.NewManualClock(t0)
	for _, final := range []bool{false, true} {
		t.Run(fmt.Sprintf("final-snapshot=%v", final), func(t *testing.T) {
			o := testOptions(clock)
			o.NoFinalSnapshot = !final
			s := mustOpen(t, dir, o)
			r := req("192.0.2.10", fmt.Sprintf("a%v@sender.example", final), "rcpt@example.test")
			expect(t, s, t0, r, engine.Defer, engine.ReasonNew)
			if _, err := s.SetRule(engine.Rule{Kind: engine.RuleClient, Value: "203.0.113.0/24"}, true); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = mustOpen(t, dir, o)
			defer s.Close()
			// The pending entry survived: the retry passes with its delay.
			expect(t, s, t0+300, r, engine.Pass, engine.ReasonPassed)
			expect(t, s, t0+301, req("203.0.113.5", "x@y.example", "z@example.test"), engine.Pass, engine.ReasonWhitelist)
			rec := s.Stats().Recovery
			if final && (rec.Snapshot == "" || rec.Frames != 0) {
				t.Errorf("after a final snapshot: %+v, want the snapshot and no frames to replay", rec)
			}
			if !final && rec.Frames == 0 {
				t.Errorf("without a final snapshot: %+v, want frames replayed", rec)
			}
		})
	}
}

func TestRefusesIncompatibleDirectory(t *testing.T) {
	dir := t.TempDir()
	clock := engine.NewManualClock(t0)
	o := testOptions(clock)
	s := mustOpen(t, dir, o)
	expect(t, s, t0, req("192.0.2.10", "a@b.example", "c@d.example"), engine.Defer, engine.ReasonNew)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	o2 := o
	o2.Engine.Keys.IPv4Prefix = 32
	_, err := Open(dir, o2)
	if !errors.Is(err, ErrIncompatible) || !strings.Contains(err.Error(), "ipv4=/24") || !strings.Contains(err.Error(), "ipv4=/32") {
		t.Errorf("open with /32 keys: %v, want ErrIncompatible naming both settings", err)
	}

	if err := os.WriteFile(filepath.Join(dir, secretName), []byte(strings.Repeat("ab", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, o); !errors.Is(err, ErrIncompatible) {
		t.Errorf("open with another secret: %v, want ErrIncompatible", err)
	}
}

func TestLocked(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(engine.NewManualClock(t0))
	s := mustOpen(t, dir, o)
	defer s.Close()
	if _, err := Open(dir, o); !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
}

func TestSecretIsPrivate(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, testOptions(engine.NewManualClock(t0)))
	defer s.Close()
	fi, err := os.Stat(filepath.Join(dir, secretName))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("secret mode %v, want 0600", fi.Mode().Perm())
	}
}

// TestNoAddressOnDisk: whatever is checked and whitelisted, no address
// (and no local part or domain of one) appears in any file written.
func TestNoAddressOnDisk(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(engine.NewManualClock(t0))
	s := mustOpen(t, dir, o)
	secrets := []string{"alice.secretive", "recipient-hidden", "hidden-domain", "whitelisted-sender"}
	expect(t, s, t0, req("192.0.2.10", "alice.secretive@hidden-domain.example", "recipient-hidden@example.test"), engine.Defer, engine.ReasonNew)
	expect(t, s, t0+300, req("192.0.2.10", "alice.secretive@hidden-domain.example", "recipient-hidden@example.test"), engine.Pass, engine.ReasonPassed)
	if _, err := s.SetRule(engine.Rule{Kind: engine.RuleSender, Value: "whitelisted-sender@somewhere.example"}, true); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Snapshot(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	err := filepath.Walk(dir, func(path string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, sec := range secrets {
			if strings.Contains(string(b), sec) {
				t.Errorf("%s contains %q", path, sec)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestSnapshotFallback: a byte flipped in the newest snapshot makes
// recovery set it aside, load the one before and replay the log from its
// index, ending where the store was.
func TestSnapshotFallback(t *testing.T) {
	dir := t.TempDir()
	clock := engine.NewManualClock(t0)
	o := testOptions(clock)
	s := mustOpen(t, dir, o)
	w := testutil.NewWorkload(1, t0)
	run := func(n int) {
		for range n {
			now, r := w.Step()
			if _, err := s.CheckAt(now, &r); err != nil {
				t.Fatal(err)
			}
		}
	}
	run(500)
	if _, err := s.Snapshot(); err != nil {
		t.Fatal(err)
	}
	run(500)
	newest, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	run(300)
	ref := s.Engine()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	b, err := os.ReadFile(newest.Path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x40
	if err := os.WriteFile(newest.Path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, dir, o)
	defer s.Close()
	rec := s.Stats().Recovery
	if len(rec.BrokenSnapshots) != 1 || rec.Snapshot == newest.Path {
		t.Fatalf("recovery %+v: want the newest set aside and the older one loaded", rec)
	}
	if _, err := os.Stat(newest.Path + ".broken"); err != nil {
		t.Errorf("no .broken copy: %v", err)
	}
	diff, err := testutil.Same(9, w.Now, 2000, map[string]testutil.Checker{
		"before": testutil.EngineChecker(ref), "recovered": testutil.EngineChecker(s.Engine()),
	})
	if err != nil || diff != "" {
		t.Fatalf("after fallback: %v %s", err, diff)
	}
}

// TestRetention: only the newest snapshots stay, and log segments behind
// the oldest one kept are dropped.
func TestRetention(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(engine.NewManualClock(t0))
	o.WALSegmentSize = 4096
	s := mustOpen(t, dir, o)
	defer s.Close()
	w := testutil.NewWorkload(2, t0)
	for range 5 {
		for range 400 {
			now, r := w.Step()
			if _, err := s.CheckAt(now, &r); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s.Snapshot(); err != nil {
			t.Fatal(err)
		}
	}
	snaps, _ := filepath.Glob(filepath.Join(dir, snapDirName, "snap-*.zst"))
	if len(snaps) != 2 {
		t.Errorf("%d snapshots kept, want 2: %v", len(snaps), snaps)
	}
	st := s.Stats().WAL
	if st.FirstIndex <= 1 {
		t.Errorf("log still starts at frame %d after five snapshots", st.FirstIndex)
	}
	oldest := s.Stats().LastSnapshot.WALIndex
	_ = oldest
	if st.FirstIndex > st.LastIndex+1 {
		t.Errorf("log stats %+v", st)
	}
}

// TestRecoveryProperty: after a random history with a snapshot taken while
// checks ran, the directory recovers to a store that decides a further
// random sequence exactly as the original would, (a) from the log alone,
// (b) from the snapshot plus the log after it, and (c) from the log
// applied twice.
func TestRecoveryProperty(t *testing.T) {
	for seed := range uint64(6) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			dir := t.TempDir()
			clock := engine.NewManualClock(t0)
			o := testOptions(clock)
			o.Engine.Shards = 16
			if seed%2 == 1 {
				o.Engine.AutoWhitelistClients = 2
			}
			s := mustOpen(t, dir, o)
			w := testutil.NewWorkload(seed, t0)
			var mu sync.Mutex // the workload is not safe for concurrent use
			step := func() {
				mu.Lock()
				now, r := w.Step()
				change := w.R.IntN(200) == 0
				rule, present := w.RuleChange()
				mu.Unlock()
				if change {
					if _, err := s.SetRule(rule, present); err != nil {
						t.Error(err)
					}
				}
				if _, err := s.CheckAt(now, &r); err != nil {
					t.Error(err)
				}
			}
			snapAt := 300 + int(seed)*250
			for i := range 3000 {
				if i == snapAt {
					// Checks go on while the snapshot copies shard after
					// shard: the snapshot is fuzzy.
					done := make(chan struct{})
					go func() {
						defer close(done)
						for range 200 {
							step()
						}
					}()
					if _, err := s.Snapshot(); err != nil {
						t.Fatal(err)
					}
					<-done
				}
				step()
			}
			ref := s.Engine()
			end := w.Now
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}

			// (b) as it is: the snapshot and the log after it.
			withSnap := copyDir(t, dir)
			// (a) the log alone.
			logOnly := copyDir(t, dir)
			if err := os.RemoveAll(filepath.Join(logOnly, snapDirName)); err != nil {
				t.Fatal(err)
			}
			sb := mustOpen(t, withSnap, o)
			defer sb.Close()
			sa := mustOpen(t, logOnly, o)
			defer sa.Close()
			if sb.Stats().Recovery.Snapshot == "" || sa.Stats().Recovery.Frames == 0 {
				t.Fatalf("recoveries: %+v / %+v", sb.Stats().Recovery, sa.Stats().Recovery)
			}
			// (c) the log applied twice into a fresh engine.
			twice := replayTwice(t, logOnly, o)

			checkers := map[string]testutil.Checker{
				"original":     testutil.EngineChecker(ref),
				"log":          sa.CheckAt,
				"snapshot+log": sb.CheckAt,
				"log-twice":    testutil.EngineChecker(twice),
			}
			diff, err := testutil.Same(seed, end, 3000, checkers)
			if err != nil || diff != "" {
				t.Fatalf("%v %s", err, diff)
			}
		})
	}
}

func replayTwice(t *testing.T, dir string, o Options) *engine.Engine {
	t.Helper()
	secret, _, err := loadSecret(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	e, err := engine.New(o.Engine, secret)
	if err != nil {
		t.Fatal(err)
	}
	l, err := wal.Open(filepath.Join(dir, walDirName), wal.Options{Sync: wal.SyncNever})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for range 2 {
		err := l.Replay(l.FirstIndex(), func(f wal.Frame) error {
			_, err := e.Apply(f.Payload)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return e
}

func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.Walk(src, func(path string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		target := filepath.Join(dst, rel)
		if fi.IsDir() {
			return os.MkdirAll(target, 0o750)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, fi.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

func TestCheckBatch(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(engine.NewManualClock(t0))
	s := mustOpen(t, dir, o)
	reqs := []engine.Request{
		*req("192.0.2.1", "a@x.example", "r@example.test"),
		*req("192.0.2.1", "b@x.example", "r@example.test"),
		*req("not-an-ip", "b@x.example", "r@example.test"),
		*req("192.0.2.1", "a@x.example", "r@example.test"),
	}
	out := s.CheckBatch(t0, reqs, nil)
	want := []engine.Reason{engine.ReasonNew, engine.ReasonNew, 0, engine.ReasonEarlyRetry}
	for i, r := range out {
		if r.Reason != want[i] {
			t.Errorf("request %d: %v (%v), want %v", i, r.Reason, r.Err, want[i])
		}
	}
	if !errors.Is(out[2].Err, engine.ErrBadClientAddress) {
		t.Errorf("bad request: %v", out[2].Err)
	}
	if f := s.Stats().WAL.Frames; f != 1 {
		t.Errorf("%d frames for one batch, want 1", f)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, dir, o)
	defer s.Close()
	out = s.CheckBatch(t0+300, reqs[:2], out[:0])
	for i, r := range out {
		if r.Reason != engine.ReasonPassed {
			t.Errorf("after reopen, request %d: %v", i, r.Reason)
		}
	}
}

// TestReopenWithOtherShardCount: --shards is not part of the keys, so a
// store can grow its shard count (or shrink it) at a restart, from a
// snapshot and from the log alike.
func TestReopenWithOtherShardCount(t *testing.T) {
	dir := t.TempDir()
	clock := engine.NewManualClock(t0)
	o := testOptions(clock)
	o.Engine.AutoWhitelistClients = 0
	o.Engine.Shards = 16
	r := func(i int) *engine.Request {
		return req(fmt.Sprintf("198.51.%d.%d", i/250, i%250+1), fmt.Sprintf("s%d@example.org", i), "rcpt@example.net")
	}
	s := mustOpen(t, dir, o)
	for i := range 600 {
		expect(t, s, t0, r(i), engine.Defer, engine.ReasonNew)
	}
	for i := range 300 { // the first half passes
		expect(t, s, t0+400, r(i), engine.Pass, engine.ReasonPassed)
	}
	if _, err := s.Snapshot(); err != nil {
		t.Fatal(err)
	}
	for i := 600; i < 700; i++ { // in the log only
		expect(t, s, t0+400, r(i), engine.Defer, engine.ReasonNew)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, shards := range []int{1024, 4} {
		o.Engine.Shards = shards
		s = mustOpen(t, dir, o)
		for i := range 300 {
			expect(t, s, t0+500, r(i), engine.Pass, engine.ReasonKnown)
		}
		for i := 300; i < 600; i++ { // waited out their delay: pass, then known
			reason := engine.ReasonPassed
			if shards == 4 {
				reason = engine.ReasonKnown
			}
			expect(t, s, t0+500, r(i), engine.Pass, reason)
		}
		for i := 600; i < 700; i++ {
			expect(t, s, t0+500, r(i), engine.Defer, engine.ReasonEarlyRetry)
		}
		if got := s.Stats().Engine.Triplets; got != 700 {
			t.Fatalf("%d shards: %d triplets after reopening, want 700", shards, got)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// A snapshot from a newer format is intact: Open refuses to start rather
// than set it aside as corrupt and lose what it holds (the log behind it
// was truncated).
func TestNewerSnapshotRefused(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(engine.NewManualClock(t0))
	s := mustOpen(t, dir, o)
	expect(t, s, t0, req("192.0.2.1", "a@b.example", "c@d.example"), engine.Defer, engine.ReasonNew)
	if _, err := s.Snapshot(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	infos, err := snapshot.List(filepath.Join(dir, snapDirName))
	if err != nil || len(infos) != 1 {
		t.Fatalf("snapshots: %v %+v", err, infos)
	}
	b, err := os.ReadFile(infos[0].Path)
	if err != nil {
		t.Fatal(err)
	}
	binary.LittleEndian.PutUint16(b[8:], 2) // the format version field
	if err := os.WriteFile(infos[0].Path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if infos, _ = snapshot.List(filepath.Join(dir, snapDirName)); !errors.Is(infos[0].Err, snapshot.ErrVersion) {
		t.Fatalf("setup: the snapshot should read as a newer version: %v", infos[0].Err)
	}
	if s, err := Open(dir, o); err == nil {
		s.Close()
		t.Fatal("Open set a newer-format snapshot aside and started")
	} else if !errors.Is(err, snapshot.ErrVersion) {
		t.Errorf("Open: %v, want ErrVersion", err)
	}
	if _, err := os.Stat(infos[0].Path); err != nil {
		t.Errorf("the snapshot was moved: %v", err)
	}
}

// Snapshot refuses once Close is done: the directory may belong to
// another process by then.
func TestSnapshotAfterClose(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(engine.NewManualClock(t0))
	s := mustOpen(t, dir, o)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Snapshot(); !errors.Is(err, ErrClosed) {
		t.Errorf("Snapshot after Close: %v, want ErrClosed", err)
	}
}
