package main

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestHistQuantiles holds every reported percentile to the sorted
// reference: never below it (a latency is not understated), and at most
// one bucket width, 1/128 of the value, above.
func TestHistQuantiles(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	sets := map[string]func() uint64{
		// Loopback latencies: log-normal around 100 µs with a long tail.
		"lognormal": func() uint64 { return uint64(math.Exp(r.NormFloat64()*1.2 + math.Log(100e3))) },
		"uniform":   func() uint64 { return r.Uint64N(1e9) },
		"small":     func() uint64 { return r.Uint64N(300) }, // the exact linear buckets
		"constant":  func() uint64 { return 123456 },
		"huge":      func() uint64 { return histMax + r.Uint64N(1e12) }, // clamped
	}
	for name, gen := range sets {
		t.Run(name, func(t *testing.T) {
			for _, n := range []int{1, 7, 1000, 100000} {
				var h hist
				ref := make([]uint64, n)
				for i := range ref {
					v := gen()
					h.record(v)
					ref[i] = min(v, histMax)
				}
				slices.Sort(ref)
				for _, q := range []float64{0.001, 0.1, 0.5, 0.9, 0.99, 0.999, 1} {
					rank := max(int(math.Ceil(q*float64(n))), 1)
					want := ref[rank-1]
					got := h.quantile(q)
					if got < want || float64(got-want) > float64(want)/128+1 {
						t.Errorf("n=%d q=%v: got %d, reference %d", n, q, got, want)
					}
				}
				if h.min != ref[0] || h.max != ref[n-1] || h.n != uint64(n) {
					t.Errorf("n=%d: min %d max %d count %d; want %d %d %d", n, h.min, h.max, h.n, ref[0], ref[n-1], n)
				}
			}
		})
	}
}

// TestHistMerge checks that merged per-connection histograms answer as
// one histogram of all the values would.
func TestHistMerge(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	var all, merged hist
	parts := make([]hist, 5)
	for i := range 50000 {
		v := r.Uint64N(1e7) * uint64(1+i%5)
		all.record(v)
		parts[i%5].record(v)
	}
	for i := range parts {
		merged.merge(&parts[i])
	}
	merged.merge(&hist{}) // an idle connection changes nothing
	for _, q := range []float64{0.5, 0.99, 0.999} {
		if a, b := all.quantile(q), merged.quantile(q); a != b {
			t.Errorf("q=%v: merged %d, whole %d", q, b, a)
		}
	}
	if all.min != merged.min || all.max != merged.max || all.sum != merged.sum {
		t.Errorf("merged min/max/sum %d/%d/%d; whole %d/%d/%d", merged.min, merged.max, merged.sum, all.min, all.max, all.sum)
	}
}

// TestHistBuckets walks the bucket boundaries: contiguous, monotonic, and
// each bucket's high bound maps back to it.
func TestHistBuckets(t *testing.T) {
	prev := -1
	for v := uint64(0); v < 1<<20; v++ {
		b := bucketOf(v)
		if b != prev && b != prev+1 {
			t.Fatalf("bucketOf(%d) = %d after %d: not contiguous", v, b, prev)
		}
		if b != prev && prev >= 0 && bucketHigh(prev) != v-1 {
			t.Fatalf("bucketHigh(%d) = %d; want %d", prev, bucketHigh(prev), v-1)
		}
		prev = b
	}
	if b := bucketOf(histMax); b != histBuckets-1 || bucketHigh(b) != histMax {
		t.Fatalf("bucketOf(histMax) = %d (high %d); want %d (high %d)", b, bucketHigh(b), histBuckets-1, uint64(histMax))
	}
}
