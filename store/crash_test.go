package store

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/greyhold/greyhold/engine"
	"github.com/greyhold/greyhold/internal/testutil"
	"github.com/greyhold/greyhold/wal"
)

const (
	crashChildEnv = "GREYHOLD_STORE_CRASH_CHILD"
	crashDirEnv   = "GREYHOLD_STORE_CRASH_DIR"
	crashSyncEnv  = "GREYHOLD_STORE_CRASH_SYNC"
)

// crashChild runs in the re-executed test binary: it opens the store in the
// directory and sync mode the parent chose and makes checks from eight
// goroutines, printing the records of every change the store has
// acknowledged, one hex line each, until it is killed.
func crashChild() {
	mode, err := wal.ParseSyncMode(os.Getenv(crashSyncEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	o := testOptions(engine.NewManualClock(t0))
	o.Sync = mode
	s, err := Open(os.Getenv(crashDirEnv), o)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var out sync.Mutex
	for g := range 8 {
		go func() {
			w := testutil.NewWorkload(uint64(g), t0)
			for {
				now, r := w.Step()
				// Each goroutine has client networks of its own, so no two
				// race on one triplet with clocks of their own.
				r.ClientAddr = strings.Replace(r.ClientAddr, "192.0.", fmt.Sprintf("10.%d.", g), 1)
				var ch engine.Changes
				if _, err := s.checkAt(now, &r, &ch); err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(2)
				}
				if ch.Count() == 0 {
					continue
				}
				line := hex.EncodeToString(ch.Bytes()) + "\n"
				out.Lock()
				// One write per line, unbuffered: once it returns the line
				// is the parent's, whatever happens to this process.
				if _, err := os.Stdout.WriteString(line); err != nil {
					os.Exit(3)
				}
				out.Unlock()
			}
		}()
	}
	select {}
}

// TestKill9 kills a real process with SIGKILL in the middle of a stream of
// checks and proves that every change it acknowledged is in the state the
// directory recovers to, for fsync=always and the interval mode (where an
// acknowledgement means written to the kernel, which a process kill cannot
// lose).
func TestKill9(t *testing.T) {
	for _, tc := range []struct {
		mode string
		acks int
	}{{"always", 2000}, {"1s", 30000}} {
		t.Run(tc.mode, func(t *testing.T) {
			dir := t.TempDir()
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), crashChildEnv+"=1", crashDirEnv+"="+dir, crashSyncEnv+"="+tc.mode)
			cmd.Stderr = os.Stderr
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			lines := make(chan string, 1024)
			go func() {
				defer close(lines)
				sc := bufio.NewScanner(stdout)
				for sc.Scan() {
					lines <- sc.Text()
				}
			}()
			var acked []string
			deadline := time.After(60 * time.Second)
		read:
			for len(acked) < tc.acks {
				select {
				case l, ok := <-lines:
					if !ok {
						break read
					}
					acked = append(acked, l)
				case <-deadline:
					break read
				}
			}
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			// Lines already in the pipe were acknowledged before the kill.
			for l := range lines {
				acked = append(acked, l)
			}
			_ = cmd.Wait()
			if len(acked) < 100 {
				t.Fatalf("only %d acknowledged changes before the deadline", len(acked))
			}

			s := mustOpen(t, dir, testOptions(engine.NewManualClock(t0)))
			defer s.Close()
			missing := 0
			for _, l := range acked {
				recs, err := hex.DecodeString(l)
				if err != nil {
					t.Fatalf("child wrote %q: %v", l, err)
				}
				ok, err := s.Engine().Covers(recs)
				if err != nil {
					t.Fatal(err)
				}
				if !ok {
					missing++
				}
			}
			t.Logf("%s: %d acknowledged changes, %d frames replayed, repair: %+v", tc.mode, len(acked), s.Stats().Recovery.Frames, s.Stats().Recovery.WALRepair)
			if missing > 0 {
				t.Fatalf("%d of %d acknowledged changes lost", missing, len(acked))
			}
		})
	}
}

// TestTornLastFrame cuts the log at every byte offset inside its last frame,
// as a crash in the middle of a write would, and reopens: the store starts,
// and every change acknowledged in the frames before is there.
func TestTornLastFrame(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(engine.NewManualClock(t0))
	s := mustOpen(t, dir, o)
	w := testutil.NewWorkload(3, t0)
	var acked [][]byte
	for len(acked) < 200 {
		now, r := w.Step()
		var ch engine.Changes
		if _, err := s.checkAt(now, &r, &ch); err != nil {
			t.Fatal(err)
		}
		if ch.Count() > 0 {
			acked = append(acked, append([]byte(nil), ch.Bytes()...))
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	segs, err := filepath.Glob(filepath.Join(dir, walDirName, "0*"))
	if err != nil || len(segs) == 0 {
		t.Fatalf("segments: %v %v", segs, err)
	}
	last := segs[len(segs)-1]
	data, err := os.ReadFile(last)
	if err != nil {
		t.Fatal(err)
	}
	// Walk tidwall's framing (uvarint length, bytes) to the last entry.
	start := 0
	for off := 0; off < len(data); {
		n, w := binary.Uvarint(data[off:])
		if w <= 0 {
			t.Fatalf("segment does not parse at %d", off)
		}
		start = off
		off += w + int(n)
	}
	for cut := start; cut < len(data); cut++ {
		d := copyDir(t, dir)
		if err := os.Truncate(filepath.Join(d, walDirName, filepath.Base(last)), int64(cut)); err != nil {
			t.Fatal(err)
		}
		s, err := Open(d, o)
		if err != nil {
			t.Fatalf("cut at %d of %d: open: %v", cut, len(data), err)
		}
		for i, recs := range acked[:len(acked)-1] {
			if ok, err := s.Engine().Covers(recs); err != nil || !ok {
				t.Fatalf("cut at %d: change %d lost (%v)", cut, i, err)
			}
		}
		if r := s.Stats().Recovery.WALRepair; cut > start && r.Torn == nil {
			t.Errorf("cut at %d: repair %+v, want a torn tail", cut, r)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
