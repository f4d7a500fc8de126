package engine

import (
	"math/rand/v2"
	"testing"
)

// TestTableModel runs random inserts, updates and deletes against the table
// and a Go map side by side. Keys are drawn from a small pool so runs of
// probes wrap round the end of the array and deletions shift entries back
// across it, which is where linear probing goes wrong if it does.
func TestTableModel(t *testing.T) {
	for _, shift := range []uint{0, 8} {
		for seed := range uint64(20) {
			r := rand.New(rand.NewPCG(seed, uint64(shift)))
			tb := table{shift: shift}
			model := map[uint64]entry{}
			pool := make([]uint64, 64+r.IntN(2000))
			for i := range pool {
				pool[i] = r.Uint64()
				if i%2 == 0 {
					// Keys that share a home slot: same bits below the
					// shard bits' top, different low bits.
					pool[i] = pool[i/2]&^0xffff | uint64(r.IntN(0xffff))
				}
			}
			pool[0] = 0 // the key that needs remapping
			for step := range 20000 {
				k := pool[r.IntN(len(pool))]
				switch r.IntN(3) {
				case 0, 1:
					e := entry{first: Time(step), word: r.Uint32()}
					tb.set(k, e)
					model[fixKey(k)] = e
				case 2:
					_, had := model[fixKey(k)]
					if got := tb.del(k); got != had {
						t.Fatalf("seed %d step %d: del(%x) = %v, want %v", seed, step, k, got, had)
					}
					delete(model, fixKey(k))
				}
				if tb.len() != len(model) {
					t.Fatalf("seed %d step %d: len %d, want %d", seed, step, tb.len(), len(model))
				}
			}
			for _, k := range pool {
				want, ok := model[fixKey(k)]
				got, gotOK := tb.get(k)
				if ok != gotOK || got != want {
					t.Fatalf("seed %d: get(%x) = %v %v, want %v %v", seed, k, got, gotOK, want, ok)
				}
			}
			n := 0
			for _, s := range tb.slots {
				if s.k != 0 {
					n++
					if _, ok := model[s.k]; !ok {
						t.Fatalf("seed %d: stray slot %x", seed, s.k)
					}
				}
			}
			if n != len(model) {
				t.Fatalf("seed %d: %d occupied slots, want %d", seed, n, len(model))
			}
			if len(tb.slots) > 0 && tb.len()*maxLoadDen > len(tb.slots)*maxLoadNum {
				t.Fatalf("seed %d: load %d/%d above bound", seed, tb.len(), len(tb.slots))
			}
		}
	}
}

func TestTableReserve(t *testing.T) {
	var tb table
	tb.reserve(1000)
	size := len(tb.slots)
	for i := range 1000 {
		tb.set(uint64(i)*0x9e3779b97f4a7c15+1, entry{first: 1})
	}
	if len(tb.slots) != size {
		t.Errorf("table grew from %d to %d slots after reserving for 1000", size, len(tb.slots))
	}
}

// TestTableReserveGrowsGeometrically: reserving one more entry at a time
// must not rehash on every call (an unsorted import, which reserves a little
// at a time, would take minutes).
func TestTableReserveGrowsGeometrically(t *testing.T) {
	var tb table
	resizes, last := 0, 0
	for i := range 100000 {
		tb.reserve(tb.len() + 1)
		tb.set(uint64(i)*0x9e3779b97f4a7c15+1, entry{first: 1})
		if len(tb.slots) != last {
			resizes++
			last = len(tb.slots)
		}
	}
	if resizes > 40 {
		t.Errorf("%d resizes for 100000 one-at-a-time reserves", resizes)
	}
}

// BenchmarkTableGrow times one growth of a shard's table, which happens
// under the shard's lock: checks to that shard wait this long. A shard holds
// triplets/shards entries, so this is what sizes --shards for large stores.
//
//	go test -run '^$' -bench TableGrow -benchtime 5x ./engine
func BenchmarkTableGrow(b *testing.B) {
	for _, n := range []int{40_000, 250_000, 4_000_000} {
		b.Run("entries="+count(n), func(b *testing.B) {
			var full table
			r := rand.New(rand.NewPCG(1, 2))
			for full.len() < n {
				full.set(r.Uint64(), entry{first: 1})
			}
			var t table
			for b.Loop() {
				b.StopTimer()
				t = table{slots: append(t.slots[:0], full.slots...), n: full.n}
				b.StartTimer()
				t.resize(len(t.slots) + len(t.slots)/2)
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/growth")
			b.ReportMetric(float64(len(full.slots)*16)/(1<<20), "MiB-before")
			b.ReportMetric(0, "ns/op")
		})
	}
}
