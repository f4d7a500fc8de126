package wal

import (
	"errors"
)

var (
	// ErrClosed is returned by every method but Close, FirstIndex,
	// LastIndex, Stats and Repaired once Close has been called. An Append
	// that was already waiting when Close began is flushed, not failed.
	ErrClosed = errors.New("wal: log closed")

	// ErrCorrupt is wrapped by DecodeFrame's errors and by Open's when the
	// directory holds an interrupted truncation it cannot finish.
	ErrCorrupt = errors.New("wal: corrupt data")

	// ErrGap is wrapped by *GapError, which a Cursor returns for frames the
	// log does not hold: damaged, or truncated before the cursor got to
	// them. Only the caller knows whether that matters.
	ErrGap = errors.New("wal: frames missing")

	// ErrForeignKey is wrapped by Open when the log holds frames written
	// with another key id than Options.KeyID: the data directory's secret
	// is not the one its log was written with.
	ErrForeignKey = errors.New("wal: frames written with another key")

	// ErrFailed is wrapped by Append, Sync, Replay and TruncateFront while the
	// log is unusable: a write or fsync failed and reopening the directory
	// failed too. The log retries in the background and recovers by itself.
	ErrFailed = errors.New("wal: log failed")
)
