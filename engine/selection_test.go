package engine_test

import (
	"strings"
	"testing"
	"time"

	. "github.com/greyhold/greyhold/engine"
)

func mustRules(t *testing.T, def Action, lines ...string) Selection {
	t.Helper()
	var sel Selection
	sel.Default = def
	for _, l := range lines {
		r, err := ParseSelectRule(l)
		if err != nil {
			t.Fatal(err)
		}
		sel.Rules = append(sel.Rules, r)
	}
	return sel
}

func TestParseSelectRule(t *testing.T) {
	for _, good := range []string{
		"sasl: sasl => pass",
		"dyn: generic-name and not sasl => greylist delay=10m",
		"nets: client in 192.0.2.0/24, 2001:db8::/32,198.51.100.7 => pass",
		"optin: recipient-domain in Example.ORG => greylist",
		"watch: sender-domain in example.com => none",
		"listed: dnsbl >= 5 => greylist",
		"helo: bad-helo => greylist",
	} {
		r, err := ParseSelectRule(good)
		if err != nil {
			t.Errorf("%q: %v", good, err)
			continue
		}
		if again, err := ParseSelectRule(r.String()); err != nil || again.String() != r.String() {
			t.Errorf("%q: String %q does not read back (%v)", good, r.String(), err)
		}
	}
	for _, bad := range []string{
		"", "sasl => pass", "x: => pass", "x: sasl", "x: sasl => maybe", "x: sasl => pass delay=5m",
		"x: sasl => greylist delay=5", "x: sasl => greylist delay=1.5s", "x: client in 300.0.0.0/8 => pass",
		"x: client 192.0.2.0/24 => pass", "x: dnsbl > 5 => greylist", "x: dnsbl >= five => greylist",
		"x: sender-domain in a@b => pass", "x: nosuch => pass", "x: sasl and => pass", "x y: sasl => pass",
	} {
		if _, err := ParseSelectRule(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	sel := mustRules(t, ActGreylist, "a: sasl => pass", "a: sasl => pass")
	if err := sel.Validate(); err == nil || !strings.Contains(err.Error(), `"a"`) {
		t.Errorf("two rules named a: %v", err)
	}
}

type selCase struct {
	name string
	req  Request
	want Decision // Verdict, Reason, Left and Rule are compared
}

func runSel(t *testing.T, sel Selection, cases []selCase) {
	t.Helper()
	e := newEngine(t, func(o *Options) { o.Select = sel })
	for _, c := range cases {
		if c.req.Recipient == "" {
			c.req.Recipient = "bob@example.net"
		}
		if c.req.ClientAddr == "" {
			c.req.ClientAddr = "192.0.2.10"
		}
		var ch Changes
		d, err := e.Check(Time(200_000_000), &c.req, &ch)
		if err != nil {
			t.Fatal(err)
		}
		if d.Verdict != c.want.Verdict || d.Reason != c.want.Reason || d.Left != c.want.Left || d.Rule != c.want.Rule {
			t.Errorf("%s: %v/%v left=%d rule=%d, want %v/%v left=%d rule=%d", c.name, d.Verdict, d.Reason, d.Left, d.Rule,
				c.want.Verdict, c.want.Reason, c.want.Left, c.want.Rule)
		}
	}
}

var (
	defer300 = Decision{Verdict: Defer, Reason: ReasonNew, Left: 300}
	ruled    = func(rule uint8) Decision { return Decision{Verdict: Pass, Reason: ReasonRule, Rule: rule} }
)

// TestSelectionConditions: each condition at its boundary, under "greylist
// only suspicious clients" (default pass).
func TestSelectionConditions(t *testing.T) {
	greylisted := func(rule uint8) Decision { d := defer300; d.Rule = rule; return d }
	t.Run("names", func(t *testing.T) {
		sel := mustRules(t, ActPass, "no-rdns: no-name => greylist", "dynamic: generic-name => greylist delay=10m")
		runSel(t, sel, []selCase{
			{"unknown", Request{ClientName: "unknown", Sender: "a@x.example"}, greylisted(1)},
			{"not a name", Request{ClientName: "exa mple", Sender: "b@x.example"}, greylisted(1)},
			{"generic", Request{ClientAddr: "73.15.22.101", ClientName: "c-73-15-22-101.hsd1.ca.comcast.net", Sender: "c@x.example"},
				Decision{Verdict: Defer, Reason: ReasonNew, Left: 600, Rule: 2}},
			{"verified", Request{ClientName: "mail.example.org", Sender: "d@x.example"}, ruled(0)},
		})
	})
	t.Run("helo", func(t *testing.T) {
		sel := mustRules(t, ActPass, "helo: bad-helo => greylist")
		runSel(t, sel, []selCase{
			{"fqdn", Request{HELOName: "mail.example.org", Sender: "a@x.example"}, ruled(0)},
			{"fqdn with dot", Request{HELOName: "mail.example.org.", Sender: "a1@x.example"}, ruled(0)},
			{"not sent", Request{Sender: "a2@x.example"}, ruled(0)},
			{"one label", Request{HELOName: "localhost", Sender: "b@x.example"}, greylisted(1)},
			{"numeric", Request{HELOName: "192.0.2.10", Sender: "c@x.example"}, greylisted(1)},
			{"own literal", Request{HELOName: "[192.0.2.10]", Sender: "d@x.example"}, ruled(0)},
			{"other literal", Request{HELOName: "[192.0.2.11]", Sender: "e@x.example"}, greylisted(1)},
			{"own IPv6 literal", Request{ClientAddr: "2001:db8::1", HELOName: "[IPv6:2001:db8::1]", Sender: "f@x.example"}, ruled(0)},
			{"bad characters", Request{HELOName: "mail_example!org", Sender: "g@x.example"}, greylisted(1)},
			{"empty label", Request{HELOName: "mail..example.org", Sender: "h@x.example"}, greylisted(1)},
		})
	})
	t.Run("lists", func(t *testing.T) {
		sel := mustRules(t, ActPass,
			"sasl: sasl => pass",
			"partner: client in 198.51.100.0/25 => pass",
			"optout: recipient-domain in optout.example => pass",
			"optin: recipient-domain in example.net => greylist",
			"shop: sender-domain in shop.example => greylist",
			"listed: dnsbl >= 5 => greylist")
		runSel(t, sel, []selCase{
			{"sasl", Request{SASLUsername: "alice", Recipient: "x@example.net"}, ruled(1)},
			{"partner, first address", Request{ClientAddr: "198.51.100.0", Recipient: "x@example.net"}, ruled(2)},
			{"partner, last address", Request{ClientAddr: "198.51.100.127", Recipient: "y@example.net"}, ruled(2)},
			{"past the partner net", Request{ClientAddr: "198.51.100.128", Recipient: "z@example.net"}, greylisted(4)},
			{"opted out", Request{Recipient: "x@optout.example"}, ruled(3)},
			{"opted in, subdomain", Request{Recipient: "x@mail.example.net"}, greylisted(4)},
			{"not a subdomain", Request{Recipient: "x@notexample.net"}, ruled(0)},
			{"sender domain", Request{Sender: "news@Shop.Example", Recipient: "x@other.example"}, greylisted(5)},
			{"dnsbl below", Request{DNSScore: 4, Recipient: "a@other.example"}, ruled(0)},
			{"dnsbl at", Request{DNSScore: 5, Recipient: "b@other.example"}, greylisted(6)},
		})
	})
	t.Run("default greylist, none rules noted", func(t *testing.T) {
		sel := mustRules(t, ActGreylist, "watch: sender-domain in watch.example => none", "sasl: not sasl and sender-domain in free.example => pass")
		e := newEngine(t, func(o *Options) { o.Select = sel })
		var ch Changes
		d, _ := e.Check(Time(200_000_000), &Request{ClientAddr: "192.0.2.1", Sender: "a@watch.example", Recipient: "b@example.net"}, &ch)
		if d.Verdict != Defer || d.Rule != 0 || d.Noted != 1 {
			t.Errorf("none rule: %+v, want a default defer noting rule 0", d)
		}
		d, _ = e.Check(Time(200_000_000), &Request{ClientAddr: "192.0.2.1", Sender: "a@free.example", Recipient: "b@example.net"}, &ch)
		if d.Verdict != Pass || d.Reason != ReasonRule || d.Rule != 2 {
			t.Errorf("not sasl: %+v", d)
		}
		d, _ = e.Check(Time(200_000_000), &Request{ClientAddr: "192.0.2.1", Sender: "a@free.example", Recipient: "b@example.net", SASLUsername: "u"}, &ch)
		if d.Verdict != Defer {
			t.Errorf("sasl, so not the rule: %+v", d)
		}
	})
}

// TestSelectionRuleDelay: a greylist rule's delay holds a triplet for
// exactly that long.
func TestSelectionRuleDelay(t *testing.T) {
	sel := mustRules(t, ActGreylist, "long: no-name => greylist delay=15m")
	e := newEngine(t, func(o *Options) { o.Select = sel })
	req := Request{ClientAddr: "192.0.2.1", ClientName: "unknown", Sender: "a@x.example", Recipient: "b@example.net"}
	t0 := Time(200_000_000)
	for _, c := range []struct {
		at   Time
		want Verdict
		left uint32
	}{{t0, Defer, 900}, {t0 + 600, Defer, 300}, {t0 + 899, Defer, 1}, {t0 + 900, Pass, 0}} {
		var ch Changes
		d, _ := e.Check(c.at, &req, &ch)
		if d.Verdict != c.want || d.Left != c.left {
			t.Errorf("at +%d: %+v, want %v left %d", c.at-t0, d, c.want, c.left)
		}
	}
	if time.Duration(sel.Rules[0].Delay) != 15*time.Minute {
		t.Fatal(sel.Rules[0].Delay)
	}
}

// TestTransactionRecipients: with PassTransactionRecipients, a new
// recipient of a transaction whose other recipient passed passes too;
// another instance, client or sender does not, nor does it without the
// option, nor an hour later.
func TestTransactionRecipients(t *testing.T) {
	t0 := Time(200_000_000)
	for _, on := range []bool{false, true} {
		e := newEngine(t, func(o *Options) { o.PassTransactionRecipients = on })
		req := func(inst, addr, sender, rcpt string) *Request {
			return &Request{ClientAddr: addr, ClientName: "mail.example.org", Sender: sender, Recipient: rcpt, Instance: inst}
		}
		check := func(at Time, r *Request) Decision {
			var ch Changes
			d, err := e.Check(at, r, &ch)
			if err != nil {
				t.Fatal(err)
			}
			return d
		}
		// a@ is known: deferred once, passed after the delay.
		check(t0, req("i0", "192.0.2.1", "s@example.org", "a@example.net"))
		if d := check(t0+400, req("i1", "192.0.2.1", "s@example.org", "a@example.net")); d.Reason != ReasonPassed {
			t.Fatalf("setup: %+v", d)
		}
		// Transaction i2: a@ passes (known), then the copy to cc@.
		check(t0+1000, req("i2", "192.0.2.1", "s@example.org", "a@example.net"))
		d := check(t0+1001, req("i2", "192.0.2.1", "s@example.org", "cc@example.net"))
		if on && (d.Verdict != Pass || d.Reason != ReasonTransaction) || !on && d.Reason != ReasonNew {
			t.Errorf("option %v: the copy: %+v", on, d)
		}
		if !on {
			continue
		}
		for name, r := range map[string]*Request{
			"another instance": req("i3", "192.0.2.1", "s@example.org", "cc2@example.net"),
			"another client":   req("i2", "198.51.100.1", "s@example.org", "cc3@example.net"),
			"another sender":   req("i2", "192.0.2.1", "t@example.org", "cc4@example.net"),
		} {
			if d := check(t0+1002, r); d.Verdict != Defer {
				t.Errorf("%s: %+v, want a defer", name, d)
			}
		}
		if d := check(t0+1000+3600, req("i2", "192.0.2.1", "s@example.org", "cc5@example.net")); d.Verdict != Defer {
			t.Errorf("an hour later: %+v", d)
		}
		st := e.Stats()
		if st.Decided(ReasonTransaction) != 1 || st.Decided(ReasonNew) != 5 {
			t.Errorf("counts: transaction %d, new %d", st.Decided(ReasonTransaction), st.Decided(ReasonNew))
		}
	}
}
