package store

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/greyhold/greyhold/engine"
	"github.com/greyhold/greyhold/internal/testutil"
)

// A clock outside the plausible range (a host up at 1970 or 2000 before
// NTP, issue 9, defect 7) makes every check fail open with ErrClock and
// records nothing; it is logged once when it turns implausible and once
// when it turns right, and counted.
func TestImplausibleClock(t *testing.T) {
	clock := engine.NewManualClock(t0)
	o := testOptions(clock)
	logs := &testutil.SyncBuffer{}
	o.Logger = slog.New(slog.NewTextHandler(logs, nil))
	s := mustOpen(t, t.TempDir(), o)
	defer s.Close()
	r := req("192.0.2.10", "a@sender.example", "rcpt@example.test")
	expect(t, s, t0, r, engine.Defer, engine.ReasonNew)
	frames := s.Stats().WAL.Frames

	for _, at := range []struct {
		name string
		t    engine.Time
	}{
		{"1970", engine.FromUnix(0)},
		{"2000", engine.FromUnix(946684800)},
		{"2024", engine.FromUnix(1704067200)},
		{"2088", engine.MaxTime},
	} {
		clock.Set(at.t)
		for i := range 100 {
			d, err := s.Check(req("192.0.2.10", "a@sender.example", fmt.Sprintf("r%d@example.test", i)))
			var ce *ClockError
			if !errors.Is(err, ErrClock) || !errors.As(err, &ce) || ce.Now != at.t || d != (engine.Decision{}) {
				t.Fatalf("%s: check answered %+v, %v; want ErrClock and no decision", at.name, d, err)
			}
		}
		// The triplet deferred before is not passed by a clock far ahead.
		if _, err := s.Check(r); !errors.Is(err, ErrClock) {
			t.Fatalf("%s: known triplet: %v", at.name, err)
		}
		for _, res := range s.CheckBatch(clock.Now(), []engine.Request{*r, *req("192.0.2.11", "b@x.example", "c@example.test")}, nil) {
			if !errors.Is(res.Err, ErrClock) || res.Decision != (engine.Decision{}) {
				t.Fatalf("%s: batch answered %+v", at.name, res)
			}
		}
		if _, err := s.SetRule(engine.Rule{Kind: engine.RuleClient, Value: "198.51.100.0/24"}, true); !errors.Is(err, ErrClock) {
			t.Fatalf("%s: rule change: %v", at.name, err)
		}
		if !s.Stats().ClockImplausible {
			t.Errorf("%s: stats do not say the clock is implausible", at.name)
		}
	}
	st := s.Stats()
	if st.WAL.Frames != frames || st.Engine.Triplets != 1 || st.Engine.Rules != 0 {
		t.Errorf("an implausible clock changed state: %d frames (had %d), %d triplets, %d rules", st.WAL.Frames, frames, st.Engine.Triplets, st.Engine.Rules)
	}
	if st.ClockRefused != 4*(100+1+2+1) {
		t.Errorf("%d checks counted as refused, want %d", st.ClockRefused, 4*(100+1+2+1))
	}
	if n := strings.Count(logs.String(), "the clock is implausible"); n != 1 {
		t.Errorf("%d lines for the implausible clock, want 1:\n%s", n, logs)
	}
	if !strings.Contains(logs.String(), "before 2020-01-01") {
		t.Errorf("the line does not say the clock is before 2020:\n%s", logs)
	}

	// Set right: greylisting resumes where it was, and says so once.
	clock.Set(t0 + 300)
	expect(t, s, t0+300, r, engine.Pass, engine.ReasonPassed)
	expect(t, s, t0+301, req("192.0.2.20", "new@x.example", "r@example.test"), engine.Defer, engine.ReasonNew)
	if n := strings.Count(logs.String(), "the clock is plausible again"); n != 1 || s.Stats().ClockImplausible {
		t.Errorf("%d lines for the clock set right (want 1), implausible %v:\n%s", n, s.Stats().ClockImplausible, logs)
	}
}

func TestPlausibleBounds(t *testing.T) {
	for _, c := range []struct {
		t    engine.Time
		want bool
	}{
		{1, false},
		{PlausibleFrom - 1, false},
		{PlausibleFrom, true},
		{engine.FromUnix(1800000000), true}, // 2027
		{PlausibleUntil - 1, true},
		{PlausibleUntil, false},
		{engine.MaxTime, false},
	} {
		if got := Plausible(c.t); got != c.want {
			t.Errorf("Plausible(%v) = %v, want %v", c.t.Time(), got, c.want)
		}
	}
}
