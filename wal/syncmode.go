package wal

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

type syncKind uint8

const (
	// syncInterval is zero so that the zero SyncMode is the default.
	syncInterval syncKind = iota
	syncAlways
	syncNever
)

// defaultInterval bounds what a power failure can take in the default mode
// (a kill -9 takes nothing in any mode: written data is in the page cache)
// while costing one fsync a second, whatever the load.
const defaultInterval = time.Second

// SyncMode says when appended frames are fsynced. The zero value is
// SyncEvery(time.Second), the default; modes are comparable with ==.
type SyncMode struct {
	kind syncKind
	// every is the interval of syncInterval; zero means defaultInterval, so
	// SyncEvery(time.Second) and the zero value are the same value.
	every time.Duration
}

var (
	// SyncAlways returns from Append only after the frame is fsynced (and
	// the directory too, when the frame opened a new segment file).
	SyncAlways = SyncMode{kind: syncAlways}
	// SyncNever leaves flushing to the operating system; Append returns
	// after write(2). A power failure may lose any amount of the tail.
	SyncNever = SyncMode{kind: syncNever}
)

// SyncEvery returns from Append after write(2) and fsyncs on an interval of
// d, so a power failure loses at most about d of answered appends. A d that
// is not positive means the default of one second.
func SyncEvery(d time.Duration) SyncMode {
	if d <= 0 || d == defaultInterval {
		return SyncMode{}
	}
	return SyncMode{kind: syncInterval, every: d}
}

// Interval is the fsync interval, or 0 for SyncAlways and SyncNever.
func (m SyncMode) Interval() time.Duration {
	if m.kind != syncInterval {
		return 0
	}
	if m.every == 0 {
		return defaultInterval
	}
	return m.every
}

// String returns the form ParseSyncMode reads back.
func (m SyncMode) String() string {
	switch m.kind {
	case syncAlways:
		return "always"
	case syncNever:
		return "never"
	default:
		return m.Interval().String()
	}
}

// ParseSyncMode reads "always", "never", a Go duration ("1s", "250ms") or a
// bare number of seconds ("2", "0.5"), as given to --fsync.
func ParseSyncMode(s string) (SyncMode, error) {
	v := strings.ToLower(strings.TrimSpace(s))
	switch v {
	case "always":
		return SyncAlways, nil
	case "never":
		return SyncNever, nil
	case "":
		return SyncMode{}, syncModeError(s, "empty")
	}
	var d time.Duration
	if secs, err := strconv.ParseFloat(v, 64); err == nil {
		// Bounded so the conversion cannot overflow; NaN fails the test too.
		if !(secs <= math.MaxInt64/float64(time.Second)) {
			return SyncMode{}, syncModeError(s, "the interval is out of range")
		}
		d = time.Duration(secs * float64(time.Second))
	} else if d, err = time.ParseDuration(v); err != nil {
		return SyncMode{}, syncModeError(s, "not a duration")
	}
	if d <= 0 {
		return SyncMode{}, syncModeError(s, "the interval must be positive")
	}
	return SyncEvery(d), nil
}

func syncModeError(s, why string) error {
	return fmt.Errorf(`wal: sync mode %q: %s; want "always", "never", a duration such as "1s" or "250ms", or a number of seconds`, s, why)
}
