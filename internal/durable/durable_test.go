package durable

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestWriteFileReplaces(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "meta.json")
	if err := WriteFile(path, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(path, []byte("two"), 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil || string(b) != "two" {
		t.Fatalf("read back %q, %v; want two", b, err)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", fi.Mode().Perm())
	}
	onlyFiles(t, dir, "meta.json")
}

// A failed write leaves the old file as it was and no temporary file.
func TestWriteFileFailureCleansUp(t *testing.T) {
	dir := t.TempDir()
	// A directory in the way makes the final rename fail after the
	// temporary file was written and synced.
	path := filepath.Join(dir, "secret")
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(path, "x"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(path, []byte("data"), 0o600); err == nil {
		t.Fatal("WriteFile over a non-empty directory succeeded")
	}
	onlyFiles(t, dir, "secret")
}

func TestWriteFileMode(t *testing.T) {
	old := umask(0o077)
	defer umask(old)
	path := filepath.Join(t.TempDir(), "f")
	if err := WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v under umask 077, want 0644", fi.Mode().Perm())
	}
}

func TestCreateNewRefusesLinks(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, link := range []struct{ name, to string }{
		{"to-file", target},
		{"dangling", filepath.Join(dir, "nowhere")},
	} {
		path := filepath.Join(dir, link.name)
		if err := os.Symlink(link.to, path); err != nil {
			t.Fatal(err)
		}
		f, err := CreateNew(path, 0o600)
		if err == nil {
			f.Close()
			t.Fatalf("CreateNew(%s) followed a link to %s", link.name, link.to)
		}
		if !errors.Is(err, fs.ErrExist) {
			t.Errorf("CreateNew(%s): %v, want an error wrapping fs.ErrExist", link.name, err)
		}
	}
	if b, _ := os.ReadFile(target); string(b) != "keep me" {
		t.Errorf("the link's target now holds %q", b)
	}
	if _, err := os.Lstat(filepath.Join(dir, "nowhere")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a dangling link's target was created: %v", err)
	}
	f, err := CreateNew(filepath.Join(dir, "fresh"), 0o640)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
}

func TestMkdirAll(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "a", "b", "c")
	created, err := MkdirAll(dir, 0o750)
	if err != nil || !created {
		t.Fatalf("MkdirAll = %v, %v; want created", created, err)
	}
	created, err = MkdirAll(dir, 0o750)
	if err != nil || created {
		t.Fatalf("MkdirAll again = %v, %v; want not created", created, err)
	}
	file := filepath.Join(base, "file")
	os.WriteFile(file, nil, 0o600)
	if _, err := MkdirAll(file, 0o750); err == nil {
		t.Error("MkdirAll over a file succeeded")
	}
	if err := SyncDir(filepath.Join(base, "missing")); err == nil {
		t.Error("SyncDir of a missing directory succeeded")
	}
}

func onlyFiles(t *testing.T, dir string, want ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if len(got) != len(want) {
		t.Fatalf("directory holds %v, want %v", got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("directory holds %v, want %v", got, want)
		}
	}
}
