package snapshot

import (
	"bytes"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
)

func TestFileName(t *testing.T) {
	for _, tc := range []struct {
		idx  uint64
		want string
	}{
		{0, "snap-00000000000000000000.zst"},
		{42, "snap-00000000000000000042.zst"},
		{math.MaxUint64, "snap-18446744073709551615.zst"},
	} {
		if got := FileName(tc.idx); got != tc.want {
			t.Errorf("FileName(%d) = %s, want %s", tc.idx, got, tc.want)
		}
		if idx, ok := parseName(tc.want); !ok || idx != tc.idx {
			t.Errorf("parseName(%s) = %d, %v", tc.want, idx, ok)
		}
	}
	for _, name := range []string{
		"snap-42.zst", // unpadded: not ours
		"snap-00000000000000000042.zst.tmp",
		"snap-00000000000000000042.zst.broken",
		"snap-0000000000000000004x.zst",
		"snap-99999999999999999999.zst", // 20 digits above MaxUint64
		"SNAP-00000000000000000042.zst",
	} {
		if _, ok := parseName(name); ok {
			t.Errorf("parseName(%s) accepted", name)
		}
	}
}

// Names sort as numbers across digit counts, List is newest first, and
// everything that is not a finished snapshot is left out, except damaged
// snapshots, which are listed with their error.
func TestList(t *testing.T) {
	dir := t.TempDir()
	idxs := []uint64{9, 10, 100, 0, 1 << 40, math.MaxUint64, 99_999}
	for _, i := range idxs {
		writeSnapshot(t, dir, testHeader(i), WriterOptions{}, nil)
	}
	writeFile(t, dir, FileName(5)+".123.tmp", []byte("partial"))
	writeFile(t, dir, FileName(7)+brokenSuffix, []byte("broken"))
	writeFile(t, dir, "snap-8.zst", []byte("foreign"))
	writeFile(t, dir, "notes.txt", []byte("hello"))
	if err := os.Mkdir(filepath.Join(dir, FileName(11)), 0o700); err != nil {
		t.Fatal(err)
	}
	garbage := writeFile(t, dir, FileName(3), []byte("not a snapshot"))
	// A valid snapshot under another index's name: a bad manual copy.
	misnamed := filepath.Join(dir, FileName(12))
	if err := os.WriteFile(misnamed, readFile(t, filepath.Join(dir, FileName(9))), 0o600); err != nil {
		t.Fatal(err)
	}

	list, err := List(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []uint64
	var names []string
	for _, in := range list {
		got = append(got, in.Header.WALIndex)
		names = append(names, filepath.Base(in.Path))
		switch in.Path {
		case garbage, misnamed:
			mustCorrupt(t, in.Err, in.Path)
		default:
			if in.Err != nil || !in.Header.Created.Equal(testCreated) || in.Size == 0 {
				t.Errorf("%s: %+v", in.Path, in)
			}
		}
	}
	want := []uint64{math.MaxUint64, 1 << 40, 99_999, 100, 12, 10, 9, 3, 0}
	if !slices.Equal(got, want) {
		t.Fatalf("List order %v, want %v", got, want)
	}
	if !sort.IsSorted(sort.Reverse(sort.StringSlice(names))) {
		t.Fatalf("names do not sort like their indexes: %v", names)
	}
}

func TestListMissingDir(t *testing.T) {
	if _, err := List(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("List = %v", err)
	}
}

func TestPrune(t *testing.T) {
	dir := t.TempDir()
	for _, i := range []uint64{1, 20, 3, 400, 5} {
		writeSnapshot(t, dir, testHeader(i), WriterOptions{}, nil)
	}
	tmp := writeFile(t, dir, FileName(6)+".999.tmp", []byte("crashed writer"))
	broken := writeFile(t, dir, FileName(2)+brokenSuffix, []byte("kept for inspection"))
	other := writeFile(t, dir, "other.tmp", []byte("not ours"))

	if _, err := Prune(dir, 0); err == nil {
		t.Fatal("Prune keeping 0: no error")
	}
	removed, err := Prune(dir, 2)
	if err != nil {
		t.Fatal(err)
	}
	wantRemoved := []string{filepath.Join(dir, FileName(5)), filepath.Join(dir, FileName(3)), filepath.Join(dir, FileName(1)), tmp}
	if !slices.Equal(removed, wantRemoved) {
		t.Fatalf("removed %v, want %v", removed, wantRemoved)
	}
	want := []string{filepath.Base(other), filepath.Base(broken), FileName(20), FileName(400)}
	slices.Sort(want)
	if names := dirNames(t, dir); !slices.Equal(names, want) {
		t.Fatalf("left %v, want %v", names, want)
	}
	if removed, err := Prune(dir, 2); err != nil || len(removed) != 0 {
		t.Fatalf("second Prune removed %v, %v", removed, err)
	}
}

func TestMarkBroken(t *testing.T) {
	dir := t.TempDir()
	info := writeSnapshot(t, dir, testHeader(8), WriterOptions{}, nil)
	writeSnapshot(t, dir, testHeader(7), WriterOptions{}, nil)
	to, err := MarkBroken(info.Path)
	if err != nil || to != info.Path+brokenSuffix {
		t.Fatalf("MarkBroken = %s, %v", to, err)
	}
	list, err := List(dir)
	if err != nil || len(list) != 1 || list[0].Header.WALIndex != 7 {
		t.Fatalf("List after MarkBroken = %+v, %v", list, err)
	}
	// A second broken snapshot of the same index replaces the first.
	second := writeSnapshot(t, dir, Header{WALIndex: 8, Created: testCreated, SecretID: 99}, WriterOptions{}, nil)
	secondBytes := readFile(t, second.Path)
	if _, err := MarkBroken(second.Path); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readFile(t, to), secondBytes) || len(dirNames(t, dir)) != 2 {
		t.Fatalf("directory after second MarkBroken: %v", dirNames(t, dir))
	}
	if _, err := MarkBroken(info.Path); !errors.Is(err, ErrNoSnapshot) {
		t.Fatalf("MarkBroken of a missing file = %v", err)
	}
}

// A second snapshot at the same WAL index replaces the first atomically:
// one file, the new content.
func TestReplaceSameIndex(t *testing.T) {
	dir := t.TempDir()
	writeSnapshot(t, dir, testHeader(6), WriterOptions{}, []item{{blob: true, id: 1, data: []byte("old")}})
	info := writeSnapshot(t, dir, testHeader(6), WriterOptions{}, []item{{blob: true, id: 1, data: []byte("new")}})
	if names := dirNames(t, dir); !slices.Equal(names, []string{FileName(6)}) {
		t.Fatalf("directory: %v", names)
	}
	got, _, err := collect(info.Path)
	if err != nil || len(got) != 1 || string(got[0].data) != "new" {
		t.Fatalf("Read = %v, %v", describe(got), err)
	}
}

// A writer that never finishes (a crash) leaves a temporary file that List
// ignores and RemoveTemp cleans.
func TestTempFiles(t *testing.T) {
	dir := t.TempDir()
	writeSnapshot(t, dir, testHeader(1), WriterOptions{}, nil)
	w, err := Create(dir, testHeader(2), WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteBlob(1, []byte("unfinished")); err != nil {
		t.Fatal(err)
	}
	list, err := List(dir)
	if err != nil || len(list) != 1 || list[0].Header.WALIndex != 1 {
		t.Fatalf("List with a writer open = %+v, %v", list, err)
	}
	if err := RemoveTemp(dir); err != nil {
		t.Fatal(err)
	}
	if names := dirNames(t, dir); !slices.Equal(names, []string{FileName(1)}) {
		t.Fatalf("after RemoveTemp: %v", names)
	}
	if err := w.Abort(); err != nil {
		t.Fatalf("Abort after its file was removed: %v", err)
	}
	for _, n := range dirNames(t, dir) {
		if strings.HasSuffix(n, tmpSuffix) {
			t.Fatalf("temporary file left: %s", n)
		}
	}
}
