// Package testutil holds what several packages' tests share: a random
// workload of greylisting checks under a moving clock, a write-ahead log
// that fails on demand, and a buffer for log output.
package testutil

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/greyhold/greyhold/engine"
	"github.com/greyhold/greyhold/wal"
)

// T0 is an ordinary moment (2026-05-04) that tests count from.
const T0 engine.Time = 200_000_000

// Workload draws random checks against small pools, so triplets meet again
// at every stage of their life, under a clock that mostly creeps, sometimes
// jumps hours or days, and now and then leaps past the retry window or
// max-age. The same seed gives the same sequence.
type Workload struct {
	R   *rand.Rand
	Now engine.Time
}

// NewWorkload starts a sequence at time start.
func NewWorkload(seed uint64, start engine.Time) *Workload {
	return &Workload{R: rand.New(rand.NewPCG(seed, 0x67726579)), Now: start}
}

// Step advances the clock and draws one request.
func (w *Workload) Step() (engine.Time, engine.Request) {
	switch x := w.R.IntN(1000); {
	case x < 5:
		w.Now += engine.Time(36*24*3600 + w.R.IntN(3*24*3600))
	case x < 30:
		w.Now += engine.Time(3600 + w.R.IntN(3*24*3600))
	case x < 400:
		w.Now += engine.Time(w.R.IntN(400))
	}
	req := engine.Request{
		ClientAddr: fmt.Sprintf("192.0.%d.%d", w.R.IntN(3), 1+w.R.IntN(2)),
		ClientName: "mail.example",
		Sender:     fmt.Sprintf("s%d@sender.example", w.R.IntN(4)),
		Recipient:  fmt.Sprintf("r%d@example.test", w.R.IntN(5)),
	}
	if w.R.IntN(10) == 0 {
		req.Sender = fmt.Sprintf("prvs=%010x=s%d@sender.example", w.R.Uint64()&0xffffffffff, w.R.IntN(4))
	}
	return w.Now, req
}

// RuleChange draws a whitelist change a test may make now and then.
func (w *Workload) RuleChange() (engine.Rule, bool) {
	return engine.Rule{Kind: engine.RuleClient, Value: fmt.Sprintf("192.0.%d.0/24", w.R.IntN(3))}, w.R.IntN(2) == 0
}

// Checker is anything that decides requests at a given time.
type Checker func(now engine.Time, req *engine.Request) (engine.Decision, error)

// Same runs one further random sequence from start against every checker
// and returns a description of the first decision on which they differ,
// or "" if they all agree.
func Same(seed uint64, start engine.Time, steps int, checkers map[string]Checker) (string, error) {
	ws := map[string]*Workload{}
	for name := range checkers {
		ws[name] = NewWorkload(seed^0x5eed, start)
	}
	for i := range steps {
		var ref engine.Decision
		var refName string
		for name, check := range checkers {
			now, req := ws[name].Step()
			d, err := check(now, &req)
			if err != nil {
				return "", fmt.Errorf("%s: step %d: %w", name, i, err)
			}
			if refName == "" {
				ref, refName = d, name
				continue
			}
			if d.Verdict != ref.Verdict || d.Reason != ref.Reason || d.Left != ref.Left || d.Delayed != ref.Delayed {
				return fmt.Sprintf("step %d (%+v at %d): %s decided %+v, %s decided %+v", i, req, now, refName, ref, name, d), nil
			}
		}
	}
	return "", nil
}

// EngineChecker adapts an engine to a Checker, dropping its records.
func EngineChecker(e *engine.Engine) Checker {
	return func(now engine.Time, req *engine.Request) (engine.Decision, error) {
		var ch engine.Changes
		return e.Check(now, req, &ch)
	}
}

// FillRealistic puts n triplets shaped as a real MX's would be (first seen
// over the last 35 days, 70% passed and last seen between first seen and
// T0) straight into an engine, as a snapshot load would, so a 10M-entry
// state takes seconds to build.
func FillRealistic(tb testing.TB, e *engine.Engine, n int, seed uint64) {
	tb.Helper()
	r := rand.New(rand.NewPCG(seed, 1))
	const chunk = 1 << 16
	keys := make([]uint64, 0, chunk)
	first := make([]uint32, 0, chunk)
	word := make([]uint32, 0, chunk)
	now := uint32(T0)
	for i := 0; i < n; i++ {
		f := now - uint32(r.IntN(35*24*3600))
		keys = append(keys, r.Uint64())
		first = append(first, f)
		if r.IntN(10) < 7 {
			word = append(word, 1<<31|(f+uint32(r.IntN(int(now-f)+1))))
		} else {
			word = append(word, uint32(r.IntN(4)))
		}
		if len(keys) == chunk || i == n-1 {
			if err := e.ImportTriplets(keys, first, word); err != nil {
				tb.Fatal(err)
			}
			keys, first, word = keys[:0], first[:0], word[:0]
		}
	}
}

// SyncBuffer collects what many goroutines write (a logger's output) for a
// test to read.
type SyncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// FailingLog is a real write-ahead log whose appends fail while Fail is
// set, as a log on a full or failed disk does, and which says so in its
// stats. A store takes it through Options.OpenLog.
type FailingLog struct {
	*wal.Log
	Fail atomic.Bool
}

// ErrDiskFull is the cause a FailingLog's appends give.
var ErrDiskFull = errors.New("no space left on device")

func (f *FailingLog) Append(payload []byte, n int) error {
	if f.Fail.Load() {
		return fmt.Errorf("%w: %w", wal.ErrFailed, ErrDiskFull)
	}
	return f.Log.Append(payload, n)
}

func (f *FailingLog) Stats() wal.Stats {
	st := f.Log.Stats()
	st.Failed = st.Failed || f.Fail.Load()
	return st
}
