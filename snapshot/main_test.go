package snapshot

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// Writers and Read start goroutines; every one must be gone when they
	// return, whatever the outcome.
	goleak.VerifyTestMain(m)
}

// item is one thing written to a snapshot: a table of chunks or a blob.
type item struct {
	blob   bool
	id     uint8
	ncols  int
	chunks []rowSet
	data   []byte
}

// rowSet is a chunk as handed to WriteRows.
type rowSet struct {
	keys []uint64
	cols [][]uint32
}

func (r rowSet) len() int { return len(r.keys) }

var testCreated = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func testHeader(walIndex uint64) Header {
	return Header{WALIndex: walIndex, Created: testCreated, SecretID: 0x5eed, KeyOptions: []byte("v1 /24 /64")}
}

// writeSnapshot writes items and commits.
func writeSnapshot(tb testing.TB, dir string, h Header, opts WriterOptions, items []item) Info {
	tb.Helper()
	w, err := Create(dir, h, opts)
	if err != nil {
		tb.Fatalf("Create: %v", err)
	}
	defer w.Abort()
	for _, it := range items {
		if it.blob {
			if err := w.WriteBlob(it.id, it.data); err != nil {
				tb.Fatalf("WriteBlob(%d): %v", it.id, err)
			}
			continue
		}
		if err := w.BeginTable(it.id, it.ncols); err != nil {
			tb.Fatalf("BeginTable(%d): %v", it.id, err)
		}
		for _, c := range it.chunks {
			if err := w.WriteRows(c.keys, c.cols...); err != nil {
				tb.Fatalf("WriteRows(table %d): %v", it.id, err)
			}
		}
		if err := w.EndTable(); err != nil {
			tb.Fatalf("EndTable(%d): %v", it.id, err)
		}
	}
	info, err := w.Commit()
	if err != nil {
		tb.Fatalf("Commit: %v", err)
	}
	return info
}

// visit is one Visitor call, copied.
type visit struct {
	blob bool
	id   uint8
	rows rowSet
	data []byte
}

// collect reads path and records every call.
func collect(path string) ([]visit, Info, error) {
	var got []visit
	info, err := Read(path, Visitor{
		Rows: func(table uint8, keys []uint64, cols [][]uint32) error {
			r := rowSet{keys: slices.Clone(keys)}
			for _, c := range cols {
				r.cols = append(r.cols, slices.Clone(c))
			}
			got = append(got, visit{id: table, rows: r})
			return nil
		},
		Blob: func(id uint8, data []byte) error {
			got = append(got, visit{blob: true, id: id, data: bytes.Clone(data)})
			return nil
		},
	})
	return got, info, err
}

// row is one row in comparable form.
type row struct {
	key  uint64
	cols string
}

func flatten(rs []rowSet) []row {
	var out []row
	for _, r := range rs {
		for i, k := range r.keys {
			var b []byte
			for _, c := range r.cols {
				b = fmt.Appendf(b, "%d,", c[i])
			}
			out = append(out, row{k, string(b)})
		}
	}
	slices.SortFunc(out, func(a, b row) int {
		if c := cmp.Compare(a.key, b.key); c != 0 {
			return c
		}
		return cmp.Compare(a.cols, b.cols)
	})
	return out
}

// checkContent asserts that got is what items describe: tables and blobs in
// written order, each table's rows complete, each chunk sorted by key.
func checkContent(t *testing.T, items []item, got []visit) {
	t.Helper()
	for len(items) > 0 {
		it := items[0]
		items = items[1:]
		if it.blob {
			if len(got) == 0 || !got[0].blob || got[0].id != it.id {
				t.Fatalf("want blob %d next, got %v", it.id, describe(got))
			}
			if !bytes.Equal(got[0].data, it.data) {
				t.Fatalf("blob %d: got %d bytes, want %d (or content differs)", it.id, len(got[0].data), len(it.data))
			}
			got = got[1:]
			continue
		}
		var chunks []rowSet
		for len(got) > 0 && !got[0].blob && got[0].id == it.id {
			r := got[0].rows
			if len(r.cols) != it.ncols {
				t.Fatalf("table %d: chunk has %d columns, want %d", it.id, len(r.cols), it.ncols)
			}
			if !slices.IsSorted(r.keys) {
				t.Fatalf("table %d: chunk keys not ascending", it.id)
			}
			if r.len() == 0 || r.len() > maxChunkRows {
				t.Fatalf("table %d: chunk of %d rows", it.id, r.len())
			}
			chunks = append(chunks, r)
			got = got[1:]
		}
		want, have := flatten(it.chunks), flatten(chunks)
		if !slices.Equal(want, have) {
			t.Fatalf("table %d: got %d rows, want %d, or values differ", it.id, len(have), len(want))
		}
	}
	if len(got) > 0 {
		t.Fatalf("unexpected calls after the last item: %v", describe(got))
	}
}

func describe(vs []visit) string {
	var b []byte
	for _, v := range vs {
		if v.blob {
			b = fmt.Appendf(b, "blob %d; ", v.id)
		} else {
			b = fmt.Appendf(b, "table %d (%d rows); ", v.id, v.rows.len())
		}
	}
	return string(b)
}

// Triplet-shaped data as the engine stores it: random keys; first-seen
// uniform over the 35 days before now; 70% passed (word = 1<<31 |
// last-seen, last-seen between first-seen and now), 30% pending (word =
// attempts 0..3). now is an engine time: seconds since 2020-01-01.
const (
	engineNow   = uint32(6*365*86400 + 86400) // early 2026
	maxAgeSecs  = 35 * 86400
	tripletCols = 2
)

func tripletRow(r *rand.Rand) (key uint64, firstSeen, word uint32) {
	key = r.Uint64()
	firstSeen = engineNow - uint32(r.IntN(maxAgeSecs))
	if r.IntN(10) < 7 {
		word = 1<<31 | (firstSeen + uint32(r.IntN(int(engineNow-firstSeen)+1)))
	} else {
		word = uint32(r.IntN(4))
	}
	return key, firstSeen, word
}

// tripletChunks returns n rows in `chunks` chunks split by the key's top
// bits, the way the store's shards hand them over, in map (random) order.
func tripletChunks(n, chunks int, seed uint64) []rowSet {
	r := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	out := make([]rowSet, chunks)
	for i := range out {
		out[i].cols = make([][]uint32, tripletCols)
	}
	for range n {
		k, fs, w := tripletRow(r)
		c := &out[(k>>32)*uint64(chunks)>>32]
		c.keys = append(c.keys, k)
		c.cols[0] = append(c.cols[0], fs)
		c.cols[1] = append(c.cols[1], w)
	}
	return out
}

// readFile is os.ReadFile failing the test.
func readFile(tb testing.TB, path string) []byte {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// dirNames lists dir, sorted.
func dirNames(tb testing.TB, dir string) []string {
	tb.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		tb.Fatal(err)
	}
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	return names
}

func mustCorrupt(tb testing.TB, err error, what string) {
	tb.Helper()
	if !errors.Is(err, ErrCorrupt) {
		tb.Fatalf("%s: got %v, want ErrCorrupt", what, err)
	}
}

func writeFile(tb testing.TB, dir, name string, b []byte) string {
	tb.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		tb.Fatal(err)
	}
	return p
}
