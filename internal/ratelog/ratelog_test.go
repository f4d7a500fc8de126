package ratelog

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/greyhold/greyhold/internal/testutil"
)

// manualTimer is armed by the Limiter and fired by the test.
type manualTimer struct {
	at      time.Duration
	f       func()
	stopped bool
}

func (m *manualTimer) Stop() bool { m.stopped = true; return true }

type rig struct {
	l      *Limiter
	out    *bytes.Buffer
	now    time.Time
	timers []*manualTimer
}

func newRig(interval time.Duration) *rig {
	r := &rig{out: &bytes.Buffer{}, now: time.Date(2026, 5, 4, 12, 0, 0, 0, time.UTC)}
	logger := slog.New(slog.NewTextHandler(r.out, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
	r.l = New(logger, slog.LevelError, "log write failed", interval)
	r.l.now = func() time.Time { return r.now }
	r.l.after = func(d time.Duration, f func()) stopper {
		t := &manualTimer{at: d, f: f}
		r.timers = append(r.timers, t)
		return t
	}
	return r
}

// lines returns what was logged since the last call.
func (r *rig) lines() []string {
	s := strings.TrimSpace(r.out.String())
	r.out.Reset()
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// fire runs the newest timer, as if its interval had ended.
func (r *rig) fire(t *testing.T) {
	t.Helper()
	if len(r.timers) == 0 {
		t.Fatal("no timer armed")
	}
	tm := r.timers[len(r.timers)-1]
	r.timers = r.timers[:len(r.timers)-1]
	r.now = r.now.Add(tm.at)
	tm.f()
}

func TestFirstThenCount(t *testing.T) {
	r := newRig(10 * time.Second)
	want := func(got []string, lines ...string) {
		t.Helper()
		if strings.Join(got, "\n") != strings.Join(lines, "\n") {
			t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(lines, "\n"))
		}
	}

	// The first occurrence is logged at once, whole.
	r.l.Log("peer", "192.0.2.1", "n", 1)
	want(r.lines(), `level=ERROR msg="log write failed" peer=192.0.2.1 n=1`)

	// Repeats within the interval are held back, and a timer is armed
	// once for the interval's end.
	for i := range 999 {
		r.now = r.now.Add(time.Millisecond)
		r.l.Log("peer", "192.0.2.2", "n", i+2)
	}
	want(r.lines())
	if len(r.timers) != 1 || r.timers[0].at != 10*time.Second-time.Millisecond {
		t.Fatalf("timers armed: %d, first for %v", len(r.timers), r.timers[0].at)
	}

	// The interval ends: one line with the count and the first held back.
	r.fire(t)
	want(r.lines(), `level=ERROR msg="log write failed" peer=192.0.2.2 n=2 repeated=999 in=10s`)

	// Still going on: counted again, one line an interval.
	r.l.Log("peer", "192.0.2.3", "n", 1001)
	r.l.Log("peer", "192.0.2.3", "n", 1002)
	want(r.lines())
	r.fire(t)
	want(r.lines(), `level=ERROR msg="log write failed" peer=192.0.2.3 n=1001 repeated=2 in=10s`)

	// A quiet interval arms no timer, and the next occurrence after it
	// is logged at once.
	if len(r.timers) != 0 {
		t.Fatalf("%d timers left armed after a quiet interval", len(r.timers))
	}
	r.now = r.now.Add(time.Hour)
	r.l.Log("peer", "192.0.2.4")
	want(r.lines(), `level=ERROR msg="log write failed" peer=192.0.2.4`)
	if r.l.Total() != 1003 {
		t.Errorf("Total %d, want 1003", r.l.Total())
	}
}

// An occurrence after the interval ended but before its timer ran gets the
// count out first, so the lines stay in order.
func TestLateTimer(t *testing.T) {
	r := newRig(time.Second)
	r.l.Log("i", 1)
	r.l.Log("i", 2)
	r.now = r.now.Add(2 * time.Second)
	r.l.Log("i", 3)
	got := r.lines()
	if len(got) != 3 || !strings.Contains(got[1], "i=2 repeated=1 in=1s") || !strings.HasSuffix(got[2], "i=3") {
		t.Errorf("lines: %q", got)
	}
	// The interval's timer, stopped by then, does nothing if it runs
	// anyway; the interval i=3 opened goes on.
	if !r.timers[0].stopped {
		t.Error("the ended interval's timer is still armed")
	}
	r.timers[0].f()
	r.l.Log("i", 4)
	if got := r.lines(); got != nil {
		t.Errorf("after the stale timer: %q", got)
	}
}

// Flush says what is pending and stops the timer.
func TestFlush(t *testing.T) {
	r := newRig(time.Minute)
	r.l.Log()
	r.l.Log()
	r.l.Log()
	r.lines()
	r.l.Flush()
	if got := r.lines(); len(got) != 1 || !strings.Contains(got[0], "repeated=2") {
		t.Errorf("flush: %q", got)
	}
	if !r.timers[0].stopped {
		t.Error("flush left the timer armed")
	}
	r.l.Flush()
	if got := r.lines(); got != nil {
		t.Errorf("second flush: %q", got)
	}
}

// The attributes kept for the count line are copies: a caller may point
// them into a buffer it reuses, as the servers do with request fields.
func TestKeptAttributesAreCopied(t *testing.T) {
	r := newRig(time.Second)
	buf := []byte("first")
	view := func() string { return string(buf) } // stands for an unsafe view
	r.l.Log("v", "x")
	held := strings.Clone(view())
	r.l.Log("v", held, slog.String("attr", held), "raw", buf)
	copy(buf, "XXXXX")
	r.lines()
	r.fire(t)
	got := r.lines()
	if len(got) != 1 || !strings.Contains(got[0], "v=first attr=first raw=first") {
		t.Errorf("count line %q", got)
	}
}

// With the real timer, a burst that stops is still summarised: the count
// arrives at the interval's end, which the test waits for by reading the
// output, not by sleeping.
func TestRealTimer(t *testing.T) {
	out := &testutil.SyncBuffer{}
	l := New(slog.New(slog.NewTextHandler(out, nil)), slog.LevelWarn, "burst", 20*time.Millisecond)
	for range 100 {
		l.Log("k", "v")
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "repeated=99") {
		if time.Now().After(deadline) {
			t.Fatalf("no count line after 10 s:\n%s", out.String())
		}
		time.Sleep(time.Millisecond)
	}
	l.Flush()
}

func TestConcurrent(t *testing.T) {
	out := &testutil.SyncBuffer{}
	l := New(slog.New(slog.NewTextHandler(out, nil)), slog.LevelWarn, "m", time.Hour)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				l.Log("k", "v")
			}
		}()
	}
	wg.Wait()
	l.Flush()
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[1], "repeated=7999") || l.Total() != 8000 {
		t.Errorf("total %d, lines %q", l.Total(), lines)
	}
}
