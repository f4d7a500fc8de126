package engine

import (
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/greyhold/greyhold/whitelist"
)

var testSecret = []byte("0123456789abcdef-test-secret")

// t0 is an ordinary moment (2026-05-04); tests count from it.
const t0 Time = 200_000_000

func newTestEngine(t testing.TB, mut func(*Options)) *Engine {
	t.Helper()
	o := DefaultOptions()
	if mut != nil {
		mut(&o)
	}
	e, err := New(o, testSecret)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// harness keeps every record an engine wrote, as a log would.
type harness struct {
	t    testing.TB
	e    *Engine
	recs []byte
	n    int
}

func newHarness(t testing.TB, mut func(*Options)) *harness {
	return &harness{t: t, e: newTestEngine(t, mut)}
}

func (h *harness) check(now Time, clientAddr, sender, rcpt string) (Decision, Changes) {
	h.t.Helper()
	var ch Changes
	d, err := h.e.Check(now, &Request{ClientAddr: clientAddr, ClientName: "mail.example", Sender: sender, Recipient: rcpt}, &ch)
	if err != nil {
		h.t.Fatalf("check at %d: %v", now, err)
	}
	h.recs = append(h.recs, ch.Bytes()...)
	h.n += ch.Count()
	return d, ch
}

// expect checks one request and compares what matters of the decision.
func (h *harness) expect(now Time, clientAddr, sender, rcpt string, v Verdict, r Reason, left, delayed uint32, records int) {
	h.t.Helper()
	d, ch := h.check(now, clientAddr, sender, rcpt)
	if d.Verdict != v || d.Reason != r || d.Left != left || d.Delayed != delayed {
		h.t.Errorf("at t0%+d: got %v/%v left=%d delayed=%d, want %v/%v left=%d delayed=%d",
			int64(now)-int64(t0), d.Verdict, d.Reason, d.Left, d.Delayed, v, r, left, delayed)
	}
	if ch.Count() != records {
		h.t.Errorf("at t0%+d (%v): %d records, want %d", int64(now)-int64(t0), r, ch.Count(), records)
	}
}

const (
	cl   = "192.0.2.10"
	from = "alice@sender.example"
	to   = "rcpt1@example.test"
)

func TestDecisionsDelay(t *testing.T) {
	h := newHarness(t, nil)
	// Unknown: deferred for the whole delay, entry created (one record).
	h.expect(t0, cl, from, to, Defer, ReasonNew, 300, 0, 1)
	// Early retries are deferred with the time still left; the clock is
	// not reset and nothing is logged.
	h.expect(t0+1, cl, from, to, Defer, ReasonEarlyRetry, 299, 0, 0)
	h.expect(t0+299, cl, from, to, Defer, ReasonEarlyRetry, 1, 0, 0)
	// delay−1 s has passed above; at exactly the delay it passes, once
	// with the delay, and the client's pass is counted (two records).
	h.expect(t0+300, cl, from, to, Pass, ReasonPassed, 0, 300, 2)
	// From then on it is known.
	h.expect(t0+301, cl, from, to, Pass, ReasonKnown, 0, 0, 0)
}

func TestDecisionsLateFirstRetry(t *testing.T) {
	h := newHarness(t, nil)
	h.expect(t0, cl, from, to, Defer, ReasonNew, 300, 0, 1)
	// The first pass reports how long the triplet was really held.
	h.expect(t0+4000, cl, from, to, Pass, ReasonPassed, 0, 4000, 2)
}

func TestDecisionsRetryWindow(t *testing.T) {
	rw := Time(48 * 3600)
	h := newHarness(t, nil)
	h.expect(t0, cl, from, to, Defer, ReasonNew, 300, 0, 1)
	// A retry at exactly the retry window still counts.
	h.expect(t0+rw, cl, from, to, Pass, ReasonPassed, 0, uint32(rw), 2)

	h = newHarness(t, nil)
	h.expect(t0, cl, from, to, Defer, ReasonNew, 300, 0, 1)
	// One second later the pending entry has expired: it starts over...
	h.expect(t0+rw+1, cl, from, to, Defer, ReasonNew, 300, 0, 1)
	// ...from the new first-seen time.
	h.expect(t0+rw+300, cl, from, to, Defer, ReasonEarlyRetry, 1, 0, 0)
	h.expect(t0+rw+301, cl, from, to, Pass, ReasonPassed, 0, 300, 2)
}

func TestDecisionsMaxAge(t *testing.T) {
	maxAge := Time(35 * 24 * 3600)
	pass := t0 + 300
	h := newHarness(t, nil)
	h.expect(t0, cl, from, to, Defer, ReasonNew, 300, 0, 1)
	h.expect(pass, cl, from, to, Pass, ReasonPassed, 0, 300, 2)
	// Last seen at the pass: alive through pass+maxAge, and refreshed then
	// with its client.
	h.expect(pass+maxAge, cl, from, to, Pass, ReasonKnown, 0, 0, 2)

	h = newHarness(t, nil)
	h.expect(t0, cl, from, to, Defer, ReasonNew, 300, 0, 1)
	h.expect(pass, cl, from, to, Pass, ReasonPassed, 0, 300, 2)
	// One second more and it is forgotten: greylisted again.
	h.expect(pass+maxAge+1, cl, from, to, Defer, ReasonNew, 300, 0, 1)
}

func TestDecisionsTouchInterval(t *testing.T) {
	hour := Time(3600)
	maxAge := Time(35 * 24 * 3600)
	pass := t0 + 300
	h := newHarness(t, nil)
	h.expect(t0, cl, from, to, Defer, ReasonNew, 300, 0, 1)
	h.expect(pass, cl, from, to, Pass, ReasonPassed, 0, 300, 2)
	// Within the touch interval a known triplet is a pure read.
	h.expect(pass+hour-1, cl, from, to, Pass, ReasonKnown, 0, 0, 0)
	// At the interval its last-seen time is refreshed and logged, with the
	// client's (kept alive while its triplets are used).
	h.expect(pass+hour, cl, from, to, Pass, ReasonKnown, 0, 0, 2)
	h.expect(pass+hour+1, cl, from, to, Pass, ReasonKnown, 0, 0, 0)
	// Max-age now counts from the refresh.
	h.expect(pass+hour+maxAge, cl, from, to, Pass, ReasonKnown, 0, 0, 2)
	h.expect(pass+hour+maxAge+maxAge+1, cl, from, to, Defer, ReasonNew, 300, 0, 1)
}

func TestDecisionsNetworks(t *testing.T) {
	h := newHarness(t, nil)
	h.expect(t0, "192.0.2.10", from, to, Defer, ReasonNew, 300, 0, 1)
	// The /24 neighbour is the same client network: its retry passes.
	h.expect(t0+300, "192.0.2.99", from, to, Pass, ReasonPassed, 0, 300, 2)
	h.expect(t0+301, "::ffff:192.0.2.1", from, to, Pass, ReasonKnown, 0, 0, 0)
	// Another /24 is another triplet.
	h.expect(t0+302, "192.0.3.10", from, to, Defer, ReasonNew, 300, 0, 1)
	// IPv6: one /64.
	h.expect(t0, "2001:db8:1:2::10", from, to, Defer, ReasonNew, 300, 0, 1)
	h.expect(t0+300, "2001:db8:1:2:ffff::1", from, to, Pass, ReasonPassed, 0, 300, 2)
	h.expect(t0+300, "2001:db8:1:3::10", from, to, Defer, ReasonNew, 300, 0, 1)
	// Case and BATV tags do not make a new triplet; another sender does.
	h.expect(t0+303, "192.0.2.10", "prvs=0123abcdef=ALICE@Sender.Example", "RCPT1@example.test", Pass, ReasonKnown, 0, 0, 0)
	h.expect(t0+304, "192.0.2.10", "bob@sender.example", to, Defer, ReasonNew, 300, 0, 1)
	// The empty sender is a sender of its own.
	h.expect(t0+305, "192.0.2.10", "", to, Defer, ReasonNew, 300, 0, 1)
}

func TestDecisionsAutoWhitelist(t *testing.T) {
	hour := Time(3600)
	h := newHarness(t, nil)
	net := "198.51.100.7"
	// Five triplets pass, each an hour apart: each pass is counted.
	for i := range 5 {
		at := t0 + Time(i)*hour
		rcpt := fmt.Sprintf("user%d@example.test", i)
		h.expect(at, net, from, rcpt, Defer, ReasonNew, 300, 0, 1)
		h.expect(at+300, net, from, rcpt, Pass, ReasonPassed, 0, 300, 2)
	}
	// Now any triplet from that network passes at once, whoever sends.
	h.expect(t0+5*hour, "198.51.100.200", "someone@else.example", "new@example.test", Pass, ReasonClientAWL, 0, 0, 0)
	// Known triplets stay known (this one is due for a refresh; its client
	// was refreshed by its last counted pass, less than an hour ago).
	h.expect(t0+5*hour, net, from, "user0@example.test", Pass, ReasonKnown, 0, 0, 1)
	// Another network is not whitelisted.
	h.expect(t0+5*hour, "198.51.101.7", from, "new@example.test", Defer, ReasonNew, 300, 0, 1)
}

func TestDecisionsAutoWhitelistHourlyLimit(t *testing.T) {
	hour := Time(3600)
	h := newHarness(t, nil)
	net := "198.51.100.7"
	// Passes a second short of an hour apart: only every other one is an
	// hour after the last counted one.
	at := t0
	for i := range 5 {
		rcpt := fmt.Sprintf("user%d@example.test", i)
		h.check(at, net, from, rcpt)
		h.check(at+300, net, from, rcpt)
		at += hour - 1
	}
	// Counted at t0+300, +2(h−1) and +4(h−1): three of five, not listed.
	st := h.e.Stats()
	if st.Listed != 0 || st.Clients != 1 {
		t.Fatalf("clients %d listed %d, want 1 client not listed", st.Clients, st.Listed)
	}
	h.expect(at, net, from, "other@example.test", Defer, ReasonNew, 300, 0, 1)

	// Passes in one burst count once.
	h = newHarness(t, nil)
	for i := range 10 {
		rcpt := fmt.Sprintf("user%d@example.test", i)
		h.check(t0, net, from, rcpt)
		h.check(t0+300, net, from, rcpt)
	}
	h.expect(t0+301, net, from, "other@example.test", Defer, ReasonNew, 300, 0, 1)

	// Disabled with 0.
	h = newHarness(t, func(o *Options) { o.AutoWhitelistClients = 0 })
	for i := range 10 {
		rcpt := fmt.Sprintf("user%d@example.test", i)
		h.expect(t0+Time(i)*hour, net, from, rcpt, Defer, ReasonNew, 300, 0, 1)
		h.expect(t0+Time(i)*hour+300, net, from, rcpt, Pass, ReasonPassed, 0, 300, 1)
	}
	h.expect(t0+20*hour, net, from, "other@example.test", Defer, ReasonNew, 300, 0, 1)
}

func TestAutoWhitelistExpires(t *testing.T) {
	hour := Time(3600)
	maxAge := Time(35 * 24 * 3600)
	h := newHarness(t, func(o *Options) { o.AutoWhitelistClients = 1 })
	h.expect(t0, cl, from, to, Defer, ReasonNew, 300, 0, 1)
	h.expect(t0+300, cl, from, to, Pass, ReasonPassed, 0, 300, 2)
	// Less than an hour after its last refresh: a pure read.
	h.expect(t0+hour, cl, "x@y.example", "new@example.test", Pass, ReasonClientAWL, 0, 0, 0)
	h.expect(t0+hour+300, cl, "x@y.example", "new@example.test", Pass, ReasonClientAWL, 0, 0, 1)
	// Unused for max-age after its last refresh, the client is forgotten.
	h.expect(t0+hour+300+maxAge+1, cl, "x@y.example", "new2@example.test", Defer, ReasonNew, 300, 0, 1)
}

func TestEvictionOrder(t *testing.T) {
	h := newHarness(t, func(o *Options) {
		o.Shards = 1
		o.MaxEntries = 64
		o.AutoWhitelistClients = 0
	})
	rcpt := func(i int) string { return fmt.Sprintf("r%d@example.test", i) }
	// Ten passed triplets first.
	for i := range 10 {
		h.check(t0, cl, from, rcpt(i))
		h.check(t0+300, cl, from, rcpt(i))
	}
	// Then pending ones, one a second, oldest first, up to the bound.
	for i := 10; i < 64; i++ {
		h.expect(t0+Time(i), cl, from, rcpt(i), Defer, ReasonNew, 300, 0, 1)
	}
	// One more: the oldest pending go (the bound/64 = 1, plus one), never a
	// passed one.
	h.expect(t0+100, cl, from, rcpt(100), Defer, ReasonNew, 300, 0, 1)
	st := h.e.Stats()
	if st.Evicted != 2 || st.Passed != 10 || st.Triplets != 63 {
		t.Fatalf("after eviction: %+v", st)
	}
	for i := range 10 {
		h.expect(t0+101, cl, from, rcpt(i), Pass, ReasonKnown, 0, 0, 0)
	}
	// The two oldest pending were evicted: they start over. The next are
	// still pending.
	h.expect(t0+400, cl, from, rcpt(12), Pass, ReasonPassed, 0, 400-12, 1)
	h.expect(t0+401, cl, from, rcpt(10), Defer, ReasonNew, 300, 0, 1)
}

func TestEvictionNeverPassed(t *testing.T) {
	h := newHarness(t, func(o *Options) {
		o.Shards = 1
		o.MaxEntries = 8
		o.AutoWhitelistClients = 0
	})
	for i := range 8 {
		r := fmt.Sprintf("r%d@example.test", i)
		h.check(t0, cl, from, r)
		h.check(t0+300, cl, from, r)
	}
	// Full of passed triplets: a new one is not stored, and the request
	// fails open rather than being deferred forever.
	h.expect(t0+301, cl, from, "new@example.test", Pass, ReasonOverflow, 0, 0, 0)
	st := h.e.Stats()
	if st.Passed != 8 || st.Evicted != 0 || st.Decided(ReasonOverflow) != 1 {
		t.Fatalf("stats %+v", st)
	}
	// Once the passed ones expire, room comes back.
	maxAge := Time(35 * 24 * 3600)
	h.expect(t0+300+maxAge+fullPause+1, cl, from, "new@example.test", Defer, ReasonNew, 300, 0, 1)
}

func TestBadRequests(t *testing.T) {
	e := newTestEngine(t, nil)
	for _, req := range []Request{
		{ClientAddr: "unknown", Sender: from, Recipient: to},
		{ClientAddr: "", Sender: from, Recipient: to},
		{ClientAddr: cl, Sender: from, Recipient: ""},
		// Over MaxAddressLen: the sender's length is a 16-bit field of the
		// hashed bytes, and an address this long is no real one.
		{ClientAddr: cl, Sender: strings.Repeat("a", MaxAddressLen+1) + "@example.org", Recipient: to},
		{ClientAddr: cl, Sender: from, Recipient: strings.Repeat("b", MaxAddressLen+1) + "@example.net"},
	} {
		var ch Changes
		_, err := e.Check(t0, &req, &ch)
		if err == nil || ch.Count() != 0 {
			t.Errorf("Check(%+v) = %v with %d records, want an error and none", req, err, ch.Count())
		}
	}
	if !errors.Is(func() error {
		var ch Changes
		_, err := e.Check(t0, &Request{ClientAddr: "x", Recipient: to}, &ch)
		return err
	}(), ErrBadClientAddress) {
		t.Error("bad address is not ErrBadClientAddress")
	}
	if st := e.Stats(); st.Triplets != 0 {
		t.Errorf("bad requests changed state: %+v", st)
	}
	var ch Changes
	long := strings.Repeat("a", MaxAddressLen-len("@example.org")) + "@example.org"
	if d, err := e.Check(t0, &Request{ClientAddr: cl, Sender: long, Recipient: to}, &ch); err != nil || d.Reason != ReasonNew {
		t.Errorf("a sender of exactly MaxAddressLen bytes: %v %v", d.Reason, err)
	}
}

func TestWhitelistRules(t *testing.T) {
	h := newHarness(t, nil)
	var rules []byte
	add := func(k RuleKind, v string) {
		t.Helper()
		rec, changed, err := h.e.SetRule(t0, Rule{Kind: k, Value: v}, true)
		if err != nil || !changed {
			t.Fatalf("add %v %q: changed=%v err=%v", k, v, changed, err)
		}
		rules = append(rules, rec...)
	}
	add(RuleClient, "203.0.113.0/24")
	add(RuleClient, "2001:db8:ffff::/48")
	add(RuleClientName, "Outbound.Example.NET")
	add(RuleSender, "Newsletter@News.Example")
	add(RuleSender, "trusted.example")
	add(RuleRecipient, "postmaster@")
	add(RuleRecipient, "abuse@example.test")

	wl := func(addr, name, sender, rcpt string) {
		t.Helper()
		d, err := h.e.Check(t0, &Request{ClientAddr: addr, ClientName: name, Sender: sender, Recipient: rcpt}, &Changes{})
		if err != nil || d.Verdict != Pass || d.Reason != ReasonWhitelist {
			t.Errorf("%s %s %s %s: %v/%v %v, want whitelisted", addr, name, sender, rcpt, d.Verdict, d.Reason, err)
		}
	}
	grey := func(addr, name, sender, rcpt string) {
		t.Helper()
		d, err := h.e.Check(t0, &Request{ClientAddr: addr, ClientName: name, Sender: sender, Recipient: rcpt}, &Changes{})
		if err != nil || d.Reason == ReasonWhitelist {
			t.Errorf("%s %s %s %s: %v/%v %v, want greylisted", addr, name, sender, rcpt, d.Verdict, d.Reason, err)
		}
	}
	wl("203.0.113.9", "x", from, to)
	wl("2001:db8:ffff:1::1", "x", from, to)
	wl("192.0.2.1", "mx1.outbound.example.net", from, to)
	wl("192.0.2.1", "OUTBOUND.example.net", from, to)
	grey("192.0.2.1", "notoutbound.example.net", from, to)
	wl("192.0.2.1", "x", "newsletter@news.example", to)
	// The address rule matches the normalised sender: a BATV-tagged bounce
	// of the same sender is the same sender.
	wl("192.0.2.1", "x", "prvs=0123abcdef=newsletter@news.example", to)
	grey("192.0.2.1", "x", "other@news.example", to)
	wl("192.0.2.1", "x", "a@trusted.example", to)
	wl("192.0.2.1", "x", "a@mail.trusted.example", to)
	grey("192.0.2.1", "x", "a@untrusted.example", to)
	wl("192.0.2.1", "x", from, "postmaster@anything.example")
	wl("192.0.2.1", "x", from, "Abuse@Example.test")
	grey("192.0.2.1", "x", from, "abuse@other.test")

	// Listings show addresses only as hashes.
	for _, r := range h.e.Rules() {
		if r.Value == "newsletter@news.example" || r.Value == "abuse@example.test" {
			t.Errorf("listing shows an address: %+v", r)
		}
	}
	if n := len(h.e.Rules()); n != 7 {
		t.Errorf("%d rules listed, want 7", n)
	}

	// The records rebuild the same rules elsewhere.
	e2 := newTestEngine(t, nil)
	if _, err := e2.Apply(rules); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(e2.Rules(), h.e.Rules()) {
		t.Errorf("applied rules %v, want %v", e2.Rules(), h.e.Rules())
	}

	// Removal, also by the hash a listing shows.
	var hashed string
	for _, r := range h.e.Rules() {
		if r.Kind == RuleSender && r.Value != "trusted.example" {
			hashed = r.Value
		}
	}
	for _, r := range []Rule{{RuleSender, hashed}, {RuleClient, "203.0.113.0/24"}} {
		if _, changed, err := h.e.SetRule(t0+1, r, false); err != nil || !changed {
			t.Fatalf("remove %+v: %v %v", r, changed, err)
		}
	}
	grey("203.0.113.9", "x", from, to)
	grey("192.0.2.1", "x", "newsletter@news.example", to)
	if _, changed, _ := h.e.SetRule(t0+2, Rule{RuleClient, "203.0.113.0/24"}, false); changed {
		t.Error("removing an absent rule reported a change")
	}

	for _, bad := range []Rule{{RuleClient, "300.1.1.1"}, {RuleClient, ""}, {RuleClientName, "a b"}, {RuleSender, "@example.com"}, {RuleRecipient, "address-hash:zz"}, {RuleKind(9), "x"}} {
		if _, _, err := h.e.SetRule(t0, bad, true); !errors.Is(err, ErrBadRule) {
			t.Errorf("SetRule(%+v) = %v, want ErrBadRule", bad, err)
		}
	}
}

// TestRuleMergeOrder: add and remove records of one rule end alike in
// either order, and a re-add after a removal in the same second wins.
func TestRuleMergeOrder(t *testing.T) {
	e := newTestEngine(t, nil)
	r := Rule{RuleClient, "192.0.2.0/24"}
	add, _, _ := e.SetRule(t0, r, true)
	del, _, _ := e.SetRule(t0, r, false)
	readd, _, _ := e.SetRule(t0, r, true)
	for _, order := range [][][]byte{{add, del, readd}, {readd, del, add}, {del, readd, add, add}} {
		e2 := newTestEngine(t, nil)
		for _, rec := range order {
			if _, err := e2.Apply(rec); err != nil {
				t.Fatal(err)
			}
		}
		if n := len(e2.Rules()); n != 1 {
			t.Errorf("after %d records: %d rules, want 1", len(order), n)
		}
	}
}

func TestExpireWheel(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.AutoWhitelistClients = 0 })
	day := Time(24 * 3600)
	h.check(t0, cl, from, "pending@example.test") // pending, never retried
	h.check(t0, cl, from, "passed@example.test")
	h.check(t0+300, cl, from, "passed@example.test")
	h.e.Expire(t0 + 300)
	if st := h.e.Stats(); st.Triplets != 2 {
		t.Fatalf("before any deadline: %d triplets", st.Triplets)
	}
	// After the retry window (and the wheel's slot width) the pending one
	// is gone; the passed one stays.
	h.e.Expire(t0 + 3*day)
	if st := h.e.Stats(); st.Triplets != 1 || st.Passed != 1 || st.Expired != 1 {
		t.Fatalf("after 3 days: %+v", st)
	}
	// Used every week, it is refiled each time its slot comes round and
	// never dropped.
	for w := Time(1); w <= 20; w++ {
		h.check(t0+w*7*day, cl, from, "passed@example.test")
		h.e.Expire(t0 + w*7*day)
	}
	if st := h.e.Stats(); st.Passed != 1 {
		t.Fatalf("refreshed entry dropped: %+v", st)
	}
	// Left alone past max-age, it goes.
	h.e.Expire(t0 + 20*7*day + 36*day + 2*wheelWidth)
	if st := h.e.Stats(); st.Triplets != 0 {
		t.Fatalf("after max-age: %+v", st)
	}
	// A clock jump beyond the horizon sweeps everything once.
	h.check(t0, cl, from, "x@example.test")
	h.e.Expire(t0 + 400*day)
	if st := h.e.Stats(); st.Triplets != 0 {
		t.Fatalf("after jump: %+v", st)
	}
}

// TestEntriesArePointerFree guards the property the memory design rests on:
// the garbage collector never scans the maps.
func TestEntriesArePointerFree(t *testing.T) {
	for _, typ := range []reflect.Type{reflect.TypeFor[entry](), reflect.TypeFor[client](), reflect.TypeFor[Changes]()} {
		if hasPointers(typ) {
			t.Errorf("%v holds pointers", typ)
		}
	}
	if s := reflect.TypeFor[entry]().Size(); s != 8 {
		t.Errorf("entry is %d bytes, want 8", s)
	}
}

func hasPointers(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Struct:
		for i := range t.NumField() {
			if hasPointers(t.Field(i).Type) {
				return true
			}
		}
		return false
	case reflect.Array:
		return hasPointers(t.Elem())
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Float32, reflect.Float64:
		return false
	}
	return true
}

func TestOptionsValidate(t *testing.T) {
	for name, mut := range map[string]func(*Options){
		"shards not power of two": func(o *Options) { o.Shards = 100 },
		"retry window ≤ delay":    func(o *Options) { o.RetryWindow = o.Delay },
		"fractional delay":        func(o *Options) { o.Delay = 1500 * time.Millisecond },
		"touch ≥ max age":         func(o *Options) { o.TouchInterval = o.MaxAge },
		"negative awl":            func(o *Options) { o.AutoWhitelistClients = -1 },
		"ipv4 prefix 0":           func(o *Options) { o.Keys.IPv4Prefix = 0 },
	} {
		o := DefaultOptions()
		mut(&o)
		if _, err := New(o, testSecret); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := New(DefaultOptions(), []byte("short")); err == nil {
		t.Error("short secret accepted")
	}
}

// allocEngine is an engine as greyhold serve runs it, with the built-in
// whitelists in force.
func allocEngine(t *testing.T) *Engine {
	t.Helper()
	e := newTestEngine(t, nil)
	wl, err := whitelist.LoadFiles([]string{whitelist.Builtin}, []string{whitelist.Builtin})
	if err != nil {
		t.Fatal(err)
	}
	e.SetStatic(wl)
	return e
}

// allocRequests makes n requests of distinct triplets from tag, each of a
// client network of its own, with senders the normaliser rewrites.
func allocRequests(n int, tag string) []Request {
	reqs := make([]Request, n)
	for i := range reqs {
		reqs[i] = Request{ClientAddr: fmt.Sprintf("10.%d.%d.9", i/250%250, i%250), ClientName: "mail.example",
			Sender: fmt.Sprintf("prvs=0123abcdef=News-%d@Example.com", i/1000), Recipient: fmt.Sprintf("%s%d@example.test", tag, i)}
	}
	return reqs
}

// checkAll checks every request at now, one at a time, wanting reason r.
func checkAll(t *testing.T, e *Engine, now Time, reqs []Request, r Reason) {
	t.Helper()
	for i := range reqs {
		var ch Changes
		if d, err := e.Check(now, &reqs[i], &ch); err != nil || d.Reason != r {
			t.Fatalf("request %d: %v, %v; want %v", i, d.Reason, err, r)
		}
	}
}

// mallocsPer returns the heap allocations per call of f(i), i from 0 to
// n-1, as a fraction: testing.AllocsPerRun rounds down to a whole number,
// which would hide an allocation every few checks.
func mallocsPer(n int, f func(i int)) float64 {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := range n {
		f(i)
	}
	runtime.ReadMemStats(&after)
	return float64(after.Mallocs-before.Mallocs) / float64(n)
}

// TestCheckDoesNotAllocate guards the hot path: a heap allocation per
// check would cost more than the lookup itself at millions of checks a
// second. A check that changes no table's size allocates nothing: a known
// triplet, an early retry, a client network's auto-whitelist, one at a
// time or in a batch.
func TestCheckDoesNotAllocate(t *testing.T) {
	e := allocEngine(t)
	known := []Request{
		{ClientAddr: "192.0.2.10", ClientName: "mail.example", Sender: "prvs=0123abcdef=Alice@Example.com", Recipient: "Rcpt@example.test"},
		{ClientAddr: "2001:db8::1", ClientName: "mail.example", Sender: "bounce-12345@lists.example.org", Recipient: "rcpt@example.test"},
		{ClientAddr: "192.0.2.10", ClientName: "mail.example", Sender: "", Recipient: "rcpt@example.test"},
	}
	checkAll(t, e, t0, known, ReasonNew)
	checkAll(t, e, t0+300, known, ReasonPassed)
	early := allocRequests(64, "early")
	checkAll(t, e, t0, early, ReasonNew)
	// Five triplets of 198.51.100.0/24 passed: the network is auto-
	// whitelisted, and new triplets from it pass without an entry.
	listed := make([]Request, 5)
	for i := range listed {
		listed[i] = Request{ClientAddr: "198.51.100.7", Sender: "a@example.org", Recipient: fmt.Sprintf("awl%d@example.test", i)}
	}
	checkAll(t, e, t0, listed, ReasonNew)
	for i := range listed { // an hour apart: a network counts a pass an hour
		checkAll(t, e, t0+300+Time(i)*3600, listed[i:i+1], ReasonPassed)
	}
	awl := make([]Request, 64)
	for i := range awl {
		awl[i] = Request{ClientAddr: "198.51.100.8", Sender: fmt.Sprintf("s%d@example.org", i), Recipient: "r@example.test"}
	}
	checkAll(t, e, t0+5*3600, awl, ReasonClientAWL)

	for _, tc := range []struct {
		name   string
		now    Time
		reqs   []Request
		reason Reason
	}{
		{"known", t0 + 301, known, ReasonKnown},
		{"early retry", t0 + 10, early, ReasonEarlyRetry},
		{"client-awl", t0 + 5*3600, awl, ReasonClientAWL},
	} {
		allocs := testing.AllocsPerRun(100, func() {
			for i := range tc.reqs {
				var ch Changes
				if d, err := e.Check(tc.now, &tc.reqs[i], &ch); err != nil || d.Reason != tc.reason {
					t.Fatalf("%s %d: %v, %v", tc.name, i, d.Reason, err)
				}
			}
		})
		if allocs != 0 {
			t.Errorf("%s: %v allocations per round of %d checks", tc.name, allocs, len(tc.reqs))
		}
		res := make([]Result, len(tc.reqs))
		recs := make([]byte, 0, 64<<10)
		allocs = testing.AllocsPerRun(100, func() {
			recs, _ = e.CheckBatch(tc.now, tc.reqs, res, recs[:0])
			for i := range res {
				if res[i].Err != nil || res[i].Reason != tc.reason {
					t.Fatalf("%s batch %d: %v, %v", tc.name, i, res[i].Reason, res[i].Err)
				}
			}
		})
		if allocs != 0 {
			t.Errorf("%s: %v allocations per batch of %d", tc.name, allocs, len(tc.reqs))
		}
	}
}

// TestNewTripletsAllocateOnlyToGrow: a new triplet, and its pass, which
// counts its client network, allocate only when a shard's table (and the
// view the prefetch reads), a timing wheel's slot or the client table
// grows, ever more rarely as they fill. 100,000 new triplets, each of a
// network of its own, into an empty engine allocate 0.077 times a check
// one at a time (about three allocations for each of the 256 shards'
// nine growths), their passes 0.035; the same again in batches, into
// tables that have grown, less. The bound is 0.1: an allocation in every
// check would be 1, one in every pass 0.5.
func TestNewTripletsAllocateOnlyToGrow(t *testing.T) {
	const n = 100_000
	e := allocEngine(t)
	one, batched := allocRequests(n, "one"), allocRequests(n, "batch")
	for i := range batched {
		batched[i].ClientAddr = fmt.Sprintf("10.%d.%d.9", 128+i/250%120, i%250)
	}
	res := make([]Result, 100)
	recs := make([]byte, 0, 64<<10)
	batch := func(now Time, reqs []Request, r Reason) func(int) {
		return func(i int) {
			if i%len(res) != 0 {
				return
			}
			recs, _ = e.CheckBatch(now, reqs[i:i+len(res)], res, recs[:0])
			for j := range res {
				if res[j].Err != nil || res[j].Reason != r {
					t.Fatalf("batch %d/%d: %v, %v", i, j, res[j].Reason, res[j].Err)
				}
			}
		}
	}
	single := func(now Time, reqs []Request, r Reason) func(int) {
		return func(i int) {
			var ch Changes
			if d, err := e.Check(now, &reqs[i], &ch); err != nil || d.Reason != r {
				t.Fatalf("request %d: %v, %v", i, d.Reason, err)
			}
		}
	}
	for _, tc := range []struct {
		name  string
		check func(int)
	}{
		{"new", single(t0, one, ReasonNew)},
		{"passed", single(t0+300, one, ReasonPassed)},
		{"new, batched", batch(t0, batched, ReasonNew)},
		{"passed, batched", batch(t0+300, batched, ReasonPassed)},
	} {
		per := mallocsPer(n, tc.check)
		t.Logf("%s: %.4f allocations a check", tc.name, per)
		if per >= 0.1 {
			t.Errorf("%s: %.4f allocations a check over %d, want under 0.1", tc.name, per, n)
		}
	}
}
