package server

import (
	"math"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestLatencyHistogram: n observations at once count as n, land in the
// bucket whose upper bound is the first at or above the value, and add n
// times the value to the sum.
func TestLatencyHistogram(t *testing.T) {
	h := newLatency()
	h.observe(1e-5, 32) // on a bound: that bucket
	h.observe(3e-5, 1)  // between 2.5e-5 and 5e-5
	h.observe(2, 2)     // above the last bound
	h.observe(0.001, 0) // nothing
	reg := prometheus.NewRegistry()
	reg.MustRegister(&latencies{
		desc:   prometheus.NewDesc("d", "h", []string{"protocol"}, nil),
		protos: []string{"policy"},
		hs:     []*latency{h},
	})
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	hist := mfs[0].GetMetric()[0].GetHistogram()
	if hist.GetSampleCount() != 35 {
		t.Errorf("count %d, want 35", hist.GetSampleCount())
	}
	if want := 32*1e-5 + 3e-5 + 4; math.Abs(hist.GetSampleSum()-want) > 1e-12 {
		t.Errorf("sum %g, want %g", hist.GetSampleSum(), want)
	}
	want := map[float64]uint64{1e-5: 32, 2.5e-5: 32, 5e-5: 33, 1: 33}
	for _, b := range hist.GetBucket() {
		if w, ok := want[b.GetUpperBound()]; ok && b.GetCumulativeCount() != w {
			t.Errorf("bucket le=%g: %d, want %d", b.GetUpperBound(), b.GetCumulativeCount(), w)
		}
	}
}
