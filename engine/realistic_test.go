package engine

import (
	"fmt"
	"slices"
	"testing"
	"time"
	"unsafe"

	"github.com/greyhold/greyhold/whitelist"
)

// BenchmarkCheckRealistic decides as the servers do under bench/load:
// batches of 256 from a pool of 100,000 known triplets with the kinds of
// name and sender the load generator sends, one request in ten a triplet
// never seen, the built-in whitelists loaded. One goroutine; ns/check
// times CheckBatch alone, the engine's share of a server's CPU a check
// (0.45–0.5 µs of the 0.63–0.85 µs a line costs greyhold under bench/load).
func BenchmarkCheckRealistic(b *testing.B) { benchRealistic(b, nil) }

// BenchmarkCheckRealisticName is CheckRealistic in name mode, alone: for
// counting the instructions name mode adds (under callgrind, against
// CheckRealistic), where BenchmarkIdentityCost gives the time.
func BenchmarkCheckRealisticName(b *testing.B) {
	benchRealistic(b, func(o *Options) { o.Keys.Identity = IdentityName })
}

func benchRealistic(b *testing.B, mut func(*Options)) {
	w := newRealistic(b, mut)
	var decide time.Duration
	for b.Loop() {
		decide += w.round(w.e, t0+800)
	}
	b.ReportMetric(float64(decide.Nanoseconds())/float64(b.N*realisticBatch), "ns/check")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkIdentityCost is CheckRealistic's workload on two engines, one
// keying clients by network and one by name, a window to each in turn
// (which goes first alternating), so that a loaded machine slows both
// alike. name/network is the name engine's checks/s against the network
// engine's: what name mode costs. Every request of the workload has a
// verified, non-generic name, so every one takes name mode's whole path.
func BenchmarkIdentityCost(b *testing.B) {
	net := newRealistic(b, func(o *Options) { o.Keys.Identity = IdentityNetwork })
	name := newRealistic(b, func(o *Options) { o.Keys.Identity = IdentityName })
	var tNet, tName time.Duration
	i := 0
	for b.Loop() {
		if i&1 == 0 {
			tNet += net.round(net.e, t0+800)
			tName += name.round(name.e, t0+800)
		} else {
			tName += name.round(name.e, t0+800)
			tNet += net.round(net.e, t0+800)
		}
		i++
	}
	checks := float64(b.N * realisticBatch)
	b.ReportMetric(float64(tNet.Nanoseconds())/checks, "network-ns/check")
	b.ReportMetric(float64(tName.Nanoseconds())/checks, "name-ns/check")
	b.ReportMetric(float64(tNet)/float64(tName), "name/network")
	b.ReportMetric(0, "ns/op")
}

const realisticPool, realisticBatch = 100_000, 256

// realistic is CheckRealistic's engine and workload.
type realistic struct {
	e     *Engine
	reqs  []Request
	fresh []string
	win   []Request
	res   []Result
	recs  []byte
	arena []byte
	x     xorshift
	n     int
}

func newRealistic(b *testing.B, mut func(*Options)) *realistic {
	e := newTestEngine(b, mut)
	wl, err := whitelist.LoadFiles([]string{whitelist.Builtin}, []string{whitelist.Builtin})
	if err != nil {
		b.Fatal(err)
	}
	e.SetStatic(wl)
	const pool, batch = realisticPool, realisticBatch
	reqs := make([]Request, pool)
	for i := range reqs {
		dom := fmt.Sprintf("shop%d-mail.example", i%997)
		r := &reqs[i]
		r.ClientAddr = fmt.Sprintf("198.%d.%d.%d", 18+i%2, i/256%256, i%256)
		r.ClientName = fmt.Sprintf("mx%d.%s", i%40, dom)
		switch k := i % 100; {
		case k < 5:
		case k < 15:
			r.Sender = fmt.Sprintf("prvs=1%09x=jane.doe@%s", i, dom)
		case k < 23:
			r.Sender = fmt.Sprintf("bounce-%d-qxkz@bounces.%s", 100000+i*7919, dom)
		case k < 40:
			r.Sender = "newsletter@" + dom
		default:
			r.Sender = "john.smith@" + dom
		}
		r.Recipient = fmt.Sprintf("mary.jones%d@example.net", i)
	}
	w := &realistic{e: e, reqs: reqs, res: make([]Result, batch), win: make([]Request, batch), x: xorshift(0x9e3779b97f4a7c15)}
	for _, at := range []Time{t0, t0 + 400} {
		for i := 0; i < pool; i += batch {
			w.recs, _ = e.CheckBatch(at, reqs[i:min(i+batch, pool)], w.res, w.recs[:0])
		}
	}
	// New recipients made beforehand: fmt in the loop would cost more than
	// some of what is measured. After 400,000 they repeat, and are then
	// pending rather than new, long after a benchmark of a few seconds.
	w.fresh = make([]string, 400_000)
	for i := range w.fresh {
		w.fresh[i] = fmt.Sprintf("new%d@example.org", i)
	}
	return w
}

// round decides one window of requests drawn from the pool, one in ten
// to a new recipient, and returns how long CheckBatch took.
func (w *realistic) round(e *Engine, now Time) time.Duration {
	// A window's strings are copied together first, as a server finds them
	// in its read buffer: read from all over the pool, each would be a
	// cache miss no server has.
	w.arena = slices.Grow(w.arena[:0], 256*realisticBatch)
	in := func(s string) string {
		at := len(w.arena)
		w.arena = append(w.arena, s...)
		return unsafe.String(unsafe.SliceData(w.arena[at:]), len(s))
	}
	for j := range w.win {
		r := &w.reqs[w.x.next()%realisticPool]
		rcpt := r.Recipient
		if j%10 == 0 {
			rcpt = w.fresh[w.n%len(w.fresh)]
			w.n++
		}
		w.win[j] = Request{ClientAddr: in(r.ClientAddr), ClientName: in(r.ClientName), Sender: in(r.Sender), Recipient: in(rcpt)}
	}
	start := time.Now()
	w.recs, _ = e.CheckBatch(now, w.win, w.res, w.recs[:0])
	return time.Since(start)
}
