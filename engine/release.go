package engine

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/cespare/xxhash/v2"

	"github.com/greyhold/greyhold/whitelist"
)

// Looking up, explaining and releasing one triplet, for a postmaster
// answering "why was this mail deferred?" from a support ticket: Explain
// changes nothing; PassTriplet, ForgetTriplet and ForgetClient change one
// state and return the record that makes the change durable and reaches
// the fleet like any other (entry.go says how a forget wins the merge).

// TripletState is what the engine holds for a triplet.
type TripletState uint8

// Triplet states.
const (
	StateUnknown TripletState = iota // never seen, expired, or forgotten
	StatePending                     // seen, not yet retried after the delay
	StatePassed                      // retried after the delay, or released
)

func (s TripletState) String() string {
	switch s {
	case StatePending:
		return "pending"
	case StatePassed:
		return "passed"
	}
	return "unknown"
}

// Explanation is what the engine knows and would decide about a request,
// without deciding it.
type Explanation struct {
	// The key's parts after normalisation: who the client is taken to be
	// ("name:google.com", "net:192.0.2.0/24"), what its name says, and
	// the sender and recipient as compared.
	Identity  string
	Name      NameClass
	Sender    string
	Recipient string
	Key       uint64

	State   TripletState
	First   Time   // when first seen (this generation)
	Retries uint32 // pending: attempts deferred after the first
	// PassesFrom is, for a pending triplet, the first second a retry
	// passes: First plus the delay in force for it (Delay).
	PassesFrom Time
	Last       Time // passed: last seen
	// Expires is the last second the state lives unseen: a pending one's
	// retry window, a passed one's max age.
	Expires Time
	// Forgotten is when the triplet was forgotten (ForgetTriplet), while
	// that is what the engine holds; 0 otherwise.
	Forgotten Time
	// Delay is the delay a new attempt of this request is given: the
	// engine's, or the deciding selection rule's own.
	Delay uint32

	Client ClientState

	// Whitelisting that matches: the static files' entries and the
	// runtime rules.
	Static []whitelist.Match
	Rules  []RuleInfo
	// Rule names the selection rule that decides the request ("default"
	// when none does); "" without rules. RuleAction is what it does.
	Rule       string
	RuleAction Action

	// Would is what a check now would answer: verdict, reason, and the
	// seconds left for a defer. A check of the same request may still
	// differ by what --pass-transaction-recipients remembers.
	Would Decision
}

// ClientState is a client network's auto-whitelist state. The
// auto-whitelist is counted per network whatever the identity.
type ClientState struct {
	Network netip.Prefix
	Key     uint64
	Known   bool   // the engine holds a live entry for it
	Count   uint32 // triplets passed, at most one counted per AutoWhitelistInterval
	// Threshold is the count that whitelists the network (0: off).
	Threshold uint32
	Listed    bool // auto-whitelisted now
	Since     Time
	Last      Time
	Counted   Time // when the count last rose
	Expires   Time // the last second the entry lives unseen
	Forgotten Time // when it was forgotten (ForgetClient), while held; 0 otherwise
}

// clientKeyOf is the auto-whitelist key of a client network, as
// clientKey makes it.
func (e *Engine) clientKeyOf(network netip.Prefix) uint64 {
	var b [secretLen + 1 + 18]byte
	copy(b[:], e.secret[:])
	b[secretLen] = 'c'
	return xxhash.Sum64(appendNet(b[:secretLen+1], network))
}

// prepared makes req ready as a check would, for the calls below.
func (e *Engine) prepared(req *Request) (*checkState, error) {
	st := &checkState{}
	e.prepare(req, st, &nameHint{})
	if st.err != nil {
		return nil, st.err
	}
	return st, nil
}

// Explain tells what the engine holds for req's triplet and client
// network at now, which whitelisting matches, and what a check would
// answer. It changes nothing.
func (e *Engine) Explain(now Time, req *Request) (Explanation, error) {
	st, err := e.prepared(req)
	if err != nil {
		return Explanation{}, err
	}
	buf := st.keyBytes()
	sender, rcpt := buf[st.senderAt:st.senderEnd], buf[st.senderEnd:]
	ex := Explanation{
		Identity:  string(e.AppendIdentity(nil, req, &Decision{Ident: st.ident, NameAt: st.nameAt})),
		Sender:    string(sender),
		Recipient: string(rcpt),
		Key:       st.k,
		Delay:     uint32(e.p.delay),
	}
	ex.Name, _ = e.ClassifyName(req.ClientAddr, req.ClientName)

	s := e.shardOf(st.k)
	s.mu.Lock()
	en, exists := s.t.get(st.k)
	s.mu.Unlock()
	live := exists && !e.p.expired(en, now)
	switch {
	case live && en.tomb():
		ex.Forgotten = en.born()
	case live && en.passed():
		ex.State, ex.First, ex.Last, ex.Expires = StatePassed, en.born(), en.last(), Time(e.p.deadline(en))
	case live:
		ex.State, ex.First, ex.Retries, ex.Expires = StatePending, en.born(), en.word, Time(e.p.deadline(en))
	}
	ex.Client = e.clientState(now, e.clientNetOf(st))

	if w := e.static.Load(); w != nil {
		ex.Static = w.Explain(st.addr, req.ClientName, rcpt)
	}
	ex.Rules = e.matchingRules(now, st.addr, req.ClientName, sender, rcpt)
	delay, pass := e.p.delay, false
	if e.sel != nil {
		pick := e.selectFor(e.sel, req, st, buf)
		ex.Rule, ex.RuleAction = "default", pick.action
		if pick.rule > 0 {
			ex.Rule = e.sel.Rules[pick.rule-1].Name
		}
		delay, pass = pick.delay, pick.action == ActPass
		ex.Delay = uint32(delay)
	}
	if ex.State == StatePending {
		ex.PassesFrom = ex.First + Time(delay)
	}

	d := Decision{Key: st.k, Ident: st.ident, NameAt: st.nameAt}
	elapsed := uint64(0)
	if now > ex.First {
		elapsed = uint64(now - ex.First)
	}
	switch {
	case len(ex.Static) > 0 || len(ex.Rules) > 0:
		d.Verdict, d.Reason = Pass, ReasonWhitelist
	case pass:
		d.Verdict, d.Reason = Pass, ReasonRule
	case ex.State == StatePassed:
		d.Verdict, d.Reason = Pass, ReasonKnown
	case ex.Client.Listed:
		d.Verdict, d.Reason = Pass, ReasonClientAWL
	case ex.State == StatePending && elapsed >= delay:
		d.Verdict, d.Reason, d.Delayed = Pass, ReasonPassed, uint32(elapsed)
	case ex.State == StatePending:
		d.Verdict, d.Reason, d.Left = Defer, ReasonEarlyRetry, uint32(delay-elapsed)
	default:
		d.Verdict, d.Reason, d.Left = Defer, ReasonNew, uint32(delay)
	}
	ex.Would = d
	return ex, nil
}

// ClientNetworkState tells what the auto-whitelist holds for the network
// of the client address addr at now. It changes nothing.
func (e *Engine) ClientNetworkState(now Time, addr string) (ClientState, error) {
	a, err := parseAddr(addr)
	if err != nil {
		return ClientState{}, fmt.Errorf("%w: %q", ErrBadClientAddress, addr)
	}
	return e.clientState(now, clientNet(a.Unmap().WithZone(""), &e.opts.Keys)), nil
}

func (e *Engine) clientState(now Time, network netip.Prefix) ClientState {
	cs := ClientState{Network: network, Key: e.clientKeyOf(network), Threshold: e.p.awl}
	s := e.shardOf(cs.Key)
	s.mu.Lock()
	c, ok := s.c[cs.Key]
	s.mu.Unlock()
	switch {
	case !ok || e.p.clientExpired(c, now):
	case c.tomb():
		cs.Forgotten = c.born()
	default:
		cs.Known, cs.Count, cs.Listed = true, c.count, c.listed(e.p.awl)
		cs.Since, cs.Last, cs.Counted, cs.Expires = c.born(), c.last, c.counted, Time(e.p.clientDeadline(c))
	}
	return cs
}

// matchingRules lists the runtime whitelist rules that match a request
// at now; sender and recipient are normalised.
func (e *Engine) matchingRules(now Time, addr netip.Addr, name string, sender, rcpt []byte) []RuleInfo {
	var low []byte
	if name != "" && name != "unknown" {
		low = appendLower(nil, strings.TrimSuffix(name, "."))
	}
	e.rulesMu.Lock()
	defer e.rulesMu.Unlock()
	var out []RuleInfo
	for id, st := range e.ruleState {
		if !st.live(now) {
			continue
		}
		var ok bool
		switch id.kind {
		case RuleClient:
			p, err := netip.ParsePrefix(id.value)
			ok = err == nil && p.Contains(addr)
		case RuleClientName:
			ok = low != nil && whitelist.MatchDomain(map[string]struct{}{id.value: {}}, low)
		case RuleSender, RuleRecipient:
			var a addrRules
			a.add(id)
			v := sender
			if id.kind == RuleRecipient {
				v = rcpt
			}
			ok = e.matchAddr(&a, id.kind, v)
		}
		if ok {
			out = append(out, RuleInfo{Kind: id.kind, Value: id.display(), Added: Time(st.stamp >> 20), Expires: st.expires})
		}
	}
	sortRules(out)
	return out
}

// PassTriplet makes req's triplet pass from now on, as if it had retried
// after the delay: a pending triplet becomes passed with its first-seen
// time; an unknown, expired or forgotten one is born passed now. It does
// not count towards the client network's auto-whitelist: a release says
// nothing of how the client retries. rec is the record to log before
// acknowledging; changed is false (and rec nil) for a triplet that had
// passed already.
func (e *Engine) PassTriplet(now Time, req *Request) (rec []byte, changed bool, err error) {
	st, err := e.prepared(req)
	if err != nil {
		return nil, false, err
	}
	k := st.k
	s := e.shardOf(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, exists := s.t.get(k)
	live := exists && !e.p.expired(cur, now)
	var nen entry
	switch {
	case live && cur.passed():
		return nil, false, nil
	case live && !cur.tomb():
		nen = passedEntry(cur.first, now)
	default:
		nen = passedEntry(e.p.birthAfter(now, cur.first, live && cur.tomb()), now)
	}
	s.put(k, cur, exists, nen)
	s.w.file(k, e.p.deadline(nen))
	return appendTripletRecord(nil, k, nen), true, nil
}

// ForgetTriplet forgets req's triplet: its next attempt is new, deferred
// for the whole delay. The engine keeps a tombstone (entry.go) that no
// older record of the triplet, from the log or another MX host, undoes.
// had reports whether the engine held a live state for it; the tombstone
// is made either way, since another host may hold one. rec is the record
// to log before acknowledging; nil with had false when the triplet is
// forgotten already.
func (e *Engine) ForgetTriplet(now Time, req *Request) (rec []byte, had bool, err error) {
	st, err := e.prepared(req)
	if err != nil {
		return nil, false, err
	}
	k := st.k
	s := e.shardOf(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, exists := s.t.get(k)
	live := exists && !e.p.expired(cur, now)
	if live && cur.tomb() {
		return nil, false, nil
	}
	tomb := entry{first: e.p.forgetAt(now, cur.first, exists), word: tombWord}
	s.put(k, cur, exists, tomb)
	s.w.file(k, e.p.deadline(tomb))
	return appendTripletRecord(nil, k, tomb), live, nil
}

// ForgetClient forgets the auto-whitelist state of the network of client
// address addr: its pass count starts again from nothing. The triplets of
// the network stay as they are. As ForgetTriplet, it leaves a tombstone
// and returns its record; network is the network forgotten.
func (e *Engine) ForgetClient(now Time, addr string) (rec []byte, had bool, network netip.Prefix, err error) {
	a, err := parseAddr(addr)
	if err != nil {
		return nil, false, netip.Prefix{}, fmt.Errorf("%w: %q", ErrBadClientAddress, addr)
	}
	network = clientNet(a.Unmap().WithZone(""), &e.opts.Keys)
	ck := e.clientKeyOf(network)
	s := e.shardOf(ck)
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, exists := s.c[ck]
	live := exists && !e.p.clientExpired(cur, now)
	if live && cur.tomb() {
		return nil, false, network, nil
	}
	t := e.p.forgetAt(now, cur.since, exists)
	tomb := client{since: t, last: t &^ resetBit, count: tombCount}
	s.putClient(ck, tomb)
	return appendClientRecord(nil, ck, tomb), live, network, nil
}
