package engine

import (
	"context"
	"sync/atomic"
	"time"
)

// Time is a point in time in whole seconds since Epoch. Entries keep their
// times in 31 bits (the top bit of a triplet's word marks it passed), which
// lasts from 2020 until 2088; seconds are all greylisting needs, and four
// bytes instead of eight keep an entry small enough that ten million of them
// fit in a few hundred megabytes.
type Time uint32

// Epoch is the Unix time of Time 0: 2020-01-01T00:00:00Z.
const Epoch = 1577836800

// MaxTime is the last representable Time (2088-01-19).
const MaxTime Time = 1<<31 - 1

// FromUnix converts Unix seconds to a Time, clamping to [1, MaxTime]: Time 0
// is kept free to mean "never".
func FromUnix(sec int64) Time {
	d := sec - Epoch
	switch {
	case d < 1:
		return 1
	case d > int64(MaxTime):
		return MaxTime
	}
	return Time(d)
}

// FromTime converts a time.Time to a Time, dropping the fraction of a second.
func FromTime(t time.Time) Time { return FromUnix(t.Unix()) }

// Unix returns t as Unix seconds.
func (t Time) Unix() int64 { return int64(t) + Epoch }

// Time returns t as a time.Time in UTC.
func (t Time) Time() time.Time { return time.Unix(t.Unix(), 0).UTC() }

// seconds converts a duration to whole seconds as used for Time arithmetic,
// saturating instead of overflowing.
func seconds(d time.Duration) uint64 {
	if d <= 0 {
		return 0
	}
	return uint64(d / time.Second)
}

// Clock tells the engine's callers what time it is. The engine itself never
// reads a clock: every call takes "now", so tests drive time by hand and no
// test sleeps.
type Clock interface {
	Now() Time
}

// SystemClock reads the system clock on every call.
type SystemClock struct{}

// Now implements Clock.
func (SystemClock) Now() Time { return FromTime(time.Now()) }

// CoarseClock is a Clock whose Now is one atomic load: a goroutine refreshes
// it a few times a second. time.Now costs 20–40 ns with the vDSO, a tenth of
// the budget of a check at 8M checks/s on two cores; greylisting counts in
// seconds, so a value at most coarseTick old is exact enough.
type CoarseClock struct {
	now atomic.Uint32
}

// coarseTick keeps CoarseClock within a fifth of a second of the truth, so a
// second boundary is seen at most 200 ms late.
const coarseTick = 200 * time.Millisecond

// NewCoarseClock returns a CoarseClock that ticks until ctx is done.
func NewCoarseClock(ctx context.Context) *CoarseClock {
	c := &CoarseClock{}
	c.now.Store(uint32(FromTime(time.Now())))
	go func() {
		t := time.NewTicker(coarseTick)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				c.now.Store(uint32(FromTime(now)))
			}
		}
	}()
	return c
}

// Now implements Clock.
func (c *CoarseClock) Now() Time { return Time(c.now.Load()) }

// ManualClock is a Clock that only moves when told to: for tests, and for the
// server's --test-clock mode.
type ManualClock struct {
	now atomic.Uint32
}

// NewManualClock returns a ManualClock set to t.
func NewManualClock(t Time) *ManualClock {
	c := &ManualClock{}
	c.now.Store(uint32(t))
	return c
}

// Now implements Clock.
func (c *ManualClock) Now() Time { return Time(c.now.Load()) }

// Set moves the clock to t.
func (c *ManualClock) Set(t Time) { c.now.Store(uint32(t)) }

// Advance moves the clock forward by d (whole seconds).
func (c *ManualClock) Advance(d time.Duration) {
	c.now.Add(uint32(seconds(d)))
}
