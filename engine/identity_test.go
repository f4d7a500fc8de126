package engine_test

import (
	"strings"
	"testing"

	. "github.com/greyhold/greyhold/engine"
)

// TestClassifyName holds real name shapes to the identity they give in
// name mode: the big senders' pools keep theirs, residential, cloud and
// hosting names, whose organisation would be a whole provider, fall back
// to the network ("" here).
func TestClassifyName(t *testing.T) {
	e := newEngine(t, func(o *Options) { o.Keys.Identity = IdentityName })
	f := func(addr, name, want string) {
		t.Helper()
		c, err := e.ClassifyName(addr, name)
		if err != nil {
			t.Fatal(err)
		}
		if c.Identity != want {
			t.Errorf("%s %s: identity %q (verified %v, generic %v), want %q", addr, name, c.Identity, c.Verified, c.Generic, want)
		}
	}
	// Gmail, IPv4 and IPv6; the host's number is not its address.
	f("209.85.221.54", "mail-wr1-f54.google.com", "google.com")
	f("209.85.128.43", "mail-wm1-f43.google.com", "google.com")
	f("2a00:1450:4864:20::42a", "mail-wr1-x42a.google.com", "google.com")
	f("209.85.221.54", "MAIL-WR1-F54.Google.COM.", "google.com")
	// Outlook and Office 365.
	f("40.107.22.99", "mail-am6eur05on2099.outbound.protection.outlook.com", "outbound.protection.outlook.com")
	f("2a01:111:f400:7e1a::72f", "mail-he1eur04on072f.outbound.protection.outlook.com", "outbound.protection.outlook.com")
	// Amazon SES names each host by its last two octets.
	f("54.240.8.30", "a8-30.smtp-out.amazonses.com", "smtp-out.amazonses.com")
	f("23.251.234.5", "e234-5.smtp-out.eu-west-1.amazonses.com", "smtp-out.eu-west-1.amazonses.com")
	// SendGrid, Mailchimp and Mandrill.
	f("167.89.123.45", "wrqvtbkv.outbound-mail.sendgrid.net", "outbound-mail.sendgrid.net")
	f("205.201.131.5", "mail131-5.atl131.mcsv.net", "atl131.mcsv.net")
	f("198.2.177.17", "mail177-17.suw21.mandrillapp.com", "suw21.mandrillapp.com")
	// Yahoo, iCloud, Zoho.
	f("66.163.191.150", "sonic311-20.consmr.mail.ne1.yahoo.com", "consmr.mail.ne1.yahoo.com")
	f("17.58.6.42", "mr85p00im-ztdg06011801.me.com", "me.com")
	f("136.143.188.51", "sender4-op-o51.zoho.com", "zoho.com")
	// Small senders: the registrable domain at least.
	f("192.0.2.10", "mail.example.org", "example.org")
	f("192.0.2.10", "example.org", "example.org")
	f("192.0.2.10", "mx1.mail.example.co.uk", "mail.example.co.uk")
	f("192.0.2.10", "mail.example.co.uk", "example.co.uk")

	// Residential: Comcast, Deutsche Telekom (the address in hex), Orange
	// (its octets over two labels), Verizon, BT, Virgin, Spectrum.
	f("73.15.22.101", "c-73-15-22-101.hsd1.ca.comcast.net", "")
	f("93.203.18.52", "p5dcb1234.dip0.t-ipconnect.de", "")
	f("2003:e8:1f2a:9b00:a1b2:c3d4:e5f6:1234", "p200300e81f2a9b00a1b2c3d4e5f61234.dip0.t-ipconnect.de", "")
	f("90.3.179.96", "arouen-651-1-96-179.w90-3.abo.wanadoo.fr", "")
	f("90.3.179.96", "lfbn-tou-1-96-179.w90-3.wanadoo.fr", "")
	f("71.105.1.2", "pool-71-105-1-2.nycmny.fios.verizon.net", "")
	f("86.1.2.3", "host86-1-2-3.range86-1.btcentralplus.com", "")
	f("82.1.2.3", "cpc123456-sutt4-2-0-cust789.19-1.cable.virginm.net", "")
	f("98.123.45.67", "syn-098-123-045-067.res.spectrum.com", "")
	f("203.0.113.7", "203-0-113-7.example-isp.net", "")
	f("203.0.113.7", "7.113.0.203.example-isp.net", "")
	f("203.0.113.7", "x3405803783.example-isp.net", "")
	f("203.0.113.7", "cbl-7.example-isp.net", "")
	f("2001:db8:1:2::99", "2001-db8-1-2--99.example-isp.net", "")
	f("2001:db8::1", "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.example-isp.net", "")
	// Cloud and hosting default names.
	f("54.12.34.56", "ec2-54-12-34-56.compute-1.amazonaws.com", "")
	f("3.120.1.2", "ec2-3-120-1-2.eu-central-1.compute.amazonaws.com", "")
	f("35.12.34.56", "56.34.12.35.bc.googleusercontent.com", "")
	f("88.198.12.34", "static.88.198.12.34.clients.your-server.de", "")
	f("51.68.12.34", "ns3012345.ip-51-68-12.eu", "")
	f("45.33.1.2", "li1234-56.members.linode.com", "")
	// Dynamic DNS and other private suffixes of the list.
	f("203.0.113.9", "myhost.duckdns.org", "")
	f("203.0.113.9", "home.dyndns.org", "")
	// No verified name, or no registrable domain.
	f("192.0.2.10", "unknown", "")
	f("192.0.2.10", "", "")
	f("192.0.2.10", "localhost", "")
	f("192.0.2.10", "co.uk", "")
	f("192.0.2.10", "mail..example.org", "")
	f("192.0.2.10", "mail.exa mple.org", "")
	f("192.0.2.10", "-", "")
}

func nameEngine(t *testing.T, mut func(*Options)) *Engine {
	t.Helper()
	return newEngine(t, func(o *Options) {
		o.Keys.Identity = IdentityName
		if mut != nil {
			mut(o)
		}
	})
}

func decide(t *testing.T, e *Engine, now Time, addr, name string) Decision {
	t.Helper()
	var ch Changes
	d, err := e.Check(now, &Request{ClientAddr: addr, ClientName: name, Sender: "noreply@accounts.example.com", Recipient: "bob@example.net"}, &ch)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestNameIdentityRetries: a pool that retries from another /24, and a
// dual-stack host that retries over the other family, pass on their first
// retry after the delay when their names share an identity; a generic
// name retrying from another /24 starts over, as in network mode.
func TestNameIdentityRetries(t *testing.T) {
	const t0 = Time(200_000_000)
	e := nameEngine(t, nil)
	for _, c := range []struct{ first, firstName, retry, retryName string }{
		{"209.85.221.54", "mail-wr1-f54.google.com", "209.85.128.43", "mail-wm1-f43.google.com"},
		{"209.85.221.55", "mail-wr1-f55.google.com", "2a00:1450:4864:20::42a", "mail-wr1-x42a.google.com"},
		{"54.240.8.30", "a8-30.smtp-out.amazonses.com", "54.240.27.12", "a27-12.smtp-out.amazonses.com"},
	} {
		if d := decide(t, e, t0, c.first, c.firstName); d.Verdict != Defer || d.Reason != ReasonNew || d.Ident != IdentName {
			t.Fatalf("%s first: %+v", c.firstName, d)
		}
		if d := decide(t, e, t0+301, c.retry, c.retryName); d.Verdict != Pass || d.Reason != ReasonPassed || d.Delayed != 301 {
			t.Errorf("%s retried from %s as %s: %+v, want a pass after 301 s", c.firstName, c.retry, c.retryName, d)
		}
		e = nameEngine(t, nil)
	}
	// Generic: keyed by network, so another /24 is another triplet.
	if d := decide(t, e, t0, "73.15.22.101", "c-73-15-22-101.hsd1.ca.comcast.net"); d.Ident != IdentNetwork || d.Verdict != Defer {
		t.Fatalf("generic first: %+v", d)
	}
	if d := decide(t, e, t0+301, "73.15.23.7", "c-73-15-23-7.hsd1.ca.comcast.net"); d.Verdict != Defer || d.Reason != ReasonNew {
		t.Errorf("generic name from another /24: %+v, want new", d)
	}
	// The same /24 still passes, as in network mode.
	if d := decide(t, e, t0+302, "73.15.22.102", "c-73-15-22-102.hsd1.ca.comcast.net"); d.Verdict != Pass {
		t.Errorf("generic name from the same /24: %+v, want a pass", d)
	}
}

// TestNameIdentityAutoWhitelistPerNetwork: the auto-whitelist counts
// passes per client network in name mode too, so a verified name never
// whitelists its whole provider.
func TestNameIdentityAutoWhitelistPerNetwork(t *testing.T) {
	const t0 = Time(200_000_000)
	e := nameEngine(t, func(o *Options) { o.AutoWhitelistClients = 2; o.AutoWhitelistInterval = 0 })
	req := func(addr, name, rcpt string) Request {
		return Request{ClientAddr: addr, ClientName: name, Sender: "noreply@accounts.example.com", Recipient: rcpt}
	}
	now := t0
	for i, rcpt := range []string{"a@example.net", "b@example.net"} {
		r := req("209.85.221.54", "mail-wr1-f54.google.com", rcpt)
		var ch Changes
		if d, _ := e.Check(now, &r, &ch); d.Reason != ReasonNew {
			t.Fatalf("pass %d: %+v", i, d)
		}
		now += 301
		if d, _ := e.Check(now, &r, &ch); d.Reason != ReasonPassed {
			t.Fatalf("pass %d: %+v", i, d)
		}
	}
	var ch Changes
	r := req("209.85.221.99", "mail-wr1-f99.google.com", "c@example.net")
	if d, _ := e.Check(now, &r, &ch); d.Reason != ReasonClientAWL {
		t.Errorf("the network that passed twice: %+v, want client-awl", d)
	}
	r = req("209.85.128.43", "mail-wm1-f43.google.com", "d@example.net")
	if d, _ := e.Check(now, &r, &ch); d.Reason != ReasonNew {
		t.Errorf("another network of the same identity: %+v, want new", d)
	}
}

// TestAppendIdentity: the identity as logs and the API show it.
func TestAppendIdentity(t *testing.T) {
	e := nameEngine(t, nil)
	for _, c := range []struct{ addr, name, want string }{
		{"209.85.221.54", "Mail-WR1-F54.Google.com.", "name:google.com"},
		{"73.15.22.101", "c-73-15-22-101.hsd1.ca.comcast.net", "net:73.15.22.0/24"},
		{"2001:db8::1", "unknown", "net:2001:db8::/64"},
		{"::ffff:192.0.2.1", "unknown", "net:192.0.2.0/24"},
	} {
		req := Request{ClientAddr: c.addr, ClientName: c.name, Sender: "a@example.com", Recipient: "b@example.net"}
		var ch Changes
		d, err := e.Check(Time(200_000_000), &req, &ch)
		if err != nil {
			t.Fatal(err)
		}
		if got := string(e.AppendIdentity(nil, &req, &d)); got != c.want {
			t.Errorf("%s %s: %q, want %q", c.addr, c.name, got, c.want)
		}
	}
}

// FuzzClassifyName: whatever the name, the identity is a suffix of it
// (lowercased) and the answer is the same in any case and from a cold or
// a warm cache, so every node keys alike whatever it saw before.
func FuzzClassifyName(f *testing.F) {
	for _, s := range []string{"mail-wr1-f54.google.com", "a8-30.smtp-out.amazonses.com", "c-73-15-22-101.hsd1.ca.comcast.net",
		"p5dcb1234.dip0.t-ipconnect.de", "co.uk", "x.duckdns.org", "unknown", "", "a..b", "A.B.C.D.E.F.G.H.I.example.com", "ec2-1-2-3-4.compute-1.amazonaws.com"} {
		f.Add("73.15.22.101", s)
		f.Add("2001:db8::1", s)
	}
	warm := newEngine(f, func(o *Options) { o.Keys.Identity = IdentityName })
	f.Fuzz(func(t *testing.T, addr, name string) {
		cold := newEngine(t, func(o *Options) { o.Keys.Identity = IdentityName })
		a, err := cold.ClassifyName(addr, name)
		if err != nil {
			return
		}
		b, _ := warm.ClassifyName(addr, name)
		c, _ := warm.ClassifyName(addr, strings.ToUpper(name))
		if a != b || a != c {
			t.Fatalf("%q: cold %+v, warm %+v, upper case %+v", name, a, b, c)
		}
		if a.Identity != "" && !strings.HasSuffix(strings.ToLower(strings.TrimSuffix(name, ".")), a.Identity) {
			t.Fatalf("%q: identity %q is not a suffix", name, a.Identity)
		}
		if a.Identity != "" && (!a.Verified || a.Generic) {
			t.Fatalf("%q: %+v", name, a)
		}
	})
}
