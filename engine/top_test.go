package engine

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestTopDeferred: the clients and sender domains deferred most come out
// in order with estimates near the truth, defers older than an hour drop
// out, and passes are not counted.
func TestTopDeferred(t *testing.T) {
	e := newTestEngine(t, nil)
	var ch Changes
	// 203.0.113.0/24 is deferred 4,000 times, from spam.example; ten
	// other networks 200 times each, from ten domains; all new triplets.
	n := 0
	check := func(now Time, client, sender string) {
		ch.Reset()
		d, err := e.Check(now, &Request{ClientAddr: client, ClientName: "unknown", Sender: sender, Recipient: fmt.Sprintf("r%d@example.test", n)}, &ch)
		if err != nil || d.Verdict != Defer {
			t.Fatalf("check: %v %v", d, err)
		}
		n++
	}
	for i := range 4000 {
		check(t0+Time(i%600), fmt.Sprintf("203.0.113.%d", i%200), "bot@spam.example")
	}
	for j := range 10 {
		for i := range 200 {
			check(t0+Time(i), fmt.Sprintf("198.51.%d.7", j), fmt.Sprintf("news-%d@list%d.example", i, j))
		}
	}
	top := e.TopDeferred(t0+700, 3)
	if len(top.Clients) != 3 || top.Clients[0].Key != "net:203.0.113.0/24" || len(top.Domains) != 3 || top.Domains[0].Key != "spam.example" {
		t.Fatalf("top: %+v", top)
	}
	// Sampling one in eight of 4,000: the estimate is within a third.
	if d := top.Clients[0].Defers; d < 2700 || d > 5300 {
		t.Errorf("estimate %d for 4,000 defers", d)
	}
	if top.Clients[1].Defers > 600 || top.Samples < 500 || top.Samples > 1000 {
		t.Errorf("the others: %+v", top)
	}
	// An hour later the minutes have gone by.
	if later := e.TopDeferred(t0+700+3600, 3); len(later.Clients) != 0 || later.Samples != 0 {
		t.Errorf("an hour later: %+v", later)
	}
	// Name identities and bounces.
	e2 := newTestEngine(t, func(o *Options) { o.Keys.Identity = IdentityName })
	for i := range 200 {
		ch.Reset()
		e2.Check(t0, &Request{ClientAddr: "192.0.2.1", ClientName: "mail-1.outbound.example.com", Sender: "", Recipient: fmt.Sprintf("r%d@example.test", i)}, &ch)
	}
	if top := e2.TopDeferred(t0, 1); len(top.Clients) != 1 || top.Clients[0].Key != "name:outbound.example.com" || top.Domains[0].Key != "<>" {
		t.Errorf("name mode: %+v", top)
	}
}

// TestTopConcurrent: checks on many goroutines sample while the drain
// runs (under -race: the ring is atomic words only).
func TestTopConcurrent(t *testing.T) {
	e := newTestEngine(t, nil)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var ch Changes
			for i := range 20000 {
				ch.Reset()
				e.Check(t0+Time(i/100), &Request{ClientAddr: fmt.Sprintf("10.%d.%d.1", g, i%50), ClientName: "unknown", Sender: "a@b.example", Recipient: fmt.Sprintf("%d@x.example", i)}, &ch)
			}
		}()
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 200 {
			e.DrainTop()
			time.Sleep(time.Millisecond)
		}
	}()
	wg.Wait()
	<-done
	top := e.TopDeferred(t0+200, 5)
	if len(top.Domains) != 1 || top.Domains[0].Key != "b.example" || top.Domains[0].Defers < 40000 || top.Domains[0].Defers > 120000 {
		t.Errorf("80,000 defers from b.example: %+v", top)
	}
}

// TestTopNoAllocation: sampling allocates nothing on the check path.
func TestTopNoAllocation(t *testing.T) {
	e := newTestEngine(t, nil)
	var ch Changes
	r := &Request{ClientAddr: "192.0.2.1", ClientName: "unknown", Sender: "a@b.example", Recipient: "c@d.example"}
	now := t0
	if n := testing.AllocsPerRun(1000, func() {
		ch.Reset()
		now++ // a new second: a new chance to be sampled
		r.Recipient = "c@d.example"
		e.Check(now, r, &ch)
	}); n != 0 {
		t.Errorf("%v allocations a check", n)
	}
	if e.top.next.Load() == 0 {
		t.Error("nothing was sampled")
	}
}

// BenchmarkTopCost is CheckRealistic's workload on two engines, one
// sampling defers for greyhold top and one not, a window to each in turn
// (which goes first alternating), so that a loaded machine slows both
// alike: top/none is the sampling engine's time a check against the
// other's.
func BenchmarkTopCost(b *testing.B) {
	none := newRealistic(b, nil)
	none.e.top = nil
	top := newRealistic(b, nil)
	var tNone, tTop time.Duration
	i := 0
	for b.Loop() {
		if i&1 == 0 {
			tNone += none.round(none.e, t0+800)
			tTop += top.round(top.e, t0+800)
		} else {
			tTop += top.round(top.e, t0+800)
			tNone += none.round(none.e, t0+800)
		}
		i++
		if i%64 == 0 {
			top.e.DrainTop()
		}
	}
	checks := float64(b.N * realisticBatch)
	b.ReportMetric(float64(tNone.Nanoseconds())/checks, "none-ns/check")
	b.ReportMetric(float64(tTop.Nanoseconds())/checks, "top-ns/check")
	b.ReportMetric(float64(tTop)/float64(tNone), "top/none")
	b.ReportMetric(0, "ns/op")
}
