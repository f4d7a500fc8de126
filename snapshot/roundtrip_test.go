package snapshot

import (
	"bytes"
	"cmp"
	"errors"
	"io/fs"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func cols(vs ...[]uint32) [][]uint32 { return vs }

func seq(n int, f func(i int) uint32) []uint32 {
	out := make([]uint32, n)
	for i := range out {
		out[i] = f(i)
	}
	return out
}

func randKeys(r *rand.Rand, n int) []uint64 {
	out := make([]uint64, n)
	for i := range out {
		out[i] = r.Uint64()
	}
	return out
}

func TestRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	desc := []uint64{math.MaxUint64, 1 << 63, 12345, 1, 0}
	big := 150_000 // over maxChunkRows: stored as three chunks
	bigKeys := randKeys(r, big)
	random := make([]byte, 1<<20)
	for i := range random {
		random[i] = byte(r.Uint32())
	}

	cases := []struct {
		name  string
		h     Header
		items []item
	}{
		// Nothing but a header: the store snapshots an empty engine.
		{name: "empty"},
		{name: "one row", items: []item{
			{id: 1, ncols: 2, chunks: []rowSet{{keys: []uint64{42}, cols: cols([]uint32{7}, []uint32{1<<31 | 9})}}},
		}},
		// Keys arrive in map order; the writer sorts. Extremes of both
		// key and value ranges, both classes of bit 31, all in one chunk.
		{name: "unsorted extremes", items: []item{
			{id: 1, ncols: 3, chunks: []rowSet{{keys: desc, cols: cols(
				[]uint32{0, math.MaxUint32, 1 << 31, valueMask, 5},
				[]uint32{math.MaxUint32, math.MaxUint32, math.MaxUint32, math.MaxUint32, math.MaxUint32},
				[]uint32{valueMask, 0, valueMask, 0, 1},
			)}}},
		}},
		// Hash collisions cannot happen in a map, but the format must not
		// care: equal keys make zero deltas.
		{name: "duplicate keys", items: []item{
			{id: 9, ncols: 1, chunks: []rowSet{{keys: []uint64{5, 5, 5, 3, 5}, cols: cols([]uint32{1, 2, 3, 4, 5})}}},
		}},
		// Several tables of different widths, chunks overlapping in key
		// range, blobs between and after tables, an empty chunk, an empty
		// table, a zero-column table (a key set) and the widest table.
		{name: "tables and blobs", items: []item{
			{blob: true, id: 7, data: []byte("first")},
			{id: 1, ncols: 2, chunks: tripletChunks(20_000, 16, 3)},
			{blob: true, id: 3, data: []byte("client 192.0.2.0/24\nsender @example.org\n")},
			{id: 2, ncols: 4, chunks: []rowSet{
				{keys: randKeys(r, 300), cols: cols(seq(300, func(i int) uint32 { return uint32(i) }), seq(300, func(int) uint32 { return 0 }), seq(300, func(i int) uint32 { return engineNow - uint32(i) }), seq(300, func(i int) uint32 { return uint32(i) << 20 }))},
				{cols: cols(nil, nil, nil, nil)},
				{keys: randKeys(r, 3), cols: cols([]uint32{1, 2, 3}, []uint32{4, 5, 6}, []uint32{7, 8, 9}, []uint32{10, 11, 12})},
			}},
			{id: 4, ncols: 0},
			{id: 5, ncols: 0, chunks: []rowSet{{keys: []uint64{3, 1, 2}}}},
			{id: 6, ncols: maxCols, chunks: []rowSet{{keys: []uint64{10, 20}, cols: func() [][]uint32 {
				var cs [][]uint32
				for c := range maxCols {
					cs = append(cs, []uint32{uint32(c), 1<<31 | uint32(c)})
				}
				return cs
			}()}}},
			{blob: true, id: 0, data: nil},
			{blob: true, id: 255, data: random},
		}},
		{name: "chunk over the row cap", items: []item{
			{id: 1, ncols: 2, chunks: []rowSet{{keys: bigKeys, cols: cols(seq(big, func(i int) uint32 { return uint32(i) }), seq(big, func(i int) uint32 { return 1<<31 | uint32(i) }))}}},
		}},
		// Sequential keys and constant columns compress far beyond
		// maxExpansion; the writer pads so its own output stays readable.
		{name: "padded", items: []item{
			{id: 1, ncols: 2, chunks: []rowSet{{keys: func() []uint64 {
				k := make([]uint64, 50_000)
				for i := range k {
					k[i] = uint64(i)
				}
				return k
			}(), cols: cols(make([]uint32, 50_000), make([]uint32, 50_000))}}},
			{blob: true, id: 1, data: make([]byte, 1<<20)},
		}},
		{name: "max key options", h: Header{WALIndex: math.MaxUint64, SecretID: math.MaxUint64, KeyOptions: bytes.Repeat([]byte{0xff}, MaxKeyOptions)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			h := tc.h
			if h.KeyOptions == nil {
				h = testHeader(17)
			}
			h.Created = testCreated
			info := writeSnapshot(t, dir, h, WriterOptions{}, tc.items)
			if want := filepath.Join(dir, FileName(h.WALIndex)); info.Path != want {
				t.Fatalf("Commit path %s, want %s", info.Path, want)
			}
			got, rinfo, err := collect(info.Path)
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			checkContent(t, tc.items, got)
			if _, err := Verify(info.Path); err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if rinfo.Header.WALIndex != h.WALIndex || !rinfo.Header.Created.Equal(h.Created) || rinfo.Header.SecretID != h.SecretID || !bytes.Equal(rinfo.Header.KeyOptions, h.KeyOptions) {
				t.Fatalf("header %+v, want %+v", rinfo.Header, h)
			}
			if rinfo.Size != info.Size || rinfo.Chunks != info.Chunks || rinfo.Chunks != countRows(got) {
				t.Fatalf("Read info %+v, Commit info %+v, %d Rows calls", rinfo, info, countRows(got))
			}
			for _, it := range tc.items {
				want := int64(len(it.data))
				m := rinfo.Blobs
				if !it.blob {
					want, m = int64(len(flatten(it.chunks))), rinfo.Tables
				}
				if n, ok := m[it.id]; !ok || n != want || info.Tables[it.id] != rinfo.Tables[it.id] {
					t.Fatalf("item %d: info says %d (present %v), want %d", it.id, n, ok, want)
				}
			}
			list, err := List(dir)
			if err != nil || len(list) != 1 || list[0].Err != nil || list[0].Size != info.Size || list[0].Chunks != info.Chunks {
				t.Fatalf("List = %+v, %v", list, err)
			}
		})
	}
}

func countRows(vs []visit) int {
	n := 0
	for _, v := range vs {
		if !v.blob {
			n++
		}
	}
	return n
}

// The caller may reuse its slices after WriteRows returns, even while the
// chunk is still being compressed on another goroutine.
func TestWriteRowsDoesNotRetain(t *testing.T) {
	dir := t.TempDir()
	w, err := Create(dir, testHeader(1), WriterOptions{Concurrency: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	if err := w.BeginTable(1, 1); err != nil {
		t.Fatal(err)
	}
	keys, vals := make([]uint64, 1000), make([]uint32, 1000)
	var want []rowSet
	for c := range 20 {
		for i := range keys {
			keys[i], vals[i] = uint64(c*1000+i)*7919, uint32(c)
		}
		want = append(want, rowSet{keys: slices.Clone(keys), cols: cols(slices.Clone(vals))})
		if err := w.WriteRows(keys, vals); err != nil {
			t.Fatal(err)
		}
		clear(keys)
		clear(vals)
	}
	if err := w.EndTable(); err != nil {
		t.Fatal(err)
	}
	info, err := w.Commit()
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := collect(info.Path)
	if err != nil {
		t.Fatal(err)
	}
	checkContent(t, []item{{id: 1, ncols: 1, chunks: want}}, got)
}

// Output bytes must not depend on how many goroutines compressed them.
func TestDeterministicAcrossConcurrency(t *testing.T) {
	items := []item{
		{id: 1, ncols: 2, chunks: append(tripletChunks(30_000, 8, 5), tripletChunks(100_000, 1, 6)...)},
		{blob: true, id: 3, data: []byte("rules")},
		{id: 2, ncols: 4, chunks: []rowSet{{keys: []uint64{1, 2}, cols: cols([]uint32{1, 2}, []uint32{3, 4}, []uint32{5, 6}, []uint32{7, 8})}}},
	}
	var first []byte
	for _, conc := range []int{1, 2, 3, 8} {
		dir := t.TempDir()
		info := writeSnapshot(t, dir, testHeader(5), WriterOptions{Concurrency: conc}, items)
		b := readFile(t, info.Path)
		if first == nil {
			first = b
			continue
		}
		if !bytes.Equal(first, b) {
			t.Fatalf("concurrency %d wrote different bytes than concurrency 1", conc)
		}
	}
}

func TestVisitorError(t *testing.T) {
	dir := t.TempDir()
	info := writeSnapshot(t, dir, testHeader(1), WriterOptions{}, []item{
		{id: 1, ncols: 2, chunks: tripletChunks(5_000, 16, 1)},
		{blob: true, id: 2, data: []byte("x")},
	})
	stop := errors.New("stop")
	for _, tc := range []struct {
		name string
		v    Visitor
	}{
		{"rows", Visitor{Rows: func(uint8, []uint64, [][]uint32) error { return stop }}},
		{"blob", Visitor{Blob: func(uint8, []byte) error { return stop }}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Read(info.Path, tc.v); !errors.Is(err, stop) {
				t.Fatalf("Read = %v, want the visitor's error", err)
			}
		})
	}
}

// A nil callback skips that content; the other kind is still delivered.
func TestVisitorNilField(t *testing.T) {
	dir := t.TempDir()
	info := writeSnapshot(t, dir, testHeader(1), WriterOptions{}, []item{
		{id: 1, ncols: 2, chunks: tripletChunks(1_000, 4, 1)},
		{blob: true, id: 2, data: []byte("rules")},
	})
	var blobs int
	if _, err := Read(info.Path, Visitor{Blob: func(id uint8, data []byte) error {
		blobs++
		if id != 2 || string(data) != "rules" {
			t.Errorf("blob %d %q", id, data)
		}
		return nil
	}}); err != nil || blobs != 1 {
		t.Fatalf("Read = %v after %d blobs", err, blobs)
	}
}

func TestReadMissing(t *testing.T) {
	_, err := Read(filepath.Join(t.TempDir(), FileName(1)), Visitor{})
	if !errors.Is(err, ErrNoSnapshot) || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Read of a missing file = %v", err)
	}
}

// Misuse fails the call, poisons the writer, and Abort leaves nothing
// behind.
func TestWriterMisuse(t *testing.T) {
	one := []uint64{1}
	v := []uint32{1}
	cases := []struct {
		name string
		f    func(w *Writer) error
	}{
		{"rows outside a table", func(w *Writer) error { return w.WriteRows(one, v) }},
		{"too few columns", func(w *Writer) error { _ = w.BeginTable(1, 2); return w.WriteRows(one, v) }},
		{"column length", func(w *Writer) error { _ = w.BeginTable(1, 1); return w.WriteRows(one, []uint32{1, 2}) }},
		{"too many columns", func(w *Writer) error { return w.BeginTable(1, maxCols+1) }},
		{"negative columns", func(w *Writer) error { return w.BeginTable(1, -1) }},
		{"nested table", func(w *Writer) error { _ = w.BeginTable(1, 1); return w.BeginTable(2, 1) }},
		{"duplicate table", func(w *Writer) error { _ = w.BeginTable(1, 1); _ = w.EndTable(); return w.BeginTable(1, 1) }},
		{"end without begin", func(w *Writer) error { return w.EndTable() }},
		{"blob inside a table", func(w *Writer) error { _ = w.BeginTable(1, 1); return w.WriteBlob(1, nil) }},
		{"duplicate blob", func(w *Writer) error { _ = w.WriteBlob(1, nil); return w.WriteBlob(1, nil) }},
		{"oversized blob", func(w *Writer) error { return w.WriteBlob(1, make([]byte, maxBlobLen+1)) }},
		{"commit with an open table", func(w *Writer) error { _ = w.BeginTable(1, 1); _, err := w.Commit(); return err }},
		{"use after abort", func(w *Writer) error { _ = w.Abort(); return w.BeginTable(1, 1) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			w, err := Create(dir, testHeader(1), WriterOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.f(w); err == nil {
				t.Fatal("no error")
			}
			if _, err := w.Commit(); err == nil {
				t.Fatal("Commit succeeded after an error")
			}
			if err := w.Abort(); err != nil {
				t.Fatalf("Abort: %v", err)
			}
			if names := dirNames(t, dir); len(names) != 0 {
				t.Fatalf("left behind %v", names)
			}
		})
	}
}

func TestCreateRejects(t *testing.T) {
	dir := t.TempDir()
	for name, h := range map[string]Header{
		"key options too long": {Created: testCreated, KeyOptions: make([]byte, MaxKeyOptions+1)},
		"no creation time":     {WALIndex: 1},
	} {
		if _, err := Create(dir, h, WriterOptions{}); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if _, err := Create(dir, testHeader(1), WriterOptions{Concurrency: -1}); err == nil {
		t.Error("negative concurrency: no error")
	}
	if _, err := Create(filepath.Join(dir, "missing"), testHeader(1), WriterOptions{}); err == nil {
		t.Error("missing directory: no error")
	}
	if names := dirNames(t, dir); len(names) != 0 {
		t.Fatalf("left behind %v", names)
	}
}

// Commit drops a sub-second creation time; Read returns whole seconds.
func TestCreatedWholeSeconds(t *testing.T) {
	dir := t.TempDir()
	h := testHeader(1)
	h.Created = testCreated.Add(999_999_999)
	info := writeSnapshot(t, dir, h, WriterOptions{}, nil)
	got, err := Verify(info.Path)
	if err != nil || !got.Header.Created.Equal(testCreated) || !info.Header.Created.Equal(testCreated) {
		t.Fatalf("Created = %v (Commit said %v), %v; want %v", got.Header.Created, info.Header.Created, err, testCreated)
	}
}

func TestAbort(t *testing.T) {
	dir := t.TempDir()
	w, err := Create(dir, testHeader(3), WriterOptions{Concurrency: 2})
	if err != nil {
		t.Fatal(err)
	}
	_ = w.BeginTable(1, 2)
	for _, c := range tripletChunks(10_000, 8, 1) {
		if err := w.WriteRows(c.keys, c.cols...); err != nil {
			t.Fatal(err)
		}
	}
	if names := dirNames(t, dir); len(names) != 1 || !strings.HasSuffix(names[0], tmpSuffix) {
		t.Fatalf("while writing: %v, want one temporary file", names)
	}
	// Abort with compression in flight: goleak in TestMain checks the
	// goroutines are gone.
	if err := w.Abort(); err != nil {
		t.Fatal(err)
	}
	if err := w.Abort(); err != nil {
		t.Fatalf("second Abort: %v", err)
	}
	if names := dirNames(t, dir); len(names) != 0 {
		t.Fatalf("after Abort: %v", names)
	}

	info := writeSnapshot(t, dir, testHeader(4), WriterOptions{}, nil)
	w, err = Create(dir, testHeader(5), WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := w.Abort(); err != nil {
		t.Fatalf("Abort after Commit: %v", err)
	}
	if _, err := Verify(info.Path); err != nil {
		t.Fatal(err)
	}
	if names := dirNames(t, dir); !slices.Equal(names, []string{FileName(4), FileName(5)}) {
		t.Fatalf("after Abort following Commit: %v", names)
	}
}

// The radix sort must agree with a stable comparison sort whatever the
// key distribution: constant bytes (skipped passes), duplicates, tiny
// inputs (insertion sort).
func TestSortRows(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	gens := map[string]func() uint64{
		"random":     r.Uint64,
		"one shard":  func() uint64 { return 0xab<<56 | r.Uint64()>>8 },
		"few values": func() uint64 { return uint64(r.IntN(5)) << 40 },
		"small":      func() uint64 { return uint64(r.IntN(1000)) },
	}
	var pairs, tmp []keyIdx
	for name, gen := range gens {
		for _, n := range []int{1, 2, 63, 64, 65, 1000, 70_000} {
			keys := make([]uint64, n)
			for i := range keys {
				keys[i] = gen()
			}
			want := make([]keyIdx, n)
			for i, k := range keys {
				want[i] = keyIdx{k, uint32(i)}
			}
			slices.SortStableFunc(want, func(a, b keyIdx) int { return cmp.Compare(a.key, b.key) })
			var got []keyIdx
			got, tmp = sortRows(pairs, tmp, keys)
			pairs = got
			if !slices.Equal(got, want) {
				t.Fatalf("%s, %d keys: radix order differs from a stable sort", name, n)
			}
		}
	}
}
