package engine

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
)

// triplets generates n distinct triplets from small pools of strings: 1000
// client networks × 100 senders × n/100000 recipients. The strings stay hot
// in cache while the keys spread over the whole state, so a benchmark pays
// for the engine's memory traffic, not for the generator's.
type triplets struct {
	n          int
	clients    []string
	senders    []string
	recipients []string
}

func newTriplets(n int) *triplets {
	t := &triplets{n: n}
	for i := range 1000 {
		t.clients = append(t.clients, fmt.Sprintf("10.%d.%d.25", i/250, i%250))
	}
	for i := range 100 {
		t.senders = append(t.senders, fmt.Sprintf("newsletter%d@sender%d.example", i, i))
	}
	for i := range max(1, n/100000) {
		t.recipients = append(t.recipients, fmt.Sprintf("user%d@example.test", i))
	}
	return t
}

func (t *triplets) req(i int, r *Request) {
	r.ClientAddr = t.clients[i%1000]
	r.ClientName = "mail.example"
	r.Sender = t.senders[(i/1000)%100]
	r.Recipient = t.recipients[(i/100000)%len(t.recipients)]
}

// fill makes every triplet passed through the real decision path: a first
// check, then a retry after the delay.
func fill(tb testing.TB, e *Engine, t *triplets) {
	tb.Helper()
	var wg sync.WaitGroup
	workers := runtime.GOMAXPROCS(0)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var r Request
			for i := w; i < t.n; i += workers {
				t.req(i, &r)
				var ch Changes
				if _, err := e.Check(t0, &r, &ch); err != nil {
					panic(err)
				}
				if d, _ := e.Check(t0+300, &r, &ch); d.Reason != ReasonPassed {
					panic(fmt.Sprintf("triplet %d: %v", i, d.Reason))
				}
			}
		}()
	}
	wg.Wait()
}

// count writes 1000 as 1k and 10000000 as 10M, for benchmark names.
func count(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return fmt.Sprint(n)
}

// xorshift is a per-goroutine generator cheap enough not to show in a
// benchmark of 100 ns operations.
type xorshift uint64

func (x *xorshift) next() uint64 {
	*x ^= *x << 13
	*x ^= *x >> 7
	*x ^= *x << 17
	return uint64(*x)
}

var seedCounter atomic.Uint64

// bareShards is the baseline: what a sharded map with xxhash costs with
// nothing of greylisting in it (no parsing, normalisation or decision).
type bareShards struct {
	shards [256]struct {
		mu sync.Mutex
		m  map[uint64]uint64
		_  [40]byte
	}
}

func bareKey(buf []byte, r *Request) uint64 {
	buf = append(buf[:0], r.ClientAddr...)
	buf = append(buf, r.Sender...)
	buf = append(buf, r.Recipient...)
	return xxhash.Sum64(buf)
}

func newBare(t *triplets) *bareShards {
	b := &bareShards{}
	for i := range b.shards {
		b.shards[i].m = map[uint64]uint64{}
	}
	var r Request
	var buf [256]byte
	for i := range t.n {
		t.req(i, &r)
		k := bareKey(buf[:0], &r)
		b.shards[k>>56].m[k] = uint64(i)
	}
	return b
}

// BenchmarkCheckKnown measures parallel checks of passed triplets, the
// steady state of a busy MX, beside the bare sharded map in the same run.
// Compare with: go test -run '^$' -bench CheckKnown -benchtime 3s ./engine
func BenchmarkCheckKnown(b *testing.B) {
	for _, n := range []int{1_000, 1_000_000, 10_000_000} {
		t := newTriplets(n)
		b.Run(fmt.Sprintf("triplets=%s/bare-map", count(n)), func(b *testing.B) {
			bare := newBare(t)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				x := xorshift(seedCounter.Add(1) * 0x9e3779b97f4a7c15)
				var r Request
				var buf [256]byte
				var sink uint64
				for pb.Next() {
					t.req(int(x.next()%uint64(n)), &r)
					k := bareKey(buf[:0], &r)
					s := &bare.shards[k>>56]
					s.mu.Lock()
					sink += s.m[k]
					s.mu.Unlock()
				}
				_ = sink
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "checks/s")
			b.ReportMetric(0, "ns/op")
		})
		b.Run(fmt.Sprintf("triplets=%s/engine", count(n)), func(b *testing.B) {
			e := newTestEngine(b, nil)
			fill(b, e, t)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				x := xorshift(seedCounter.Add(1) * 0x9e3779b97f4a7c15)
				var r Request
				for pb.Next() {
					t.req(int(x.next()%uint64(n)), &r)
					var ch Changes
					if d, _ := e.Check(t0+600, &r, &ch); d.Reason != ReasonKnown {
						b.Fatalf("not known: %v", d.Reason)
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "checks/s")
			b.ReportMetric(0, "ns/op")
		})
		// As a pipelining server decides: 32 requests at a time through
		// CheckBatch, which prefetches each request's slot while deciding
		// the one before.
		b.Run(fmt.Sprintf("triplets=%s/engine-batch32", count(n)), func(b *testing.B) {
			e := newTestEngine(b, nil)
			fill(b, e, t)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				x := xorshift(seedCounter.Add(1) * 0x9e3779b97f4a7c15)
				reqs := make([]Request, 32)
				res := make([]Result, 32)
				var recs []byte
				for {
					m := 0
					for m < len(reqs) && pb.Next() {
						t.req(int(x.next()%uint64(n)), &reqs[m])
						m++
					}
					if m == 0 {
						return
					}
					recs, _ = e.CheckBatch(t0+600, reqs[:m], res, recs[:0])
					for i := range m {
						if res[i].Reason != ReasonKnown {
							b.Fatalf("not known: %v", res[i].Reason)
						}
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "checks/s")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// BenchmarkCheckNew measures first-seen triplets in the engine alone (no
// log): map growth, wheel filing, record encoding.
func BenchmarkCheckNew(b *testing.B) {
	e := newTestEngine(b, nil)
	t := newTriplets(100_000_000)
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var r Request
		for pb.Next() {
			t.req(int(next.Add(1)), &r)
			var ch Changes
			if d, _ := e.Check(t0, &r, &ch); d.Reason != ReasonNew {
				b.Fatalf("not new: %v", d.Reason)
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "checks/s")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkMemory fills the engine with passed triplets through Check and
// reports the heap each costs (HeapInuse / entries, wheel included) and how
// long a full garbage collection takes with them in memory.
// Run: go test -run '^$' -bench Memory -benchtime 1x ./engine
func BenchmarkMemory(b *testing.B) {
	for _, n := range []int{1_000_000, 10_000_000} {
		b.Run("triplets="+count(n), func(b *testing.B) {
			for b.Loop() {
				t := newTriplets(n)
				runtime.GC()
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				e := newTestEngine(b, nil)
				fill(b, e, t)
				runtime.GC()
				runtime.ReadMemStats(&after)
				start := time.Now()
				runtime.GC()
				gc := time.Since(start)
				b.ReportMetric(float64(after.HeapInuse-before.HeapInuse)/float64(n), "heap-B/entry")
				b.ReportMetric(float64(gc.Microseconds())/1000, "full-gc-ms")
				runtime.KeepAlive(e)
			}
			b.ReportMetric(0, "ns/op")
		})
	}
}
