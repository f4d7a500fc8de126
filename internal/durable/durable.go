// Package durable holds the few file operations whose order decides what
// survives a crash or a power cut: writing a whole file atomically, making
// a new file without following a link someone planted, and fsyncing a
// directory so that creations, renames and removals in it are on disk.
//
// The WAL, the snapshots and the data directory's small files all go
// through it, so each of these rules is written, and tested, once.
package durable

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// SyncDir fsyncs a directory: a file created, renamed or removed in it is
// only sure to survive a power cut once its directory has been synced.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open directory %s for fsync: %w", dir, err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}

// CreateNew makes a file that must not exist yet, for writing. It never
// follows a symbolic link: a link at path, even a dangling one, fails with
// an error wrapping fs.ErrExist, so a planted link cannot make the caller
// truncate or write through to another file. The new file is not synced
// and neither is its directory.
func CreateNew(path string, perm fs.FileMode) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, perm)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", path, err)
	}
	return f, nil
}

// WriteFile replaces path with data, atomically and durably: the bytes go to
// a new temporary file beside it, which is fsynced, renamed over path, and
// the directory fsynced. A crash at any point leaves either the old file or
// the new one, never a mix, and a failure removes the temporary file. perm
// is applied whatever the umask.
func WriteFile(path string, data []byte, perm fs.FileMode) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	// CreateTemp opens with O_EXCL under a random name, so a link planted
	// at a guessable name is never followed.
	f, err := os.CreateTemp(dir, "."+base+".*.tmp")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			if rerr := os.Remove(tmp); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
				err = errors.Join(err, fmt.Errorf("remove temporary file: %w", rerr))
			}
		}
	}()
	if err = f.Chmod(perm); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("write %s: fsync: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return SyncDir(dir)
}

// MkdirAll makes dir and its missing parents and fsyncs the parent of each
// directory it made, so that the new directories survive a power cut. It
// reports whether dir was made.
func MkdirAll(dir string, perm fs.FileMode) (created bool, err error) {
	dir = filepath.Clean(dir)
	fi, err := os.Stat(dir)
	switch {
	case err == nil && fi.IsDir():
		return false, nil
	case err == nil:
		return false, fmt.Errorf("%s exists and is not a directory", dir)
	case !errors.Is(err, fs.ErrNotExist):
		return false, fmt.Errorf("stat %s: %w", dir, err)
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if _, err := MkdirAll(parent, perm); err != nil {
			return false, err
		}
	}
	if err := os.Mkdir(dir, perm); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return false, nil
		}
		return false, fmt.Errorf("create directory %s: %w", dir, err)
	}
	return true, SyncDir(parent)
}
