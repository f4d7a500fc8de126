package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/greyhold/greyhold/engine"
	"github.com/greyhold/greyhold/wal"
)

// passHistory is a log of known shape: n distinct triplets each deferred
// (frames 1..n) and then passed (frames n+1..2n), one frame a check, with
// a snapshot taken after the first half of the passes.
type passHistory struct {
	dir    string
	opts   Options
	n      int
	start  uint64   // the snapshot's start index: frames before it are covered
	passes [][]byte // records of pass i, in frame n+1+i
	frames []frameAt
}

// frameAt is where frame index sits on disk.
type frameAt struct {
	seg      string
	off, end int64 // the entry: length prefix, then the frame
}

func historyRequest(i int) *engine.Request {
	return &engine.Request{ClientAddr: fmt.Sprintf("10.%d.%d.7", i/250, i%250), ClientName: "mail.example",
		Sender: fmt.Sprintf("news-%c%c@sender.example", 'a'+i%26, 'a'+i/26%26), Recipient: fmt.Sprintf("user%d@example.test", i)}
}

func writePassHistory(t *testing.T, n int) *passHistory {
	t.Helper()
	h := &passHistory{dir: t.TempDir(), n: n}
	h.opts = testOptions(engine.NewManualClock(t0))
	h.opts.Engine.AutoWhitelistClients = 0
	h.opts.WALSegmentSize = 2048
	s := mustOpen(t, h.dir, h.opts)
	// An empty snapshot first: two are kept, and the log is only cut
	// behind the older, so every frame stays on disk.
	if _, err := s.Snapshot(); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		expect(t, s, t0, historyRequest(i), engine.Defer, engine.ReasonNew)
	}
	for i := range n {
		var ch engine.Changes
		d, err := s.checkAt(t0+400, historyRequest(i), &ch)
		if err != nil || d.Reason != engine.ReasonPassed {
			t.Fatalf("pass %d: %+v, %v", i, d, err)
		}
		h.passes = append(h.passes, append([]byte(nil), ch.Bytes()...))
		if got := s.wal.Stats().LastIndex; got != uint64(n+1+i) {
			t.Fatalf("pass %d in frame %d, want %d: one check must be one frame", i, got, n+1+i)
		}
		if i == n/2-1 {
			info, err := s.Snapshot()
			if err != nil {
				t.Fatal(err)
			}
			h.start = info.WALIndex + 1
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	h.frames = frameLayout(t, filepath.Join(h.dir, walDirName))
	if len(h.frames) != 2*n+1 {
		t.Fatalf("%d frames on disk, want %d", len(h.frames)-1, 2*n)
	}
	return h
}

// frameLayout walks a clean log's segments; element i is frame i.
func frameLayout(t *testing.T, dir string) []frameAt {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "0*"))
	if err != nil {
		t.Fatal(err)
	}
	out := []frameAt{{}}
	for _, path := range names {
		if strings.Contains(filepath.Base(path), ".") {
			continue
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for off := 0; off < len(data); {
			size, w := binary.Uvarint(data[off:])
			end := off + w + int(size)
			out = append(out, frameAt{seg: filepath.Base(path), off: int64(off), end: int64(end)})
			off = end
		}
	}
	return out
}

// segmentOf returns the frames of the segment holding frame i.
func (h *passHistory) segmentOf(i int) (first, last int) {
	first, last = i, i
	for first > 1 && h.frames[first-1].seg == h.frames[i].seg {
		first--
	}
	for last < len(h.frames)-1 && h.frames[last+1].seg == h.frames[i].seg {
		last++
	}
	return first, last
}

func (h *passHistory) passFrame(i int) int { return h.n + 1 + i }

func editSegment(t *testing.T, path string, edit func([]byte)) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	edit(data)
	if err := os.WriteFile(path, data, 0o640); err != nil {
		t.Fatal(err)
	}
}

// TestDamagedLogCostsOnlyItsFrames: one table of damage to the log of a
// server whose snapshot starts mid-history. Each case names the frames it
// destroys; exactly the acknowledged passes in those frames after the
// snapshot's start are lost, and every other one survives the restart.
func TestDamagedLogCostsOnlyItsFrames(t *testing.T) {
	const n = 200
	walDir := func(h *passHistory) string { return filepath.Join(h.dir, walDirName) }
	cases := []struct {
		name string
		// damage returns the frames it destroyed.
		damage func(t *testing.T, h *passHistory) []int
	}{
		{"flip in a covered frame", func(t *testing.T, h *passHistory) []int {
			f := h.passFrame(20)
			editSegment(t, filepath.Join(walDir(h), h.frames[f].seg), func(b []byte) { b[h.frames[f].end-6] ^= 0x10 })
			return []int{f}
		}},
		{"flip after the snapshot start", func(t *testing.T, h *passHistory) []int {
			f := h.passFrame(160)
			editSegment(t, filepath.Join(walDir(h), h.frames[f].seg), func(b []byte) { b[h.frames[f].end-6] ^= 0x10 })
			return []int{f}
		}},
		{"flipped length prefix", func(t *testing.T, h *passHistory) []int {
			f := h.passFrame(170)
			if h.frames[f].off == 0 {
				f++ // keep it inside a segment, between two frames
			}
			editSegment(t, filepath.Join(walDir(h), h.frames[f].seg), func(b []byte) { b[h.frames[f].off] ^= 0x02 })
			return []int{f}
		}},
		{"zeroed middle", func(t *testing.T, h *passHistory) []int {
			f := h.passFrame(130)
			first, last := h.segmentOf(f)
			from, to := f+1, min(f+4, last-1)
			if from <= first {
				from = first + 1
			}
			editSegment(t, filepath.Join(walDir(h), h.frames[f].seg), func(b []byte) {
				clear(b[h.frames[from].off+5 : h.frames[to].end-5])
			})
			var lost []int
			for i := from; i <= to; i++ {
				lost = append(lost, i)
			}
			return lost
		}},
		{"deleted covered segment", func(t *testing.T, h *passHistory) []int {
			first, last := h.segmentOf(h.passFrame(40))
			if uint64(last) >= h.start {
				t.Fatalf("segment %d-%d is not covered by the snapshot at %d", first, last, h.start)
			}
			if err := os.Remove(filepath.Join(walDir(h), h.frames[first].seg)); err != nil {
				t.Fatal(err)
			}
			var lost []int
			for i := first; i <= last; i++ {
				lost = append(lost, i)
			}
			return lost
		}},
		{"deleted uncovered segment", func(t *testing.T, h *passHistory) []int {
			first, last := h.segmentOf(h.passFrame(150))
			if err := os.Remove(filepath.Join(walDir(h), h.frames[first].seg)); err != nil {
				t.Fatal(err)
			}
			var lost []int
			for i := first; i <= last; i++ {
				lost = append(lost, i)
			}
			return lost
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := writePassHistory(t, n)
			destroyed := c.damage(t, h)
			lost := map[int]bool{}
			var lostFrames uint64
			for _, f := range destroyed {
				if uint64(f) >= h.start {
					lost[f] = true
					lostFrames++
				}
			}
			s := mustOpen(t, h.dir, h.opts)
			defer s.Close()
			rec := s.Stats().Recovery
			if rec.WALRepair.LostFrames != lostFrames {
				t.Errorf("the log reports %d frames lost, want %d (%+v)", rec.WALRepair.LostFrames, lostFrames, rec.WALRepair)
			}
			if want := uint64(2*n) - h.start + 1 - lostFrames; rec.Frames != want {
				t.Errorf("replayed %d frames, want %d", rec.Frames, want)
			}
			survived := 0
			for i, recs := range h.passes {
				ok, err := s.Engine().Covers(recs)
				if err != nil {
					t.Fatal(err)
				}
				if ok == lost[h.passFrame(i)] {
					t.Errorf("pass %d in frame %d: held %v, lost %v", i, h.passFrame(i), ok, lost[h.passFrame(i)])
				}
				if ok {
					survived++
				}
			}
			if want := n - len(lost); survived != want {
				t.Errorf("%d of %d acknowledged passes survived, want %d", survived, n, want)
			}
			t.Logf("%s: frames %v destroyed, snapshot from %d: %d frames and %d passes lost, %d of %d passes kept",
				c.name, destroyed, h.start, lostFrames, len(lost), survived, n)
		})
	}
}

// TestLogTailRemovedWhileServing: the tail segment removed under a running
// store. The check whose fsync finds it fails (and is answered as not
// logged), a snapshot is written at once, and after a crash every change
// acknowledged before or after comes back.
func TestLogTailRemovedWhileServing(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(engine.NewManualClock(t0))
	o.Sync = wal.SyncAlways
	o.Engine.AutoWhitelistClients = 0
	snapped := make(chan error, 1)
	o.lossSnapshot = func(_ SnapshotInfo, err error) { snapped <- err }
	s := mustOpen(t, dir, o)
	var acked [][]byte
	check := func(i int, now engine.Time) error {
		var ch engine.Changes
		_, err := s.checkAt(now, historyRequest(i), &ch)
		if err == nil {
			acked = append(acked, append([]byte(nil), ch.Bytes()...))
		}
		return err
	}
	for i := range 50 {
		if err := check(i, t0); err != nil {
			t.Fatal(err)
		}
	}
	tail := s.wal.Stats().LastIndex
	segs, _ := filepath.Glob(filepath.Join(dir, walDirName, "0*"))
	if err := os.Remove(segs[len(segs)-1]); err != nil {
		t.Fatal(err)
	}
	if err := check(50, t0); !errors.Is(err, ErrNotLogged) {
		t.Fatalf("the check after the tail's removal = %v, want ErrNotLogged", err)
	}
	if err := <-snapped; err != nil {
		t.Fatalf("the snapshot after the loss: %v", err)
	}
	for i := range 50 {
		if err := check(i, t0+400); err != nil {
			t.Fatalf("pass %d after the loss: %v", i, err)
		}
	}
	if s.wal.Stats().LastIndex <= tail {
		t.Fatal("the log did not go on")
	}
	// A crash: no final snapshot, nothing but what is on disk.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, dir, o)
	defer s.Close()
	for i, recs := range acked {
		if ok, err := s.Engine().Covers(recs); err != nil || !ok {
			t.Fatalf("acknowledged change %d of %d lost after the restart (%v)", i, len(acked), err)
		}
	}
}

// TestFullDiskStart: a crash left a torn tail on a disk with no space
// left. The start cuts the tail (which needs none), cannot keep the cut
// bytes (and says so), and the server opens. It needs a small tmpfs, which
// the test mounts (as root, as CI runs).
func TestFullDiskStart(t *testing.T) {
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mnt).CombinedOutput(); err != nil {
		if os.Geteuid() != 0 {
			t.Skipf("mounting a tmpfs needs root: %v %s", err, out)
		}
		t.Fatalf("mount a tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { syscall.Unmount(mnt, 0) })
	dir := filepath.Join(mnt, "data")
	o := testOptions(engine.NewManualClock(t0))
	o.WALSegmentSize = 16 << 10
	s := mustOpen(t, dir, o)
	for i := range 300 {
		expect(t, s, t0, historyRequest(i), engine.Defer, engine.ReasonNew)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	segs, _ := filepath.Glob(filepath.Join(dir, walDirName, "0*"))
	f, err := os.OpenFile(segs[len(segs)-1], os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte{0x7f, 2, 0, 1, 0}) // half a frame, as a crash leaves it
	f.Close()
	filler, err := os.Create(filepath.Join(mnt, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := filler.Write(make([]byte, 4096)); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	filler.Close()

	s, err = Open(dir, o)
	if err != nil {
		t.Fatalf("start on a full disk: %v", err)
	}
	defer s.Close()
	r := s.Stats().Recovery.WALRepair
	if r.Torn == nil || r.Torn.Bytes != 5 || r.Torn.Kept != "" {
		t.Fatalf("repair %+v: want the 5 torn bytes cut and not kept", r.Torn)
	}
	if st := s.Engine().Stats(); st.Triplets != 300 {
		t.Fatalf("%d triplets after the start, want 300", st.Triplets)
	}
}

// TestLostSecretRefused: state keyed by a secret that is gone is never
// replayed under a new one.
func TestLostSecretRefused(t *testing.T) {
	setup := func(t *testing.T) string {
		dir := t.TempDir()
		s := mustOpen(t, dir, testOptions(engine.NewManualClock(t0)))
		for i := range 20 {
			expect(t, s, t0, historyRequest(i), engine.Defer, engine.ReasonNew)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	for _, c := range []struct {
		name    string
		damage  func(t *testing.T, dir string)
		message string
	}{
		{"secret and greyhold.json lost", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, secretName))
			os.Remove(filepath.Join(dir, metaName))
		}, "restore the secret file"},
		{"secret lost", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, secretName))
		}, "restore the secret file"},
		{"another secret, greyhold.json lost", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, metaName))
			os.WriteFile(filepath.Join(dir, secretName), []byte(strings.Repeat("ab", 32)+"\n"), 0o600)
		}, "written with another secret"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := setup(t)
			c.damage(t, dir)
			before, _ := os.ReadFile(filepath.Join(dir, secretName))
			s, err := Open(dir, testOptions(engine.NewManualClock(t0)))
			if err == nil {
				s.Close()
				t.Fatal("opened")
			}
			if !errors.Is(err, ErrIncompatible) || !strings.Contains(err.Error(), c.message) {
				t.Fatalf("Open = %v, want ErrIncompatible saying %q", err, c.message)
			}
			after, _ := os.ReadFile(filepath.Join(dir, secretName))
			if string(before) != string(after) {
				t.Fatal("a refused start changed the secret file")
			}
		})
	}
}

func TestLockFileLinkRefused(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(t.TempDir(), "precious")
	if err := os.WriteFile(target, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, filepath.Join(dir, lockName)); err != nil {
		t.Fatal(err)
	}
	if s, err := Open(dir, testOptions(engine.NewManualClock(t0))); err == nil {
		s.Close()
		t.Fatal("opened through a linked LOCK file")
	}
	if b, _ := os.ReadFile(target); string(b) != "keep" {
		t.Fatalf("the link's target holds %q", b)
	}
}
