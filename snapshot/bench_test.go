package snapshot

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

// Benchmarks run only with -bench; the 10M size needs ~300 MB of memory
// and a few seconds, and -short skips it. Run them as
//
//	go test -run '^$' -bench . -benchtime 1x ./snapshot
//
// Metrics per run: bytes/entry on disk, write-s (Create to Commit, fsync
// included), read-s (Read with a visitor that only touches the rows),
// read-alloc-MB (bytes Read allocates) and read-heap-MB (peak live heap
// above the baseline while reading). ns/op is zeroed: one op is a whole
// write plus read, which the other metrics already split.

var benchSizes = []struct {
	name string
	rows int
}{
	{"rows=1M", 1_000_000},
	{"rows=10M", 10_000_000},
}

// benchChunks is how the store hands a snapshot over: one chunk per shard.
const benchChunks = 256

func BenchmarkTriplets(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(size.name, func(b *testing.B) {
			if testing.Short() && size.rows > 1_000_000 {
				b.Skip("-short")
			}
			benchTriplets(b, tripletChunks(size.rows, benchChunks, 1), size.rows, WriterOptions{})
		})
	}
}

// BenchmarkTripletsLevels compares the zstd levels on 1M rows; DefaultLevel
// is the one to beat.
func BenchmarkTripletsLevels(b *testing.B) {
	chunks := tripletChunks(1_000_000, benchChunks, 1)
	for _, level := range []zstd.EncoderLevel{zstd.SpeedFastest, zstd.SpeedDefault, zstd.SpeedBetterCompression} {
		for _, conc := range []int{1, 0} {
			b.Run(fmt.Sprintf("level=%s/concurrency=%d", level, conc), func(b *testing.B) {
				benchTriplets(b, chunks, 1_000_000, WriterOptions{Level: level, Concurrency: conc})
			})
		}
	}
}

func benchTriplets(b *testing.B, chunks []rowSet, rows int, opts WriterOptions) {
	dir := b.TempDir()
	b.ReportAllocs()
	var size int64
	var writeTime, readTime time.Duration
	var readAlloc, readPeak uint64
	for b.Loop() {
		start := time.Now()
		w, err := Create(dir, testHeader(1), opts)
		if err != nil {
			b.Fatal(err)
		}
		if err := w.BeginTable(1, tripletCols); err != nil {
			b.Fatal(err)
		}
		for _, c := range chunks {
			if err := w.WriteRows(c.keys, c.cols...); err != nil {
				b.Fatal(err)
			}
		}
		if err := w.EndTable(); err != nil {
			b.Fatal(err)
		}
		info, err := w.Commit()
		if err != nil {
			b.Fatal(err)
		}
		writeTime += time.Since(start)
		size = info.Size

		runtime.GC()
		var base, ms runtime.MemStats
		runtime.ReadMemStats(&base)
		peak := base.HeapAlloc
		var seen, calls int
		var sum uint64
		start = time.Now()
		_, err = Read(info.Path, Visitor{Rows: func(_ uint8, keys []uint64, cols [][]uint32) error {
			seen += len(keys)
			sum += keys[0] + uint64(cols[0][0]) + uint64(cols[1][len(keys)-1])
			if calls++; calls%16 == 0 {
				runtime.ReadMemStats(&ms)
				peak = max(peak, ms.HeapAlloc)
			}
			return nil
		}})
		readTime += time.Since(start)
		if err != nil {
			b.Fatal(err)
		}
		runtime.ReadMemStats(&ms)
		readAlloc += ms.TotalAlloc - base.TotalAlloc
		readPeak = max(readPeak, max(peak, ms.HeapAlloc)-base.HeapAlloc)
		if seen != rows {
			b.Fatalf("read %d rows, wrote %d (%d)", seen, rows, sum)
		}
	}
	n := float64(b.N)
	b.ReportMetric(float64(size)/float64(rows), "bytes/entry")
	b.ReportMetric(writeTime.Seconds()/n, "write-s")
	b.ReportMetric(readTime.Seconds()/n, "read-s")
	b.ReportMetric(float64(rows)*n/readTime.Seconds(), "read-rows/s")
	b.ReportMetric(float64(readAlloc)/n/(1<<20), "read-alloc-MB")
	b.ReportMetric(float64(readPeak)/(1<<20), "read-heap-MB")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkTripletsBaseline is the naive format for comparison: rows
// row-major (key, first-seen, word as 16 little-endian bytes), one zstd
// frame per chunk at zstd's defaults, no sorting.
func BenchmarkTripletsBaseline(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(size.name, func(b *testing.B) {
			if testing.Short() && size.rows > 1_000_000 {
				b.Skip("-short")
			}
			chunks := tripletChunks(size.rows, benchChunks, 1)
			zenc, err := zstd.NewWriter(nil)
			if err != nil {
				b.Fatal(err)
			}
			defer zenc.Close()
			f, err := os.Create(b.TempDir() + "/baseline")
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			var size64 int64
			var buf, out []byte
			for b.Loop() {
				size64 = 0
				for _, c := range chunks {
					buf = buf[:0]
					for i, k := range c.keys {
						buf = binary.LittleEndian.AppendUint64(buf, k)
						buf = binary.LittleEndian.AppendUint32(buf, c.cols[0][i])
						buf = binary.LittleEndian.AppendUint32(buf, c.cols[1][i])
					}
					out = zenc.EncodeAll(buf, out[:0])
					if _, err := f.Write(out); err != nil {
						b.Fatal(err)
					}
					size64 += int64(len(out))
				}
			}
			b.ReportMetric(float64(size64)/float64(size.rows), "bytes/entry")
			b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "write-s")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// BenchmarkSortRows times the writer's radix sort against a comparison
// sort on one store chunk: 40 Ki random keys sharing their top byte.
func BenchmarkSortRows(b *testing.B) {
	r := rand.New(rand.NewPCG(2, 3))
	keys := make([]uint64, 40<<10)
	for i := range keys {
		keys[i] = 7<<56 | r.Uint64()>>8
	}
	b.Run("radix", func(b *testing.B) {
		var pairs, tmp []keyIdx
		for b.Loop() {
			pairs, tmp = sortRows(pairs, tmp, keys)
		}
	})
	b.Run("slices.SortFunc", func(b *testing.B) {
		pairs := make([]keyIdx, len(keys))
		for b.Loop() {
			for i, k := range keys {
				pairs[i] = keyIdx{k, uint32(i)}
			}
			slices.SortFunc(pairs, func(x, y keyIdx) int {
				if c := cmp.Compare(x.key, y.key); c != 0 {
					return c
				}
				return cmp.Compare(x.idx, y.idx)
			})
		}
	})
}
