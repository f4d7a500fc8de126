package wal

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// GapError is what a Cursor returns for frames it cannot give: lost to
// damage, or removed by truncation before the cursor got to them. The
// cursor has moved past them; the next call goes on after the gap. It wraps
// ErrGap.
type GapError struct {
	First, Last uint64 // the frames missing, by index
	Segment     string // the segment where the gap was found
	Bytes       int64  // bad bytes skipped with it (0 for a removed segment)
}

func (e *GapError) Error() string {
	return fmt.Sprintf("%v: frames %d to %d are not in the log (segment %s, %d bad bytes skipped)",
		ErrGap, e.First, e.Last, e.Segment, e.Bytes)
}

func (e *GapError) Unwrap() error { return ErrGap }

// Cursor reads a log's frames in index order, from a starting index on,
// including frames appended while it reads: at the end of the log, Next
// waits for the next frame. It reads the segment files through its own
// descriptors and takes no lock the committer holds while writing, so any
// number of cursors read beside appends. A Cursor is for one goroutine.
//
// A cursor does not hold back truncation; a Pin does.
type Cursor struct {
	l     *Log
	next  uint64 // index of the next frame to return
	limit uint64 // Next returns io.EOF past it; 0: follow forever
	w     walker
	f     *os.File
	seg   uint64 // first index (name) of the segment f is open on
	off   int64  // offset in f up to which the file has been read
	buf   []byte
	base  int64 // offset in f of buf[0]
	pos   int   // next unread byte of buf
	trail *span // bad bytes ending the current segment, costed at the next one
}

// NewCursor returns a cursor whose first frame is the one at index from (1
// if from is 0), or the first after it that the log holds.
func (l *Log) NewCursor(from uint64) *Cursor {
	return &Cursor{l: l, next: max(from, 1)}
}

// Close releases the cursor's descriptor.
func (c *Cursor) Close() {
	if c.f != nil {
		c.f.Close()
		c.f = nil
	}
}

// Position is the index of the frame Next looks for next.
func (c *Cursor) Position() uint64 { return c.next }

// Next returns the next frame, waiting for one to be written if the cursor
// has read them all. The frame's payload is valid until the next call. A
// *GapError says that frames were skipped (call again to go on); ctx's
// error, that ctx ended first; ErrClosed, that the log was closed and every
// frame written before was read.
func (c *Cursor) Next(ctx context.Context) (Frame, error) {
	for {
		for c.pos < len(c.buf) {
			f, s, ok, end := c.w.step(c.buf, c.base, c.pos)
			c.pos = end
			if ok {
				if f.Index < c.next {
					continue // before the start
				}
				c.next = f.Index + 1
				return f, nil
			}
			if s.next == 0 {
				c.trail = &s
				continue
			}
			if s.next-1 < c.next {
				continue // damage before the start costs the reader nothing
			}
			gap := &GapError{First: max(s.after+1, c.next), Last: s.next - 1, Segment: segmentName(c.seg), Bytes: s.end - s.off}
			c.next = s.next
			c.l.skippedBytes.Add(uint64(gap.Bytes))
			return Frame{}, gap
		}
		if err := c.advance(ctx); err != nil {
			return Frame{}, err
		}
	}
}

// advance gets more bytes to read: the rest of the current segment, the
// next segment, or, at the end of the log, whatever is written next.
func (c *Cursor) advance(ctx context.Context) error {
	l := c.l
	for {
		if c.limit > 0 && c.next > c.limit {
			return io.EOF
		}
		if c.f == nil {
			if err := c.openAt(); err != nil {
				return err
			}
			continue
		}
		l.segMu.Lock()
		end, live, tail := int64(-1), false, false
		nextSeg := uint64(0)
		for i, s := range l.segs {
			if s.first == c.seg {
				end, live, tail = s.size, true, i == len(l.segs)-1
			}
			if s.first > c.seg && nextSeg == 0 {
				nextSeg = s.first
			}
		}
		var wake chan struct{}
		if tail {
			if l.caught == nil {
				l.caught = make(chan struct{})
			}
			wake = l.caught
		}
		l.segMu.Unlock()
		if !live {
			// Truncated away, or the log was reopened without it: what
			// the file holds is all it will hold.
			fi, err := c.f.Stat()
			if err != nil {
				return fmt.Errorf("read wal segment %s: %w", segmentName(c.seg), err)
			}
			end = fi.Size()
		}
		if c.off < end {
			return c.read(end)
		}
		if !tail {
			if nextSeg == 0 {
				// The log no longer holds this segment nor any after it.
				if l.isClosed() {
					return ErrClosed
				}
				c.Close()
				continue
			}
			return c.moveTo(nextSeg)
		}
		if l.isClosed() {
			return ErrClosed
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// read fills buf with the current segment's bytes up to end.
func (c *Cursor) read(end int64) error {
	n := int(end - c.off)
	if cap(c.buf) < n {
		c.buf = make([]byte, n)
	}
	c.buf = c.buf[:n]
	got, err := c.f.ReadAt(c.buf, c.off)
	if errors.Is(err, io.EOF) {
		// Shorter than the table says: cut by something else. What is
		// there is read; the missing end counts as bad bytes, costed
		// when the next segment shows where frames go on.
		c.trail = &span{off: c.off + int64(got), end: end}
		err = nil
	}
	if err != nil {
		c.buf = c.buf[:0]
		return fmt.Errorf("read wal segment %s at offset %d: %w", segmentName(c.seg), c.off, err)
	}
	c.buf = c.buf[:got]
	c.base, c.pos, c.off = c.off, 0, end
	return nil
}

// openAt opens the segment holding c.next, or the first one after it.
func (c *Cursor) openAt() error {
	l := c.l
	for attempt := 0; ; attempt++ {
		l.segMu.Lock()
		s := l.segs[0]
		for _, seg := range l.segs {
			if seg.first <= c.next {
				s = seg
			}
		}
		l.segMu.Unlock()
		f, err := os.Open(filepath.Join(l.dir, s.name()))
		if errors.Is(err, os.ErrNotExist) && attempt < 100 {
			continue // truncated meanwhile: the table has moved on
		}
		if err != nil {
			return fmt.Errorf("open wal segment %s: %w", s.name(), err)
		}
		c.setFile(f, s.first)
		if s.first > c.next {
			gap := &GapError{First: c.next, Last: s.first - 1, Segment: s.name()}
			c.next = s.first
			return gap
		}
		return nil
	}
}

// moveTo goes on to the segment starting at first, costing any bad end of
// the one before.
func (c *Cursor) moveTo(first uint64) error {
	f, err := os.Open(filepath.Join(c.l.dir, segmentName(first)))
	if errors.Is(err, os.ErrNotExist) {
		// Removed by truncation since the table was read.
		c.Close()
		return nil
	}
	if err != nil {
		return fmt.Errorf("open wal segment %s: %w", segmentName(first), err)
	}
	trail := c.trail
	c.setFile(f, first)
	if first > c.next {
		gap := &GapError{First: c.next, Last: first - 1, Segment: segmentName(first)}
		if trail != nil {
			gap.Bytes = trail.end - trail.off
			c.l.skippedBytes.Add(uint64(gap.Bytes))
		}
		c.next = first
		return gap
	}
	return nil
}

func (c *Cursor) setFile(f *os.File, first uint64) {
	c.Close()
	c.f, c.seg, c.off = f, first, 0
	c.buf, c.pos, c.base = c.buf[:0], 0, 0
	c.w = walker{next: first, v1: true}
	c.trail = nil
}

// wakeReadersLocked wakes cursors waiting at the end of the log; segMu must
// be held.
func (l *Log) wakeReadersLocked() {
	if l.caught != nil {
		close(l.caught)
		l.caught = nil
	}
}

func (l *Log) wakeReaders() {
	l.segMu.Lock()
	l.wakeReadersLocked()
	l.segMu.Unlock()
}

// Replay calls fn for each frame from index from (0 means 1) to LastIndex()
// as it was when Replay started, in order; the frame's payload is valid only
// during the call. Frames the log does not hold (damaged, or truncated) are
// skipped: Open reports the damage, and Stats counts it. An error from fn
// stops the replay and is returned wrapped. Replay may run at any time,
// concurrently with Append, and reads while appends fail.
func (l *Log) Replay(from uint64, fn func(Frame) error) error {
	if l.isClosed() {
		return ErrClosed
	}
	last := l.last.Load()
	if from > last {
		return nil
	}
	c := l.NewCursor(from)
	c.limit = last
	defer c.Close()
	for {
		f, err := c.Next(context.Background())
		var gap *GapError
		switch {
		case errors.As(err, &gap):
			continue
		case errors.Is(err, io.EOF):
			return nil
		case err != nil:
			return err
		}
		if f.Index > last {
			return nil
		}
		if err := fn(f); err != nil {
			return fmt.Errorf("replay frame %d: %w", f.Index, err)
		}
	}
}
