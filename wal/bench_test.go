package wal

import (
	"bytes"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"
)

// BenchmarkAppend measures group commit the way the engine uses it: many
// request goroutines, each appending one small record (about 18 bytes, the
// engine's typical state change) or a batch of 100, in every sync mode.
//
// ns/op is hidden: with concurrent appenders it is wall time divided by
// appends, which says nothing about how long one Append waits. records/s is
// the throughput, records/frame how well group commit batches, and
// p50-µs/p99-µs the latency of one Append.
func BenchmarkAppend(b *testing.B) {
	modes := []struct {
		name string
		mode SyncMode
	}{
		{"always", SyncAlways},
		{"1s", SyncEvery(time.Second)},
		{"never", SyncNever},
	}
	for _, m := range modes {
		for _, records := range []int{1, 100} {
			for _, appenders := range []int{1, 8, 64, 256} {
				name := fmt.Sprintf("sync=%s/records=%d/appenders=%d", m.name, records, appenders)
				b.Run(name, func(b *testing.B) { benchAppend(b, m.mode, records, appenders) })
			}
		}
	}
}

func benchAppend(b *testing.B, mode SyncMode, records, appenders int) {
	l, err := Open(b.TempDir(), Options{Sync: mode})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	payload := bytes.Repeat([]byte("0123456789abcdefgh"), records) // 18 bytes a record
	lat := newLatencies()
	before := l.Stats()
	b.ReportAllocs()
	b.ResetTimer()

	if appenders == 1 {
		// RunParallel runs at least GOMAXPROCS goroutines: one appender
		// needs a plain loop.
		for b.Loop() {
			start := time.Now()
			if err := l.Append(payload, records); err != nil {
				b.Fatal(err)
			}
			lat.add(time.Since(start))
		}
	} else {
		procs := runtime.GOMAXPROCS(0)
		b.SetParallelism((appenders + procs - 1) / procs)
		b.RunParallel(func(pb *testing.PB) {
			var mine []time.Duration
			for pb.Next() {
				start := time.Now()
				if err := l.Append(payload, records); err != nil {
					b.Error(err)
					return
				}
				mine = append(mine, time.Since(start))
			}
			lat.merge(mine)
		})
	}
	b.StopTimer()

	after := l.Stats()
	frames := after.Frames - before.Frames
	n := after.Records - before.Records
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "records/s")
	if frames > 0 {
		b.ReportMetric(float64(n)/float64(frames), "records/frame")
	}
	b.ReportMetric(lat.quantile(0.50), "p50-µs")
	b.ReportMetric(lat.quantile(0.99), "p99-µs")
}

// latencies collects per-Append durations from many goroutines.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func newLatencies() *latencies { return &latencies{} }

func (l *latencies) add(d time.Duration) { l.d = append(l.d, d) }

func (l *latencies) merge(d []time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d...)
	l.mu.Unlock()
}

// quantile returns the q-quantile in microseconds.
func (l *latencies) quantile(q float64) float64 {
	if len(l.d) == 0 {
		return 0
	}
	slices.Sort(l.d)
	return float64(l.d[int(q*float64(len(l.d)-1))]) / float64(time.Microsecond)
}

// BenchmarkReplay measures recovery speed: reading back and verifying frames
// of 100 records each.
func BenchmarkReplay(b *testing.B) {
	dir := b.TempDir()
	l, err := Open(dir, Options{Sync: SyncNever})
	if err != nil {
		b.Fatal(err)
	}
	payload := bytes.Repeat([]byte("0123456789abcdefgh"), 100)
	const frames = 10_000
	for range frames {
		if err := l.Append(payload, 100); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.SetBytes(int64(frames * len(payload)))
	var records int
	for b.Loop() {
		if err := l.Replay(1, func(fr Frame) error {
			n := fr.Records
			records += n
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(records)/b.Elapsed().Seconds(), "records/s")
	l.Close()
}
