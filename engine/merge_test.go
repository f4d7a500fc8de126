package engine

import (
	"math/rand/v2"
	"testing"
)

// TestMergeProperties checks the algebra replay relies on, over random
// pairs of states.
func TestMergeProperties(t *testing.T) {
	o := DefaultOptions()
	p := newParams(&o)
	r := rand.New(rand.NewPCG(7, 7))
	rnd := func() entry {
		first := t0 + Time(r.IntN(100*24*3600))
		if r.IntN(2) == 0 {
			return entry{first: first, word: uint32(r.IntN(5))}
		}
		return passedEntry(first, first+Time(r.IntN(40*24*3600)))
	}
	for range 100000 {
		a, b := rnd(), rnd()
		if p.mergeEntry(a, a) != a {
			t.Fatalf("merge(%v, %v) not idempotent", a, a)
		}
		if ab, ba := p.mergeEntry(a, b), p.mergeEntry(b, a); ab != ba {
			t.Fatalf("merge(%+v, %+v) = %+v, reversed %+v", a, b, ab, ba)
		}
		m := p.mergeEntry(a, b)
		if p.mergeEntry(m, a) != m || p.mergeEntry(m, b) != m {
			t.Fatalf("merge(%+v, %+v) = %+v absorbs neither again", a, b, m)
		}
	}
}

func TestMergeClientProperties(t *testing.T) {
	o := DefaultOptions()
	p := newParams(&o)
	r := rand.New(rand.NewPCG(8, 8))
	rnd := func() client {
		since := t0 + Time(r.IntN(100*24*3600))
		counted := since + Time(r.IntN(10*24*3600))
		return client{since: since, counted: counted, last: counted + Time(r.IntN(40*24*3600)), count: uint32(1 + r.IntN(6))}
	}
	for range 100000 {
		a, b := rnd(), rnd()
		if p.mergeClient(a, a) != a {
			t.Fatalf("mergeClient(%+v, itself) changed it", a)
		}
		ab, ba := p.mergeClient(a, b), p.mergeClient(b, a)
		if ab != ba {
			t.Fatalf("mergeClient(%+v, %+v) = %+v, reversed %+v", a, b, ab, ba)
		}
		if p.mergeClient(ab, a) != ab || p.mergeClient(ab, b) != ab {
			t.Fatalf("mergeClient(%+v, %+v) = %+v absorbs neither again", a, b, ab)
		}
	}
}

// TestMergeConcurrentPending: two MX hosts that each saw a triplet's first
// attempt before hearing of the other keep the earlier first-seen time, so
// the sender's retry passes as soon as it would on one host.
func TestMergeConcurrentPending(t *testing.T) {
	a := newHarness(t, nil)
	b := newHarness(t, nil)
	a.expect(t0, cl, from, to, Defer, ReasonNew, 300, 0, 1)
	b.expect(t0+120, cl, from, to, Defer, ReasonNew, 300, 0, 1)
	if _, err := b.e.Apply(a.recs); err != nil {
		t.Fatal(err)
	}
	b.expect(t0+300, cl, from, to, Pass, ReasonPassed, 0, 300, 2)
	// A pending state from another host does not undo a pass here.
	if _, err := b.e.Apply(a.recs); err != nil {
		t.Fatal(err)
	}
	b.expect(t0+301, cl, from, to, Pass, ReasonKnown, 0, 0, 0)
}
