package cluster

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/greyhold/greyhold/engine"
	"github.com/greyhold/greyhold/internal/testutil"
	"github.com/greyhold/greyhold/store"
)

// benchRequests are distinct triplets from pools of strings, so the
// benchmarks measure replication, not fmt.
type benchRequests struct{ clients, senders, rcpts []string }

func newBenchRequests() *benchRequests {
	r := &benchRequests{}
	for i := range 1 << 16 {
		r.clients = append(r.clients, fmt.Sprintf("10.%d.%d.25", i>>8, i&255))
	}
	for i := range 1000 {
		r.senders = append(r.senders, fmt.Sprintf("newsletter@sender%d.example", i))
	}
	for i := range 1000 {
		r.rcpts = append(r.rcpts, fmt.Sprintf("user%d@example.test", i))
	}
	return r
}

func (r *benchRequests) at(i int, req *engine.Request) {
	req.ClientAddr = r.clients[i&0xffff]
	req.ClientName = "mail.sender.example"
	req.Sender = r.senders[(i>>16)%1000]
	req.Recipient = r.rcpts[(i>>16)/1000%1000]
}

func quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	return d[min(len(d)-1, int(q*float64(len(d))))]
}

// BenchmarkReplicationLag: one node of three makes state changes at a
// steady rate (new triplets, one record each: at 1k/s one check each
// millisecond, each its own frame, as Postfix's one-at-a-time connections
// make them; faster, in batches every 10 ms as pipelined connections do);
// the other two apply them. It
// reports the lag from commit to apply, per frame, and the bytes per
// change on the wire and as the stream stores them.
//
//	go test -run '^$' -bench ReplicationLag -benchtime 1x ./cluster
func BenchmarkReplicationLag(b *testing.B) {
	for _, c := range []struct {
		rate int
		tick time.Duration
	}{{1000, time.Millisecond}, {10_000, 10 * time.Millisecond}, {100_000, 10 * time.Millisecond}} {
		rate, tick := c.rate, c.tick
		b.Run(fmt.Sprintf("changes=%dk/s,batch=%d", rate/1000, rate/int(time.Second/tick)), func(b *testing.B) {
			ns := startNATS(b)
			a := newBenchNode(b, ns, "mx1", "")
			var mu sync.Mutex
			var lags []time.Duration
			peers := []*testNode{newBenchNode(b, ns, "mx2", a.dir), newBenchNode(b, ns, "mx3", a.dir)}
			for _, p := range peers {
				p.n.lagHook = func(d time.Duration) { mu.Lock(); lags = append(lags, d); mu.Unlock() }
			}
			reqs := newBenchRequests()
			per := rate / int(time.Second/tick)
			batch := make([]engine.Request, per)
			var res []store.Result
			const seconds = 4
			next := 0
			ticker := time.NewTicker(tick)
			start := time.Now()
			for time.Since(start) < seconds*time.Second {
				<-ticker.C
				for j := range batch {
					reqs.at(next, &batch[j])
					next++
				}
				res = a.st.CheckBatch(t0, batch, res[:0])
			}
			ticker.Stop()
			elapsed := time.Since(start)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			seq := a.shipped(ctx)
			for _, p := range peers {
				if err := p.n.Wait(ctx, func(s Stats) bool { return s.Applied >= seq }); err != nil {
					b.Fatal(err)
				}
			}
			st := a.n.Stats()
			info, err := a.n.str.Info(ctx)
			if err != nil {
				b.Fatal(err)
			}
			mu.Lock()
			b.ReportMetric(float64(next)/elapsed.Seconds(), "changes/s")
			b.ReportMetric(float64(quantile(lags, 0.5).Microseconds())/1000, "lag-p50-ms")
			b.ReportMetric(float64(quantile(lags, 0.99).Microseconds())/1000, "lag-p99-ms")
			b.ReportMetric(float64(quantile(lags, 1).Microseconds())/1000, "lag-max-ms")
			mu.Unlock()
			b.ReportMetric(float64(a.n.published.bytes.Load())/float64(st.Published), "wire-B/change")
			b.ReportMetric(float64(info.State.Bytes)/float64(st.Published), "stored-B/change")
			b.ReportMetric(float64(st.Published)/float64(a.n.published.messages.Load()), "changes/msg")
		})
	}
}

// BenchmarkCheckReplicated: the store's batched checks, as the servers
// make them (32 to a batch), on two nodes of one run: one replicating
// through NATS (a peer applying what it ships) and one alone. Windows of
// 64 batches go to each in turn, which goes first alternating, so that a
// machine whose speed drifts slows both alike; on/off is the replicating
// node's checks/s against the lone one's. new=0% is known triplets (no
// state change, nothing to ship), new=10% one check in ten a new triplet
// (a record logged and shipped). One goroutine checks: the publisher,
// the in-process nats-server and the peer run beside it, as they would
// on the other core of a 2-core MX host (in production only the
// publisher is the node's own).
//
//	go test -run '^$' -bench CheckReplicated -benchtime 200000x -count 5 ./cluster
func BenchmarkCheckReplicated(b *testing.B) {
	for _, newPct := range []int{0, 10} {
		b.Run(fmt.Sprintf("new=%d%%", newPct), func(b *testing.B) {
			ns := startNATS(b)
			on := newBenchNode(b, ns, "mx1", "")
			peer := newBenchNode(b, ns, "mx2", on.dir) // applies what is shipped
			off := newBenchNode(b, nil, "mx1", "")
			reqs := newBenchRequests()
			const known, batch, window = 100_000, 32, 64
			warm := make([]engine.Request, known)
			for i := range warm {
				reqs.at(i, &warm[i])
			}
			for _, tn := range []*testNode{on, off} {
				res := tn.st.CheckBatch(t0, warm, nil)
				tn.st.CheckBatch(t0+300, warm, res[:0])
			}
			// The warm-up's records shipped and applied first, so that
			// what is timed is the checks and what they ship.
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			peer.applied(ctx, on.shipped(ctx))
			cancel()

			type side struct {
				tn     *testNode
				r      *rand.Rand
				fresh  int
				out    []store.Result
				t      time.Duration
				checks int
			}
			sides := [2]*side{
				{tn: off, r: rand.New(rand.NewPCG(1, 2)), fresh: 1 << 30},
				{tn: on, r: rand.New(rand.NewPCG(1, 2)), fresh: 1 << 30},
			}
			reqBatch := make([]engine.Request, batch)
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				w := i / window
				s := sides[(w+w/2)&1] // off, on, on, off, off, on, ...
				for j := range reqBatch {
					if s.r.IntN(100) < newPct {
						s.fresh++
						reqs.at(s.fresh, &reqBatch[j])
					} else {
						reqs.at(s.r.IntN(known), &reqBatch[j])
					}
				}
				start := time.Now()
				s.out = s.tn.st.CheckBatch(t0+301, reqBatch, s.out[:0])
				s.t += time.Since(start)
				s.checks += batch
			}
			rate := func(s *side) float64 { return float64(s.checks) / s.t.Seconds() }
			b.ReportMetric(rate(sides[0]), "off-checks/s")
			b.ReportMetric(rate(sides[1]), "on-checks/s")
			b.ReportMetric(rate(sides[1])/rate(sides[0]), "on/off")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// BenchmarkBacklogShip: a node logs a million changes while NATS is away,
// then NATS comes back; it reports how fast the backlog goes out once the
// node has reconnected, and how long the reconnect took.
//
//	go test -run '^$' -bench BacklogShip -benchtime 1x ./cluster
func BenchmarkBacklogShip(b *testing.B) {
	ns := startNATS(b)
	a := newBenchNode(b, ns, "mx1", "")
	ns.stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := a.n.Wait(ctx, func(s Stats) bool { return !s.Connected }); err != nil {
		b.Fatal(err)
	}
	reqs := newBenchRequests()
	const changes = 1_000_000
	batch := make([]engine.Request, 1000)
	var res []store.Result
	for i := 0; i < changes; i += len(batch) {
		for j := range batch {
			reqs.at(i+j, &batch[j])
		}
		res = a.st.CheckBatch(t0, batch, res[:0])
	}
	backlog := a.n.Stats().Backlog
	restart := time.Now()
	ns.start()
	// The rate is taken from the reconnect on: how soon nats.go
	// reconnects (its ReconnectWait and jitter) is reported apart.
	if err := a.n.Wait(ctx, func(s Stats) bool { return s.Connected }); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	a.shipped(ctx)
	took := time.Since(start)
	b.ReportMetric(float64(backlog.Records)/took.Seconds(), "records/s")
	b.ReportMetric(float64(backlog.Frames), "frames")
	b.ReportMetric(took.Seconds(), "ship-s")
	b.ReportMetric(start.Sub(restart).Seconds(), "reconnect-s")
}

// BenchmarkBootstrap: a new node joins a fleet whose stream no longer
// holds its history and whose newest snapshot holds n triplets; it
// reports the time from Start to ready.
//
//	go test -run '^$' -bench Bootstrap -benchtime 1x ./cluster
func BenchmarkBootstrap(b *testing.B) {
	for _, n := range []int{1_000_000, 10_000_000} {
		b.Run(fmt.Sprintf("triplets=%dM", n/1_000_000), func(b *testing.B) {
			ns := startNATS(b)
			a := newBenchNode(b, ns, "mx1", "")
			testutil.FillRealistic(b, a.st.Engine(), n, 3)
			a.expect(t0, triplet(1), engine.Defer, engine.ReasonNew)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			a.shipped(ctx)
			if _, err := a.st.Snapshot(); err != nil {
				b.Fatal(err)
			}
			if err := a.n.Wait(ctx, func(s Stats) bool { return s.Uploads > 0 }); err != nil {
				b.Fatal(err)
			}
			purge(b, ns.url, "GREYHOLD") // history older than the stream keeps
			start := time.Now()
			c := newBenchNode(b, ns, "mx3", a.dir)
			if err := c.n.Wait(ctx, func(s Stats) bool { return s.CaughtUp }); err != nil {
				b.Fatal(err)
			}
			took := time.Since(start)
			if got := c.st.Engine().Stats().Triplets; got < n {
				b.Fatalf("the new node holds %d triplets, want %d", got, n)
			}
			b.ReportMetric(took.Seconds(), "ready-s")
		})
	}
}

// newBenchNode is newNode on ns (nil: no replication) with the logs off.
func newBenchNode(b *testing.B, ns *natsNode, name, secretFrom string) *testNode {
	b.Helper()
	url := ""
	if ns != nil {
		url = ns.url
	}
	return newNode(b, url, name, "", secretFrom, nil)
}
