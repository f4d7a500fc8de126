package main

import (
	"fmt"
	"math/rand/v2"
	"time"
)

// Kind is a kind of sender, with its own addresses, names and retries.
type Kind int

// The kinds of sender of a day, in the report's order.
const (
	Classic   Kind = iota // one MTA, one address, a verified name, Postfix's retry schedule
	Pool                  // a large sender's pool: each retry from another host, often another /24
	Bulk                  // an ESP: a bounce address per message, retries from its pool
	DualStack             // one host, one name, IPv4 or IPv6 at each attempt
	SpamBot               // never retries
	Botnet                // retries, each time from another infected host of one dynamic-address ISP
	numKinds
)

var kindNames = [numKinds]string{"classic MTA", "pool", "bulk (per-message bounce ids)", "dual-stack", "spam bot (no retry)", "botnet (retries from its ISP)"}

func (k Kind) String() string { return kindNames[k] }

// spam reports whether a kind is spam, which must be stopped, not delayed.
func (k Kind) spam() bool { return k == SpamBot || k == Botnet }

// Attempt is one delivery attempt: who connects, as Postfix would report
// it to a policy server.
type Attempt struct {
	Addr, Name, HELO string
}

// Message is one message of the day: its first attempt's time, sender and
// recipient, and how its sender makes each attempt.
type Message struct {
	ID        int
	Kind      Kind
	At        time.Duration // first attempt, from the day's start
	Sender    string
	Recipient string
	attempt   func(n int) Attempt       // the n-th attempt's client
	retry     func(n int) time.Duration // the wait after the n-th attempt; 0: give up
}

// day makes a day of traffic: n messages spread over 20 hours (the rest
// of the day is for their retries), in the shares of mix.
func day(seed uint64, n int) []*Message {
	r := rand.New(rand.NewPCG(seed, 0x646179))
	mix := [numKinds]int{Classic: 25, Pool: 25, Bulk: 15, DualStack: 10, SpamBot: 15, Botnet: 10}
	total := 0
	for _, m := range mix {
		total += m
	}
	g := newWorld(r)
	msgs := make([]*Message, 0, n)
	for i := range n {
		x := r.IntN(total)
		k := Kind(0)
		for ; x >= mix[k]; k++ {
			x -= mix[k]
		}
		m := g.message(k)
		m.ID = i
		m.At = time.Duration(r.Int64N(int64(20 * time.Hour)))
		msgs = append(msgs, m)
	}
	return msgs
}

// world holds the senders of the day, so that a sender sends several
// messages and recipients hear from it more than once, as in real mail.
type world struct {
	r        *rand.Rand
	classics []classicMTA
	pools    []pool
	esps     []pool
	duals    []classicMTA
	isps     []isp
	rcpts    []string
}

type classicMTA struct {
	v4, v6, name, domain string
}

type pool struct {
	hosts  []Attempt
	domain string
	// gmail: the retry schedule of a big freemail pool, quicker than
	// Postfix's.
	gmail bool
}

type isp struct {
	nets   [][2]int // first two octets' variants: a.b of a.b.c.d
	domain string
}

func newWorld(r *rand.Rand) *world {
	w := &world{r: r}
	for i := range 300 {
		w.classics = append(w.classics, classicMTA{
			v4: fmt.Sprintf("203.%d.%d.%d", 1+i%200, i/200+10, 1+r.IntN(250)), name: fmt.Sprintf("mail.shop%d.example.org", i),
			domain: fmt.Sprintf("shop%d.example.org", i)})
	}
	for i := range 100 {
		a := fmt.Sprintf("198.%d.%d.%d", 18+i%2, 100+i/2, 1+r.IntN(250))
		w.duals = append(w.duals, classicMTA{v4: a, v6: fmt.Sprintf("2001:db8:%x::25", 0x100+i),
			name: fmt.Sprintf("mx.dual%d.example.net", i), domain: fmt.Sprintf("dual%d.example.net", i)})
	}
	// Freemail pools: 8 /24s each, 64 hosts; names give the host's last
	// octet, as Gmail's mail-wr1-f54 does.
	for p := range 4 {
		pl := pool{domain: fmt.Sprintf("mailer%d.example.com", p), gmail: true}
		for h := range 64 {
			net := 16*p + h%8
			last := 10 + h
			pl.hosts = append(pl.hosts, Attempt{Addr: fmt.Sprintf("100.%d.%d.%d", 64+p, net, last),
				Name: fmt.Sprintf("mail-x%d-f%d.out.mailer%d.example.com", h%8, last, p)})
		}
		w.pools = append(w.pools, pl)
	}
	// ESPs: 4 /24s each, 32 hosts, SES-style names (a<3rd>-<4th>).
	for p := range 6 {
		pl := pool{domain: fmt.Sprintf("esp%d.example.net", p)}
		for h := range 32 {
			third, last := 40+4*p+h%4, 20+h
			pl.hosts = append(pl.hosts, Attempt{Addr: fmt.Sprintf("100.%d.%d.%d", 80+p, third, last),
				Name: fmt.Sprintf("a%d-%d.smtp-out.esp%d.example.net", third, last, p)})
		}
		w.esps = append(w.esps, pl)
	}
	for p := range 3 {
		is := isp{domain: fmt.Sprintf("isp%d.example.net", p)}
		for b := range 6 {
			is.nets = append(is.nets, [2]int{24 + p, 100 + b*7})
		}
		w.isps = append(w.isps, is)
	}
	for i := range 3000 {
		w.rcpts = append(w.rcpts, fmt.Sprintf("user%d@example.test", i))
	}
	return w
}

// postfixRetry is Postfix's schedule: the next queue run (every 300 s)
// after a backoff that starts at 300 s and doubles to 4000 s.
func postfixRetry(rn func(int) *rand.Rand) func(int) time.Duration {
	return func(n int) time.Duration {
		backoff := min(300*time.Second<<(n-1), 4000*time.Second)
		return backoff + time.Duration(rn(n).Int64N(int64(300*time.Second)))
	}
}

// gmailRetry is a freemail pool's schedule as measured in the field
// (Pagani et al.: nine attempts from seven addresses): a few minutes,
// then growing.
func gmailRetry(rn func(int) *rand.Rand) func(int) time.Duration {
	steps := []time.Duration{4 * time.Minute, 8 * time.Minute, 15 * time.Minute, 30 * time.Minute, time.Hour, 2 * time.Hour}
	return func(n int) time.Duration {
		d := steps[min(n-1, len(steps)-1)]
		return d + time.Duration(rn(n).Int64N(int64(d/4)))
	}
}

func (w *world) rcpt() string { return w.rcpts[w.r.IntN(len(w.rcpts))] }

func (w *world) message(k Kind) *Message {
	r := w.r
	m := &Message{Kind: k, Recipient: w.rcpt()}
	// What happens at attempt n is drawn from the message's own stream
	// for n, so every server hears the same attempts whatever it answered
	// before.
	seed := r.Uint64()
	rn := func(n int) *rand.Rand { return rand.New(rand.NewPCG(seed, uint64(n))) }
	switch k {
	case Classic:
		c := w.classics[r.IntN(len(w.classics))]
		m.Sender = fmt.Sprintf("user%d@%s", r.IntN(5), c.domain)
		m.attempt = func(int) Attempt { return Attempt{Addr: c.v4, Name: c.name, HELO: c.name} }
		m.retry = postfixRetry(rn)
	case Pool:
		p := w.pools[r.IntN(len(w.pools))]
		m.Sender = fmt.Sprintf("person%d@%s", r.IntN(2000), p.domain)
		m.attempt = func(n int) Attempt { h := p.hosts[rn(n).IntN(len(p.hosts))]; h.HELO = h.Name; return h }
		m.retry = gmailRetry(rn)
	case Bulk:
		p := w.esps[r.IntN(len(w.esps))]
		m.Sender = fmt.Sprintf("bounce-%d-%08x@bounces.%s", 100000+r.IntN(900000), r.Uint32(), p.domain)
		m.attempt = func(n int) Attempt { h := p.hosts[rn(n).IntN(len(p.hosts))]; h.HELO = h.Name; return h }
		m.retry = postfixRetry(rn)
	case DualStack:
		c := w.duals[r.IntN(len(w.duals))]
		m.Sender = fmt.Sprintf("info@%s", c.domain)
		m.attempt = func(n int) Attempt {
			a := Attempt{Addr: c.v4, Name: c.name, HELO: c.name}
			if rn(n).IntN(2) == 0 {
				a.Addr = c.v6
			}
			return a
		}
		m.retry = postfixRetry(rn)
	case SpamBot, Botnet:
		is := w.isps[r.IntN(len(w.isps))]
		m.Sender = fmt.Sprintf("%s%d@%s.example", []string{"deals", "info", "win", "pharma"}[r.IntN(4)], r.IntN(100000), []string{"promo", "offers", "lucky"}[r.IntN(3)])
		m.attempt = func(n int) Attempt {
			q := rn(n)
			net := is.nets[q.IntN(len(is.nets))]
			c, d := q.IntN(256), 1+q.IntN(254)
			a := fmt.Sprintf("%d.%d.%d.%d", net[0], net[1], c, d)
			if q.IntN(3) == 0 {
				return Attempt{Addr: a, Name: "unknown", HELO: "localhost"}
			}
			return Attempt{Addr: a, Name: fmt.Sprintf("dyn-%d-%d-%d-%d.cable.%s", net[0], net[1], c, d, is.domain), HELO: fmt.Sprintf("pc%d", q.IntN(1000))}
		}
		if k == SpamBot {
			m.retry = func(int) time.Duration { return 0 }
		} else {
			m.retry = func(n int) time.Duration {
				if n >= 6 {
					return 0
				}
				return time.Duration(5+rn(n).IntN(25)) * time.Minute
			}
		}
	}
	return m
}
