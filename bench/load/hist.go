package main

import (
	"math"
	"math/bits"
)

// hist is a log-linear latency histogram in the manner of HdrHistogram:
// values below 2^subBits nanoseconds have a bucket each, and every power of
// two above is cut into 2^(subBits-1) equal buckets, so a bucket is never
// wider than 1/2^(subBits-1) of the values it holds. Memory is fixed (one
// array, no allocation when recording) and each connection owns one, so
// recording takes no lock; the runner merges them at the end.
type hist struct {
	counts   [histBuckets]uint64
	n        uint64
	sum      uint64
	min, max uint64
}

const (
	// 8 bits gives buckets at most 1/128 (0.8%) of their value wide: finer
	// than the run-to-run noise of any loopback benchmark, and the array
	// stays at 34 KiB, small enough for one per connection.
	subBits = 8
	half    = 1 << (subBits - 1)
	// histMax caps recorded values at 2^40 ns (18 minutes), beyond the
	// longest run allowed; larger values land in the last bucket.
	histMaxBits = 40
	histMax     = 1<<histMaxBits - 1
	histBuckets = (histMaxBits-subBits+1)*half + half
)

// bucketOf returns the bucket index of v (v <= histMax).
func bucketOf(v uint64) int {
	if v < 1<<subBits {
		return int(v)
	}
	e := bits.Len64(v) - subBits
	return e*half + int(v>>uint(e))
}

// bucketHigh is the largest value bucket i holds. Percentiles report it, so
// a latency is never understated.
func bucketHigh(i int) uint64 {
	if i < 1<<subBits {
		return uint64(i)
	}
	e := i/half - 1
	m := uint64(i - e*half)
	return (m+1)<<uint(e) - 1
}

func (h *hist) record(v uint64) {
	if v > histMax {
		v = histMax
	}
	h.counts[bucketOf(v)]++
	if h.n == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.n++
	h.sum += v
}

func (h *hist) merge(o *hist) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	h.max = max(h.max, o.max)
	h.n += o.n
	h.sum += o.sum
}

// quantile returns the value at quantile q (0 < q <= 1): the smallest
// bucket bound at or below which at least ceil(q*n) values lie, capped by
// the largest value seen.
func (h *hist) quantile(q float64) uint64 {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = max(rank, 1)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return min(bucketHigh(i), h.max)
		}
	}
	return h.max
}

func (h *hist) mean() float64 {
	if h.n == 0 {
		return 0
	}
	return float64(h.sum) / float64(h.n)
}
