package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/greyhold/greyhold/engine"
	"github.com/greyhold/greyhold/snapshot"
	"github.com/greyhold/greyhold/wal"
	"github.com/greyhold/greyhold/whitelist"
)

// Options configure a Store. Start from DefaultOptions.
type Options struct {
	Engine engine.Options
	// Sync is the log's fsync cadence (default: every second).
	Sync wal.SyncMode
	// SnapshotInterval is how often a snapshot is taken; 0 turns the timer
	// off (snapshots then come from SnapshotLogBytes, Snapshot and Close).
	SnapshotInterval time.Duration
	// SnapshotLogBytes takes a snapshot once the log has grown this much
	// since the last one, which bounds replay at startup; 0 turns it off.
	SnapshotLogBytes int64
	// SnapshotsKept is how many snapshots stay on disk (at least 2, so a
	// corrupt newest one can fall back).
	SnapshotsKept int
	// ExpireInterval is how often the timing wheels advance.
	ExpireInterval time.Duration
	// WALSegmentSize overrides the log's segment size (0: its default).
	WALSegmentSize int
	// NoFinalSnapshot skips the snapshot Close normally writes.
	NoFinalSnapshot bool
	// Clock gives the time for Check; nil means a CoarseClock that Open
	// starts and Close stops.
	Clock engine.Clock
	// Logger gets the store's messages; nil discards them.
	Logger *slog.Logger
	// Registerer gets the log's metrics; nil means none.
	Registerer prometheus.Registerer
	// SecretFile, if set, is where the hash secret is read from, in place
	// of the data directory's secret file; it is never made there. The
	// nodes of a fleet share one secret (README: the fleet).
	SecretFile string
	// OpenLog opens the write-ahead log; nil means wal.Open. Tests hand in
	// a log that fails on command.
	OpenLog func(dir string, o wal.Options) (Log, error)

	// lossSnapshot, if set, is told the outcome of each snapshot taken
	// because the log lost frames.
	lossSnapshot func(SnapshotInfo, error)
	// snapshotShard, if set, runs before a snapshot exports each shard's
	// triplets: a test's slow disk.
	snapshotShard func(ctx context.Context, shard int)
}

// Log is what the store needs of its write-ahead log. *wal.Log is the one
// it opens unless Options.OpenLog says otherwise.
type Log interface {
	// Append logs a payload of n records, returning once it is durable as
	// the sync mode says.
	Append(payload []byte, n int) error
	// Replay reads the frames from an index to the end, in order.
	Replay(from uint64, fn func(wal.Frame) error) error
	// NewCursor follows the log from an index, frames appended while it
	// reads included.
	NewCursor(from uint64) *wal.Cursor
	// Pin holds truncation back at an index.
	Pin(index uint64) *wal.Pin
	// Eras lists the generations of the frames in the log.
	Eras() []wal.Era
	// TruncateFront drops whole segments before an index.
	TruncateFront(index uint64) error
	// Repaired says what opening the log repaired.
	Repaired() wal.RepairReport
	Stats() wal.Stats
	Close() error
}

func openWAL(dir string, o wal.Options) (Log, error) {
	l, err := wal.Open(dir, o)
	if err != nil {
		return nil, err
	}
	return l, nil
}

// DefaultOptions returns postgrey's decisions, the log synced every second,
// a snapshot every 15 minutes or 256 MiB of log, two kept.
func DefaultOptions() Options {
	return Options{
		Engine:           engine.DefaultOptions(),
		Sync:             wal.SyncEvery(time.Second),
		SnapshotInterval: 15 * time.Minute,
		SnapshotLogBytes: 256 << 20,
		SnapshotsKept:    2,
		ExpireInterval:   time.Minute,
	}
}

// ErrNotLogged wraps a failure to log a change: the engine decided and
// changed its memory, but the change may not survive a restart. A server
// answers such a check as if greylisting were off (DUNNO): a lost pass would
// only greylist the sender again, a wrongly kept defer could lose mail.
var ErrNotLogged = errors.New("store: change not logged")

// ErrClosed is what Snapshot returns once the store is closing or closed.
var ErrClosed = errors.New("store: closed")

// Store is the engine behind its log and snapshots. Its methods are safe
// for concurrent use.
type Store struct {
	dir      string
	opts     Options
	base     *slog.Logger // the caller's logger, for the log to add its own component
	log      *slog.Logger
	lock     *os.File
	eng      *engine.Engine
	wal      Log
	clock    engine.Clock
	secretID uint64
	keys     string

	lossC      chan wal.Loss // the log lost frames: snapshot at once
	snapMu     sync.Mutex    // one snapshot at a time
	snapState  func() []byte // under snapMu: SetSnapshotState's
	snapHooks  []func(SnapshotInfo)
	lastSnap   atomic.Pointer[SnapshotInfo]
	snapBytes  atomic.Uint64 // log payload bytes at the last snapshot's start
	snapFailed atomic.Uint64
	notLogged  atomic.Uint64
	recovery   Recovery

	clockBad     atomic.Bool   // the last check's time was implausible (clock.go)
	clockRefused atomic.Uint64 // checks refused for an implausible time

	stop    context.CancelFunc
	done    sync.WaitGroup
	closeMu sync.Mutex
	closed  bool
	// snapClosed, under snapMu, refuses snapshots once Close has written
	// its last: the directory's lock is about to be released.
	snapClosed bool
}

// SnapshotInfo describes the last snapshot this store wrote.
type SnapshotInfo struct {
	Path     string
	WALIndex uint64
	At       time.Time
	Duration time.Duration
	Bytes    int64
	Triplets int64
}

// Recovery describes what Open found and did.
type Recovery struct {
	Snapshot        string // path of the snapshot loaded, "" if none
	SnapshotIndex   uint64
	SnapshotRows    int64
	BrokenSnapshots []string // corrupt snapshots renamed .broken
	Frames          uint64   // log frames replayed
	Records         uint64
	WALRepair       wal.RepairReport
	State           []byte // the loaded snapshot's SetSnapshotState blob; nil if none
	SnapshotTime    time.Duration
	ReplayTime      time.Duration
	SecretCreated   bool
}

// Open opens (or creates) the data directory dir and recovers its state.
func Open(dir string, opts Options) (*Store, error) {
	if opts.SnapshotsKept < 2 {
		opts.SnapshotsKept = 2
	}
	if opts.ExpireInterval <= 0 {
		opts.ExpireInterval = time.Minute
	}
	if err := CheckEngineOptions(opts.Engine); err != nil {
		return nil, fmt.Errorf("store options: %w", err)
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	if opts.OpenLog == nil {
		opts.OpenLog = openWAL
	}
	s := &Store{dir: dir, opts: opts, base: logger, log: logger.With("component", "store"), lossC: make(chan wal.Loss, 1)}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	s.lock = lock
	if err := s.open(); err != nil {
		unlockDir(lock)
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	if opts.Clock != nil {
		s.clock = opts.Clock
	} else {
		s.clock = engine.NewCoarseClock(ctx)
	}
	s.done.Add(1)
	go s.background(ctx)
	return s, nil
}

func (s *Store) open() error {
	existed, err := hasState(s.dir)
	if err != nil {
		return err
	}
	var secret []byte
	var created bool
	secretPath := filepath.Join(s.dir, secretName)
	if s.opts.SecretFile != "" {
		secretPath = s.opts.SecretFile
		secret, _, err = readSecret(s.opts.SecretFile, existed, false)
	} else {
		secret, created, err = loadSecret(s.dir, existed)
	}
	if err != nil {
		return err
	}
	s.recovery.SecretCreated = created
	if created {
		s.log.Info("made a new hash secret; copy it to every MX host that is to share this state", "path", filepath.Join(s.dir, secretName))
	}
	s.secretID = secretID(secret)
	keys, metaExisted, err := checkMeta(s.dir, secretPath, s.opts.Engine.Keys, s.secretID, existed == "", s.log)
	if err != nil {
		return err
	}
	s.opts.Engine.Keys, s.keys = keys, keys.String()
	if !metaExisted && existed != "" {
		s.log.Warn("greyhold.json was missing beside existing state: written again from the options given",
			"dir", s.dir, "state", existed,
			"hint", "the snapshots' key options and the log's key id are still checked against this server's")
	}
	snapDir := filepath.Join(s.dir, snapDirName)
	if err := os.MkdirAll(snapDir, 0o750); err != nil {
		return fmt.Errorf("create snapshot directory: %w", err)
	}
	if err := snapshot.RemoveTemp(snapDir); err != nil {
		s.log.Warn("could not remove a leftover temporary snapshot", "dir", snapDir, "err", err)
	}

	start := time.Now()
	eng, info, err := s.loadSnapshot(secret, snapDir)
	if err != nil {
		return err
	}
	s.eng = eng
	s.recovery.SnapshotTime = time.Since(start)
	from := uint64(1)
	if info != nil {
		from = info.Header.WALIndex + 1
		s.recovery.Snapshot = info.Path
		s.recovery.SnapshotIndex = info.Header.WALIndex
		for _, n := range info.Tables {
			s.recovery.SnapshotRows += n
		}
		s.log.Info("loaded snapshot", "path", info.Path, "wal_index", info.Header.WALIndex,
			"triplets", info.Tables[tableTriplets], "clients", info.Tables[tableClients],
			"duration", s.recovery.SnapshotTime.Round(time.Millisecond))
	}

	start = time.Now()
	l, err := s.opts.OpenLog(filepath.Join(s.dir, walDirName), wal.Options{
		Sync:        s.opts.Sync,
		SegmentSize: s.opts.WALSegmentSize,
		StartIndex:  from,
		KeyID:       keyID(s.secretID),
		MustExist:   metaExisted || info != nil,
		OnLoss:      s.onLoss,
		Logger:      s.base,
		Registerer:  s.opts.Registerer,
	})
	if errors.Is(err, wal.ErrForeignKey) {
		return fmt.Errorf("%w: the log in %s was written with another secret than %s holds (%w); restore the secret file the state was written with, from a backup or another MX host of this fleet",
			ErrIncompatible, filepath.Join(s.dir, walDirName), filepath.Join(s.dir, secretName), err)
	}
	if err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	s.wal = l
	s.recovery.WALRepair = l.Repaired()
	if err := s.replay(from); err != nil {
		l.Close()
		return err
	}
	s.recovery.ReplayTime = time.Since(start)
	st := s.eng.Stats()
	s.log.Info("recovered", "frames", s.recovery.Frames, "records", s.recovery.Records,
		"replay", s.recovery.ReplayTime.Round(time.Millisecond), "triplets", st.Triplets,
		"passed", st.Passed, "pending", st.Pending, "clients", st.Clients, "rules", st.Rules)
	if info != nil {
		s.lastSnap.Store(&SnapshotInfo{Path: info.Path, WALIndex: info.Header.WALIndex, At: info.Header.Created, Bytes: info.Size, Triplets: info.Tables[tableTriplets]})
	}
	s.snapBytes.Store(0)
	return nil
}

// Snapshot table and blob ids.
const (
	tableTriplets = 1
	tableClients  = 2
	blobRules     = 3
	blobState     = 4 // SetSnapshotState's blob, opaque here
	// blobResets holds the states of reset generations as records
	// (engine.ExportResets): an older version skips a blob it does not
	// know, as it skips their records in the log.
	blobResets = 5
)

// readSnapshotInto merges a snapshot file's rows and rules into eng and
// returns what Read found and the file's state blob, if any.
func readSnapshotInto(eng *engine.Engine, path string) (snapshot.Info, []byte, error) {
	var state []byte
	info, err := snapshot.Read(path, snapshot.Visitor{
		Rows: func(table uint8, keys []uint64, cols [][]uint32) error {
			switch table {
			case tableTriplets:
				if len(cols) != 2 {
					return fmt.Errorf("triplet table with %d columns", len(cols))
				}
				return eng.ImportTriplets(keys, cols[0], cols[1])
			case tableClients:
				return eng.ImportClients(keys, cols)
			}
			return nil // a table a newer version added
		},
		Blob: func(id uint8, data []byte) error {
			switch id {
			case blobRules, blobResets:
				_, err := eng.Apply(data)
				return err
			case blobState:
				state = append([]byte(nil), data...)
			}
			return nil
		},
	})
	return info, state, err
}

// loadSnapshot loads the newest snapshot that reads back whole into a fresh
// engine, renaming corrupt ones .broken on the way.
func (s *Store) loadSnapshot(secret []byte, dir string) (*engine.Engine, *snapshot.Info, error) {
	infos, err := snapshot.List(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("list snapshots: %w", err)
	}
	for _, info := range infos {
		eng, err := engine.New(s.opts.Engine, secret)
		if err != nil {
			return nil, nil, err
		}
		if info.Err == nil {
			if !sameKeys(info.Header.KeyOptions, s.opts.Engine.Keys) || info.Header.SecretID != s.secretID {
				return nil, nil, fmt.Errorf("%w: snapshot %s was written with keys %q and secret id %016x, this server has %q and %016x",
					ErrIncompatible, info.Path, info.Header.KeyOptions, info.Header.SecretID, s.keys, s.secretID)
			}
			read, state, rerr := readSnapshotInto(eng, info.Path)
			if err = rerr; err == nil {
				s.recovery.State = state
				return eng, &read, nil
			}
			if !errors.Is(err, snapshot.ErrCorrupt) && !errors.Is(err, engine.ErrBadRecord) {
				return nil, nil, fmt.Errorf("read snapshot %s: %w", info.Path, err)
			}
		} else {
			err = info.Err
			// Only a corrupt file is set aside. One from a newer format
			// or one the system could not read is intact: moving it away
			// would lose the state it holds, since the log behind it was
			// truncated.
			if !errors.Is(err, snapshot.ErrCorrupt) {
				return nil, nil, fmt.Errorf("snapshot %s cannot be read, and is not corrupt, so it is left in place: %w (run the greyhold that wrote it, or fix the disk or permissions, then start again)", info.Path, err)
			}
		}
		broken, merr := snapshot.MarkBroken(info.Path)
		if merr != nil {
			return nil, nil, fmt.Errorf("snapshot %s is corrupt (%v) and could not be set aside: %w", info.Path, err, merr)
		}
		s.recovery.BrokenSnapshots = append(s.recovery.BrokenSnapshots, broken)
		s.log.Warn("snapshot is corrupt; falling back to the one before it and replaying the log from there",
			"path", info.Path, "moved_to", broken, "err", err)
	}
	eng, err := engine.New(s.opts.Engine, secret)
	return eng, nil, err
}

func (s *Store) replay(from uint64) error {
	err := s.wal.Replay(from, func(f wal.Frame) error {
		if _, err := s.eng.Apply(f.Payload); err != nil {
			return fmt.Errorf("frame %d: %w", f.Index, err)
		}
		s.recovery.Frames++
		s.recovery.Records += uint64(f.Records)
		return nil
	})
	if err != nil {
		return fmt.Errorf("replay log: %w", err)
	}
	return nil
}

// onLoss is the log's word that frames it wrote are gone from the disk. The
// engine still holds their changes, so a snapshot now makes the loss good;
// the background loop takes it, since the log calls from its committer.
func (s *Store) onLoss(l wal.Loss) {
	select {
	case s.lossC <- l:
	default: // a snapshot is already due
	}
}

// background advances the wheels and takes scheduled snapshots.
func (s *Store) background(ctx context.Context) {
	defer s.done.Done()
	expire := time.NewTicker(s.opts.ExpireInterval)
	defer expire.Stop()
	// The log size is looked at often; the interval timer is checked on the
	// same tick against the time of the last snapshot.
	check := time.NewTicker(5 * time.Second)
	defer check.Stop()
	lastSnap := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case l := <-s.lossC:
			s.log.Error("writing a snapshot at once: the log lost frames, which memory still holds",
				"first_lost", l.First, "last_lost", l.Last, "cause", l.Cause)
			lastSnap = time.Now()
			info, err := s.snapshotCtx(ctx)
			if err != nil {
				s.log.Error("the snapshot after the log's loss failed: a restart now would lose those changes",
					"err", err, "hint", "check the data directory's disk; the next scheduled snapshot tries again")
			}
			if s.opts.lossSnapshot != nil {
				s.opts.lossSnapshot(info, err)
			}
		case <-expire.C:
			// A wrong clock far ahead would expire everything.
			if now := s.clock.Now(); !Plausible(now) {
				continue
			} else if n := s.eng.Expire(now); n > 0 {
				s.log.Debug("expired entries", "count", n)
			}
		case <-check.C:
			// Often enough that the defers sampled for TopDeferred fit
			// the engine's ring in between.
			s.eng.DrainTop()
			due := s.opts.SnapshotInterval > 0 && time.Since(lastSnap) >= s.opts.SnapshotInterval
			grown := s.opts.SnapshotLogBytes > 0 && s.wal.Stats().PayloadBytes-s.snapBytes.Load() >= uint64(s.opts.SnapshotLogBytes)
			if !due && !grown {
				continue
			}
			lastSnap = time.Now()
			if _, err := s.snapshotCtx(ctx); err != nil && ctx.Err() == nil {
				s.log.Error("scheduled snapshot failed; the log keeps every change, so nothing is lost, but recovery grows longer until one succeeds",
					"err", err)
			}
		}
	}
}

// ApplyRemote applies records that another node logged, through the same
// path as replay: records carry resulting values, so they merge with what
// memory holds in any order and any number of times. They change memory
// only and are not logged here: the node that made them logged them, and
// replication keeps its own position in its stream (in the snapshots, see
// SnapshotState), so after a restart it applies them again from there.
func (s *Store) ApplyRemote(payload []byte) (int, error) {
	return s.eng.Apply(payload)
}

// Follow returns a cursor on the store's log from frame index from: the
// frames this node wrote, including those written while the cursor reads.
// The caller closes it.
func (s *Store) Follow(from uint64) *wal.Cursor { return s.wal.NewCursor(from) }

// HoldLog pins the log at index: snapshots then truncate it no further,
// so frames not yet shipped elsewhere stay. Release the pin when done.
func (s *Store) HoldLog(index uint64) *wal.Pin { return s.wal.Pin(index) }

// LogEras returns the generations of the frames in the log (wal.Log.Eras).
func (s *Store) LogEras() []wal.Era { return s.wal.Eras() }

// Engine returns the engine, for read-only use (lookups, stats, options).
// Changes must go through the Store so they are logged.
func (s *Store) Engine() *engine.Engine { return s.eng }

// Now returns the store's clock.
func (s *Store) Now() engine.Time { return s.clock.Now() }

// Check decides one request now.
func (s *Store) Check(req *engine.Request) (engine.Decision, error) {
	return s.CheckAt(s.clock.Now(), req)
}

// CheckAt decides one request at time now and logs what it changed before
// returning. An error wrapping ErrNotLogged comes with a valid decision
// that must not be relied on; engine errors (a bad address, no recipient)
// come with none, and nothing changed.
func (s *Store) CheckAt(now engine.Time, req *engine.Request) (engine.Decision, error) {
	var ch engine.Changes
	return s.checkAt(now, req, &ch)
}

// checkAt is CheckAt with the caller's Changes, so a crash test can see the
// records it had acknowledged.
func (s *Store) checkAt(now engine.Time, req *engine.Request, ch *engine.Changes) (engine.Decision, error) {
	if err := s.checkClock(now, 1); err != nil {
		return engine.Decision{}, err
	}
	d, err := s.eng.Check(now, req, ch)
	if err != nil {
		return d, err
	}
	if ch.Count() > 0 {
		if err := s.wal.Append(ch.Bytes(), ch.Count()); err != nil {
			s.notLogged.Add(1)
			return d, fmt.Errorf("%w: %w", ErrNotLogged, err)
		}
	}
	return d, nil
}

// Result is one answer of CheckBatch: a decision, or the error Check would
// have returned.
type Result = engine.Result

var batchBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// CheckBatch decides many requests at time now with one log append for all
// their changes, for pipelined and batched callers. It appends one Result a
// request to out and returns it.
func (s *Store) CheckBatch(now engine.Time, reqs []engine.Request, out []Result) []Result {
	base := len(out)
	out = slices.Grow(out, len(reqs))[:base+len(reqs)]
	res := out[base:]
	if err := s.checkClock(now, len(reqs)); err != nil {
		for i := range res {
			res[i] = Result{Err: err}
		}
		return out
	}
	bp := batchBufs.Get().(*[]byte)
	buf, n := s.eng.CheckBatch(now, reqs, res, (*bp)[:0])
	if n > 0 {
		if err := s.wal.Append(buf, n); err != nil {
			s.notLogged.Add(1)
			err = fmt.Errorf("%w: %w", ErrNotLogged, err)
			for i := range res {
				if res[i].Err == nil {
					res[i].Err = err
				}
			}
		}
	}
	*bp = buf
	batchBufs.Put(bp)
	return out
}

// SetRule adds (present) or removes a whitelist rule, logged before it
// returns. changed is false when the rule already was in that state.
func (s *Store) SetRule(r engine.Rule, present bool) (changed bool, err error) {
	return s.SetRuleFor(r, present, 0)
}

// SetStaticWhitelist puts w in force as the static whitelist (the files
// an operator keeps), replacing the one before. It is not logged: the
// files are read again at every start.
func (s *Store) SetStaticWhitelist(w *whitelist.Set) { s.eng.SetStatic(w) }

// Rules lists the whitelist rules in force.
func (s *Store) Rules() []engine.RuleInfo { return s.eng.RulesAt(s.clock.Now()) }

// Stats gathers the engine's, the log's and the store's own figures.
type Stats struct {
	Engine           engine.Stats
	WAL              wal.Stats
	LastSnapshot     *SnapshotInfo
	SnapshotFailures uint64
	NotLogged        uint64
	Recovery         Recovery
	// ClockImplausible is set while checks are refused for an implausible
	// time (ErrClock); ClockRefused counts them.
	ClockImplausible bool
	ClockRefused     uint64
}

// Stats returns a fresh Stats.
func (s *Store) Stats() Stats {
	return Stats{
		Engine:           s.eng.Stats(),
		WAL:              s.wal.Stats(),
		LastSnapshot:     s.lastSnap.Load(),
		SnapshotFailures: s.snapFailed.Load(),
		NotLogged:        s.notLogged.Load(),
		Recovery:         s.recovery,
		ClockImplausible: s.clockBad.Load(),
		ClockRefused:     s.clockRefused.Load(),
	}
}

// Dir returns the data directory.
func (s *Store) Dir() string { return s.dir }

// Close stops the background work, writes a final snapshot (so the next
// start replays nothing), syncs and closes the log and releases the
// directory. It is safe to call twice.
func (s *Store) Close() error {
	_, err := s.CloseContext(context.Background())
	return err
}

// CloseContext is Close with the final snapshot bounded by ctx: one not
// written when ctx ends is abandoned, its file removed, and abandoned is
// true. That loses nothing: the log holds every change since the last
// snapshot, and the next start replays it. The log is closed all the same,
// which ctx does not bound (its last fsync, normally milliseconds).
func (s *Store) CloseContext(ctx context.Context) (abandoned bool, err error) {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.closed {
		return false, nil
	}
	s.closed = true
	s.stop()
	s.done.Wait()
	var errs []error
	if !s.opts.NoFinalSnapshot {
		start := time.Now()
		_, err := s.snapshotCtx(ctx)
		switch {
		case err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()):
			abandoned = true
			ws := s.wal.Stats()
			since := uint64(0)
			if ls := s.lastSnap.Load(); ls != nil {
				since = ls.WALIndex
			}
			s.log.Warn("final snapshot abandoned: the stop ran out of time; nothing is lost, the log holds every change and the next start replays it",
				"after", time.Since(start).Round(time.Millisecond), "err", err, "log_frames_to_replay", ws.LastIndex-since,
				"hint", "raise --shutdown-timeout if stops should end with a snapshot (a start then replays nothing)")
		case err != nil:
			errs = append(errs, fmt.Errorf("final snapshot: %w", err))
		}
	}
	s.snapMu.Lock()
	s.snapClosed = true
	s.snapMu.Unlock()
	if err := s.wal.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close log: %w", err))
	}
	if err := unlockDir(s.lock); err != nil {
		errs = append(errs, fmt.Errorf("unlock: %w", err))
	}
	return abandoned, errors.Join(errs...)
}
