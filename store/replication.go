package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/greyhold/greyhold/snapshot"
)

// Identity is what the nodes of a fleet must share to key alike: the
// secret's id (never the secret) and the key options.
type Identity struct {
	SecretID uint64
	Keys     string
}

// Identity returns this store's.
func (s *Store) Identity() Identity { return Identity{SecretID: s.secretID, Keys: s.keys} }

// SetSnapshotState makes every snapshot from now on carry the bytes fn
// returns, called as the snapshot starts: changes made before the call are
// in the snapshot's rows, later ones may be. Replication keeps its stream
// position there, so that a restart resumes after what the snapshot holds.
// The blob the loaded snapshot carried is Stats().Recovery.State.
func (s *Store) SetSnapshotState(fn func() []byte) {
	s.snapMu.Lock()
	s.snapState = fn
	s.snapMu.Unlock()
}

// OnSnapshot calls fn after each snapshot is written and made durable,
// from the goroutine that wrote it; fn must not block. The file at
// info.Path may be pruned by a later snapshot: open it before handing it
// to slow work.
func (s *Store) OnSnapshot(fn func(SnapshotInfo)) {
	s.snapMu.Lock()
	s.snapHooks = append(s.snapHooks, fn)
	s.snapMu.Unlock()
}

// ImportInfo describes a snapshot merged by ImportSnapshot.
type ImportInfo struct {
	Header   snapshot.Header
	Triplets int64
	Clients  int64
	State    []byte
}

// ErrNotFleet wraps ImportSnapshot's refusal of a snapshot keyed by another
// secret or other key options.
var ErrNotFleet = errors.New("store: snapshot from another fleet")

// ImportSnapshot merges a snapshot file written by another node of the
// fleet into memory, through the same merge as replay: what memory holds
// and what the file holds end in their join, in whatever order. The file
// must carry this store's secret id and key options (the suffix list's
// version apart, as the fleet compares them). Nothing is logged:
// the file is the record, and this store's next snapshot holds the result.
func (s *Store) ImportSnapshot(path string) (ImportInfo, error) {
	v, err := snapshot.Verify(path)
	if err != nil {
		return ImportInfo{}, fmt.Errorf("import snapshot: %w", err)
	}
	if v.Header.SecretID != s.secretID || !sameKeys(v.Header.KeyOptions, s.eng.Options().Keys) {
		return ImportInfo{}, fmt.Errorf("%w: %s has secret id %016x and keys %q, this node %016x and %q",
			ErrNotFleet, path, v.Header.SecretID, v.Header.KeyOptions, s.secretID, s.keys)
	}
	info, state, err := readSnapshotInto(s.eng, path)
	if err != nil {
		return ImportInfo{}, fmt.Errorf("import snapshot %s: %w", path, err)
	}
	return ImportInfo{Header: info.Header, Triplets: info.Tables[tableTriplets], Clients: info.Tables[tableClients], State: state}, nil
}

// TempFile makes a file in the data directory for something on its way in
// (a snapshot being downloaded), named so that no part of the store reads
// it, and removed at the next start if left behind.
func (s *Store) TempFile(pattern string) (*os.File, error) {
	// The snapshot directory's temporary-file names: snapshot.RemoveTemp
	// clears them at start, List never reads them.
	return os.CreateTemp(filepath.Join(s.dir, snapDirName), "snap-incoming-"+strings.ReplaceAll(pattern, "/", "_")+"-*.tmp")
}
