package dnsbl

import (
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// testDNS is a DNS server on loopback that serves the test's lists:
// bl.test lists 192.0.2.2 (TTL 600) and the IPv6 2001:db8::2, answers
// NXDOMAIN with a 300 s negative TTL otherwise; fail.test answers
// SERVFAIL; hold.test answers nothing until release is closed; codes.test
// lists with 127.0.0.3 and gives 127.255.255.254 (refused) for 192.0.2.9.
type testDNS struct {
	addr    string
	release chan struct{}
	mu      sync.Mutex
	asked   map[string]int
	srv     *dns.Server
}

func startDNS(t testing.TB) *testDNS {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &testDNS{addr: pc.LocalAddr().String(), release: make(chan struct{}), asked: map[string]int{}}
	mux := dns.NewServeMux()
	soa := func(zone string) dns.RR {
		return &dns.SOA{Hdr: dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 3600},
			Ns: "ns." + zone, Mbox: "h." + zone, Serial: 1, Refresh: 1, Retry: 1, Expire: 1, Minttl: 300}
	}
	answer := func(w dns.ResponseWriter, r *dns.Msg, ip string, ttl uint32) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: ttl}, A: net.ParseIP(ip)})
		w.WriteMsg(m)
	}
	nx := func(w dns.ResponseWriter, r *dns.Msg, zone string) {
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeNameError)
		m.Ns = append(m.Ns, soa(zone))
		w.WriteMsg(m)
	}
	count := func(r *dns.Msg) {
		d.mu.Lock()
		d.asked[r.Question[0].Name]++
		d.mu.Unlock()
	}
	mux.HandleFunc("bl.test.", func(w dns.ResponseWriter, r *dns.Msg) {
		count(r)
		switch r.Question[0].Name {
		case "2.2.0.192.bl.test.", Query(netip.MustParseAddr("2001:db8::2"), "bl.test"):
			answer(w, r, "127.0.0.2", 600)
		default:
			nx(w, r, "bl.test.")
		}
	})
	mux.HandleFunc("codes.test.", func(w dns.ResponseWriter, r *dns.Msg) {
		count(r)
		switch r.Question[0].Name {
		case "2.2.0.192.codes.test.":
			answer(w, r, "127.0.0.2", 600)
		case "3.2.0.192.codes.test.":
			answer(w, r, "127.0.0.3", 600)
		case "9.2.0.192.codes.test.":
			answer(w, r, "127.255.255.254", 600)
		default:
			nx(w, r, "codes.test.")
		}
	})
	mux.HandleFunc("fail.test.", func(w dns.ResponseWriter, r *dns.Msg) {
		count(r)
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeServerFailure)
		w.WriteMsg(m)
	})
	mux.HandleFunc("hold.test.", func(w dns.ResponseWriter, r *dns.Msg) {
		count(r)
		<-d.release // never answered: the client times out first, or the test lets go
	})
	d.srv = &dns.Server{PacketConn: pc, Handler: mux}
	started := make(chan struct{})
	d.srv.NotifyStartedFunc = func() { close(started) }
	go d.srv.ActivateAndServe()
	<-started
	t.Cleanup(func() {
		d.let()
		d.srv.Shutdown()
	})
	return d
}

func (d *testDNS) let() {
	select {
	case <-d.release:
	default:
		close(d.release)
	}
}

func (d *testDNS) count(name string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.asked[name]
}

// clock is a manual clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type results struct {
	mu   sync.Mutex
	seen map[string]int
	ch   chan string
}

func newLists(t *testing.T, d *testDNS, c *clock, zones ...Zone) (*Lists, *results) {
	t.Helper()
	r := &results{seen: map[string]int{}, ch: make(chan string, 100)}
	l, err := New(Config{Zones: zones, Servers: []string{d.addr}, Timeout: 300 * time.Millisecond, Now: c.now,
		OnResult: func(zone, res string) {
			r.mu.Lock()
			r.seen[zone+" "+res]++
			r.mu.Unlock()
			r.ch <- zone + " " + res
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	return l, r
}

// await waits for n lookups to end: a handshake with OnResult, not a
// sleep.
func (r *results) await(t *testing.T, n int) []string {
	t.Helper()
	var out []string
	for range n {
		select {
		case s := <-r.ch:
			out = append(out, s)
		case <-time.After(10 * time.Second):
			t.Fatalf("lookups did not end; have %v", out)
		}
	}
	return out
}

var (
	listed4 = netip.MustParseAddr("192.0.2.2")
	clean4  = netip.MustParseAddr("192.0.2.1")
	listed6 = netip.MustParseAddr("2001:db8::2")
)

// TestScore: listed, not listed, IPv6, weights summed and allow lists
// subtracted; nothing known before the answers, then cached for their TTL.
func TestScore(t *testing.T) {
	d := startDNS(t)
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	l, r := newLists(t, d, c, Zone{Name: "bl.test", Weight: 10}, Zone{Name: "codes.test", Weight: 3, Codes: []netip.Addr{netip.MustParseAddr("127.0.0.3")}},
		Zone{Name: "bl.test.", Weight: 4, Allow: true})
	if s, done := l.Score(listed4); s != 0 || done {
		t.Fatalf("before any answer: %d %v, want 0 and not complete", s, done)
	}
	r.await(t, 3)
	if s, done := l.Score(listed4); s != 10-4 || !done {
		t.Errorf("listed in bl.test, allowed by the same: %d %v, want 6 (127.0.0.2 is not a code codes.test counts)", s, done)
	}
	l.Score(netip.MustParseAddr("192.0.2.3"))
	r.await(t, 3)
	if s, _ := l.Score(netip.MustParseAddr("192.0.2.3")); s != 3 {
		t.Errorf("codes.test's 127.0.0.3: %d, want 3", s)
	}
	l.Score(clean4)
	l.Score(listed6)
	r.await(t, 6)
	if s, done := l.Score(clean4); s != 0 || !done {
		t.Errorf("clean: %d %v", s, done)
	}
	if s, _ := l.Score(listed6); s != 6 {
		t.Errorf("IPv6 listed: %d", s)
	}
	// Cached: no new query while the TTL holds; asked again after it.
	asked := d.count("2.2.0.192.bl.test.")
	c.add(599 * time.Second)
	l.Score(listed4)
	if n := d.count("2.2.0.192.bl.test."); n != asked {
		t.Errorf("asked %d times within the TTL, want %d", n, asked)
	}
	c.add(2 * time.Second)
	if s, done := l.Score(listed4); done || s != 0 {
		t.Errorf("after the TTL: %d %v, want a new lookup", s, done)
	}
	r.await(t, 3)
	if n := d.count("2.2.0.192.bl.test."); n != asked+2 {
		t.Errorf("after the TTL: asked %d times, want %d", n, asked+2)
	}
	// Private and loopback addresses are never asked about.
	if s, done := l.Score(netip.MustParseAddr("10.1.2.3")); s != 0 || !done {
		t.Errorf("private: %d %v", s, done)
	}
}

// TestScoreFailures: a timeout and a SERVFAIL count as not listed and are
// kept for ErrorTTL; a refusal code (127.255.255.x) is no listing.
func TestScoreFailures(t *testing.T) {
	d := startDNS(t)
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	l, r := newLists(t, d, c, Zone{Name: "hold.test", Weight: 5}, Zone{Name: "fail.test", Weight: 7}, Zone{Name: "codes.test", Weight: 9})
	l.Score(listed4)
	got := r.await(t, 3)
	want := map[string]bool{"hold.test timeout": true, "fail.test error": true, "codes.test listed": true}
	for _, g := range got {
		if !want[g] {
			t.Errorf("result %q, want one of %v", g, want)
		}
	}
	if s, done := l.Score(listed4); s != 9 || !done {
		t.Errorf("after a timeout and a SERVFAIL: %d %v, want 9", s, done)
	}
	l.Score(netip.MustParseAddr("192.0.2.9"))
	got = r.await(t, 3)
	if s, _ := l.Score(netip.MustParseAddr("192.0.2.9")); s != 0 {
		t.Errorf("a refusal code: %d (%v)", s, got)
	}
	n := d.count("2.2.0.192.hold.test.")
	c.add(59 * time.Second)
	l.Score(listed4)
	if d.count("2.2.0.192.hold.test.") != n {
		t.Error("a timed-out list was asked again within ErrorTTL")
	}
}

func TestParseZone(t *testing.T) {
	z, err := ParseZone("zen.spamhaus.org=127.0.0.2,127.0.0.3 10", false)
	if err != nil || z.Name != "zen.spamhaus.org" || z.Weight != 10 || len(z.Codes) != 2 {
		t.Errorf("%+v %v", z, err)
	}
	for _, bad := range []string{"", "zen.spamhaus.org", "zen.spamhaus.org ten", "zen.spamhaus.org 0", "zen 3", "a..b 1", "x.org=1.2.3 4"} {
		if _, err := ParseZone(bad, false); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	if q := Query(netip.MustParseAddr("2001:db8::1"), "bl.test"); q != "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.test." {
		t.Errorf("IPv6 query %q", q)
	}
}
