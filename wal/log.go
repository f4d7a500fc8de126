package wal

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	tidwall "github.com/tidwall/wal"
)

const (
	// defaultSegmentSize: tidwall/wal keeps the whole tail segment in memory,
	// in a slice grown by append, plus the last segment it closed, so this is
	// a memory knob as much as a file size: about 60 MiB at worst, counting a
	// growth in progress. At 1M records/s of ~18 bytes a segment fills about
	// once a second, so the fsync tidwall does when it closes a segment and
	// ours of the directory cost one pair a second, and TruncateFront, which
	// drops whole segments only, keeps at most about a second of frames too
	// many. The growth costs too: near 16 MiB each step copies several MiB
	// inside WriteBatch (measured: 4-10ms committer pauses, a few per
	// segment), and the slice allocates about five bytes per byte written
	// over its life. A smaller size shortens the pauses, for more fsyncs.
	defaultSegmentSize = 16 << 20

	// defaultMaxBatchBytes caps the batch appenders fill while the previous
	// one is written: about 230,000 typical records, several milliseconds of
	// disk bandwidth. Past it, appenders wait (backpressure) rather than let
	// a stalled disk grow memory without bound; two such buffers exist.
	defaultMaxBatchBytes = 4 << 20

	// defaultSlowSync follows etcd: an fsync over a second means the disk
	// cannot keep up, and SyncAlways appenders waited that long.
	defaultSlowSync = time.Second

	// reopenRetry is how often a failed log tries to reopen: often enough
	// to resume soon after an operator frees space, rare enough not to
	// flood the log with the same error.
	reopenRetry = 5 * time.Second

	dirPerm  = 0o750
	filePerm = 0o640
)

// Options configure Open. The zero value is the production default.
type Options struct {
	// Sync says when frames are fsynced; the zero value syncs every second.
	Sync SyncMode
	// SegmentSize is the size at which a new segment file is started.
	// Default 16 MiB. The tail segment lives in memory, and the log can only
	// be truncated by whole segments.
	SegmentSize int
	// MaxBatchBytes is the payload size above which appenders wait for the
	// batch being filled to be written. Default 4 MiB.
	MaxBatchBytes int
	// SlowSync is the fsync duration above which a warning is logged.
	// Default 1s.
	SlowSync time.Duration
	// StartIndex, when not zero, is the first frame index the caller needs:
	// the index the newest snapshot started from. If the log ends before it
	// (LastIndex()+1 < StartIndex), the log was lost or replaced: Open moves
	// the directory aside to <dir>.old-<unix time> and starts an empty log
	// whose first frame will be StartIndex. A new log starts at StartIndex.
	StartIndex uint64
	// Logger receives the log's messages, with component=wal added. Nil
	// discards them.
	Logger *slog.Logger
	// Registerer gets the greyhold_wal_* metrics, removed again by Close.
	// Nil means no metrics.
	Registerer prometheus.Registerer

	hooks *testHooks
}

// testHooks let tests drive time and inject faults.
type testHooks struct {
	syncTick  <-chan time.Time         // replaces the interval syncer's ticker
	syncDone  chan<- struct{}          // told when the syncer has handled a tick
	retryTick <-chan time.Time         // replaces the reopen-retry ticker
	write     func(index uint64) error // runs before each frame write; an error fails it
	reopen    func() error             // runs before each reopen; an error fails it
}

func (o *Options) setDefaults() {
	if o.SegmentSize <= 0 {
		o.SegmentSize = defaultSegmentSize
	}
	if o.MaxBatchBytes <= 0 {
		o.MaxBatchBytes = defaultMaxBatchBytes
	}
	if o.SlowSync <= 0 {
		o.SlowSync = defaultSlowSync
	}
	if o.hooks == nil {
		o.hooks = &testHooks{}
	}
}

// Log is greyhold's write-ahead log: a tidwall/wal log of CRC-checked frames,
// one per group-commit batch. All methods are safe for concurrent use.
type Log struct {
	dir  string
	opts Options
	log  *slog.Logger
	m    *metrics

	// Appenders' side.
	mu       sync.Mutex
	space    sync.Cond // broadcast when the open batch is taken, or on close and failure
	open     *batch    // being filled by appenders
	spare    *batch    // the other buffer, nil while the committer writes it
	inflight *result   // the batch being written, for Sync
	closed   bool
	failed   error // why the log cannot be written; nil when it can
	waiting  int   // appenders held back by MaxBatchBytes

	kick     chan struct{} // an empty batch got its first append
	truncC   chan truncReq
	syncErrC chan error // fsync failures seen outside the committer
	stop     chan struct{}
	wg       sync.WaitGroup

	// Owned by the committer goroutine (by Open before it starts). tl is
	// written under logMu too, and read under it by Replay.
	tl       *tidwall.Log
	tb       tidwall.Batch
	tailSize int64 // bytes in the tail segment, mirroring tidwall's count

	// logMu guards tl for readers and serialises tidwall reads: tidwall's
	// Read updates its segment cache under a read lock, so two concurrent
	// Reads race inside it.
	logMu sync.Mutex

	segMu  sync.Mutex
	segs   []segInfo // the segment files, ascending; the tail's size is tailSize
	dirGen uint64    // bumped whenever a segment file is created

	sy syncState

	first, last  atomic.Uint64
	syncedIndex  atomic.Uint64
	diskBytes    atomic.Int64
	frames       atomic.Uint64
	records      atomic.Uint64
	payloadBytes atomic.Uint64
	writtenBytes atomic.Uint64
	syncs        atomic.Uint64
	repairs      atomic.Uint64

	repaired  RepairReport
	closeOnce sync.Once
	closeErr  error
}

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
func (b *batch) seal() []byte {
	b.buf[0] = frameVersion
	b.buf[1] = 0
	binary.LittleEndian.PutUint32(b.buf[2:headerSize], uint32(b.records))
	b.buf = sealFrame(b.buf, 0)
	return b.buf
}

func (b *batch) reset() {
	b.buf = b.buf[:headerSize]
	b.records = 0
	b.res = nil
}

// Open opens the log in dir, creating it if needed. It first finishes any
// truncation tidwall/wal left half done, then verifies every frame of every
// segment and cuts the log at the first one that does not verify (see
// RepairReport and Repaired), then applies Options.StartIndex, then starts
// the goroutine that writes batches (and, in interval mode, the one that
// fsyncs). The caller must keep other processes out of dir.
func Open(dir string, opts Options) (*Log, error) {
	opts.setDefaults()
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	l := &Log{
		dir:      dir,
		opts:     opts,
		log:      logger.With("component", "wal"),
		open:     newBatch(),
		spare:    newBatch(),
		kick:     make(chan struct{}, 1),
		truncC:   make(chan truncReq),
		syncErrC: make(chan error, 1),
		stop:     make(chan struct{}),
	}
	l.space.L = &l.mu
	m, err := newMetrics(opts.Registerer, l)
	if err != nil {
		return nil, err
	}
	l.m = m
	if err := l.openDir(); err != nil {
		m.unregister()
		return nil, err
	}

	l.wg.Add(1)
	go l.run()
	if opts.Sync.kind == syncInterval {
		tick := opts.hooks.syncTick
		var ticker *time.Ticker
		if tick == nil {
			ticker = time.NewTicker(opts.Sync.Interval())
			tick = ticker.C
		}
		l.wg.Add(1)
		go l.runSyncer(tick, ticker)
	}
	return l, nil
}

// openDir brings dir into shape and opens tidwall on it.
func (l *Log) openDir() error {
	created, err := makeDir(l.dir)
	if err != nil {
		return err
	}
	st, err := repairDir(l.dir)
	if err != nil {
		return fmt.Errorf("open wal %s: %w", l.dir, err)
	}
	l.noteRepair(st)
	l.repaired = st.report

	start := max(l.opts.StartIndex, 1)
	switch {
	case len(st.segs) == 0:
		l.log.Info("starting a new wal", "dir", l.dir, "first_index", start, "created_dir", created)
		if st, err = newLogDir(l.dir, start); err != nil {
			return err
		}
	case l.opts.StartIndex > 0 && st.last+1 < l.opts.StartIndex:
		aside, err := moveAside(l.dir)
		if err != nil {
			return err
		}
		l.log.Warn("wal ends before the snapshot: moved it aside and started a new one",
			"dir", l.dir, "moved_to", aside, "wal_last_index", st.last, "start_index", l.opts.StartIndex,
			"hint", "the wal was lost or replaced since the snapshot was written; the old files are kept for inspection and nothing reads them")
		if st, err = newLogDir(l.dir, start); err != nil {
			return err
		}
	}
	l.logMu.Lock()
	defer l.logMu.Unlock()
	return l.openTidwall(st)
}

// reopen is openDir after a failure: repair what the failed write left, no
// StartIndex. l.logMu must be held, so that Replay waits for the new log
// instead of seeing none.
func (l *Log) reopen() error {
	if hook := l.opts.hooks.reopen; hook != nil {
		if err := hook(); err != nil {
			return err
		}
	}
	if _, err := makeDir(l.dir); err != nil {
		return err
	}
	st, err := repairDir(l.dir)
	if err != nil {
		return err
	}
	l.noteRepair(st)
	if len(st.segs) == 0 {
		next := l.last.Load() + 1
		l.log.Error("wal directory emptied while open: continuing from the next index",
			"dir", l.dir, "first_index", next,
			"hint", "every frame written so far is gone; take a snapshot soon")
		if st, err = newLogDir(l.dir, next); err != nil {
			return err
		}
	}
	return l.openTidwall(st)
}

// openTidwall opens tidwall/wal on a repaired directory and installs it.
// l.logMu must be held.
func (l *Log) openTidwall(st dirState) error {
	tl, err := tidwall.Open(l.dir, &tidwall.Options{
		NoSync:           true, // the committer and the syncer decide when to fsync
		SegmentSize:      l.opts.SegmentSize,
		LogFormat:        tidwall.Binary,
		SegmentCacheSize: 1, // Replay reads segments in order: one is enough
		NoCopy:           true,
		AllowEmpty:       true,
		DirPerms:         dirPerm,
		FilePerms:        filePerm,
	})
	if err != nil {
		return fmt.Errorf("open wal %s: %w", l.dir, err)
	}
	first, _ := tl.FirstIndex()
	last, _ := tl.LastIndex()
	if first != st.first || last != st.last {
		tl.Close()
		return fmt.Errorf("open wal %s: tidwall/wal sees frames %d to %d where the scan found %d to %d",
			l.dir, first, last, st.first, st.last)
	}

	l.tl = tl
	var disk int64
	for _, s := range st.segs {
		disk += s.size
	}
	l.segMu.Lock()
	l.segs = st.segs
	l.segMu.Unlock()
	l.tailSize = st.segs[len(st.segs)-1].size
	l.diskBytes.Store(disk)
	l.first.Store(st.first)
	l.last.Store(st.last)
	l.sy.reset()
	if l.syncedIndex.Load() > st.last {
		l.syncedIndex.Store(st.last)
	}
	return nil
}

// makeDir creates dir if needed, and fsyncs its parent when it did.
func makeDir(dir string) (created bool, err error) {
	if _, err := os.Stat(dir); err == nil {
		return false, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("wal directory: %w", err)
	}
	if err := os.MkdirAll(dir, dirPerm); err != nil {
		return false, fmt.Errorf("create wal directory: %w", err)
	}
	return true, syncDir(filepath.Dir(dir))
}

// newLogDir makes an empty log in dir whose first frame will be first: one
// empty segment file named after it. tidwall/wal's load() takes its first
// index from the first file name and its last from the tail's entry count,
// so that is FirstIndex first and LastIndex first-1.
func newLogDir(dir string, first uint64) (dirState, error) {
	name := segmentName(first)
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_EXCL|os.O_WRONLY, filePerm)
	if err != nil {
		return dirState{}, fmt.Errorf("create segment %s: %w", name, err)
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return dirState{}, fmt.Errorf("create segment %s: %w", name, err)
	}
	if err := syncDir(dir); err != nil {
		return dirState{}, err
	}
	return dirState{segs: []segInfo{{first: first}}, first: first, last: first - 1}, nil
}

// moveAside renames dir to <dir>.old-<unix time> and creates it anew.
func moveAside(dir string) (string, error) {
	clean := filepath.Clean(dir)
	base := clean + ".old-" + strconv.FormatInt(time.Now().Unix(), 10)
	aside := base
	for i := 2; ; i++ {
		if _, err := os.Lstat(aside); errors.Is(err, fs.ErrNotExist) {
			break
		}
		aside = base + "-" + strconv.Itoa(i)
	}
	if err := os.Rename(clean, aside); err != nil {
		return "", fmt.Errorf("move wal directory aside: %w", err)
	}
	if err := os.Mkdir(clean, dirPerm); err != nil {
		return "", fmt.Errorf("create wal directory: %w", err)
	}
	return aside, syncDir(filepath.Dir(clean))
}

// noteRepair logs and counts a repair: one line, warn for a torn tail (what
// a crash leaves), error for damage before it (data loss a crash does not
// explain).
func (l *Log) noteRepair(st dirState) {
	if st.finished {
		l.log.Info("finished an interrupted wal truncation", "dir", l.dir)
	}
	r := st.report
	if !r.Cut() {
		return
	}
	l.repairs.Add(1)
	l.m.repaired(r)
	counts := "exact"
	if !r.Exact {
		counts = "at least"
	}
	args := []any{
		"dir", l.dir, "segment", r.Segment, "offset", r.Offset, "index", r.Index, "reason", r.Err,
		"dropped_frames", r.DroppedFrames, "dropped_records", r.DroppedRecords, "counts", counts,
		"dropped_bytes", r.DroppedBytes, "kept", strings.Join(r.Broken, ","),
	}
	if r.TornTail {
		l.log.Warn("wal tail torn: cut off", append(args,
			"hint", "expected after a crash or power loss; only frames not yet fsynced can have been lost")...)
		return
	}
	l.log.Error("wal damaged before its tail: frames cut off", append(args,
		"hint", "a crash does not explain this: check the disk and the kernel log; the kept copies hold the dropped frames")...)
}

// Repaired reports what Open cut off the log; the zero value if nothing.
func (l *Log) Repaired() RepairReport { return l.repaired }

// FirstIndex is the first frame still in the log; LastIndex()+1 when the log
// is empty.
func (l *Log) FirstIndex() uint64 { return l.first.Load() }

// LastIndex is the last frame written, visible to Replay; 0 for a new log.
func (l *Log) LastIndex() uint64 { return l.last.Load() }

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
		l.waiting++
		l.space.Wait()
		l.waiting--
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
			case <-l.syncErrC:
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
		case err := <-l.syncErrC:
			l.recoverFrom(err)
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
	// or two records. Measured with 64 appenders on 2 cores (interval
	// sync): 2.5 → 28 records a frame, 620k → 960k records/s.
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

// writeFrame writes b as the next frame and syncs it as the mode asks.
func (l *Log) writeFrame(b *batch) error {
	payload := len(b.buf) - headerSize
	frame := b.seal()
	index := l.last.Load() + 1
	if h := l.opts.hooks.write; h != nil {
		if err := h(index); err != nil {
			return fmt.Errorf("write frame %d: %w", index, err)
		}
	}
	// tidwall/wal starts a new segment file before the write if the tail is
	// already over SegmentSize (only possible if it was opened that way), and
	// after it once the tail reaches SegmentSize. Mirroring that rule from
	// the entry size tells us when a file was created, and so when the
	// directory needs an fsync, without listing the directory.
	entry := int64(uvarintLen(len(frame)) + len(frame))
	cycleBefore := l.tailSize > int64(l.opts.SegmentSize)
	l.tb.Clear()
	l.tb.Write(index, frame)
	if err := l.tl.WriteBatch(&l.tb); err != nil {
		return fmt.Errorf("write frame %d to segment %s: %w", index, l.tailName(), err)
	}
	if cycleBefore {
		l.newSegment(index)
	}
	l.tailSize += entry
	if l.tailSize >= int64(l.opts.SegmentSize) {
		l.newSegment(index + 1)
	}
	// Published after the segment table, so a syncer that reads last first
	// and then the tail's name never misses the segment holding last.
	l.last.Store(index)
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

// newSegment records that tidwall created the segment file starting at first.
func (l *Log) newSegment(first uint64) {
	l.segMu.Lock()
	l.segs[len(l.segs)-1].size = l.tailSize
	l.segs = append(l.segs, segInfo{first: first})
	l.dirGen++
	l.segMu.Unlock()
	l.tailSize = 0
}

func (l *Log) tailName() string {
	l.segMu.Lock()
	defer l.segMu.Unlock()
	return l.segs[len(l.segs)-1].name()
}

// recoverFrom handles a failed write or fsync: tidwall's memory no longer
// matches the disk, so the log is closed, repaired and reopened.
func (l *Log) recoverFrom(cause error) {
	l.logMu.Lock()
	defer l.logMu.Unlock()
	if l.tl != nil {
		// Its error says nothing new: the log is being thrown away. When its
		// final fsync fails, tidwall keeps the file open; that descriptor
		// leaks, once per failure.
		_ = l.tl.Close()
		l.tl = nil
	}
	l.reopenAfter(cause)
}

// reopenAfter reopens the log after cause broke it, or marks it failed.
// l.logMu must be held and l.tl closed.
func (l *Log) reopenAfter(cause error) {
	l.log.Error("wal failed: reopening the log", "dir", l.dir, "err", cause,
		"hint", "check free space on the wal's disk and the kernel log for I/O errors")
	if err := l.reopen(); err != nil {
		l.setFailed(err)
	}
}

// setFailed makes appends fail fast until retryReopen succeeds.
func (l *Log) setFailed(err error) {
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
	l.log.Error("wal cannot be reopened: appends fail until it can", "dir", l.dir, "err", err,
		"retry_in", reopenRetry,
		"hint", "check that the disk is not full, that the wal directory exists and is writable by this user, and the kernel log for I/O errors")
}

func (l *Log) retryReopen() {
	l.logMu.Lock()
	err := l.reopen()
	l.logMu.Unlock()
	if err != nil {
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
	l.logMu.Lock()
	// tidwall's Close fsyncs the tail in every mode, SyncNever included;
	// there is no way around it but leaking its descriptor. In the other
	// modes syncNow has left it nothing to flush.
	if cerr := l.tl.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close wal: %w", cerr)
	}
	l.tl = nil
	l.logMu.Unlock()
	l.closeErr = err
}

// Close stops accepting appends, writes and (unless the mode is SyncNever)
// fsyncs everything appended before it, and stops the log's goroutines.
// Appends blocked by backpressure get ErrClosed. Calling it again returns
// the first call's result.
func (l *Log) Close() error {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.closed = true
		l.mu.Unlock()
		l.space.Broadcast()
		close(l.stop)
		l.wg.Wait()
		l.sy.close()
		l.m.unregister()
	})
	return l.closeErr
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

// syncFailed hands an fsync failure to the committer, which reopens the log:
// after a failed fsync the kernel may have dropped the dirty pages, so what
// the file holds is unknown.
func (l *Log) syncFailed(err error) {
	select {
	case l.syncErrC <- err:
	default:
	}
}

// runSyncer fsyncs on the interval. It runs beside the committer and fsyncs
// through its own descriptor, so frames keep being written during an fsync
// and appenders wait only for write(2). Syncing from the committer instead
// would hold every appender for the whole fsync once per interval: harmless
// where an fsync takes 250µs (this project's ext4 test VM, where write(2)
// during a concurrent fsync stayed at 25µs p99, and where both designs
// benchmarked alike even at a 10ms interval, within the VM's noise), but
// tens of milliseconds of stalled answers on a busy or networked disk.
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
				if err := l.syncNow(); err != nil && !errors.Is(err, ErrClosed) {
					l.syncFailed(err)
				}
			}
			if d := l.opts.hooks.syncDone; d != nil {
				d <- struct{}{}
			}
		}
	}
}

// TruncateFront drops the segments whose frames all come before index; the
// caller passes the index its newest snapshot started from, and only once
// that snapshot is durable: until then the dropped frames exist nowhere else.
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
	req := truncReq{index: index, done: make(chan error, 1)}
	l.mu.Lock()
	closed := l.closed
	l.mu.Unlock()
	if closed {
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
// the tail segment back, from the page cache.
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

	l.logMu.Lock()
	defer l.logMu.Unlock()
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
		err = syncDir(l.dir)
	}
	if err == nil {
		err = l.openTidwall(dirState{segs: l.copySegs(), first: keep.first, last: l.last.Load()})
	}
	if err != nil {
		err = fmt.Errorf("truncate wal before frame %d: %w", keep.first, err)
		// The directory is somewhere between the two states: rescan it.
		l.reopenAfter(err)
		return err
	}
	l.log.Info("wal front truncated", "dir", l.dir, "requested_index", index, "first_index", keep.first,
		"segments_removed", len(drop), "bytes_freed", freed)
	return nil
}

// copySegs returns the segment table with the tail's size filled in.
func (l *Log) copySegs() []segInfo {
	l.segMu.Lock()
	defer l.segMu.Unlock()
	segs := append([]segInfo(nil), l.segs...)
	segs[len(segs)-1].size = l.tailSize
	return segs
}

// Replay calls fn for each frame from index from to LastIndex() (as it was
// when Replay started), in order, with its payload, valid only during the
// call, and its record count. It verifies every frame and returns a
// *CorruptionError if one fails. It returns an error wrapping ErrGap if from
// is before FirstIndex(): the frames in between are gone. from beyond
// LastIndex() replays nothing, and from 0 means 1. An error from fn stops
// the replay and is returned wrapped. Replay may run at any time,
// concurrently with Append; concurrent Replays take turns per frame.
func (l *Log) Replay(from uint64, fn func(index uint64, payload []byte, n int) error) error {
	from = max(from, 1)
	last := l.last.Load()
	first := l.first.Load()
	l.mu.Lock()
	closed := l.closed
	l.mu.Unlock()
	if closed {
		return ErrClosed
	}
	if from < first {
		return fmt.Errorf("%w: replay from frame %d, but the log starts at frame %d: frames %d to %d are not in it",
			ErrGap, from, first, from, first-1)
	}
	for index := from; index <= last; index++ {
		data, err := l.read(index)
		if err != nil {
			return err
		}
		payload, n, err := DecodeFrame(data)
		if err != nil {
			return l.corruption(index, err)
		}
		if err := fn(index, payload, n); err != nil {
			return fmt.Errorf("replay frame %d: %w", index, err)
		}
	}
	return nil
}

// read returns frame index from tidwall without copying it.
func (l *Log) read(index uint64) (data []byte, err error) {
	l.logMu.Lock()
	defer l.logMu.Unlock()
	if l.tl == nil {
		l.mu.Lock()
		closed := l.closed
		l.mu.Unlock()
		if closed {
			return nil, ErrClosed
		}
		return nil, l.failedErr()
	}
	defer func() {
		// tidwall indexes its table of a non-tail segment's entries without
		// a bounds check, so a segment file that lost whole entries after
		// Open makes Read panic. That is corruption, reported as such.
		if r := recover(); r != nil {
			data, err = nil, l.corruption(index, corruptf("segment holds fewer frames than its neighbours' names imply (%v)", r))
		}
	}()
	data, err = l.tl.Read(index)
	switch {
	case err == nil:
		return data, nil
	case errors.Is(err, tidwall.ErrCorrupt):
		return nil, l.corruption(index, corruptf("segment framing: %v", err))
	case errors.Is(err, tidwall.ErrNotFound):
		return nil, fmt.Errorf("%w: frame %d was truncated away during the replay", ErrGap, index)
	default:
		return nil, fmt.Errorf("read frame %d: %w", index, err)
	}
}

// corruption locates a bad frame for a CorruptionError. Finding its offset
// means walking the segment: only done once something is already wrong.
func (l *Log) corruption(index uint64, err error) error {
	l.segMu.Lock()
	seg := l.segs[0]
	for _, s := range l.segs {
		if s.first <= index {
			seg = s
		}
	}
	l.segMu.Unlock()
	return &CorruptionError{
		Segment: seg.name(),
		Index:   index,
		Offset:  entryOffset(filepath.Join(l.dir, seg.name()), index-seg.first),
		Err:     err,
	}
}

// entryOffset returns the offset of entry i (from 0) in a segment file, or -1
// if the file cannot be walked that far.
func entryOffset(path string, i uint64) int64 {
	f, err := os.Open(path)
	if err != nil {
		return -1
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return -1
	}
	r := newEntryReader(f, fi.Size(), bufio.NewReaderSize(nil, 64<<10))
	for {
		_, off, err := r.next()
		if err != nil {
			return -1
		}
		if i == 0 {
			return off
		}
		i--
	}
}

// Stats is a snapshot of the log's state and its work since Open.
type Stats struct {
	FirstIndex  uint64 // first frame in the log; LastIndex+1 when empty
	LastIndex   uint64 // last frame written
	SyncedIndex uint64 // last frame this process knows is fsynced (0: none yet)

	Frames       uint64 // frames written since Open
	Records      uint64 // records in them
	PayloadBytes uint64 // payload bytes in them
	WrittenBytes uint64 // bytes written to segment files, framing included
	Syncs        uint64 // fsyncs of segment files (directory fsyncs not counted)

	Segments  int   // segment files
	DiskBytes int64 // bytes in them

	Repairs uint64 // times the log was cut, at Open or after a failed write
	Failed  bool   // appends fail until the log can be reopened
}

// Stats returns the log's counters; cheap enough to call per scrape.
func (l *Log) Stats() Stats {
	l.segMu.Lock()
	segments := len(l.segs)
	l.segMu.Unlock()
	l.mu.Lock()
	failed := l.failed != nil
	l.mu.Unlock()
	return Stats{
		FirstIndex:   l.first.Load(),
		LastIndex:    l.last.Load(),
		SyncedIndex:  l.syncedIndex.Load(),
		Frames:       l.frames.Load(),
		Records:      l.records.Load(),
		PayloadBytes: l.payloadBytes.Load(),
		WrittenBytes: l.writtenBytes.Load(),
		Syncs:        l.syncs.Load(),
		Segments:     segments,
		DiskBytes:    l.diskBytes.Load(),
		Repairs:      l.repairs.Load(),
		Failed:       failed,
	}
}
