package wal

import (
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/greyhold/greyhold/internal/durable"
)

// Pin holds back truncation: while a pin holds index i, TruncateFront keeps
// every frame from i on. A replicator pins the first frame it has not yet
// shipped, so that the log stays its outbox.
type Pin struct {
	l     *Log
	index atomic.Uint64
}

// Pin returns a pin holding index (at least 1).
func (l *Log) Pin(index uint64) *Pin {
	p := &Pin{l: l}
	p.index.Store(max(index, 1))
	l.pinMu.Lock()
	l.pins[p] = struct{}{}
	l.pinMu.Unlock()
	return p
}

// Move makes the pin hold index instead, in either direction.
func (p *Pin) Move(index uint64) { p.index.Store(max(index, 1)) }

// Index is the index the pin holds.
func (p *Pin) Index() uint64 { return p.index.Load() }

// Release lets truncation past the pin again.
func (p *Pin) Release() {
	p.l.pinMu.Lock()
	delete(p.l.pins, p)
	p.l.pinMu.Unlock()
}

// pinned is the lowest index any pin holds, 0 if there is no pin.
func (l *Log) pinned() uint64 {
	l.pinMu.Lock()
	defer l.pinMu.Unlock()
	low := uint64(0)
	for p := range l.pins {
		if i := p.index.Load(); low == 0 || i < low {
			low = i
		}
	}
	return low
}

// TruncateFront drops the segments whose frames all come before index; the
// caller passes the index its newest snapshot started from, and only once
// that snapshot is durable: until then the dropped frames exist nowhere else.
// A Pin below index holds the truncation back to the pin.
//
// Only whole segments go: tidwall/wal's own TruncateFront would rewrite the
// segment holding index from that frame on, through a temporary file and an
// fsync, up to SegmentSize bytes of I/O while appends wait, to save disk
// space the next truncation frees anyway. The frames kept before index are
// replayed again after a restart, which records that carry results make
// harmless. So FirstIndex afterwards is the first index of the segment
// holding index, and the tail segment always stays. An index beyond
// LastIndex()+1 drops every segment but the tail.
func (l *Log) TruncateFront(index uint64) error {
	if p := l.pinned(); p != 0 && p < index {
		index = p
	}
	req := truncReq{index: index, done: make(chan error, 1)}
	if l.isClosed() {
		return ErrClosed
	}
	select {
	case l.truncC <- req:
		return <-req.done
	case <-l.stop:
		return ErrClosed
	}
}

// truncateFront runs in the committer. tidwall has no call that removes
// segment files without copying, so the log is closed, the files removed
// oldest first (a crash halfway leaves a log that still opens, with a later
// first index) and the directory fsynced, then reopened: that costs reading
// the tail segment back, from the page cache. Readers hold their own
// descriptors, so one reading a removed segment reads on.
func (l *Log) truncateFront(index uint64) error {
	l.segMu.Lock()
	k := 0
	for i, s := range l.segs {
		if s.first <= index {
			k = i
		}
	}
	drop := append([]segInfo(nil), l.segs[:k]...)
	keep := l.segs[k]
	l.segMu.Unlock()
	if k == 0 {
		return nil
	}

	err := l.tl.Close()
	l.tl = nil
	if err != nil {
		err = fmt.Errorf("close wal: %w", err)
	}
	var freed int64
	for _, s := range drop {
		if err != nil {
			break
		}
		if rerr := os.Remove(filepath.Join(l.dir, s.name())); rerr != nil {
			err = fmt.Errorf("remove segment %s: %w", s.name(), rerr)
			break
		}
		freed += s.size
		l.segMu.Lock()
		l.segs = l.segs[1:]
		l.segMu.Unlock()
		l.first.Store(l.segs[0].first)
	}
	l.diskBytes.Add(-freed)
	if err == nil {
		err = durable.SyncDir(l.dir)
	}
	if err == nil {
		l.tl, err = openTidwall(l.dir, l.opts.SegmentSize)
	}
	if err == nil {
		if tlast, _ := l.tl.LastIndex(); tlast != l.last.Load() {
			err = fmt.Errorf("tidwall/wal reopened at frame %d, the log is at %d", tlast, l.last.Load())
		}
	}
	if err != nil {
		err = fmt.Errorf("truncate wal before frame %d: %w", keep.first, err)
		// The directory is somewhere between the two states: rescan it.
		l.recoverFrom(err)
		return err
	}
	l.log.Info("wal front truncated", "dir", l.dir, "requested_index", index, "first_index", keep.first,
		"segments_removed", len(drop), "bytes_freed", freed)
	return nil
}
