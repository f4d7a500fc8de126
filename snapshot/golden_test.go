package snapshot

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite snapshot/testdata/golden-v1.snap with the current writer")

const goldenPath = "testdata/golden-v1.snap"

func goldenHeader() Header {
	return Header{WALIndex: 42, Created: testCreated, SecretID: 0x0123456789abcdef, KeyOptions: []byte("v1;net4=24;net6=64;batv;srs")}
}

// goldenItems is the engine's state in miniature: triplets (first-seen,
// word: pending attempts or 1<<31|last-seen), client networks (four
// columns) and the whitelist rules blob.
func goldenItems() []item {
	now := engineNow
	return []item{
		{id: 1, ncols: 2, chunks: []rowSet{
			{keys: []uint64{0xfedcba9876543210, 0x0123456789abcdef, 0x8000000000000000}, cols: cols(
				[]uint32{now - 300, now - 86400, now - 35*86400 + 1},
				[]uint32{2, 1<<31 | (now - 60), 1<<31 | (now - 34*86400)},
			)},
			{keys: []uint64{0x7fffffffffffffff, 42}, cols: cols(
				[]uint32{now, now - 7200},
				[]uint32{0, 1<<31 | now},
			)},
		}},
		{id: 2, ncols: 4, chunks: []rowSet{
			{keys: []uint64{0xc0000201, 0x20010db8}, cols: cols(
				[]uint32{5, 17},
				[]uint32{now - 10, now - 5000},
				[]uint32{now - 86400, now - 20*86400},
				[]uint32{0, 1},
			)},
		}},
		{blob: true, id: 3, data: []byte("client 192.0.2.0/24\nsender @example.org\n")},
	}
}

// The golden file pins the format byte for byte, as etcd's TestNew pins a
// fresh WAL. Reading it must keep working forever (old snapshots stay
// loadable); writing must reproduce it unless the format changed on
// purpose, which means a new version, a new golden file, and keeping this
// one as a read test. A klauspost/compress upgrade may change the zstd
// bytes without changing the format: check that reading still passes,
// then regenerate with
//
//	go test ./snapshot -run TestGolden -update
func TestGolden(t *testing.T) {
	info := writeSnapshot(t, t.TempDir(), goldenHeader(), WriterOptions{Concurrency: 1}, goldenItems())
	written := readFile(t, info.Path)
	if *update {
		if err := os.MkdirAll(filepath.Dir(goldenPath), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(goldenPath, written, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	got, rinfo, err := collect(goldenPath)
	if err != nil {
		t.Fatalf("reading the golden file: %v", err)
	}
	checkContent(t, goldenItems(), got)
	h := goldenHeader()
	if rinfo.Header.WALIndex != h.WALIndex || !rinfo.Header.Created.Equal(h.Created) || rinfo.Header.SecretID != h.SecretID || !bytes.Equal(rinfo.Header.KeyOptions, h.KeyOptions) {
		t.Fatalf("golden header %+v, want %+v", rinfo.Header, h)
	}

	if want := readFile(t, goldenPath); !bytes.Equal(written, want) {
		t.Fatalf("writer output (%d bytes) differs from %s (%d bytes) at byte %d; see the test's comment before running with -update",
			len(written), goldenPath, len(want), firstDiff(written, want))
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
