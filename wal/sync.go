package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/greyhold/greyhold/internal/durable"
)

// syncState is the fsync side of the log. It keeps its own descriptor on
// the tail segment: fsync flushes the file, not the descriptor, so syncing
// through it covers what tidwall wrote through its own, without taking
// tidwall's mutex, which WriteBatch holds.
type syncState struct {
	mu     sync.Mutex // held for the whole fsync: one at a time
	f      *os.File
	name   string // segment f is open on
	synced uint64 // last frame index covered by an fsync
	dirGen uint64 // segment creations covered by a directory fsync
	closed bool
	// checked is how far into f's file the frames were read back and
	// verified, last where the last verified one's entry starts; see
	// readBack.
	checked, last int64
	buf           []byte
}

// reset forgets the descriptor and what was synced, after the log was
// reopened: the tail may be another file.
func (s *syncState) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeFile()
	s.synced = 0
	s.dirGen = 0
}

func (s *syncState) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeFile()
	s.closed = true
}

func (s *syncState) closeFile() {
	if s.f != nil {
		s.f.Close() // nothing is written through it: no error to act on
		s.f, s.name = nil, ""
	}
	s.checked, s.last = 0, 0
}

// errTailLost says the tail file is not the one the log wrote: removed,
// replaced or cut short by something else. Appending on would write frames
// that a restart cannot find.
type errTailLost struct {
	segment string
	why     string
}

func (e *errTailLost) Error() string {
	return fmt.Sprintf("wal tail segment %s %s", e.segment, e.why)
}

// syncNow makes every frame written so far durable: it fsyncs the tail
// segment, then the directory if a segment file was created since the last
// time. Earlier segments need nothing: tidwall fsyncs a segment when it
// closes it for the next one. After the fsync it checks that the file is
// still the log's tail (see checkTail).
func (l *Log) syncNow() error {
	return l.syncOrCheck(true)
}

// checkTail checks, without an fsync, that the tail file on disk is the one
// written: for SyncNever, which otherwise never looks.
func (l *Log) checkTail() error {
	return l.syncOrCheck(false)
}

func (l *Log) syncOrCheck(fsync bool) error {
	s := &l.sy
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	// The table and last are published together under segMu, so the tail
	// read here holds frame written and has at least size bytes.
	l.segMu.Lock()
	tail := l.segs[len(l.segs)-1]
	written := l.last.Load()
	dirGen := l.dirGen
	l.segMu.Unlock()
	name := tail.name()
	if fsync && written == s.synced && dirGen == s.dirGen {
		return nil
	}
	path := filepath.Join(l.dir, name)
	if name != s.name {
		if s.f != nil {
			// The tail moved on: what was written to the old one since
			// the last look is verified once, now that it is whole.
			if err := l.readBackClosed(s); err != nil {
				return err
			}
		}
		s.closeFile()
		// Write access only because some systems refuse to flush through a
		// read-only descriptor; nothing is ever written through it.
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return &errTailLost{segment: name, why: "was removed"}
			}
			return fmt.Errorf("open segment %s for fsync: %w", name, err)
		}
		s.f, s.name = f, name
	}
	if fsync {
		start := time.Now()
		err := s.f.Sync()
		took := time.Since(start)
		l.m.synced(took.Seconds())
		if err != nil {
			return fmt.Errorf("fsync segment %s: %w", name, err)
		}
		l.syncs.Add(1)
		if took > l.opts.SlowSync {
			l.log.Warn("slow wal fsync", "segment", name, "took", took, "threshold", l.opts.SlowSync,
				"hint", "the disk cannot keep up: appends in fsync=always mode waited this long; check disk latency and other load on it")
		}
	}
	if err := sameFile(s.f, path, tail.size); err != nil {
		return &errTailLost{segment: name, why: err.Error()}
	}
	if err := s.readBack(tail.size); err != nil {
		return &errTailLost{segment: name, why: err.Error()}
	}
	if !fsync {
		return nil
	}
	if dirGen != s.dirGen {
		if err := durable.SyncDir(l.dir); err != nil {
			return err
		}
		s.dirGen = dirGen
	}
	s.synced = written
	l.syncedIndex.Store(written)
	return nil
}

// sameFile checks that f is still the file at path and holds at least size
// bytes. An fsync succeeds on a file that was unlinked or cut short, so it
// proves nothing by itself about what a restart will find.
func sameFile(f *os.File, path string, size int64) error {
	held, err := f.Stat()
	if err != nil {
		return fmt.Errorf("cannot be examined: %v", err)
	}
	if st, ok := held.Sys().(*syscall.Stat_t); ok && st.Nlink == 0 {
		return errors.New("was removed")
	}
	named, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return errors.New("was removed")
		}
		return fmt.Errorf("cannot be examined: %v", err)
	}
	if !os.SameFile(held, named) {
		return errors.New("was replaced by another file")
	}
	if held.Size() < size {
		return fmt.Errorf("was cut short: %d bytes where %d were written", held.Size(), size)
	}
	return nil
}

// readBackChunk is how much of the tail readBack reads at a time.
const readBackChunk = 1 << 20

// readBack reads the frames written to the tail since the last look, up
// to size, and verifies them. A file cut short while it is written is as
// long as written again once the next write lands, since tidwall writes at
// its own offset: the cut bytes read back as zeros (a hole), and only
// reading shows them. A cut at any time since the last look zeroes the
// last byte written before it, which lies in the last frame verified then
// or in one written since: so the look starts at that last frame, and
// each look costs one read of what was written since the one before.
func (s *syncState) readBack(size int64) error {
	off := s.last
	want := readBackChunk
	for off < size {
		n := int(min(size-off, int64(want)))
		if cap(s.buf) < n {
			s.buf = make([]byte, n)
		}
		buf := s.buf[:n]
		if _, err := s.f.ReadAt(buf, off); err != nil {
			return fmt.Errorf("cannot be read back at offset %d: %v", off, err)
		}
		p, err := verifyEntries(buf, off, size, &s.last)
		if err != nil {
			return err
		}
		if p == 0 {
			want = max(want*2, len(buf)+16) // one frame larger than a read
			continue
		}
		off += int64(p)
		want = readBackChunk
	}
	s.checked = size
	return nil
}

// verifyEntries verifies the whole entries at the start of buf, the file's
// bytes from off on, of which size were written, noting in last where each
// starts. It returns how far it got: an entry that runs past buf is left
// for the next read.
func verifyEntries(buf []byte, off, size int64, last *int64) (int, error) {
	p := 0
	for p < len(buf) {
		length, k := binary.Uvarint(buf[p:])
		if k == 0 && off+int64(len(buf)) < size {
			return p, nil // the prefix runs past this read
		}
		at := off + int64(p)
		if k <= 0 || length < minFrameSize || length > uint64(size-at) {
			return p, fmt.Errorf("holds no frame at offset %d, where one was written (cut short and written past?)", at)
		}
		end := p + k + int(length)
		if end > len(buf) {
			return p, nil // the frame runs past this read
		}
		if _, err := DecodeFrame(buf[p+k : end]); err != nil {
			return p, fmt.Errorf("holds a damaged frame at offset %d, where a whole one was written (cut short and written past?): %v", at, err)
		}
		*last = at
		p = end
	}
	return p, nil
}

// readBackClosed verifies the rest of the tail the syncer looked at last,
// which the committer has since closed for a new one.
func (l *Log) readBackClosed(s *syncState) error {
	l.segMu.Lock()
	size := int64(-1)
	for _, seg := range l.segs {
		if seg.name() == s.name {
			size = seg.size
		}
	}
	l.segMu.Unlock()
	if size < 0 || size <= s.checked {
		return nil // dropped by a truncation since, or nothing new
	}
	path := filepath.Join(l.dir, s.name)
	if err := sameFile(s.f, path, size); err != nil {
		return &errTailLost{segment: s.name, why: err.Error()}
	}
	if err := s.readBack(size); err != nil {
		return &errTailLost{segment: s.name, why: err.Error()}
	}
	return nil
}

// runSyncer fsyncs on the interval (or, for SyncNever, only checks the tail
// file). It runs beside the committer and fsyncs through its own
// descriptor, so frames keep being written during an fsync and appenders
// wait only for write(2). Syncing from the committer instead would hold
// every appender for the whole fsync once per interval: harmless where an
// fsync takes 250µs, but tens of milliseconds of stalled answers on a busy
// or networked disk.
func (l *Log) runSyncer(tick <-chan time.Time, ticker *time.Ticker) {
	defer l.wg.Done()
	if ticker != nil {
		defer ticker.Stop()
	}
	for {
		select {
		case <-l.stop:
			return
		case <-tick:
			l.mu.Lock()
			failed := l.failed != nil
			l.mu.Unlock()
			if !failed {
				var err error
				switch l.opts.Sync.kind {
				case syncInterval:
					err = l.syncNow()
				default:
					// SyncAlways fsyncs (and checks) in the committer;
					// this covers a log that is idle, and SyncNever.
					err = l.checkTail()
				}
				if err != nil && !errors.Is(err, ErrClosed) {
					l.syncFailed(err)
				}
			}
			if d := l.opts.hooks.syncDone; d != nil {
				d <- struct{}{}
			}
		}
	}
}
