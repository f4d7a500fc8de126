package engine

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
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

// TestMergeAssociative: merging three states gives one result however the
// merges are grouped, which is what lets records meet in any order on any
// host. The states are drawn close together (within a few retry windows
// and max ages), where generations meet and part.
func TestMergeAssociative(t *testing.T) {
	for _, mut := range []func(*Options){func(*Options) {}, func(o *Options) { o.RetryWindow = 30 * time.Minute }} {
		o := DefaultOptions()
		mut(&o)
		p := newParams(&o)
		r := rand.New(rand.NewPCG(9, 9))
		span := int(3 * p.retryWindow)
		rnd := func() entry {
			first := t0 + Time(r.IntN(span))
			if r.IntN(3) > 0 {
				return entry{first: first, word: uint32(r.IntN(5))}
			}
			return passedEntry(first, first+Time(r.IntN(int(p.maxAge)*2)))
		}
		for range 200000 {
			a, b, c := rnd(), rnd(), rnd()
			left := p.mergeEntry(p.mergeEntry(a, b), c)
			right := p.mergeEntry(a, p.mergeEntry(b, c))
			if left != right {
				t.Fatalf("(%+v ⊔ %+v) ⊔ %+v = %+v, but %+v ⊔ (%+v ⊔ %+v) = %+v", a, b, c, left, a, b, c, right)
			}
		}
		rc := func() client {
			since := t0 + Time(r.IntN(int(3*p.maxAge)))
			counted := since + Time(r.IntN(int(p.maxAge)))
			return client{since: since, counted: counted, last: counted + Time(r.IntN(int(p.maxAge))), count: uint32(1 + r.IntN(6))}
		}
		for range 200000 {
			a, b, c := rc(), rc(), rc()
			if left, right := p.mergeClient(p.mergeClient(a, b), c), p.mergeClient(a, p.mergeClient(b, c)); left != right {
				t.Fatalf("client merges group differently: %+v, %+v, %+v give %+v and %+v", a, b, c, left, right)
			}
		}
	}
}

// TestEvictedTwiceAnyOrder: a pending triplet evicted for room and made
// again twice within its retry window leaves three records whose first
// and last do not overlap, and the middle one overlaps both. Replay, and
// hosts receiving them in other orders, must agree on one state.
func TestEvictedTwiceAnyOrder(t *testing.T) {
	o := DefaultOptions()
	p := newParams(&o)
	w := Time(p.retryWindow)
	recs := []entry{{first: t0}, {first: t0 + w*3/5}, {first: t0 + w*6/5}}
	want := p.mergeEntry(p.mergeEntry(recs[0], recs[1]), recs[2])
	for _, order := range [][]int{{0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}} {
		got := recs[order[0]]
		for _, i := range order[1:] {
			got = p.mergeEntry(got, recs[i])
		}
		if got != want {
			t.Fatalf("order %v merges to %+v, order 0 1 2 to %+v", order, got, want)
		}
	}
	// The newest generation is the one that holds.
	if want.first != recs[2].first {
		t.Fatalf("merged to first seen %d, want the last record's %d", want.first, recs[2].first)
	}
}

// TestApplyHonoursMemoryBound: records from elsewhere (replay, another
// MX host) are held to MaxEntries as checks are: pending triplets make
// room or are dropped, passed ones are kept.
func TestApplyHonoursMemoryBound(t *testing.T) {
	o := DefaultOptions()
	o.Shards = 1
	o.MaxEntries = 1000
	src, err := New(DefaultOptions(), []byte("0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	dst, err := New(o, []byte("0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	var recs []byte
	var passed [][]byte
	for i := range 5000 {
		var ch Changes
		req := &Request{ClientAddr: "10.0.0.1", Sender: "s@example.org", Recipient: fmt.Sprintf("r%d@example.net", i)}
		if _, err := src.Check(t0+Time(i), req, &ch); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, ch.Bytes()...)
		if i%50 == 0 {
			var pc Changes
			if _, err := src.Check(t0+Time(i)+400, req, &pc); err != nil {
				t.Fatal(err)
			}
			recs = append(recs, pc.Bytes()...)
			passed = append(passed, append([]byte(nil), pc.Bytes()...))
		}
	}
	if _, err := dst.Apply(recs); err != nil {
		t.Fatal(err)
	}
	st := dst.Stats()
	if st.Triplets > o.MaxEntries {
		t.Fatalf("%d triplets after applying 5000 under a bound of %d", st.Triplets, o.MaxEntries)
	}
	if st.Evicted == 0 {
		t.Fatal("nothing counted as evicted")
	}
	for i, p := range passed {
		if ok, err := dst.Covers(p); err != nil || !ok {
			t.Fatalf("passed triplet %d was dropped (%v)", i, err)
		}
	}
}
