package wal

import (
	"crypto/rand"
	"encoding/binary"
	"log/slog"
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
	// inside WriteBatch (4-10ms committer pauses, a few per segment), and the
	// slice allocates about five bytes per byte written over its life. A
	// smaller size shortens the pauses, for more fsyncs.
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

	// checkInterval is how often a log that never fsyncs (SyncNever) checks
	// that its tail file is still the one it writes; the other modes check
	// at every fsync.
	checkInterval = time.Second

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
	// the index the newest snapshot started from. Damage to frames before it
	// costs nothing and is reported as covered. If the log ends before it
	// (LastIndex()+1 < StartIndex), the log was lost or replaced: Open moves
	// the directory aside to <dir>.old-<unix time> and starts an empty log
	// whose first frame will be StartIndex. A new log starts at StartIndex.
	StartIndex uint64
	// KeyID identifies the key the caller's records are made with; every
	// frame carries it. Open refuses a log holding frames with another
	// (ErrForeignKey): replaying records keyed by another secret would fill
	// memory with state no request can match. 0 turns the check off.
	KeyID uint32
	// MustExist says the caller knows this log was made before (its data
	// directory records having one). An empty or missing directory is then
	// a lost log: Open still starts a new one, so that mail keeps flowing,
	// but logs an error and reports it in Repaired().Missing.
	MustExist bool
	// OnLoss, if set, is called (from the log's own goroutine; it must not
	// block) when frames this process wrote were lost while it ran: the
	// tail file was deleted, truncated or replaced under it. The caller's
	// memory still holds their changes, so a snapshot taken at once makes
	// the loss good.
	OnLoss func(Loss)
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
	syncTick  <-chan time.Time         // replaces the interval syncer's (or checker's) ticker
	syncDone  chan<- struct{}          // told when the syncer has handled a tick
	retryTick <-chan time.Time         // replaces the reopen-retry ticker
	write     func(index uint64) error // runs before each frame write; an error fails it
	reopen    func() error             // runs before each reopen; an error fails it
	gen       func() uint32            // replaces the random generation
	now       func() int64             // replaces the frame time (unix milliseconds)
	held      func()                   // runs, under mu, when backpressure holds an appender back
	free      func() int64             // replaces the file system's free space
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

// Log is greyhold's write-ahead log: tidwall/wal segment files of
// CRC-checked frames, one per group-commit batch. All methods are safe for
// concurrent use.
//
// Goroutines: appenders (Append), the committer (run: the only writer of
// the files and of tidwall), the syncer (runSyncer: fsyncs, and checks the
// tail file), and readers (Cursor, Replay), which read segment files
// through their own descriptors.
//
// Locks, each held briefly, never while waiting for another goroutine:
// sy.mu may be held while taking segMu; mu and pinMu are never held with
// another lock.
type Log struct {
	dir  string
	opts Options
	log  *slog.Logger
	m    *metrics

	// Appenders' side, under mu.
	mu       sync.Mutex
	space    sync.Cond // broadcast when the open batch is taken, or on close and failure
	open     *batch    // being filled by appenders
	spare    *batch    // the other buffer, nil while the committer writes it
	inflight *result   // the batch being written, for Sync
	closed   bool
	failed   error // why the log cannot be written; nil when it can

	kick     chan struct{} // an empty batch got its first append
	truncC   chan truncReq
	syncErrC chan syncErr // fsync failures and tail-file checks seen outside the committer
	stop     chan struct{}
	wg       sync.WaitGroup

	// Owned by the committer goroutine (by Open before it starts).
	tl       *tidwall.Log
	tb       tidwall.Batch
	tailSize int64  // bytes in the tail segment, mirroring tidwall's count
	gen      uint32 // generation stamped on the frames written now
	ownFrom  uint64 // the first frame this process wrote, or will

	// segMu guards the segment table, which readers and the syncer use to
	// find files, and the wait channel of readers that caught up.
	segMu  sync.Mutex
	segs   []segInfo // the segment files, ascending; the tail's size is kept current
	dirGen uint64    // bumped whenever a segment file is created
	eras   []Era     // generations in the log, oldest first
	caught chan struct{}

	pinMu sync.Mutex
	pins  map[*Pin]struct{}

	sy syncState

	first, last  atomic.Uint64
	syncedIndex  atomic.Uint64
	diskBytes    atomic.Int64
	curGen       atomic.Uint32
	frames       atomic.Uint64
	records      atomic.Uint64
	payloadBytes atomic.Uint64
	writtenBytes atomic.Uint64
	syncs        atomic.Uint64
	repairs      atomic.Uint64
	lostFrames   atomic.Uint64
	skippedBytes atomic.Uint64

	repaired  RepairReport
	closeOnce sync.Once
	closeErr  error
}

// segInfo is one segment file of the open log.
type segInfo struct {
	first uint64 // index of its first frame, and its name
	size  int64  // bytes on disk
}

func (s segInfo) name() string { return segmentName(s.first) }

// Era is a run of frames written under one generation: from First to the
// frame before the next era's First (or the log's last frame).
type Era struct {
	Gen   uint32
	First uint64
}

// Open opens the log in dir, creating it if needed. It first finishes any
// truncation tidwall/wal left half done, then verifies every frame of every
// segment, cuts a torn tail, skips and reports damage elsewhere (see
// RepairReport), applies Options.StartIndex, takes a new generation, and
// starts the goroutine that writes batches and the one that fsyncs and
// watches the tail file. The caller must keep other processes out of dir.
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
		syncErrC: make(chan syncErr, 1),
		stop:     make(chan struct{}),
		pins:     map[*Pin]struct{}{},
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
	tick := opts.hooks.syncTick
	var ticker *time.Ticker
	if tick == nil {
		every := checkInterval
		if opts.Sync.kind == syncInterval {
			every = opts.Sync.Interval()
		}
		ticker = time.NewTicker(every)
		tick = ticker.C
	}
	l.wg.Add(1)
	go l.runSyncer(tick, ticker)
	return l, nil
}

// newGen picks the generation of the frames about to be written: random,
// non-zero, and none the log holds already, so that (generation, index)
// never names two different frames of one log, even when a torn tail cut
// after a crash lets an index be written again.
func (l *Log) newGen() uint32 {
	for {
		var g uint32
		if h := l.opts.hooks.gen; h != nil {
			g = h()
		} else {
			var b [4]byte
			_, _ = rand.Read(b[:]) // never fails on Linux
			g = binary.LittleEndian.Uint32(b[:])
		}
		if g == 0 {
			continue
		}
		used := false
		for _, e := range l.eras {
			used = used || e.Gen == g
		}
		if !used {
			return g
		}
	}
}

// startEra makes gen the generation of frames from index first on. The
// committer calls it; segMu is taken here.
func (l *Log) startEra(gen uint32, first uint64) {
	l.gen = gen
	l.curGen.Store(gen)
	l.segMu.Lock()
	if n := len(l.eras); n > 0 && l.eras[n-1].First >= first {
		// The last era never got a frame: the new one replaces it.
		l.eras = l.eras[:n-1]
	}
	l.eras = append(l.eras, Era{Gen: gen, First: first})
	l.segMu.Unlock()
}

// Eras returns the generations of the frames in the log, oldest first; the
// last one is the generation being written. A replicator that knows the
// last (generation, index) it shipped finds where to go on from here.
func (l *Log) Eras() []Era {
	l.segMu.Lock()
	defer l.segMu.Unlock()
	first := l.first.Load()
	var out []Era
	for i, e := range l.eras {
		if i+1 < len(l.eras) && l.eras[i+1].First <= first {
			continue // wholly truncated away
		}
		out = append(out, e)
	}
	return out
}

// Generation is the generation stamped on frames written now.
func (l *Log) Generation() uint32 { return l.curGen.Load() }

// Repaired reports what Open found wrong and did about it; the zero value
// if nothing.
func (l *Log) Repaired() RepairReport { return l.repaired }

// FirstIndex is the first frame still in the log; LastIndex()+1 when the log
// is empty.
func (l *Log) FirstIndex() uint64 { return l.first.Load() }

// LastIndex is the last frame written, visible to readers; 0 for a new log.
func (l *Log) LastIndex() uint64 { return l.last.Load() }

// Stats is a snapshot of the log's state and its work since Open.
type Stats struct {
	FirstIndex  uint64 // first frame in the log; LastIndex+1 when empty
	LastIndex   uint64 // last frame written
	SyncedIndex uint64 // last frame this process knows is fsynced (0: none yet)
	Generation  uint32 // generation of the frames being written
	PinnedIndex uint64 // lowest index a Pin holds (0: none); TruncateFront keeps it

	Frames       uint64 // frames written since Open
	Records      uint64 // records in them
	PayloadBytes uint64 // payload bytes in them
	WrittenBytes uint64 // bytes written to segment files, framing included
	Syncs        uint64 // fsyncs of segment files (directory fsyncs not counted)

	Segments  int   // segment files
	DiskBytes int64 // bytes in them

	Repairs      uint64 // times the log was cut, skipped damage, or reopened after a failure
	LostFrames   uint64 // frames known lost since Open: at Open after the start index, or while running
	SkippedBytes uint64 // bytes of damage skipped by readers since Open
	Failed       bool   // appends fail until the log can be reopened
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
		Generation:   l.curGen.Load(),
		PinnedIndex:  l.pinned(),
		Frames:       l.frames.Load(),
		Records:      l.records.Load(),
		PayloadBytes: l.payloadBytes.Load(),
		WrittenBytes: l.writtenBytes.Load(),
		Syncs:        l.syncs.Load(),
		Segments:     segments,
		DiskBytes:    l.diskBytes.Load(),
		Repairs:      l.repairs.Load(),
		LostFrames:   l.lostFrames.Load(),
		SkippedBytes: l.skippedBytes.Load(),
		Failed:       failed,
	}
}

// Close stops accepting appends, writes and (unless the mode is SyncNever)
// fsyncs everything appended before it, and stops the log's goroutines.
// Appends blocked by backpressure get ErrClosed, and so do readers waiting
// for frames. Calling it again returns the first call's result.
func (l *Log) Close() error {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.closed = true
		l.mu.Unlock()
		l.space.Broadcast()
		close(l.stop)
		l.wg.Wait()
		l.sy.close()
		l.wakeReaders()
		l.m.unregister()
	})
	return l.closeErr
}

func (l *Log) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}
