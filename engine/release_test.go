package engine

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/greyhold/greyhold/whitelist"
)

func req(client, sender, rcpt string) *Request {
	return &Request{ClientAddr: client, ClientName: "mail.example", Sender: sender, Recipient: rcpt}
}

// permutations calls fn with every order of the n parts.
func permutations(n int, fn func([]int)) {
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	var rec func(int)
	rec = func(k int) {
		if k == n {
			fn(idx)
			return
		}
		for i := k; i < n; i++ {
			idx[k], idx[i] = idx[i], idx[k]
			rec(k + 1)
			idx[k], idx[i] = idx[i], idx[k]
		}
	}
	rec(0)
}

// applyAll applies payloads in the given order to a fresh engine.
func applyAll(t *testing.T, order []int, parts [][]byte) *Engine {
	t.Helper()
	e := newTestEngine(t, nil)
	for _, i := range order {
		if _, err := e.Apply(parts[i]); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

func explain(t *testing.T, e *Engine, now Time) Explanation {
	t.Helper()
	ex, err := e.Explain(now, req(cl, from, to))
	if err != nil {
		t.Fatal(err)
	}
	return ex
}

// TestForgetWinsInAnyOrder: a forget's record wins over every record of
// the state it forgot, applied before or after it, and loses to what the
// triplet did after the forget, whatever order the three sets of
// records reach a host in (another MX host's backlog arriving after the
// forget, replay, a snapshot and the log).
func TestForgetWinsInAnyOrder(t *testing.T) {
	for _, tc := range []struct {
		name   string
		forget Time // after t0, where the triplet was first seen
	}{
		{"pending, same second", 0},
		{"pending, same epoch", 10},
		{"passed, days later", 3 * 86400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, nil)
			h.expect(t0, cl, from, to, Defer, ReasonNew, 300, 0, 1)
			if tc.forget > 300 {
				h.expect(t0+300, cl, from, to, Pass, ReasonPassed, 0, 300, 2)
				h.expect(t0+300+7200, cl, from, to, Pass, ReasonKnown, 0, 0, 2)
			}
			before := h.recs
			at := t0 + tc.forget
			tomb, had, err := h.e.ForgetTriplet(at, req(cl, from, to))
			if err != nil || !had || tomb == nil {
				t.Fatalf("forget: rec %x, had %v, err %v", tomb, had, err)
			}
			if ex := explain(t, h.e, at); ex.State != StateUnknown || ex.Forgotten == 0 || ex.Would.Reason != ReasonNew {
				t.Fatalf("after the forget: %+v", ex)
			}
			// The old records on their own, after the forget, change
			// nothing.
			if _, err := h.e.Apply(before); err != nil {
				t.Fatal(err)
			}
			if ex := explain(t, h.e, at); ex.State != StateUnknown {
				t.Fatalf("old records undid the forget: %+v", ex)
			}
			// The triplet comes back in the same second and after: a new
			// defer for the whole delay, then a pass after it.
			h.recs = nil
			h.expect(at, cl, from, to, Defer, ReasonNew, 300, 0, 1)
			h.expect(at+299, cl, from, to, Defer, ReasonEarlyRetry, 1, 0, 0)
			after := h.recs
			want := explain(t, h.e, at+299)
			if want.State != StatePending || want.First != at {
				t.Fatalf("after the new attempt: %+v", want)
			}
			parts := [][]byte{before, tomb, after}
			permutations(3, func(order []int) {
				e := applyAll(t, order, parts)
				got := explain(t, e, at+299)
				if got.State != want.State || got.First != want.First || got.Forgotten != 0 {
					t.Errorf("order %v: %v first %d, want %v first %d", order, got.State, got.First, want.State, want.First)
				}
				// Without what came after, the forget holds.
				e = applyAll(t, order[:0], nil)
				for _, i := range order {
					if i != 2 {
						e.Apply(parts[i])
					}
				}
				if got := explain(t, e, at+299); got.State != StateUnknown || got.Would.Reason != ReasonNew {
					t.Errorf("order %v without the new attempt: %v, would %v", order, got.State, got.Would.Reason)
				}
			})
			h.expect(at+300, cl, from, to, Pass, ReasonPassed, 0, 300, 2)
		})
	}
}

// TestForgetTwiceInOneSecond: forgets of a triplet in the second it came
// back in still win, each over the state before it.
func TestForgetTwiceInOneSecond(t *testing.T) {
	h := newHarness(t, nil)
	var all [][]byte
	for i := range 3 {
		h.recs = nil
		h.expect(t0, cl, from, to, Defer, ReasonNew, 300, 0, 1)
		all = append(all, h.recs)
		rec, had, err := h.e.ForgetTriplet(t0, req(cl, from, to))
		if err != nil || !had {
			t.Fatalf("forget %d: had %v, err %v", i, had, err)
		}
		all = append(all, rec)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 50 {
		order := r.Perm(len(all))
		e := applyAll(t, order, all)
		if ex := explain(t, e, t0+1); ex.State != StateUnknown || ex.Forgotten == 0 {
			t.Fatalf("order %v: %+v", order, ex)
		}
	}
}

// TestPassTriplet: a released triplet passes at once; its record beats
// the pending ones in either order and is logged once.
func TestPassTriplet(t *testing.T) {
	h := newHarness(t, nil)
	h.expect(t0, cl, from, to, Defer, ReasonNew, 300, 0, 1)
	h.expect(t0+5, cl, from, to, Defer, ReasonEarlyRetry, 295, 0, 0)
	pending := h.recs
	rec, changed, err := h.e.PassTriplet(t0+10, req(cl, from, to))
	if err != nil || !changed {
		t.Fatalf("pass: changed %v, err %v", changed, err)
	}
	if _, changed, _ := h.e.PassTriplet(t0+11, req(cl, from, to)); changed {
		t.Error("a second release changed something")
	}
	h.expect(t0+12, cl, from, to, Pass, ReasonKnown, 0, 0, 0)
	ex := explain(t, h.e, t0+12)
	if ex.State != StatePassed || ex.First != t0 || ex.Last != t0+10 || ex.Client.Count != 0 {
		t.Errorf("released: %+v", ex)
	}
	permutations(2, func(order []int) {
		e := applyAll(t, order, [][]byte{pending, rec})
		if ex := explain(t, e, t0+12); ex.State != StatePassed || ex.First != t0 {
			t.Errorf("order %v: %+v", order, ex)
		}
	})

	// Unknown, and forgotten: born passed.
	other := req(cl, from, "rcpt2@example.test")
	if _, changed, err := h.e.PassTriplet(t0, other); err != nil || !changed {
		t.Fatalf("release unknown: %v %v", changed, err)
	}
	if _, _, err := h.e.ForgetTriplet(t0+20, other); err != nil {
		t.Fatal(err)
	}
	rec2, _, _ := h.e.PassTriplet(t0+20, other)
	h.expect(t0+21, cl, from, "rcpt2@example.test", Pass, ReasonKnown, 0, 0, 0)
	e := newTestEngine(t, nil)
	e.Apply(rec2)
	if ex, _ := e.Explain(t0+21, other); ex.State != StatePassed {
		t.Errorf("the release after a forget, alone: %+v", ex)
	}
}

// TestForgetClient: a forgotten client network is no longer
// auto-whitelisted, whatever order its old records and the forget come in,
// and counts again from one.
func TestForgetClient(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.AutoWhitelistClients = 2; o.AutoWhitelistInterval = 0 })
	for i, rcpt := range []string{"a@example.test", "b@example.test"} {
		h.expect(t0+Time(i), cl, from, rcpt, Defer, ReasonNew, 300, 0, 1)
		h.expect(t0+Time(i)+300, cl, from, rcpt, Pass, ReasonPassed, 0, 300, 2)
	}
	h.expect(t0+400, cl, from, "c@example.test", Pass, ReasonClientAWL, 0, 0, 0)
	before := h.recs
	rec, had, network, err := h.e.ForgetClient(t0+500, "192.0.2.99")
	if err != nil || !had || network.String() != "192.0.2.0/24" {
		t.Fatalf("forget client: had %v, network %v, err %v", had, network, err)
	}
	h.expect(t0+501, cl, from, "c@example.test", Defer, ReasonNew, 300, 0, 1)
	permutations(2, func(order []int) {
		e := applyAll(t, order, [][]byte{before, rec})
		e.p = h.e.p
		cs, _ := e.ClientNetworkState(t0+501, cl)
		if cs.Listed || cs.Known || cs.Forgotten == 0 {
			t.Errorf("order %v: %+v", order, cs)
		}
	})
	h.recs = nil
	h.expect(t0+801, cl, from, "c@example.test", Pass, ReasonPassed, 0, 300, 2)
	cs, _ := h.e.ClientNetworkState(t0+801, cl)
	if cs.Count != 1 || cs.Listed || cs.Forgotten != 0 {
		t.Errorf("after the forget, one pass: %+v", cs)
	}
	permutations(3, func(order []int) {
		e := newTestEngine(t, func(o *Options) { o.AutoWhitelistClients = 2; o.AutoWhitelistInterval = 0 })
		for _, i := range order {
			e.Apply([][]byte{before, rec, h.recs}[i])
		}
		if got, _ := e.ClientNetworkState(t0+801, cl); got.Count != 1 || got.Listed {
			t.Errorf("order %v: %+v", order, got)
		}
	})
}

// TestMergeResetProperties: the merge stays a semilattice with states of
// reset generations and tombstones among the plain ones.
func TestMergeResetProperties(t *testing.T) {
	o := DefaultOptions()
	p := newParams(&o)
	r := rand.New(rand.NewPCG(11, 11))
	rnd := func() entry {
		first := t0 + Time(r.IntN(3*3600))
		reset := r.IntN(2) == 0
		if reset {
			first |= resetBit
			if r.IntN(3) == 0 {
				return entry{first: first, word: tombWord}
			}
		}
		if r.IntN(2) == 0 {
			return entry{first: first, word: uint32(r.IntN(5))}
		}
		return passedEntry(first, first&^resetBit+Time(r.IntN(40*24*3600)))
	}
	rc := func() client {
		since := t0 + Time(r.IntN(3*3600))
		if r.IntN(2) == 0 {
			since |= resetBit
			if r.IntN(3) == 0 {
				return client{since: since, last: since &^ resetBit, count: tombCount}
			}
		}
		return client{since: since, last: since&^resetBit + Time(r.IntN(100)), count: uint32(r.IntN(6)), counted: since &^ resetBit}
	}
	for range 200000 {
		a, b, c := rnd(), rnd(), rnd()
		if p.mergeEntry(a, a) != a {
			t.Fatalf("merge(%+v, itself) changed it", a)
		}
		if ab, ba := p.mergeEntry(a, b), p.mergeEntry(b, a); ab != ba {
			t.Fatalf("merge(%+v, %+v) = %+v, reversed %+v", a, b, ab, ba)
		}
		if l, rr := p.mergeEntry(p.mergeEntry(a, b), c), p.mergeEntry(a, p.mergeEntry(b, c)); l != rr {
			t.Fatalf("(%+v ⊔ %+v) ⊔ %+v = %+v, but grouped the other way %+v", a, b, c, l, rr)
		}
		x, y, z := rc(), rc(), rc()
		if p.mergeClient(x, x) != x || p.mergeClient(x, y) != p.mergeClient(y, x) {
			t.Fatalf("mergeClient of %+v, %+v not idempotent or commutative", x, y)
		}
		if l, rr := p.mergeClient(p.mergeClient(x, y), z), p.mergeClient(x, p.mergeClient(y, z)); l != rr {
			t.Fatalf("client merges of %+v, %+v, %+v group differently: %+v, %+v", x, y, z, l, rr)
		}
	}
}

// TestResetRecords: states of reset generations travel as records of
// their own types, which round-trip, and the snapshot's export carries
// them apart from the rows.
func TestResetRecords(t *testing.T) {
	e := newTestEngine(t, nil)
	rec, _, _ := e.ForgetTriplet(t0, req(cl, from, to))
	if rec[0] != recTripletReset {
		t.Fatalf("forget record of type %d", rec[0])
	}
	crec, _, _, _ := e.ForgetClient(t0, cl)
	if crec[0] != recClientReset {
		t.Fatalf("client forget record of type %d", crec[0])
	}
	// A marked time in a plain record is refused: no version writes one.
	bad := append([]byte(nil), rec...)
	bad[0] = recTriplet
	if _, err := CheckRecords(bad); err == nil {
		t.Error("a plain triplet record with a marked time was accepted")
	}
	keys, _, _ := e.ExportShard(e.ShardOf(explain(t, e, t0).Key), nil, nil, nil)
	if len(keys) != 0 {
		t.Errorf("ExportShard exported %d reset states", len(keys))
	}
	resets := e.ExportResets()
	if n, err := CheckRecords(resets); err != nil || n != 2 {
		t.Fatalf("ExportResets: %d records, %v", n, err)
	}
	e2 := newTestEngine(t, nil)
	e2.Apply(resets)
	if ex := explain(t, e2, t0); ex.Forgotten != t0 || ex.Client.Forgotten != t0 {
		t.Errorf("from the exported records: %+v", ex)
	}
	if st := e2.Stats(); st.Forgotten != 1 || st.ForgottenClients != 1 || st.Pending != 0 || st.Clients != 0 {
		t.Errorf("stats: %+v", st)
	}
}

// TestExplain: the key's parts, the state, the client network, the
// whitelisting that matches and what a check would answer.
func TestExplain(t *testing.T) {
	h := newHarness(t, nil)
	h.e.SetStatic(whitelist.Parse(strings.NewReader("# clients\n198.51.100.0/24\nmail.example\n"), strings.NewReader("postmaster@\n")))
	r := &Request{ClientAddr: "192.0.2.10", ClientName: "unknown", Sender: "prvs=1234abcd=Alice@Sender.Example", Recipient: "Rcpt1@Example.Test"}
	ex, err := h.e.Explain(t0, r)
	if err != nil {
		t.Fatal(err)
	}
	if ex.Identity != "net:192.0.2.0/24" || ex.Sender != "alice@sender.example" || ex.Recipient != "rcpt1@example.test" || ex.State != StateUnknown {
		t.Errorf("unknown: %+v", ex)
	}
	if ex.Would.Verdict != Defer || ex.Would.Reason != ReasonNew || ex.Would.Left != 300 || len(ex.Static) != 0 {
		t.Errorf("unknown would: %+v", ex)
	}
	var ch Changes
	h.e.Check(t0, r, &ch)
	ch.Reset()
	h.e.Check(t0+10, r, &ch)
	ex, _ = h.e.Explain(t0+20, r)
	if ex.State != StatePending || ex.First != t0 || ex.Retries != 1 || ex.PassesFrom != t0+300 || ex.Expires != t0+48*3600 {
		t.Errorf("pending: %+v", ex)
	}
	if ex.Would.Reason != ReasonEarlyRetry || ex.Would.Left != 280 {
		t.Errorf("pending would: %+v", ex.Would)
	}
	if after, _ := h.e.Explain(t0+20, r); after.Retries != 1 {
		t.Errorf("Explain counted a retry: %d", after.Retries)
	}

	// Whitelisting: a runtime rule with a lifetime, the static files.
	if _, _, err := h.e.SetRuleFor(t0, Rule{Kind: RuleSender, Value: "sender.example"}, true, time.Hour); err != nil {
		t.Fatal(err)
	}
	r.ClientName = "mx1.mail.example"
	r.Recipient = "postmaster@example.test"
	ex, _ = h.e.Explain(t0+20, r)
	if len(ex.Rules) != 1 || ex.Rules[0].Value != "sender.example" || ex.Rules[0].Expires != t0+3600 {
		t.Errorf("rules: %+v", ex.Rules)
	}
	if len(ex.Static) != 2 || ex.Static[0].Entry != "mail.example" || ex.Static[0].Line != 3 || ex.Static[1].Entry != "postmaster@" {
		t.Errorf("static: %+v", ex.Static)
	}
	if ex.Would.Reason != ReasonWhitelist {
		t.Errorf("whitelisted would: %+v", ex.Would)
	}
}

// TestExplainKeyedByName: for a client keyed by its name, the
// explanation names the identity, and the client state is its network's,
// where the auto-whitelist counts it, with the passes counted there.
func TestExplainKeyedByName(t *testing.T) {
	e := newTestEngine(t, func(o *Options) { o.Keys.Identity = IdentityName })
	r := &Request{ClientAddr: "209.85.221.54", ClientName: "mail-wr1-f54.google.com", Sender: "alice@gmail.example", Recipient: "bob@example.test"}
	var ch Changes
	e.Check(t0, r, &ch)
	if d, _ := e.Check(t0+400, r, &ch); d.Verdict != Pass {
		t.Fatalf("retry: %+v", d)
	}
	ex, err := e.Explain(t0+400, r)
	if err != nil {
		t.Fatal(err)
	}
	if ex.Identity != "name:google.com" || ex.State != StatePassed {
		t.Errorf("explanation: %+v", ex)
	}
	if ex.Client.Network.String() != "209.85.221.0/24" || ex.Client.Count != 1 {
		t.Errorf("client: %+v", ex.Client)
	}
}

// TestRuleLifetime: a rule with a lifetime holds until it ends, then by
// itself no more, in checks, listings and after replay in any order with
// the rule's other records.
func TestRuleLifetime(t *testing.T) {
	h := newHarness(t, nil)
	rule := Rule{Kind: RuleSender, Value: "sender.example"}
	perm, _, err := h.e.SetRuleFor(t0-100, rule, true, 0)
	if err != nil {
		t.Fatal(err)
	}
	ttl, changed, err := h.e.SetRuleFor(t0, rule, true, time.Hour)
	if err != nil || !changed || ttl[0] != recRuleTTL {
		t.Fatalf("rule with a lifetime: %x %v %v", ttl, changed, err)
	}
	if got := h.e.RulesAt(t0 + 10); len(got) != 1 || got[0].Expires != t0+3600 {
		t.Fatalf("listed: %+v", got)
	}
	h.expect(t0+3599, cl, from, to, Pass, ReasonWhitelist, 0, 0, 0)
	h.expect(t0+3600, cl, from, to, Defer, ReasonNew, 300, 0, 1)
	if got := h.e.RulesAt(t0 + 3600); len(got) != 0 {
		t.Errorf("listed after its end: %+v", got)
	}
	if st := h.e.Stats(); st.Rules != 0 {
		t.Errorf("%d rules counted after the end", st.Rules)
	}
	if _, _, err := h.e.SetRuleFor(t0, Rule{Kind: RuleSender, Value: "x.example"}, false, time.Hour); err == nil {
		t.Error("a removal with a lifetime was accepted")
	}
	// The rule with a lifetime replaced the permanent one: in either
	// order of their records, it ends at its time.
	permutations(2, func(order []int) {
		e := applyAll(t, order, [][]byte{perm, ttl})
		var ch Changes
		if d, _ := e.Check(t0+3599, req(cl, from, to), &ch); d.Reason != ReasonWhitelist {
			t.Errorf("order %v, before the end: %v", order, d.Reason)
		}
		if d, _ := e.Check(t0+3600, req(cl, from, to), &ch); d.Reason != ReasonNew {
			t.Errorf("order %v, at the end: %v", order, d.Reason)
		}
		if n, err := CheckRecords(e.ExportRules()); err != nil || n != 1 {
			t.Errorf("order %v: exported %d rules, %v", order, n, err)
		}
	})
}
