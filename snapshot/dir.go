package snapshot

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/greyhold/greyhold/internal/durable"
)

const (
	namePrefix    = "snap-"
	nameSuffix    = ".zst"
	nameDigits    = 20 // math.MaxUint64 has 20 decimal digits
	tmpSuffix     = ".tmp"
	brokenSuffix  = ".broken"
	fileNameWidth = len(namePrefix) + nameDigits + len(nameSuffix)
)

// FileName returns the name of the snapshot taken at walIndex:
// snap-<index as 20 zero-padded digits>.zst, so that names sort as the
// indexes do.
func FileName(walIndex uint64) string {
	return fmt.Sprintf("%s%0*d%s", namePrefix, nameDigits, walIndex, nameSuffix)
}

// parseName returns the WAL index of a snapshot file name, or false for
// any other name (temporary, broken, foreign).
func parseName(name string) (uint64, bool) {
	if len(name) != fileNameWidth || !strings.HasPrefix(name, namePrefix) || !strings.HasSuffix(name, nameSuffix) {
		return 0, false
	}
	digits := name[len(namePrefix) : len(namePrefix)+nameDigits]
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	idx, err := strconv.ParseUint(digits, 10, 64)
	return idx, err == nil
}

// scan returns the snapshot files of dir with their indexes, newest first.
func scan(dir string) (names []string, idxs []uint64, err error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, err
	}
	type named struct {
		name string
		idx  uint64
	}
	var found []named
	for _, de := range des {
		if idx, ok := parseName(de.Name()); ok && de.Type().IsRegular() {
			found = append(found, named{de.Name(), idx})
		}
	}
	slices.SortFunc(found, func(a, b named) int { return cmp.Compare(b.idx, a.idx) })
	for _, n := range found {
		names = append(names, n.name)
		idxs = append(idxs, n.idx)
	}
	return names, idxs, nil
}

// List returns the snapshots in dir, newest first: by WAL index, then by
// creation time. It reads and checks only the header and directory of each
// file (their own checksums and bounds), not the body, so a listed file can
// still fail Read. Temporary files, .broken files and other names are
// ignored. A snapshot that cannot be read is listed anyway with Info.Err
// set (ErrCorrupt, ErrVersion or an I/O error), so the caller can see it and
// MarkBroken it; one whose header disagrees with its name is ErrCorrupt.
func List(dir string) ([]Info, error) {
	names, idxs, err := scan(dir)
	if err != nil {
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	infos := make([]Info, 0, len(names))
	for i, name := range names {
		infos = append(infos, stat(filepath.Join(dir, name), idxs[i]))
	}
	slices.SortStableFunc(infos, func(a, b Info) int {
		if c := cmp.Compare(b.Header.WALIndex, a.Header.WALIndex); c != 0 {
			return c
		}
		return b.Header.Created.Compare(a.Header.Created)
	})
	return infos, nil
}

func stat(path string, idx uint64) Info {
	info := Info{Path: path}
	f, err := os.Open(path)
	if err != nil {
		info.Header.WALIndex, info.Err = idx, err
		return info
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		info.Header.WALIndex, info.Err = idx, err
		return info
	}
	info, _, err = readMeta(f, path, st.Size())
	if err == nil && info.Header.WALIndex != idx {
		err = corruptf("named for WAL index %d, header says %d", idx, info.Header.WALIndex)
	}
	if err != nil {
		info.Header.WALIndex = idx
		info.Err = fmt.Errorf("snapshot %s: %w", path, err)
	}
	return info
}

// MarkBroken renames a snapshot that failed to read to <path>.broken,
// replacing an older file of that name, so List and Prune pass it over
// while it stays on disk for inspection. Prune does not remove .broken
// files. It syncs the directory and returns the new path.
func MarkBroken(path string) (string, error) {
	to := path + brokenSuffix
	if err := os.Rename(path, to); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("mark snapshot broken: %w: %w", ErrNoSnapshot, err)
		}
		return "", fmt.Errorf("mark snapshot broken: %w", err)
	}
	if err := durable.SyncDir(filepath.Dir(path)); err != nil {
		return to, fmt.Errorf("mark snapshot broken %s: %w", path, err)
	}
	return to, nil
}

// Prune removes all but the keep (at least 1) newest snapshots of dir,
// ordered by the WAL index in their names, and every temporary file a
// Writer left behind; it syncs the directory and returns the removed paths.
// It does not read the files: mark unreadable ones broken first, or the
// count may keep a file Read rejects. Call it only when no Writer is open
// on dir, since a live Writer's temporary file would be removed too.
func Prune(dir string, keep int) ([]string, error) {
	if keep < 1 {
		return nil, fmt.Errorf("prune snapshots: keep %d, want at least 1", keep)
	}
	names, _, err := scan(dir)
	if err != nil {
		return nil, fmt.Errorf("prune snapshots: %w", err)
	}
	var removed []string
	if len(names) > keep {
		for _, name := range names[keep:] {
			p := filepath.Join(dir, name)
			if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return removed, fmt.Errorf("prune snapshots: %w", err)
			}
			removed = append(removed, p)
		}
	}
	tmps, err := removeTemp(dir)
	removed = append(removed, tmps...)
	if err != nil {
		return removed, fmt.Errorf("prune snapshots: %w", err)
	}
	if len(removed) > 0 {
		if err := durable.SyncDir(dir); err != nil {
			return removed, fmt.Errorf("prune snapshots: %w", err)
		}
	}
	return removed, nil
}

// RemoveTemp removes the temporary files that Writers left in dir (after a
// crash, or an Abort whose remove failed) and syncs the directory. Like
// Prune, call it only when no Writer is open on dir.
func RemoveTemp(dir string) error {
	removed, err := removeTemp(dir)
	if err != nil {
		return fmt.Errorf("remove snapshot temporary files: %w", err)
	}
	if len(removed) > 0 {
		if err := durable.SyncDir(dir); err != nil {
			return fmt.Errorf("remove snapshot temporary files: %w", err)
		}
	}
	return nil
}

func removeTemp(dir string) ([]string, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var removed []string
	for _, de := range des {
		name := de.Name()
		if !strings.HasPrefix(name, namePrefix) || !strings.HasSuffix(name, tmpSuffix) || !de.Type().IsRegular() {
			continue
		}
		p := filepath.Join(dir, name)
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return removed, err
		}
		removed = append(removed, p)
	}
	return removed, nil
}
