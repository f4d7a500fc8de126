package wal

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
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
// reopened: frame indexes may be reused and the tail may be another file.
func (s *syncState) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeFile()
	s.synced = 0
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

// syncNow makes every frame written so far durable: it fsyncs the tail
// segment, then the directory if a segment file was created since the last
// time. Earlier segments need nothing: tidwall fsyncs a segment when it
// closes it for the next one.
//
// The order of reads matters. last is read before the tail's name, and the
// committer publishes a new segment before the frame index that goes with
// it, so the name read is the segment holding frame written or a later one;
// if a later one, the segment holding written was fsynced by tidwall when it
// was closed.
func (l *Log) syncNow() error {
	s := &l.sy
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	written := l.last.Load()
	l.segMu.Lock()
	name := l.segs[len(l.segs)-1].name()
	dirGen := l.dirGen
	l.segMu.Unlock()
	if written == s.synced && dirGen == s.dirGen {
		return nil
	}
	if name != s.name {
		s.closeFile()
		// Write access only because some systems refuse to flush through a
		// read-only descriptor; nothing is ever written through it.
		f, err := os.OpenFile(filepath.Join(l.dir, name), os.O_WRONLY, 0)
		if err != nil {
			return fmt.Errorf("open segment %s for fsync: %w", name, err)
		}
		s.f, s.name = f, name
	}
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
	if dirGen != s.dirGen {
		if err := syncDir(l.dir); err != nil {
			return err
		}
		s.dirGen = dirGen
	}
	s.synced = written
	l.syncedIndex.Store(written)
	return nil
}
