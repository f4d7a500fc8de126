package store

import (
	"errors"
	"fmt"
	"time"

	"github.com/greyhold/greyhold/engine"
)

// A clock outside these bounds is wrong, not early or late: a host whose
// real-time clock lost its battery boots at 1970 or 2000 (or at whatever
// its firmware was built with) and runs so until NTP sets it. Greylisting
// at such a time would be worse than none: engine times clamp to 2020, so
// every elapsed time is 0 and no retry ever passes, and the entries and
// records written would carry the wrong time long after the clock is set
// right. Checks fail open instead until the clock is plausible.
const (
	// PlausibleFrom is 2025-01-01, before this version existed: no host
	// running it can rightly be earlier.
	PlausibleFrom engine.Time = 1735689600 - engine.Epoch
	// PlausibleUntil leaves a year before the last time an entry can
	// hold (engine.MaxTime, 2088), so a deadline a retry window or a
	// max-age later still fits.
	PlausibleUntil = engine.MaxTime - 366*24*3600
)

// Plausible reports whether t can be the real time.
func Plausible(t engine.Time) bool { return t >= PlausibleFrom && t < PlausibleUntil }

// ErrClock is wrapped by the error of a check (or a rule change) at an
// implausible time: nothing was decided or changed, and the caller answers
// as if greylisting were off.
var ErrClock = errors.New("store: clock implausible")

// ClockError names the time refused.
type ClockError struct{ Now engine.Time }

func (e *ClockError) Error() string {
	at := e.Now.Time().Format(time.RFC3339)
	if e.Now <= 1 {
		at = "before 2020-01-01" // FromUnix clamps earlier times to 1
	}
	return fmt.Sprintf("the clock reads %s, outside %s to %s: not greylisted until it is set right", at,
		PlausibleFrom.Time().Format(time.DateOnly), PlausibleUntil.Time().Format(time.DateOnly))
}

func (e *ClockError) Unwrap() error { return ErrClock }

// checkClock refuses an implausible now, logging when the clock turns
// implausible and when it turns plausible again (once each, however many
// checks come in between) and counting the n checks refused.
func (s *Store) checkClock(now engine.Time, n int) error {
	if Plausible(now) {
		if s.clockBad.Load() && s.clockBad.CompareAndSwap(true, false) {
			s.log.Info("the clock is plausible again; greylisting resumes", "clock", now.Time().Format(time.RFC3339),
				"checks_not_greylisted", s.clockRefused.Load())
		}
		return nil
	}
	s.clockRefused.Add(uint64(n))
	err := &ClockError{Now: now}
	if s.clockBad.CompareAndSwap(false, true) {
		s.log.Error("the clock is implausible: every check is answered as if greylisting were off, and nothing is recorded, until it is set right (check NTP and the real-time clock)",
			"err", err.Error(), "system_clock", time.Now().UTC().Format(time.RFC3339))
	}
	return err
}
