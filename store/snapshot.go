package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/greyhold/greyhold/snapshot"
)

// Snapshot writes a snapshot now, then drops what it made redundant: older
// snapshots beyond SnapshotsKept and the log segments before the oldest one
// kept. Checks go on meanwhile; one snapshot runs at a time.
func (s *Store) Snapshot() (SnapshotInfo, error) {
	return s.snapshotCtx(context.Background())
}

// snapshotCtx is Snapshot abandoned when ctx ends: the file is removed
// unwritten and the error wraps ctx's. It looks at ctx between shards
// and before the commit, so it gives up within a shard's rows; a write
// the disk does not finish it cannot interrupt.
func (s *Store) snapshotCtx(ctx context.Context) (SnapshotInfo, error) {
	s.snapMu.Lock()
	defer s.snapMu.Unlock()
	if s.snapClosed {
		return SnapshotInfo{}, ErrClosed
	}
	info, err := s.snapshot(ctx)
	if err != nil {
		if ctx.Err() == nil || !errors.Is(err, ctx.Err()) {
			s.snapFailed.Add(1)
		}
		return info, err
	}
	return info, nil
}

func (s *Store) snapshot(ctx context.Context) (SnapshotInfo, error) {
	if err := ctx.Err(); err != nil {
		return SnapshotInfo{}, fmt.Errorf("snapshot not begun: %w", err)
	}
	start := time.Now()
	// Every frame up to this index was applied in memory before it was
	// written (the engine changes first, the log follows), so the rows
	// copied below hold it. Frames after it are replayed; applying one the
	// snapshot already holds changes nothing.
	var state []byte
	if s.snapState != nil {
		state = s.snapState()
	}
	ws := s.wal.Stats()
	index := ws.LastIndex
	dir := filepath.Join(s.dir, snapDirName)
	w, err := snapshot.Create(dir, snapshot.Header{
		WALIndex:   index,
		Created:    s.clock.Now().Time(),
		SecretID:   s.secretID,
		KeyOptions: []byte(s.keys),
	}, snapshot.WriterOptions{})
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("create snapshot: %w", err)
	}
	defer w.Abort()

	if err := w.BeginTable(tableTriplets, 2); err != nil {
		return SnapshotInfo{}, err
	}
	var keys []uint64
	var first, word []uint32
	var triplets int64
	for i := range s.eng.Shards() {
		if h := s.opts.snapshotShard; h != nil {
			h(ctx, i)
		}
		if err := ctx.Err(); err != nil {
			return SnapshotInfo{}, fmt.Errorf("snapshot abandoned at shard %d of %d: %w", i, s.eng.Shards(), err)
		}
		keys, first, word = s.eng.ExportShard(i, keys[:0], first[:0], word[:0])
		triplets += int64(len(keys))
		if err := w.WriteRows(keys, first, word); err != nil {
			return SnapshotInfo{}, fmt.Errorf("write snapshot: %w", err)
		}
	}
	if err := w.EndTable(); err != nil {
		return SnapshotInfo{}, err
	}
	if err := w.BeginTable(tableClients, 4); err != nil {
		return SnapshotInfo{}, err
	}
	var cols [4][]uint32
	for i := range s.eng.Shards() {
		if err := ctx.Err(); err != nil {
			return SnapshotInfo{}, fmt.Errorf("snapshot abandoned in the client table: %w", err)
		}
		for c := range cols {
			cols[c] = cols[c][:0]
		}
		keys, cols = s.eng.ExportClients(i, keys[:0], cols)
		if err := w.WriteRows(keys, cols[:]...); err != nil {
			return SnapshotInfo{}, fmt.Errorf("write snapshot: %w", err)
		}
	}
	if err := w.EndTable(); err != nil {
		return SnapshotInfo{}, err
	}
	if err := w.WriteBlob(blobRules, s.eng.ExportRules()); err != nil {
		return SnapshotInfo{}, err
	}
	if resets := s.eng.ExportResets(); len(resets) > 0 {
		if err := w.WriteBlob(blobResets, resets); err != nil {
			return SnapshotInfo{}, err
		}
	}
	if state != nil {
		if err := w.WriteBlob(blobState, state); err != nil {
			return SnapshotInfo{}, err
		}
	}
	if err := ctx.Err(); err != nil {
		return SnapshotInfo{}, fmt.Errorf("snapshot abandoned before its commit: %w", err)
	}
	written, err := w.Commit()
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("commit snapshot: %w", err)
	}
	s.snapBytes.Store(ws.PayloadBytes)
	info := SnapshotInfo{
		Path:     written.Path,
		WALIndex: index,
		At:       time.Now(),
		Duration: time.Since(start),
		Bytes:    written.Size,
		Triplets: triplets,
	}
	s.lastSnap.Store(&info)

	// Retention: the log is cut only behind the oldest snapshot kept, and
	// only now that the new one is durable.
	if _, err := snapshot.Prune(dir, s.opts.SnapshotsKept); err != nil {
		s.log.Warn("could not remove old snapshots", "dir", dir, "err", err)
	}
	kept, err := snapshot.List(dir)
	if err == nil && len(kept) > 0 {
		oldest := kept[len(kept)-1].Header.WALIndex
		if err := s.wal.TruncateFront(oldest + 1); err != nil {
			s.log.Warn("could not drop log segments covered by snapshots; they are kept and replayed harmlessly", "err", err)
		}
	}
	s.log.Info("snapshot written", "path", info.Path, "wal_index", index, "triplets", triplets,
		"bytes", info.Bytes, "duration", info.Duration.Round(time.Millisecond))
	for _, fn := range s.snapHooks {
		fn(info)
	}
	return info, nil
}
