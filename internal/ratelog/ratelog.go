// Package ratelog keeps an error that repeats with every request from
// flooding the log. A Limiter logs the first occurrence at once; further
// ones within the interval are counted, and one line per interval says how
// many there were (with the attributes of the first of them), for as long
// as they go on. When they stop, the last count is logged at the end of its
// interval, so no occurrence goes unreported: only the lines are fewer.
//
// A disk that fails under load answers every check with the same error;
// one line a request wrote 52 MB of log in 8 seconds, which fills the disk
// faster still. With a Limiter per message that is one line, then one every
// interval.
//
// A Limiter belongs to one message of one component: the message and level
// are fixed when it is made, the attributes come with each occurrence.
package ratelog

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// DefaultInterval is how often a repeating message is summarised: often
// enough that an operator watching the log sees it is still going on,
// rarely enough that a flood of a million a second is a line a minute.
const DefaultInterval = 10 * time.Second

// Limiter logs one message at most once per interval, and counts the rest.
// Its methods are safe for concurrent use; the zero value is not usable.
type Limiter struct {
	log      *slog.Logger
	level    slog.Level
	msg      string
	interval time.Duration
	now      func() time.Time
	// after arms the timer that logs a count once an interval ends; tests
	// replace it to fire by hand.
	after func(d time.Duration, f func()) stopper

	mu sync.Mutex
	// until is the end of the current interval: occurrences before it are
	// counted, not logged. Zero when no interval is open.
	until      time.Time
	suppressed uint64
	lastArgs   []any
	timer      stopper
	gen        uint64 // counts timers armed, so a stale one does nothing
	total      uint64
}

type stopper interface{ Stop() bool }

// New returns a Limiter for msg at level on logger (nil: discard), which
// logs at most one line per interval (DefaultInterval if 0 or less).
func New(logger *slog.Logger, level slog.Level, msg string, interval time.Duration) *Limiter {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if interval <= 0 {
		interval = DefaultInterval
	}
	return &Limiter{
		log: logger, level: level, msg: msg, interval: interval, now: time.Now,
		after: func(d time.Duration, f func()) stopper { return time.AfterFunc(d, f) },
	}
}

// Log records one occurrence with its attributes (slog's key-value pairs).
// The first in an interval is logged at once; later ones are counted and
// summarised when the interval ends, with "repeated" (how many were not
// logged) and "in" (the interval) added to the attributes of the first one
// not logged. Strings may point into buffers the caller reuses: the one
// occurrence kept for the count line is copied, once an interval, so a
// flood costs no allocation per occurrence.
func (l *Limiter) Log(args ...any) {
	now := l.now()
	l.mu.Lock()
	l.total++
	if l.until.IsZero() || !now.Before(l.until) {
		// The timer may not have run yet: its count goes out first.
		pending := l.takeLocked()
		l.until = now.Add(l.interval)
		l.stopLocked()
		l.mu.Unlock()
		l.emit(pending)
		l.log.Log(context.Background(), l.level, l.msg, args...)
		return
	}
	l.suppressed++
	if l.suppressed == 1 {
		l.lastArgs = cloneArgs(args)
	}
	if l.timer == nil {
		gen := l.gen
		l.timer = l.after(l.until.Sub(now), func() { l.tick(gen) })
	}
	l.mu.Unlock()
}

// tick ends an interval: a count is logged if anything was suppressed, and
// a new interval begins so that a flood that goes on is summarised again.
func (l *Limiter) tick(gen uint64) {
	l.mu.Lock()
	if gen != l.gen {
		// Stopped too late: the interval it was for is over.
		l.mu.Unlock()
		return
	}
	l.gen++
	l.timer = nil
	pending := l.takeLocked()
	if pending == nil {
		l.until = time.Time{}
	} else {
		l.until = l.now().Add(l.interval)
	}
	l.mu.Unlock()
	l.emit(pending)
}

// takeLocked returns the attributes of the count line for what was
// suppressed, nil if nothing was, and starts counting afresh; l.mu is
// held. The line is written after l.mu is let go, so a slow log output
// holds up no other caller.
func (l *Limiter) takeLocked() []any {
	if l.suppressed == 0 {
		return nil
	}
	args := append(l.lastArgs, "repeated", l.suppressed, "in", l.interval)
	l.suppressed = 0
	l.lastArgs = nil
	return args
}

// stopLocked disarms the timer; l.mu is held.
func (l *Limiter) stopLocked() {
	if l.timer != nil {
		l.timer.Stop()
		l.timer = nil
	}
	l.gen++
}

func (l *Limiter) emit(args []any) {
	if args != nil {
		l.log.Log(context.Background(), l.level, l.msg, args...)
	}
}

// Flush logs a pending count now, as at the end of the interval; for a
// shutdown that should not leave one unsaid.
func (l *Limiter) Flush() {
	l.mu.Lock()
	l.stopLocked()
	pending := l.takeLocked()
	l.until = time.Time{}
	l.mu.Unlock()
	l.emit(pending)
}

// Total returns how many occurrences were recorded, logged or not.
func (l *Limiter) Total() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// cloneArgs copies args and the bytes of their strings.
func cloneArgs(args []any) []any {
	out := make([]any, len(args))
	for i, a := range args {
		switch v := a.(type) {
		case string:
			out[i] = strings.Clone(v)
		case []byte:
			out[i] = string(v)
		case slog.Attr:
			if v.Value.Kind() == slog.KindString {
				v = slog.String(strings.Clone(v.Key), strings.Clone(v.Value.String()))
			}
			out[i] = v
		default:
			out[i] = a
		}
	}
	return out
}
