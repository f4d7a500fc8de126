package store

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/greyhold/greyhold/engine"
	"github.com/greyhold/greyhold/internal/testutil"
	"github.com/greyhold/greyhold/wal"
)

// benchOptions: the real clock path is not under test; the log syncs as
// each benchmark says.
func benchOptions(mode wal.SyncMode) Options {
	o := testOptions(engine.NewManualClock(t0))
	o.Sync = mode
	return o
}

// requests renders distinct requests from small pools of strings (65536
// client addresses × 1000 senders × n/1000 recipients), so the benchmark
// measures the store, not fmt, and the garbage collector has no big heap of
// strings to scan.
type requests struct {
	clients, senders, recipients []string
}

func newRequests(n int) *requests {
	r := &requests{}
	for i := range 1 << 16 {
		r.clients = append(r.clients, fmt.Sprintf("10.%d.%d.25", i>>8, i&255)) // one /24 each
	}
	for i := range 1000 {
		r.senders = append(r.senders, fmt.Sprintf("newsletter@sender%d.example", i))
	}
	for i := range n/(1<<16*1000) + 1 {
		r.recipients = append(r.recipients, fmt.Sprintf("user%d@example.test", i))
	}
	return r
}

func (r *requests) at(i int, req *engine.Request) {
	req.ClientAddr = r.clients[i&0xffff]
	req.ClientName = "mail.sender.example"
	req.Sender = r.senders[(i>>16)%1000]
	req.Recipient = r.recipients[(i>>16)/1000]
}

func (r *requests) slice(from, n int) []engine.Request {
	out := make([]engine.Request, n)
	for i := range out {
		r.at(from+i, &out[i])
	}
	return out
}

// BenchmarkCheckNewLogged measures first-seen triplets through the store:
// decision, record and log append, with callers concurrent callers sharing
// group commits, in each fsync mode. Every check is a new triplet, so every
// check writes a record.
//
//	go test -run '^$' -bench CheckNewLogged -benchtime 2000000x ./store
func BenchmarkCheckNewLogged(b *testing.B) {
	for _, mode := range []wal.SyncMode{wal.SyncEvery(time.Second), wal.SyncAlways, wal.SyncNever} {
		for _, callers := range []int{64, 256} {
			b.Run(fmt.Sprintf("fsync=%s/callers=%d", mode, callers), func(b *testing.B) {
				s := mustOpen(b, b.TempDir(), benchOptions(mode))
				defer s.Close()
				reqs := newRequests(b.N + 1)
				var next atomic.Int64
				b.SetParallelism((callers + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
				b.ReportAllocs()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					var req engine.Request
					for pb.Next() {
						i := next.Add(1)
						reqs.at(int(i), &req)
						d, err := s.CheckAt(t0, &req)
						if err != nil || d.Reason != engine.ReasonNew {
							b.Fatalf("check %d: %v %v", i, d.Reason, err)
						}
					}
				})
				b.StopTimer()
				st := s.Stats().WAL
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "checks/s")
				b.ReportMetric(float64(st.Records)/float64(max(st.Frames, 1)), "records/frame")
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}

// BenchmarkCheckBatchNew is the pipelined case: batches of 32 new triplets
// (a pipelined connection's read) decided with one append each.
func BenchmarkCheckBatchNew(b *testing.B) {
	const batch = 32
	s := mustOpen(b, b.TempDir(), benchOptions(wal.SyncEvery(time.Second)))
	defer s.Close()
	// One b.N is one check: each goroutine gathers the requests its
	// iterations draw into batches of 32 (the last may be shorter).
	reqs := newRequests(b.N + 1)
	var next atomic.Int64
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var out []Result
		in := make([]engine.Request, 0, batch)
		for pb.Next() {
			in = in[:len(in)+1]
			reqs.at(int(next.Add(1)), &in[len(in)-1])
			if len(in) == batch {
				out = s.CheckBatch(t0, in, out[:0])
				in = in[:0]
			}
		}
		if len(in) > 0 {
			s.CheckBatch(t0, in, out[:0])
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "checks/s")
}

// BenchmarkSnapshot writes a snapshot of n realistic triplets and loads it
// back through Open, reporting bytes per triplet and seconds each way.
//
//	go test -run '^$' -bench Snapshot -benchtime 1x ./store
func BenchmarkSnapshot(b *testing.B) {
	for _, n := range []int{1_000_000, 10_000_000} {
		b.Run(fmt.Sprintf("triplets=%dM", n/1_000_000), func(b *testing.B) {
			for b.Loop() {
				dir := b.TempDir()
				s := mustOpen(b, dir, benchOptions(wal.SyncNever))
				testutil.FillRealistic(b, s.Engine(), n, 1)
				start := time.Now()
				info, err := s.Snapshot()
				if err != nil {
					b.Fatal(err)
				}
				write := time.Since(start)
				if err := s.Close(); err != nil {
					b.Fatal(err)
				}
				runtime.GC()
				start = time.Now()
				s = mustOpen(b, dir, benchOptions(wal.SyncNever))
				load := time.Since(start)
				if got := s.Stats().Engine.Triplets; got != n {
					b.Fatalf("loaded %d triplets, want %d", got, n)
				}
				s.Close()
				b.ReportMetric(float64(info.Bytes)/float64(n), "bytes/triplet")
				b.ReportMetric(write.Seconds(), "write-s")
				b.ReportMetric(load.Seconds(), "load-s")
			}
			b.ReportMetric(0, "ns/op")
		})
	}
}

// BenchmarkRecovery measures a restart: a snapshot of 10M triplets plus 1M
// log records after it, recovered by Open.
//
//	go test -run '^$' -bench Recovery -benchtime 1x -timeout 30m ./store
func BenchmarkRecovery(b *testing.B) {
	const triplets, records = 10_000_000, 1_000_000
	for b.Loop() {
		dir := b.TempDir()
		s := mustOpen(b, dir, benchOptions(wal.SyncNever))
		testutil.FillRealistic(b, s.Engine(), triplets, 2)
		if _, err := s.Snapshot(); err != nil {
			b.Fatal(err)
		}
		reqs := newRequests(records)
		var out []Result
		for i := 0; i < records; i += 1000 {
			out = s.CheckBatch(t0, reqs.slice(i, 1000), out[:0])
		}
		if got := s.Stats().WAL.Records; got != records {
			b.Fatalf("%d records logged, want %d", got, records)
		}
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
		walBytes := dirSize(b, filepath.Join(dir, walDirName))
		runtime.GC()
		start := time.Now()
		s = mustOpen(b, dir, benchOptions(wal.SyncNever))
		took := time.Since(start)
		rec := s.Stats().Recovery
		s.Close()
		b.ReportMetric(took.Seconds(), "recovery-s")
		b.ReportMetric(rec.SnapshotTime.Seconds(), "snapshot-load-s")
		b.ReportMetric(rec.ReplayTime.Seconds(), "log-replay-s")
		b.ReportMetric(float64(walBytes)/records, "log-bytes/record")
	}
	b.ReportMetric(0, "ns/op")
}

func dirSize(tb testing.TB, dir string) int64 {
	var n int64
	ents, err := os.ReadDir(dir)
	if err != nil {
		tb.Fatal(err)
	}
	for _, e := range ents {
		if fi, err := e.Info(); err == nil && !e.IsDir() {
			n += fi.Size()
		}
	}
	return n
}

// BenchmarkScale loads 10M triplets through the store as a busy MX would
// make them (checks in batches, each logged, first seen spread over 35 days,
// seven in ten retried after the delay and passed), then reports what the
// per-entry costs are that a projection to 100M and 1B triplets rests on:
// RSS, heap per triplet, log bytes per record, snapshot bytes per triplet,
// snapshot write and load time, and the time a restart takes.
//
//	go test -run '^$' -bench Scale -benchtime 1x -timeout 30m ./store
func BenchmarkScale(b *testing.B) {
	const n = 10_000_000
	const batch = 1000
	for b.Loop() {
		dir := b.TempDir()
		runtime.GC()
		var m0 runtime.MemStats
		runtime.ReadMemStats(&m0)
		o := benchOptions(wal.SyncEvery(time.Second))
		// The pool reuses each client network for 153 senders over the
		// 35 days; with the auto-whitelist on, every network would be
		// whitelisted within hours and stop making triplets.
		o.Engine.AutoWhitelistClients = 0
		s := mustOpen(b, dir, o)
		reqs := newRequests(n)
		span := uint32(35 * 24 * 3600)
		start := time.Now()
		in := make([]engine.Request, batch)
		var out []Result
		for i := 0; i < n; i += batch {
			for j := range in {
				reqs.at(i+j, &in[j])
			}
			now := engine.Time(uint32(t0) - span + uint32(uint64(i)*uint64(span)/n))
			out = s.CheckBatch(now, in, out[:0])
			// Seven in ten come back after the delay and pass.
			retry := in[:batch*7/10]
			out = s.CheckBatch(now+300, retry, out[:0])
		}
		load := time.Since(start)
		st := s.Stats()
		if st.Engine.Triplets != n {
			b.Fatalf("%d triplets, want %d", st.Engine.Triplets, n)
		}
		runtime.GC()
		var m1 runtime.MemStats
		runtime.ReadMemStats(&m1)
		rss := rssBytes(b)
		info, err := s.Snapshot()
		if err != nil {
			b.Fatal(err)
		}
		logBytes := float64(st.WAL.WrittenBytes) / float64(st.WAL.Records)
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		rstart := time.Now()
		s = mustOpen(b, dir, o)
		recovery := time.Since(rstart)
		rec := s.Stats().Recovery
		s.Close()
		b.ReportMetric(float64(n)/load.Seconds(), "loaded-triplets/s")
		b.ReportMetric(float64(rss)/n, "rss-B/triplet")
		b.ReportMetric(float64(m1.HeapInuse-m0.HeapInuse)/n, "heap-B/triplet")
		b.ReportMetric(logBytes, "log-B/record")
		b.ReportMetric(float64(info.Bytes)/n, "snapshot-B/triplet")
		b.ReportMetric(info.Duration.Seconds(), "snapshot-write-s")
		b.ReportMetric(rec.SnapshotTime.Seconds(), "snapshot-load-s")
		b.ReportMetric(recovery.Seconds(), "recovery-s")
	}
	b.ReportMetric(0, "ns/op")
}

// BenchmarkDurability runs 300,000 first-seen checks with 64 callers in
// each fsync mode, and 2,000 fsyncs of this disk, in one run (fixed work,
// so run it once):
//
//	go test -run '^$' -bench Durability -benchtime 1x ./store
func BenchmarkDurability(b *testing.B) {
	const checks, callers = 300_000, 64
	for _, mode := range []wal.SyncMode{wal.SyncNever, wal.SyncEvery(time.Second), wal.SyncAlways} {
		b.Run("fsync="+mode.String(), func(b *testing.B) {
			for b.Loop() {
				s := mustOpen(b, b.TempDir(), benchOptions(mode))
				reqs := newRequests(checks)
				var next atomic.Int64
				var wg sync.WaitGroup
				start := time.Now()
				for range callers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						var req engine.Request
						for i := int(next.Add(1)); i <= checks; i = int(next.Add(1)) {
							reqs.at(i, &req)
							if _, err := s.CheckAt(t0, &req); err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
				took := time.Since(start)
				st := s.Stats().WAL
				s.Close()
				b.ReportMetric(checks/took.Seconds(), "checks/s")
				b.ReportMetric(float64(st.Records)/float64(max(st.Frames, 1)), "records/frame")
			}
			b.ReportMetric(0, "ns/op")
		})
	}
	b.Run("fsync-latency", func(b *testing.B) {
		for b.Loop() {
			f, err := os.Create(filepath.Join(b.TempDir(), "probe"))
			if err != nil {
				b.Fatal(err)
			}
			lat := make([]time.Duration, 0, 2000)
			buf := make([]byte, 4096)
			for range 2000 {
				f.Write(buf)
				t := time.Now()
				if err := f.Sync(); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t))
			}
			f.Close()
			slices.Sort(lat)
			q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) }
			b.ReportMetric(q(0.5), "p50-µs")
			b.ReportMetric(q(0.99), "p99-µs")
			b.ReportMetric(q(0.999), "p999-µs")
		}
		b.ReportMetric(0, "ns/op")
	})
}

func rssBytes(tb testing.TB) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb * 1024
		}
	}
	return 0
}
