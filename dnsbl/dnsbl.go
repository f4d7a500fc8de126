// Package dnsbl looks client addresses up in DNS block and allow lists
// (DNSBL, DNSWL) for greyhold's selection rules, without ever making a
// check wait for the DNS.
//
// A list is a zone with a weight, as in gross: a client listed in
// zen.spamhaus.org (weight 10) and bl.spamcop.net (weight 5) scores 15,
// one listed in an allow list such as list.dnswl.org (weight 10) loses 10,
// and a rule such as "dnsbl >= 10" acts on the sum.
//
// Score never blocks. It sums the answers already cached for the address
// and starts the lookups that are missing, in the background, each bounded
// by a timeout; until an answer is in, its list counts as not listing the
// client, the same as a timeout. So a slow or dead DNS server never stalls
// a check, another request or a pipelined batch: the client's next
// request (a retry, or the next recipient of the same message) finds the
// answer cached. greyhold starts a lookup for every policy request it
// sees, whatever its protocol_state, so a Postfix that also asks at
// CONNECT or HELO time has the answer by RCPT time.
//
// Answers are cached for their TTL (an NXDOMAIN for its SOA's negative
// TTL), within MinTTL and MaxTTL. A timeout, a SERVFAIL or a refusal is
// cached as not listed for ErrorTTL, so a dead server is not asked again
// for every request. Lookups in flight are bounded (MaxInFlight); beyond
// that the list counts as not listing the client until a later request
// finds room.
package dnsbl

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// Zone is one DNS list.
type Zone struct {
	Name string // the zone, e.g. zen.spamhaus.org
	// Weight is added to the score of a client the zone lists, or taken
	// from it for an allow list.
	Weight int
	Allow  bool // a DNSWL: listed clients lose Weight
	// Codes, when set, are the answers that count as listed (127.0.0.2
	// for one category); any 127.0.0.0/8 answer does otherwise.
	Codes []netip.Addr
}

// ParseZone reads "ZONE WEIGHT" or "ZONE=CODE,CODE WEIGHT".
func ParseZone(s string, allow bool) (Zone, error) {
	f := strings.Fields(s)
	if len(f) != 2 {
		return Zone{}, fmt.Errorf("dns list %q: want ZONE WEIGHT, as in zen.spamhaus.org 10", s)
	}
	z := Zone{Allow: allow}
	name, codes, hasCodes := strings.Cut(f[0], "=")
	z.Name = strings.ToLower(strings.Trim(name, "."))
	if _, ok := dns.IsDomainName(z.Name); !ok || !strings.Contains(z.Name, ".") {
		return Zone{}, fmt.Errorf("dns list %q: %q is not a zone", s, name)
	}
	if hasCodes {
		for _, c := range strings.Split(codes, ",") {
			a, err := netip.ParseAddr(c)
			if err != nil || !a.Is4() {
				return Zone{}, fmt.Errorf("dns list %q: answer %q: want an IPv4 address such as 127.0.0.2", s, c)
			}
			z.Codes = append(z.Codes, a)
		}
	}
	w, err := strconv.Atoi(f[1])
	if err != nil || w <= 0 {
		return Zone{}, fmt.Errorf("dns list %q: weight %q: want a whole number above 0", s, f[1])
	}
	z.Weight = w
	return z, nil
}

// Config sets the lists up.
type Config struct {
	Zones []Zone
	// Servers are the resolvers asked, host:port, in turn; none means
	// those of /etc/resolv.conf. A DNS list must be asked through a
	// resolver of one's own: the big public ones are refused.
	Servers []string
	// Timeout bounds one lookup (default 2 s).
	Timeout time.Duration
	// MinTTL, MaxTTL bound how long an answer is kept (defaults 1 minute
	// and 1 day); ErrorTTL is how long a timeout or a server failure is
	// (default 1 minute).
	MinTTL, MaxTTL, ErrorTTL time.Duration
	// MaxInFlight bounds lookups under way (default 512).
	MaxInFlight int
	// MaxEntries bounds the cache; past it, expired entries go first and
	// then the whole cache (default 1,000,000, about 100 MB at most).
	MaxEntries int
	// Now is the clock, for tests; nil is time.Now.
	Now func() time.Time
	// OnResult, if set, hears of every lookup's end: the zone, and one of
	// listed, clean, timeout, error, dropped (no room in flight).
	OnResult func(zone, result string)
}

// Lists answers Score for a set of zones.
type Lists struct {
	cfg     Config
	client  *dns.Client
	mu      sync.Mutex
	cache   map[key]entry
	next    atomic.Uint32 // which server to ask next
	slots   chan struct{}
	closing chan struct{}
	wg      sync.WaitGroup
}

type key struct {
	addr netip.Addr
	zone uint8
}

type entry struct {
	listed  bool
	pending bool
	expires time.Time
}

// MaxZones bounds the lists one server asks.
const MaxZones = 32

// New checks cfg and makes the lists; Close ends their lookups.
func New(cfg Config) (*Lists, error) {
	if len(cfg.Zones) == 0 {
		return nil, errors.New("dnsbl: no zones")
	}
	if len(cfg.Zones) > MaxZones {
		return nil, fmt.Errorf("dnsbl: %d zones, at most %d", len(cfg.Zones), MaxZones)
	}
	cfg.Zones = append([]Zone(nil), cfg.Zones...)
	for i := range cfg.Zones {
		cfg.Zones[i].Name = strings.ToLower(strings.Trim(cfg.Zones[i].Name, "."))
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.MinTTL <= 0 {
		cfg.MinTTL = time.Minute
	}
	if cfg.MaxTTL <= 0 {
		cfg.MaxTTL = 24 * time.Hour
	}
	if cfg.ErrorTTL <= 0 {
		cfg.ErrorTTL = time.Minute
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 512
	}
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = 1_000_000
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if len(cfg.Servers) == 0 {
		rc, err := dns.ClientConfigFromFile("/etc/resolv.conf")
		if err != nil {
			return nil, fmt.Errorf("dnsbl: no --dns-servers given and /etc/resolv.conf unreadable: %w", err)
		}
		for _, s := range rc.Servers {
			cfg.Servers = append(cfg.Servers, net.JoinHostPort(s, rc.Port))
		}
		if len(cfg.Servers) == 0 {
			return nil, errors.New("dnsbl: no --dns-servers given and none in /etc/resolv.conf")
		}
	}
	for i, s := range cfg.Servers {
		if _, _, err := net.SplitHostPort(s); err != nil {
			cfg.Servers[i] = net.JoinHostPort(s, "53")
		}
	}
	return &Lists{
		cfg:     cfg,
		client:  &dns.Client{Net: "udp", Timeout: cfg.Timeout},
		cache:   map[key]entry{},
		slots:   make(chan struct{}, cfg.MaxInFlight),
		closing: make(chan struct{}),
	}, nil
}

// Zones returns the lists asked.
func (l *Lists) Zones() []Zone { return l.cfg.Zones }

// Score returns the client's score from the answers cached now, and
// whether every list has answered; it starts the lookups missing. It never
// waits for the DNS.
func (l *Lists) Score(addr netip.Addr) (score int32, complete bool) {
	addr = addr.Unmap().WithZone("")
	if !addr.IsValid() || addr.IsLoopback() || addr.IsPrivate() || addr.IsLinkLocalUnicast() || addr.IsUnspecified() {
		return 0, true // no public list has these
	}
	now := l.cfg.Now()
	complete = true
	var missing uint32
	l.mu.Lock()
	for i := range l.cfg.Zones {
		e, ok := l.cache[key{addr, uint8(i)}]
		switch {
		case ok && e.pending:
			complete = false
		case ok && now.Before(e.expires):
			if e.listed {
				z := &l.cfg.Zones[i]
				if z.Allow {
					score -= int32(z.Weight)
				} else {
					score += int32(z.Weight)
				}
			}
		default:
			complete = false
			missing |= 1 << i
			l.cache[key{addr, uint8(i)}] = entry{pending: true}
		}
	}
	if missing != 0 && len(l.cache) > l.cfg.MaxEntries {
		l.trimLocked(now)
	}
	l.mu.Unlock()
	for i := range l.cfg.Zones {
		if missing&(1<<i) != 0 {
			l.start(addr, i)
		}
	}
	return score, complete
}

// trimLocked drops expired entries, and everything if that is not enough.
func (l *Lists) trimLocked(now time.Time) {
	for k, e := range l.cache {
		if !e.pending && !now.Before(e.expires) {
			delete(l.cache, k)
		}
	}
	if len(l.cache) > l.cfg.MaxEntries {
		clear(l.cache)
	}
}

// start looks addr up in zone i in the background, if there is room.
func (l *Lists) start(addr netip.Addr, i int) {
	select {
	case l.slots <- struct{}{}:
	default:
		l.set(addr, i, false, l.cfg.ErrorTTL)
		l.note(i, "dropped")
		return
	}
	select {
	case <-l.closing:
		<-l.slots
		return
	default:
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		defer func() { <-l.slots }()
		listed, ttl, result := l.lookup(addr, &l.cfg.Zones[i])
		l.set(addr, i, listed, ttl)
		l.note(i, result)
	}()
}

func (l *Lists) note(i int, result string) {
	if l.cfg.OnResult != nil {
		l.cfg.OnResult(l.cfg.Zones[i].Name, result)
	}
}

func (l *Lists) set(addr netip.Addr, i int, listed bool, ttl time.Duration) {
	l.mu.Lock()
	l.cache[key{addr, uint8(i)}] = entry{listed: listed, expires: l.cfg.Now().Add(ttl)}
	l.mu.Unlock()
}

// Query is the name asked for addr in zone: the address reversed, by
// octet for IPv4 and by nibble for IPv6, in front of the zone.
func Query(addr netip.Addr, zone string) string {
	var b strings.Builder
	if addr.Is4() {
		a := addr.As4()
		fmt.Fprintf(&b, "%d.%d.%d.%d.", a[3], a[2], a[1], a[0])
	} else {
		a := addr.As16()
		const hex = "0123456789abcdef"
		for i := len(a) - 1; i >= 0; i-- {
			b.WriteByte(hex[a[i]&0xf])
			b.WriteByte('.')
			b.WriteByte(hex[a[i]>>4])
			b.WriteByte('.')
		}
	}
	b.WriteString(zone)
	b.WriteByte('.')
	return b.String()
}

// lookup asks for addr in z and says whether it is listed, how long the
// answer holds and what happened.
func (l *Lists) lookup(addr netip.Addr, z *Zone) (listed bool, ttl time.Duration, result string) {
	m := new(dns.Msg)
	m.SetQuestion(Query(addr, z.Name), dns.TypeA)
	m.RecursionDesired = true
	server := l.cfg.Servers[int(l.next.Add(1))%len(l.cfg.Servers)]
	in, _, err := l.client.Exchange(m, server)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return false, l.cfg.ErrorTTL, "timeout"
		}
		return false, l.cfg.ErrorTTL, "error"
	}
	switch in.Rcode {
	case dns.RcodeNameError:
		return false, l.clamp(negativeTTL(in)), "clean"
	case dns.RcodeSuccess:
	default:
		return false, l.cfg.ErrorTTL, "error"
	}
	minTTL := uint32(0)
	found := false
	for _, rr := range in.Answer {
		a, ok := rr.(*dns.A)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(a.A.To4())
		if !ok || !listedCode(ip, z.Codes) {
			continue
		}
		if !found || a.Hdr.Ttl < minTTL {
			minTTL = a.Hdr.Ttl
		}
		found = true
	}
	if !found {
		// NODATA, or answers that are not listings (Spamhaus's
		// 127.255.255.x say the query was refused).
		if len(in.Answer) > 0 {
			return false, l.cfg.ErrorTTL, "error"
		}
		return false, l.clamp(negativeTTL(in)), "clean"
	}
	return true, l.clamp(time.Duration(minTTL) * time.Second), "listed"
}

// listedCode reports whether an answer is a listing: one of codes, or any
// 127.0.0.0/8 address but 127.255.255.0/24 (the error codes) without codes.
func listedCode(ip netip.Addr, codes []netip.Addr) bool {
	if len(codes) > 0 {
		for _, c := range codes {
			if ip == c {
				return true
			}
		}
		return false
	}
	b := ip.As4()
	return b[0] == 127 && !(b[1] == 255 && b[2] == 255)
}

// negativeTTL is an NXDOMAIN's lifetime: the SOA's minimum, at most its TTL.
func negativeTTL(m *dns.Msg) time.Duration {
	for _, rr := range m.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			return time.Duration(min(soa.Minttl, soa.Hdr.Ttl)) * time.Second
		}
	}
	return 0
}

func (l *Lists) clamp(d time.Duration) time.Duration {
	return min(max(d, l.cfg.MinTTL), l.cfg.MaxTTL)
}

// Pending returns the lookups under way.
func (l *Lists) Pending() int { return len(l.slots) }

// Close stops starting lookups and waits for those under way, each at most
// its timeout.
func (l *Lists) Close() {
	select {
	case <-l.closing:
	default:
		close(l.closing)
	}
	l.wg.Wait()
}
