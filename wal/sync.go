package wal

import (
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
		s.closeFile()
		// Write access only because some systems refuse to flush through a
		// read-only descriptor; nothing is ever written through it.
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
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
