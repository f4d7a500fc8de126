package engine_test

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	. "github.com/greyhold/greyhold/engine"
	"github.com/greyhold/greyhold/internal/testutil"
)

// liveState is an engine's state as a fleet compares it: the triplets and
// client networks alive at a moment, and the rules. What expired is left
// out: each host's wheel drops it at its own time, and no decision reads
// it. So is a pending triplet's count of early retries: each host counts
// the retries it saw, unlogged (an early retry changes nothing a decision
// reads), so the count is a host's own.
type liveState struct {
	triplets map[uint64][2]uint32
	clients  map[uint64][4]uint32
	rules    string
}

func stateAt(e *Engine, at Time) liveState {
	o := e.Options()
	retry, maxAge := uint64(o.RetryWindow/time.Second), uint64(o.MaxAge/time.Second)
	st := liveState{triplets: map[uint64][2]uint32{}, clients: map[uint64][4]uint32{}, rules: fmt.Sprint(e.Rules())}
	var keys []uint64
	var first, word []uint32
	var ckeys []uint64
	var cols [4][]uint32
	for i := range e.Shards() {
		keys, first, word = e.ExportShard(i, keys[:0], first[:0], word[:0])
		for j, k := range keys {
			deadline := uint64(first[j]) + retry
			if word[j]&(1<<31) != 0 {
				deadline = uint64(word[j]&^(1<<31)) + maxAge
			}
			if deadline >= uint64(at) {
				w := word[j]
				if w&(1<<31) == 0 {
					w = 0
				}
				st.triplets[k] = [2]uint32{first[j], w}
			}
		}
		for c := range cols {
			cols[c] = cols[c][:0]
		}
		ckeys, cols = e.ExportClients(i, ckeys[:0], cols)
		for j, k := range ckeys {
			if uint64(cols[1][j])+maxAge >= uint64(at) {
				st.clients[k] = [4]uint32{cols[0][j], cols[1][j], cols[2][j], cols[3][j]}
			}
		}
	}
	return st
}

func (a liveState) diff(b liveState) string {
	for k, v := range a.triplets {
		if w, ok := b.triplets[k]; !ok || w != v {
			return fmt.Sprintf("triplet %016x: %v against %v (present %v)", k, v, w, ok)
		}
	}
	for k, v := range a.clients {
		if w, ok := b.clients[k]; !ok || w != v {
			return fmt.Sprintf("client %016x: %v against %v (present %v)", k, v, w, ok)
		}
	}
	if len(a.triplets) != len(b.triplets) || len(a.clients) != len(b.clients) {
		return fmt.Sprintf("%d/%d triplets, %d/%d clients", len(a.triplets), len(b.triplets), len(a.clients), len(b.clients))
	}
	if a.rules != b.rules {
		return fmt.Sprintf("rules %s against %s", a.rules, b.rules)
	}
	return ""
}

// TestFleetConvergence: three MX hosts with clocks of their own check a
// random history, each host's records reaching the others late, out of
// order, interleaved with their own, and some of them twice. Once every
// record has arrived everywhere, the three hold the same state and decide
// a further random sequence alike. Records carry resulting values and
// merge as a semilattice join, so nothing else is needed to agree.
//
// Half the runs deliver records at any delay, in any order, while no host
// drops anything: the join alone must agree. The other half let the
// hosts' wheels drop what expired, with records arriving within half a
// retry window of being made. Later than that, a record can meet a host
// whose wheel already dropped the newer state that outranks it (a state
// born, and dead, in between) and bring the older one back there; the next
// decision on that triplet anywhere outranks both again. Replication lag
// is seconds; a stream keeps hours.
func TestFleetConvergence(t *testing.T) {
	for seed := range uint64(40) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			bounded := seed%2 == 0
			r := rand.New(rand.NewPCG(seed, 0xf1ee7))
			mut := func(o *Options) {
				o.Shards = 8
				if seed%2 == 1 {
					o.AutoWhitelistClients = 2
				}
				if seed%4 == 3 {
					// Epochs as short as the retry window.
					o.RetryWindow = 30 * time.Minute
				}
			}
			const hosts = 3
			var nodes [hosts]*Engine
			var skew [hosts]int
			for i := range nodes {
				nodes[i] = newEngine(t, mut)
				skew[i] = r.IntN(241) - 120 // up to two minutes either way
			}
			type msg struct {
				to  int
				due Time
				rec []byte
			}
			var inflight []msg
			lag := 6 * 3600 // seconds a record may take to arrive
			if seed%4 == 3 {
				lag = 600
			}
			var now Time
			step := 0
			send := func(from int, rec []byte) {
				for to := range hosts {
					if to == from || len(rec) == 0 {
						continue
					}
					m := msg{to, now + Time(r.IntN(lag)), append([]byte(nil), rec...)}
					if !bounded {
						// Any delay: due after a random number of
						// further checks, whatever the clock says.
						m.due = Time(step + r.IntN(1500))
					}
					inflight = append(inflight, m)
					if r.IntN(10) == 0 {
						m.due += Time(r.IntN(50))
						inflight = append(inflight, m) // delivered twice
					}
				}
			}
			deliver := func(m msg) {
				if _, err := nodes[m.to].Apply(m.rec); err != nil {
					t.Fatal(err)
				}
			}
			w := testutil.NewWorkload(seed, testutil.T0)
			for step = range 4000 {
				var req Request
				prev := now
				now, req = w.Step()
				clock := now
				if !bounded {
					clock = Time(step)
				}
				// Deliver, in a random order, everything due by now: a
				// leap of the clock delivers all that was in flight.
				r.Shuffle(len(inflight), func(a, b int) { inflight[a], inflight[b] = inflight[b], inflight[a] })
				kept := inflight[:0]
				for _, m := range inflight {
					if m.due <= clock || (bounded && now-prev > Time(lag)) {
						deliver(m)
					} else {
						kept = append(kept, m)
					}
				}
				inflight = kept
				i := r.IntN(hosts)
				at := Time(int(now) + skew[i])
				switch r.IntN(100) {
				case 0:
					rule, present := w.RuleChange()
					rec, _, err := nodes[i].SetRule(at, rule, present)
					if err != nil {
						t.Fatal(err)
					}
					send(i, rec)
				case 1:
					if bounded {
						nodes[i].Expire(at)
					}
				}
				var ch Changes
				if _, err := nodes[i].Check(at, &req, &ch); err != nil {
					t.Fatal(err)
				}
				send(i, ch.Bytes())
			}
			r.Shuffle(len(inflight), func(a, b int) { inflight[a], inflight[b] = inflight[b], inflight[a] })
			for _, m := range inflight {
				deliver(m)
			}

			end := w.Now + 200
			ref := stateAt(nodes[0], end)
			for i := 1; i < hosts; i++ {
				if d := ref.diff(stateAt(nodes[i], end)); d != "" {
					t.Fatalf("host 0 and host %d differ: %s", i, d)
				}
			}
			checkers := map[string]testutil.Checker{}
			for i, e := range nodes {
				checkers[fmt.Sprint("host ", i)] = testutil.EngineChecker(e)
			}
			diff, err := testutil.Same(seed, end, 3000, checkers)
			if err != nil {
				t.Fatal(err)
			}
			if diff != "" {
				t.Fatal(diff)
			}
		})
	}
}
