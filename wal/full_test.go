package wal

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestSealOnFullDiskSaysWhatToFree: the one repair that needs room, a new
// segment after a last segment with damage before good frames, fails on a
// file system with no inode left; the start then fails saying what it
// could not do and what to free, and succeeds once one file is freed (the
// new segment's inode).
func TestSealOnFullDiskSaysWhatToFree(t *testing.T) {
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4m,nr_inodes=64", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("mounting a tmpfs needs root (CI runs as root): %v %s", err, out)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(mnt, 0); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	dir := filepath.Join(mnt, "wal")
	l := openLog(t, dir, Options{Sync: SyncNever})
	writeFrames(t, l, 8)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	locs := layout(t, dir)
	flipBit(t, dir, locs[4].seg, locs[4].frameAt()+headerSize, 0x01)

	// Every inode taken.
	var fillers []string
	for i := 0; ; i++ {
		p := filepath.Join(mnt, fmt.Sprintf("filler-%d", i))
		f, err := os.Create(p)
		if err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
		f.Close()
		fillers = append(fillers, p)
	}
	if len(fillers) == 0 {
		t.Fatal("no inode was free to begin with")
	}
	_, err := Open(dir, Options{Sync: SyncNever})
	if err == nil || !strings.Contains(err.Error(), "seal damaged segment") || !strings.Contains(err.Error(), "free a little space in "+dir) {
		t.Fatalf("Open on a full disk = %v, want an error naming the seal and what to free", err)
	}
	for _, p := range fillers[len(fillers)-1:] {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	l = openLog(t, dir, Options{Sync: SyncNever})
	checkSurvivors(t, l, indexes(1, 8, 5))
	if r := l.Repaired(); r.Sealed == "" {
		t.Errorf("repair %+v: the damaged segment was meant to be sealed", r)
	}
}
