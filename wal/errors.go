package wal

import (
	"errors"
	"fmt"
)

var (
	// ErrClosed is returned by every method but Close, FirstIndex,
	// LastIndex, Stats and Repaired once Close has been called. An Append
	// that was already waiting when Close began is flushed, not failed.
	ErrClosed = errors.New("wal: log closed")

	// ErrCorrupt is wrapped by *CorruptionError when Replay meets a frame
	// that no longer verifies (the disk changed after Open, since Open cuts
	// off everything that does not verify), by Open when the directory holds
	// an interrupted truncation it cannot finish, and by DecodeFrame.
	ErrCorrupt = errors.New("wal: corrupt data")

	// ErrGap is returned by Replay when asked to start before FirstIndex:
	// the frames in between were truncated or never reached this log, and
	// only the caller knows whether that matters.
	ErrGap = errors.New("wal: frames missing")

	// ErrFailed is wrapped by Append, Sync, Replay and TruncateFront while the
	// log is unusable: a write or fsync failed and reopening the directory
	// failed too. The log retries in the background and recovers by itself.
	ErrFailed = errors.New("wal: log failed")
)

// CorruptionError locates a frame that failed verification. It wraps Err,
// which wraps ErrCorrupt.
type CorruptionError struct {
	Segment string // segment file name, the %020d first index of the file
	Index   uint64 // frame index
	Offset  int64  // byte offset of the frame's length prefix in Segment; -1 if unknown
	Err     error
}

func (e *CorruptionError) Error() string {
	return fmt.Sprintf("frame %d in segment %s at offset %d: %v", e.Index, e.Segment, e.Offset, e.Err)
}

func (e *CorruptionError) Unwrap() error { return e.Err }
