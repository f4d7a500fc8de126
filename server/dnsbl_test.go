package server

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/greyhold/greyhold/dnsbl"
	"github.com/greyhold/greyhold/engine"
	"github.com/greyhold/greyhold/store"
)

// holdingDNS is a DNS list server on loopback that holds every query
// until release is closed, then lists every address (127.0.0.2, TTL 600).
type holdingDNS struct {
	addr    string
	release chan struct{}
	asked   chan struct{} // one token per query received
	n       atomic.Int64
}

func startHoldingDNS(t *testing.T) *holdingDNS {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &holdingDNS{addr: pc.LocalAddr().String(), release: make(chan struct{}), asked: make(chan struct{}, 1024)}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		d.n.Add(1)
		select {
		case d.asked <- struct{}{}:
		default:
		}
		<-d.release
		m := new(dns.Msg)
		m.SetReply(r)
		m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 600}, A: net.IPv4(127, 0, 0, 2)})
		w.WriteMsg(m)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() {
		d.let()
		srv.Shutdown()
	})
	return d
}

func (d *holdingDNS) let() {
	select {
	case <-d.release:
	default:
		close(d.release)
	}
}

// TestDNSBLNeverStalls: with a DNS server that answers nothing, a
// pipelined batch of requests is answered whole while every lookup is
// still outstanding (counted as not listed); once the server answers, the
// cached listing greylists the client's next request.
func TestDNSBLNeverStalls(t *testing.T) {
	d := startHoldingDNS(t)
	done := make(chan string, 1024)
	lists, err := dnsbl.New(dnsbl.Config{Zones: []dnsbl.Zone{{Name: "bl.test", Weight: 10}}, Servers: []string{d.addr},
		Timeout: time.Minute, OnResult: func(zone, result string) { done <- result }})
	if err != nil {
		t.Fatal(err)
	}
	defer lists.Close()
	rules := func(o *store.Options) {
		o.Engine.Select.Default = engine.ActPass
		r, err := engine.ParseSelectRule("listed: dnsbl >= 5 => greylist")
		if err != nil {
			t.Fatal(err)
		}
		o.Engine.Select.Rules = []engine.SelectRule{r}
	}
	ts := startServerWith(t, rules, func(c *Config) { c.DNSLists = lists })
	c := ts.dial("policy")
	c.SetDeadline(time.Now().Add(20 * time.Second)) // far beyond an answer that does not wait, far below the lookups' minute
	r := bufio.NewReader(c)
	var batch strings.Builder
	const n = 50
	for i := range n {
		batch.WriteString(policy(fmt.Sprintf("198.51.100.%d", i+1), "a@example.org", "bob@example.test"))
	}
	if _, err := io.WriteString(c, batch.String()); err != nil {
		t.Fatal(err)
	}
	for i, got := range readReplies(t, r, n) {
		if got != "action=DUNNO" {
			t.Errorf("request %d: %s, want DUNNO while its lookup is outstanding", i, got)
		}
	}
	<-d.asked // the lookups were started, and the server still holds them
	select {
	case res := <-done:
		t.Fatalf("a lookup ended (%s) before the DNS server answered", res)
	default:
	}
	d.let()
	for range n {
		if res := <-done; res != "listed" {
			t.Fatalf("lookup: %s", res)
		}
	}
	if got := ts.ask(c, r, policy("198.51.100.1", "b@example.org", "bob@example.test")); !strings.HasPrefix(got, "action=DEFER_IF_PERMIT") {
		t.Errorf("a listed client once its answer is in: %s", got)
	}
	if !strings.Contains(ts.logs.String(), "rule=listed dnsbl=10") {
		t.Errorf("the log does not show the score:\n%s", ts.logs.String())
	}
	// A CONNECT-time request starts the lookups too.
	before := d.n.Load()
	ts.ask(c, r, strings.Replace(policy("198.51.100.200", "", ""), "protocol_state=RCPT", "protocol_state=CONNECT", 1))
	if res := <-done; res != "listed" || d.n.Load() != before+1 {
		t.Errorf("CONNECT: %s, %d queries", res, d.n.Load()-before)
	}
}
