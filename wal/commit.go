package wal

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"time"

	tidwall "github.com/tidwall/wal"

	"github.com/greyhold/greyhold/internal/durable"
)

// batch is one group commit: the frame is built in buf in place, behind
// headerSize bytes reserved at the front.
type batch struct {
	buf     []byte
	records uint64
	res     *result // nil while the batch is empty
}

// result is shared by every Append of one batch; allocated once per batch,
// never reused, because waiters read err after the batch buffer moved on.
type result struct {
	done chan struct{}
	err  error
}

type truncReq struct {
	index uint64
	done  chan error
}

func newBatch() *batch {
	// 64 KiB holds a few thousand typical records, a busy second's batch,
	// without growing; the buffer is reused, so growth happens once anyway.
	return &batch{buf: make([]byte, headerSize, 64<<10)}
}

// seal fills in the header and appends the CRC: the buffer is now a frame.
func (b *batch) seal(f Frame) []byte {
	f.Records = int(b.records)
	putHeader(b.buf, f)
	b.buf = sealFrame(b.buf, 0)
	return b.buf
}

func (b *batch) reset() {
	b.buf = b.buf[:headerSize]
	b.records = 0
	b.res = nil
}

// Append adds a payload of n records (n ≥ 1, payload not empty) to the log.
// Concurrent appends are written together as one frame. It returns once the
// frame is fsynced (SyncAlways) or written (otherwise). An error other than
// ErrClosed or a bad argument means the frame may or may not be in the log
// after a restart; replaying it is harmless since records carry results.
func (l *Log) Append(payload []byte, n int) error {
	if err := checkAppend(payload, n); err != nil {
		return err
	}
	l.mu.Lock()
	for {
		if l.closed {
			l.mu.Unlock()
			return ErrClosed
		}
		if l.failed != nil {
			err := l.failed
			l.mu.Unlock()
			return fmt.Errorf("%w: %w", ErrFailed, err)
		}
		b := l.open
		if b.res == nil || (len(b.buf)-headerSize < l.opts.MaxBatchBytes && b.records+uint64(n) <= maxRecords) {
			break
		}
		if h := l.opts.hooks.held; h != nil {
			h()
		}
		l.space.Wait()
	}
	b := l.open
	b.buf = append(b.buf, payload...)
	b.records += uint64(n)
	res := b.res
	if res == nil {
		res = &result{done: make(chan struct{})}
		b.res = res
		select {
		case l.kick <- struct{}{}:
		default:
		}
	}
	l.mu.Unlock()
	<-res.done
	return res.err
}

// run is the committer: the one goroutine that writes to tidwall.
func (l *Log) run() {
	defer l.wg.Done()
	var retry *time.Ticker
	defer func() {
		if retry != nil {
			retry.Stop()
		}
	}()
	for {
		if l.tl == nil {
			// Failed: appends fail fast until a reopen works.
			retryC := l.opts.hooks.retryTick
			if retryC == nil {
				if retry == nil {
					retry = time.NewTicker(reopenRetry)
				}
				retryC = retry.C
			}
			select {
			case <-l.stop:
				l.shutdown()
				return
			case <-retryC:
				l.retryReopen()
			case req := <-l.truncC:
				req.done <- l.failedErr()
			case <-l.kick:
			case e := <-l.syncErrC:
				close(e.handled) // nothing to reopen: the retry does it
			}
			if l.tl != nil && retry != nil {
				retry.Stop()
				retry = nil
			}
			continue
		}
		select {
		case <-l.stop:
			l.shutdown()
			return
		case <-l.kick:
			for l.commit() {
			}
		case req := <-l.truncC:
			req.done <- l.truncateFront(req.index)
		case e := <-l.syncErrC:
			l.recoverFrom(e.err)
			close(e.handled)
		}
	}
}

// commit writes the open batch, if any, as one frame and releases its
// appenders. It reports whether there was a batch.
func (l *Log) commit() bool {
	if l.tl == nil {
		return false
	}
	// Let appenders that are runnable add to the batch before it is taken:
	// with few cores, the ones just released by the last frame are still
	// waiting for a CPU, and taking the batch at once writes frames of one
	// or two records. With 64 appenders on 2 cores (interval sync) the
	// yield makes 28 records a frame and 960k records/s, against 2.5 and
	// 620k without it.
	runtime.Gosched()
	l.mu.Lock()
	b := l.open
	if b.res == nil {
		l.mu.Unlock()
		return false
	}
	l.open, l.spare = l.spare, nil
	l.inflight = b.res
	l.mu.Unlock()
	l.space.Broadcast()

	err := l.writeFrame(b)
	res := b.res
	res.err = err
	close(res.done)
	b.reset()
	l.mu.Lock()
	l.spare = b
	l.inflight = nil
	l.mu.Unlock()
	if err != nil {
		l.recoverFrom(err)
	}
	return true
}

// frameTime is the time stamped on a frame, in unix milliseconds.
func (l *Log) frameTime() int64 {
	if h := l.opts.hooks.now; h != nil {
		return h()
	}
	return time.Now().UnixMilli()
}

// writeFrame writes b as the next frame and syncs it as the mode asks.
func (l *Log) writeFrame(b *batch) error {
	payload := len(b.buf) - headerSize
	index := l.last.Load() + 1
	frame := b.seal(Frame{Index: index, Gen: l.gen, KeyID: l.opts.KeyID, UnixMilli: l.frameTime()})
	if h := l.opts.hooks.write; h != nil {
		if err := h(index); err != nil {
			return fmt.Errorf("write frame %d: %w", index, err)
		}
	}
	// tidwall/wal starts a new segment file before the write if the tail is
	// already over SegmentSize (only possible if it was opened that way), and
	// after it once the tail reaches SegmentSize. Mirroring that rule from
	// the entry size tells which files the write creates: they are made here
	// first, so that tidwall's O_TRUNC open never follows a link planted at
	// the name, and the syncer learns that the directory needs an fsync.
	entry := int64(uvarintLen(len(frame)) + len(frame))
	cycleBefore := l.tailSize > int64(l.opts.SegmentSize)
	after := l.tailSize + entry
	if cycleBefore {
		after = entry
		if err := l.precreate(index); err != nil {
			return err
		}
	}
	cycleAfter := after >= int64(l.opts.SegmentSize)
	if cycleAfter {
		if err := l.precreate(index + 1); err != nil {
			return err
		}
	}
	l.tb.Clear()
	l.tb.Write(index, frame)
	if err := l.tl.WriteBatch(&l.tb); err != nil {
		return fmt.Errorf("write frame %d to segment %s: %w", index, l.tailName(), err)
	}
	l.segMu.Lock()
	if cycleBefore {
		l.segs[len(l.segs)-1].size = l.tailSize
		l.segs = append(l.segs, segInfo{first: index})
		l.tailSize = 0
	}
	l.tailSize += entry
	l.segs[len(l.segs)-1].size = l.tailSize
	if cycleAfter {
		l.segs = append(l.segs, segInfo{first: index + 1})
		l.tailSize = 0
	}
	if cycleBefore || cycleAfter {
		l.dirGen++
	}
	// Published with the segment table, under its lock, so that a reader
	// or the syncer that sees index also sees the segment holding it.
	l.last.Store(index)
	l.wakeReadersLocked()
	l.segMu.Unlock()
	l.diskBytes.Add(entry)
	l.frames.Add(1)
	l.records.Add(b.records)
	l.payloadBytes.Add(uint64(payload))
	l.writtenBytes.Add(uint64(entry))
	l.m.wrote(b.records, int(entry))
	if l.opts.Sync.kind == syncAlways {
		if err := l.syncNow(); err != nil {
			return fmt.Errorf("sync frame %d: %w", index, err)
		}
	}
	return nil
}

// precreate makes the empty segment file named first before tidwall opens
// it. Anything already at the name that is not such an empty file was not
// made by this log: a link is removed (not followed), a file is moved aside,
// and both are logged.
func (l *Log) precreate(first uint64) error {
	name := segmentName(first)
	path := filepath.Join(l.dir, name)
	f, err := durable.CreateNew(path, filePerm)
	if err == nil {
		return f.Close()
	}
	if !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create segment: %w", err)
	}
	fi, lerr := os.Lstat(path)
	switch {
	case lerr != nil:
		return fmt.Errorf("create segment %s: %w", name, lerr)
	case fi.Mode().IsRegular() && fi.Size() == 0:
		return nil // made by an earlier attempt at this write
	case fi.Mode()&fs.ModeSymlink != 0:
		l.log.Error("removed a symbolic link planted where the next wal segment goes", "path", path,
			"hint", "greyhold never makes links in its wal directory: check who can write to it")
		if err := os.Remove(path); err != nil {
			return fmt.Errorf("remove link at segment %s: %w", name, err)
		}
	default:
		aside := path + ".stray-" + strconv.FormatInt(time.Now().Unix(), 10)
		l.log.Error("moved aside a file found where the next wal segment goes", "path", path, "moved_to", aside,
			"hint", "nothing but greyhold should write to its wal directory")
		if err := os.Rename(path, aside); err != nil {
			return fmt.Errorf("move aside %s: %w", name, err)
		}
	}
	f, err = durable.CreateNew(path, filePerm)
	if err != nil {
		return fmt.Errorf("create segment: %w", err)
	}
	return f.Close()
}

func (l *Log) tailName() string {
	l.segMu.Lock()
	defer l.segMu.Unlock()
	return l.segs[len(l.segs)-1].name()
}

// openTidwall opens tidwall/wal on a repaired directory.
func openTidwall(dir string, segmentSize int) (*tidwall.Log, error) {
	tl, err := tidwall.Open(dir, &tidwall.Options{
		NoSync:           true, // the committer and the syncer decide when to fsync
		SegmentSize:      segmentSize,
		LogFormat:        tidwall.Binary,
		SegmentCacheSize: 1, // nothing is read back through tidwall
		NoCopy:           true,
		AllowEmpty:       true,
		DirPerms:         dirPerm,
		FilePerms:        filePerm,
	})
	if err != nil {
		return nil, fmt.Errorf("open wal %s: %w", dir, err)
	}
	return tl, nil
}

// recoverFrom handles a failed write or fsync, or a tail file that is no
// longer the one written: tidwall's memory no longer matches the disk, so
// the log is closed, repaired and reopened.
func (l *Log) recoverFrom(cause error) {
	if l.tl != nil {
		// Its error says nothing new: the log is being thrown away. When its
		// final fsync fails, tidwall keeps the file open; that descriptor
		// leaks, once per failure.
		_ = l.tl.Close()
		l.tl = nil
	}
	l.repairs.Add(1)
	if diskFull(cause) {
		// A reopen needs no space and would work, and the next write would
		// fail as this one did: a scan of the whole log and three lines of
		// log for every append. The log stays failed until there is room.
		l.markFailed(cause)
		l.log.Error("wal cannot write: the disk is full; checks are answered as if greylisting were off until it has room",
			"dir", l.dir, "err", cause, "retry_in", reopenRetry,
			"hint", fmt.Sprintf("free space on the wal's disk: the log resumes by itself once %d KiB are free", minFreeToResume>>10))
		return
	}
	l.log.Error("wal failed: reopening the log", "dir", l.dir, "err", cause,
		"hint", "check free space on the wal's disk, the kernel log for I/O errors, and that nothing else writes to the wal directory")
	if err := l.reopen(); err != nil {
		l.setFailed(err)
		return
	}
	// The syncer may have seen the old files while the log was reopened:
	// what it found is fixed. A real new fault shows again at its next
	// look.
	select {
	case e := <-l.syncErrC:
		close(e.handled)
	default:
	}
}

// reopen opens the log again after a failure, in the committer. Indexes
// are never reused within a process: the log goes on from the frame after
// the last one written, with a new generation; frames that vanished from
// the disk are reported through Options.OnLoss, since the caller's memory
// still holds their changes.
func (l *Log) reopen() error {
	if hook := l.opts.hooks.reopen; hook != nil {
		if err := hook(); err != nil {
			return err
		}
	}
	if _, err := durable.MkdirAll(l.dir, dirPerm); err != nil {
		return err
	}
	ds, err := l.scanDir()
	if err != nil {
		return err
	}
	if err := ds.foreign(l.opts.KeyID); err != nil {
		return err
	}
	var r RepairReport
	if err := l.removeLeftover(&ds, &r); err != nil {
		return err
	}
	want := l.last.Load() + 1
	var loss *Loss
	switch have := ds.next(); {
	case len(ds.files) == 0 || have < want:
		loss = &Loss{First: l.first.Load(), Last: want - 1, Cause: "the wal directory was emptied"}
		if len(ds.files) > 0 {
			loss = &Loss{First: have, Last: want - 1, Segment: ds.files[len(ds.files)-1].name,
				Cause: "frames written to the tail segment are gone from it (deleted, truncated or replaced)"}
		}
		if err := l.newSegmentFile(want); err != nil {
			return err
		}
		ds.files = append(ds.files, segmentFile{name: segmentName(want), index: want})
		ds.scans = append(ds.scans, fileScan{})
	default:
		ds.assess(&r, 0)
		r.LostFrames, r.CoveredFrames = 0, 0
		// Frames this process wrote that read back damaged: the file was
		// cut short and written past, and the cut bytes are zeros.
		for _, d := range r.Damage {
			if d.Frames() == 0 || d.LastLost < l.ownFrom {
				continue
			}
			first := max(d.FirstLost, l.ownFrom)
			if loss == nil {
				loss = &Loss{First: first, Last: d.LastLost, Segment: d.Segment,
					Cause: "frames written to the tail segment read back as other bytes (cut short and written past, or overwritten)"}
			}
			loss.First, loss.Last = min(loss.First, first), max(loss.Last, d.LastLost)
		}
		if err := l.fixTail(&ds, &r); err != nil {
			return err
		}
		if err := l.keepBroken(&ds, &r); err != nil {
			return err
		}
		l.noteRepair(&r)
	}
	if loss != nil {
		l.lostFrames.Add(loss.Last - loss.First + 1)
		l.log.Error("wal frames written by this process are gone from the disk: continuing from the next index",
			"dir", l.dir, "first_lost", loss.First, "last_lost", loss.Last, "segment", loss.Segment, "cause", loss.Cause,
			"hint", "memory still holds these changes and a snapshot is taken at once; find out what removed or truncated the file")
		if l.opts.OnLoss != nil {
			l.opts.OnLoss(*loss)
		}
	}
	return l.install(ds)
}

// setFailed makes appends fail fast until retryReopen succeeds, and says
// so.
func (l *Log) setFailed(err error) {
	l.markFailed(err)
	l.log.Error("wal cannot be reopened: appends fail until it can", "dir", l.dir, "err", err,
		"retry_in", reopenRetry,
		"hint", "check that the disk is not full, that the wal directory exists and is writable by this user, and the kernel log for I/O errors")
}

// markFailed makes appends fail fast with err until retryReopen succeeds,
// and fails the batch being filled.
func (l *Log) markFailed(err error) {
	l.m.setFailed(true)
	l.mu.Lock()
	l.failed = err
	res := l.open.res
	l.open.reset()
	l.mu.Unlock()
	l.space.Broadcast()
	if res != nil {
		res.err = fmt.Errorf("%w: %w", ErrFailed, err)
		close(res.done)
	}
}

// minFreeToResume is the free space a log failed on a full disk waits for
// before it writes again.
const minFreeToResume = 1 << 20

// diskFull says err is a write that found no space (or no quota) left.
func diskFull(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// freeSpace is what the file system holding the log has free for this
// user, or -1 if it cannot say.
func (l *Log) freeSpace() int64 {
	if h := l.opts.hooks.free; h != nil {
		return h()
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(l.dir, &st); err != nil {
		return -1
	}
	return int64(st.Bavail) * int64(st.Bsize)
}

func (l *Log) retryReopen() {
	l.mu.Lock()
	cause := l.failed
	l.mu.Unlock()
	if diskFull(cause) {
		if free := l.freeSpace(); free >= 0 && free < minFreeToResume {
			return // still full: nothing new to say
		}
	}
	if err := l.reopen(); err != nil {
		l.log.Error("wal still cannot be reopened", "dir", l.dir, "err", err, "retry_in", reopenRetry,
			"hint", "check that the disk is not full, that the wal directory exists and is writable by this user, and the kernel log for I/O errors")
		l.mu.Lock()
		l.failed = err
		l.mu.Unlock()
		return
	}
	l.m.setFailed(false)
	l.mu.Lock()
	l.failed = nil
	l.mu.Unlock()
	l.log.Info("wal reopened: appends resume", "dir", l.dir, "last_index", l.last.Load())
}

func (l *Log) failedErr() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.failed == nil {
		return ErrFailed
	}
	return fmt.Errorf("%w: %w", ErrFailed, l.failed)
}

// shutdown runs in the committer when Close is called: flush what was
// appended, fsync, close tidwall.
func (l *Log) shutdown() {
	for l.commit() {
	}
	// Only a log that failed can still hold a batch here.
	l.mu.Lock()
	res := l.open.res
	l.open.reset()
	l.mu.Unlock()
	if res != nil {
		res.err = ErrClosed
		close(res.done)
	}
	if l.tl == nil {
		return
	}
	var err error
	if l.opts.Sync.kind != syncNever {
		err = l.syncNow()
	}
	// tidwall's Close fsyncs the tail in every mode, SyncNever included;
	// there is no way around it but leaking its descriptor. In the other
	// modes syncNow has left it nothing to flush.
	if cerr := l.tl.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close wal: %w", cerr)
	}
	l.tl = nil
	l.closeErr = err
}

// Sync fsyncs everything appended so far, waiting for the batches being
// written first. It works in every mode, SyncNever included.
func (l *Log) Sync() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	if l.failed != nil {
		err := l.failed
		l.mu.Unlock()
		return fmt.Errorf("%w: %w", ErrFailed, err)
	}
	pending, inflight := l.open.res, l.inflight
	l.mu.Unlock()
	// Their own failures went to their appenders; what is written is synced.
	if inflight != nil {
		<-inflight.done
	}
	if pending != nil {
		<-pending.done
	}
	if err := l.syncNow(); err != nil {
		if !errors.Is(err, ErrClosed) {
			l.syncFailed(err)
		}
		return err
	}
	return nil
}

// syncErr is a failure found outside the committer, handed to it.
type syncErr struct {
	err     error
	handled chan struct{} // closed once the committer has acted on it
}

// syncFailed hands an fsync failure, or a tail file found changed, to the
// committer, which reopens the log (after a failed fsync the kernel may
// have dropped the dirty pages, so what the file holds is unknown), and
// returns once it has. It returns at once if a failure is already waiting,
// and when the log closes.
func (l *Log) syncFailed(err error) {
	e := syncErr{err: err, handled: make(chan struct{})}
	select {
	case l.syncErrC <- e:
	default:
		return
	}
	select {
	case <-e.handled:
	case <-l.stop:
	}
}
