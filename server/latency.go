package server

import (
	"math"
	"sort"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// latency is a Prometheus histogram that takes n observations of one value
// in one call: every request of a pipelined window waited the same time
// from read to answer, and observing them one at a time cost three atomic
// additions a request on cache lines that both cores keep writing (1.6% of
// the server's time, 32 requests deep).
type latency struct {
	counts  []atomic.Uint64 // per bucket, not cumulative; the last is +Inf
	sumBits atomic.Uint64   // float64 bits of the sum of observations
}

func newLatency() *latency {
	return &latency{counts: make([]atomic.Uint64, len(latencyBuckets)+1)}
}

// observe records n requests that took v seconds each.
func (h *latency) observe(v float64, n int) {
	if n <= 0 {
		return
	}
	h.counts[sort.SearchFloat64s(latencyBuckets, v)].Add(uint64(n))
	add := v * float64(n)
	for {
		old := h.sumBits.Load()
		if h.sumBits.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+add)) {
			return
		}
	}
}

// latencies exports the per-protocol histograms as
// greyhold_request_duration_seconds.
type latencies struct {
	desc   *prometheus.Desc
	protos []string
	hs     []*latency
}

func (c *latencies) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *latencies) Collect(ch chan<- prometheus.Metric) {
	for i, h := range c.hs {
		// The count is the buckets' total, so a scrape during observations
		// is consistent in itself; the sum may lag by a few requests.
		cum := make(map[float64]uint64, len(latencyBuckets))
		var total uint64
		for j, ub := range latencyBuckets {
			total += h.counts[j].Load()
			cum[ub] = total
		}
		total += h.counts[len(latencyBuckets)].Load()
		ch <- prometheus.MustNewConstHistogram(c.desc, total, math.Float64frombits(h.sumBits.Load()), cum, c.protos[i])
	}
}
