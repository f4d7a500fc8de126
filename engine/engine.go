package engine

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/bits"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"

	"github.com/greyhold/greyhold/whitelist"
)

// Verdict is what the MTA is told.
type Verdict uint8

// Verdicts.
const (
	Defer Verdict = 1 + iota // try again later (a 4xx)
	Pass                     // go on with the other checks
)

func (v Verdict) String() string {
	switch v {
	case Defer:
		return "defer"
	case Pass:
		return "pass"
	}
	return "unknown"
}

// Reason says why a verdict was given.
type Reason uint8

// Reasons, as they appear in logs, metrics and the API.
const (
	ReasonNew         Reason = 1 + iota // first time seen (or its entry expired): deferred
	ReasonEarlyRetry                    // retried before the delay passed: deferred again
	ReasonPassed                        // retried after the delay: passes, the first time
	ReasonKnown                         // passed before: passes at once
	ReasonClientAWL                     // the client network is auto-whitelisted
	ReasonWhitelist                     // a whitelist rule matched
	ReasonOverflow                      // memory bound reached and nothing evictable: fails open
	ReasonRule                          // a selection rule, or the selection's default, said pass
	ReasonTransaction                   // another recipient of the same transaction passed (Options.PassTransactionRecipients)
	numReasons
)

var reasonNames = [numReasons]string{
	ReasonNew: "new", ReasonEarlyRetry: "early-retry", ReasonPassed: "passed",
	ReasonKnown: "known", ReasonClientAWL: "client-awl", ReasonWhitelist: "whitelist",
	ReasonOverflow: "overflow", ReasonRule: "rule", ReasonTransaction: "transaction",
}

func (r Reason) String() string {
	if r > 0 && r < numReasons {
		return reasonNames[r]
	}
	return "unknown"
}

// Reasons lists every reason, for metrics that must show zero counts too.
func Reasons() []Reason {
	out := make([]Reason, 0, numReasons-1)
	for r := Reason(1); r < numReasons; r++ {
		out = append(out, r)
	}
	return out
}

// Decision is the answer to one check.
type Decision struct {
	Verdict Verdict
	Reason  Reason
	// Left is, for a defer, how many seconds until a retry can pass.
	Left uint32
	// Delayed is, on a triplet's first pass, how many seconds it was held.
	Delayed uint32
	// Key is the triplet's key, which decision log lines show in place of
	// addresses (the server's LogHashes).
	Key uint64
	// Ident says who the client was taken to be: its network, or its
	// name's organisation, which starts NameAt bytes into the request's
	// ClientName (AppendIdentity renders either).
	Ident  IdentKind
	NameAt uint8
	// Rule is the selection rule that decided, its index + 1 in the
	// engine's Selection; 0 when none did (the default, or no rules).
	Rule uint8
	// Noted has bit i set when rule i, a none rule, matched.
	Noted uint64
}

// Request is one question: may this client send from this sender to this
// recipient? Check does not keep the strings, so a server may point them
// into its read buffer.
type Request struct {
	ClientAddr string // IP address as text, as Postfix sends client_address
	ClientName string // the verified reverse DNS name, or "unknown" (Postfix's client_name)
	Sender     string // envelope sender; "" for bounces
	Recipient  string // envelope recipient

	// Instance is Postfix's instance, the same for every recipient of
	// one transaction (Options.PassTransactionRecipients).
	Instance string

	// What selection rules may read besides.
	HELOName     string // helo_name; "" when not sent
	SASLUsername string // sasl_username; set when the client authenticated
	// DNSScore is the client's DNS list score, as the server's lookups
	// have it at decision time (0 while unknown).
	DNSScore int32
}

// secretLen is the length of the hash key. Sixteen bytes are fed in front of
// every hashed triplet: enough that files cannot be matched against a
// dictionary of addresses, short enough to cost one xxhash stripe.
const secretLen = 16

// Engine holds greylisting state in memory and makes decisions. It does no
// I/O: every change it makes is returned as records for the caller to log,
// and Apply replays records into it. All methods are safe for concurrent use.
type Engine struct {
	opts   Options
	p      params
	secret [secretLen]byte
	shards []shard
	// views are the shards' tables as prefetching sees them, kept apart
	// from the shards: read on every check, written only when a table
	// grows, where a shard's lines change hands between cores at each lock.
	views       []tableView
	shift       uint
	maxPerShard int

	names *suffixCache // when readNames
	// sel is the selection rules, nil when there are none and the
	// default is greylist: a check then reads no rule at all.
	sel       *Selection
	readNames bool // name mode, or a rule reads what the name says

	static    atomic.Pointer[whitelist.Set]
	rules     atomic.Pointer[ruleSet]
	rulesMu   sync.Mutex
	ruleState map[ruleID]ruleState
	lastStamp uint64

	unknownRecords atomic.Uint64

	// top samples defers for TopDeferred (top.go); nil turns it off.
	top    *topRing
	topSum topSummary
}

// New returns an empty engine. secret keys the hash: at least 16 bytes, the
// same for every engine whose state is to be shared.
func New(opts Options, secret []byte) (*Engine, error) {
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("engine options: %w", err)
	}
	if len(secret) < secretLen {
		return nil, fmt.Errorf("engine: hash secret of %d bytes, need %d", len(secret), secretLen)
	}
	e := &Engine{
		opts:      opts,
		p:         newParams(&opts),
		shards:    make([]shard, opts.Shards),
		views:     make([]tableView, opts.Shards),
		shift:     uint(64 - bits.TrailingZeros(uint(opts.Shards))),
		ruleState: map[ruleID]ruleState{},
	}
	copy(e.secret[:], secret)
	if opts.MaxEntries > 0 {
		e.maxPerShard = (opts.MaxEntries + opts.Shards - 1) / opts.Shards
	}
	for i := range e.shards {
		e.shards[i].t.shift = uint(bits.TrailingZeros(uint(opts.Shards)))
		e.shards[i].t.view = &e.views[i]
		e.shards[i].c = map[uint64]client{}
		e.shards[i].w = &wheel{}
	}
	e.rules.Store(&ruleSet{})
	if len(opts.Select.Rules) > 0 || opts.Select.Default == ActPass {
		e.sel = &e.opts.Select
	}
	e.readNames = opts.Keys.Identity == IdentityName || opts.Select.NeedsNames()
	e.names = newSuffixCache()
	e.top = &topRing{}
	return e, nil
}

// SetStatic replaces the static whitelist: the files an operator maintains,
// read at start and on reload, consulted on every check but never logged.
// nil removes it. Checks in flight finish with the old one.
func (e *Engine) SetStatic(w *whitelist.Set) { e.static.Store(w) }

// matchStatic is a direct call on the concrete type: through an interface
// the key buffer handed to it would escape to the heap on every check.
func (e *Engine) matchStatic(addr netip.Addr, name string, recipient []byte) bool {
	w := e.static.Load()
	return w != nil && (w.MatchClient(addr, name) || w.MatchRecipient(recipient))
}

// Options returns the options the engine was made with.
func (e *Engine) Options() Options { return e.opts }

// Shards returns the number of shards, for callers that walk them.
func (e *Engine) Shards() int { return len(e.shards) }

// ShardOf returns the shard a key lives in: its top bits, so keys sorted by
// value come shard by shard.
func (e *Engine) ShardOf(k uint64) int { return int(k >> e.shift) }

func (e *Engine) shardOf(k uint64) *shard { return &e.shards[k>>e.shift] }

// keyBuf holds the bytes a triplet key is hashed from: secret, tag, network,
// sender length, sender (with room to normalise it), recipient. 256 bytes
// cover ordinary addresses, which are under 50 bytes; longer ones spill to
// the heap and still work. A bigger array would cost more to zero on every
// check than the rare spill does.
type keyBuf [256]byte

// netEnd is where the network ends in a key buffer, for the client key.
func netEnd(p netip.Prefix) int {
	if p.Addr().Is4() {
		return secretLen + 1 + 6
	}
	return secretLen + 1 + 18
}

// Check decides one request at time now. Records for the changes it made go
// into ch, which the caller must log before it acts on the decision; on a
// decision without changes ch stays empty. Errors (ErrBadClientAddress,
// ErrNoRecipient, ErrSenderTooLong, ErrRecipientTooLong) mean the request
// was not decided and nothing changed.
func (e *Engine) Check(now Time, req *Request, ch *Changes) (Decision, error) {
	var st checkState
	e.prepare(req, &st, &nameHint{})
	var d Decision
	err := e.finish(now, req, &st, ch, &d)
	d.Ident, d.NameAt = st.ident, st.nameAt
	return d, err
}

// Result is one request's outcome in a batch: a decision, or the error
// Check would have returned.
type Result struct {
	Decision
	Err error
}

// CheckBatch decides reqs in order at time now, as Check would one after
// the other, into res (as long as reqs), and appends the records of all
// their changes to recs, returning it with the number of records added.
// While one request is decided the next one's key is already made and its
// slot on its way to the cache, so a batch hides most of the table's cache
// misses behind the work of normalising and deciding.
func (e *Engine) CheckBatch(now Time, reqs []Request, res []Result, recs []byte) ([]byte, int) {
	if len(reqs) == 0 {
		return recs, 0
	}
	res = res[:len(reqs)]
	var st [2]checkState
	var ch Changes
	n := 0
	// In name mode each request's name is hashed two ahead (hint), so
	// its lines of the name cache are on their way by the time prepare
	// reads them.
	var hashes [4]nameHint
	named := e.readNames
	if named {
		for i := range min(2, len(reqs)) {
			hashes[i] = e.names.hint(reqs[i].ClientName)
		}
	}
	e.prepare(&reqs[0], &st[0], &hashes[0])
	for i := range reqs {
		if named && i+2 < len(reqs) {
			hashes[(i+2)&3] = e.names.hint(reqs[i+2].ClientName)
		}
		if i+1 < len(reqs) {
			e.prepare(&reqs[i+1], &st[(i+1)&1], &hashes[(i+1)&3])
		}
		ch.Reset()
		r := &res[i]
		r.Err = e.finish(now, &reqs[i], &st[i&1], &ch, &r.Decision)
		r.Ident, r.NameAt = st[i&1].ident, st[i&1].nameAt
		if ch.Count() > 0 {
			recs = append(recs, ch.Bytes()...)
			n += ch.Count()
		}
	}
	return recs, n
}

// checkState is a request made ready for a decision: its client network,
// its normalised key bytes and the key.
type checkState struct {
	err                 error
	addr                netip.Addr
	network             netip.Prefix // unmade for a client keyed by name: see clientNetOf
	kb                  keyBuf
	big                 []byte // the key bytes when they outgrew kb
	n                   int    // their length in kb otherwise
	senderAt, senderEnd int
	k                   uint64
	ident               IdentKind
	nameAt              uint8
	names               nameFacts
}

func (st *checkState) keyBytes() []byte {
	if st.big != nil {
		return st.big
	}
	return st.kb[:st.n]
}

// prepare parses and normalises req into st and starts loading its home
// slot. It reads no state under a lock and changes none.
func (e *Engine) prepare(req *Request, st *checkState, nameHash *nameHint) {
	st.ident, st.nameAt = IdentNone, 0
	addr, err := parseAddr(req.ClientAddr)
	if err != nil {
		st.err = fmt.Errorf("%w: %q", ErrBadClientAddress, req.ClientAddr)
		return
	}
	if err := checkAddresses(req); err != nil {
		st.err = err
		return
	}
	st.err, st.big = nil, nil
	st.addr = addr.Unmap().WithZone("")
	st.ident, st.nameAt = IdentNetwork, 0
	ident, lower := "", false
	st.names = 0
	if e.readNames {
		f := e.names.analyseName(req.ClientName, &st.addr, nameHash)
		st.names = f
		if f.keyed() && e.opts.Keys.Identity == IdentityName {
			at, end := f.identity(nameHash)
			ident, lower = req.ClientName[at:end], f&nameLower != 0
			st.ident, st.nameAt = IdentName, uint8(at)
		}
	}
	// A client keyed by name needs its network only for the
	// auto-whitelist, which few checks reach: made there (clientNetOf).
	if st.ident == IdentName {
		st.network = netip.Prefix{}
	} else {
		st.network = clientNet(st.addr, &e.opts.Keys)
	}
	buf, at, end := e.appendTriplet(st.kb[:0], st.network, ident, lower, req.Sender, req.Recipient)
	if len(buf) > len(st.kb) {
		// A copy: keeping buf, which may be st.kb itself, would send st
		// to the heap on every check.
		st.big = bytes.Clone(buf)
	}
	st.n, st.senderAt, st.senderEnd = len(buf), at, end
	st.k = xxhash.Sum64(buf)
	e.views[st.k>>e.shift].prefetch(st.k)
}

// finish decides a prepared request into d. The decision goes through a
// pointer from here down, not as a result: a Decision and an error are
// more words than Go's calling convention passes in registers, and each
// return would copy it through memory.
func (e *Engine) finish(now Time, req *Request, st *checkState, ch *Changes, d *Decision) error {
	if st.err != nil {
		*d = Decision{}
		return st.err
	}
	addr, buf, k := st.addr, st.keyBytes(), st.k
	if rs := e.rules.Load(); (rs.n > 0 && e.match(rs, now, addr, req.ClientName, buf[st.senderAt:st.senderEnd], buf[st.senderEnd:])) ||
		e.matchStatic(addr, req.ClientName, buf[st.senderEnd:]) {
		s := e.shardOf(k)
		s.mu.Lock()
		s.stats.decisions[ReasonWhitelist]++
		s.mu.Unlock()
		*d = Decision{Verdict: Pass, Reason: ReasonWhitelist, Key: k}
		return nil
	}
	if e.sel == nil {
		e.lookup(now, st, buf, k, e.p.delay, ch, d)
		if e.opts.PassTransactionRecipients && req.Instance != "" {
			e.transaction(now, req, st, buf, d)
		}
		return nil
	}
	pick := e.selectFor(e.sel, req, st, buf)
	if pick.action == ActPass {
		s := e.shardOf(k)
		s.mu.Lock()
		s.stats.decisions[ReasonRule]++
		s.mu.Unlock()
		*d = Decision{Verdict: Pass, Reason: ReasonRule, Key: k, Rule: pick.rule, Noted: pick.noted}
		return nil
	}
	e.lookup(now, st, buf, k, pick.delay, ch, d)
	if e.opts.PassTransactionRecipients && req.Instance != "" {
		e.transaction(now, req, st, buf, d)
	}
	d.Rule, d.Noted = pick.rule, pick.noted
	return nil
}

// lookup is the triplet lookup of a request no whitelist or rule passed,
// with the delay its rule gave it, deciding into d.
func (e *Engine) lookup(now Time, st *checkState, buf []byte, k uint64, delay uint64, ch *Changes, d *Decision) {
	s := e.shardOf(k)
	s.mu.Lock()
	if i := s.t.find(k); i >= 0 && s.t.slots[i].e.passed() && !e.p.expired(s.t.slots[i].e, now) {
		touched := e.known(s, now, k, i, ch, d)
		s.mu.Unlock()
		if touched && e.p.awl > 0 {
			e.touchClient(now, e.clientKey(st, buf), ch)
		}
		return
	}
	s.mu.Unlock()

	var ck uint64
	if e.p.awl > 0 {
		ck = e.clientKey(st, buf)
		if e.clientListed(now, ck, ch) {
			*d = Decision{Verdict: Pass, Reason: ReasonClientAWL, Key: k}
			return
		}
	}

	// Decide again under the lock: another check may have changed the
	// triplet while the client was looked up.
	s.mu.Lock()
	passed := e.decide(s, now, k, delay, ch, d)
	s.mu.Unlock()
	if passed && e.p.awl > 0 {
		e.countClientPass(now, ck, ch)
	}
	if d.Verdict == Defer && e.top != nil && sampled(now, k) {
		e.top.sampleDefer(now, st, buf)
	}
}

// checkAddresses refuses what no key can be made of: no recipient, or an
// address over MaxAddressLen.
func checkAddresses(req *Request) error {
	switch {
	case req.Recipient == "":
		return ErrNoRecipient
	case len(req.Recipient) > MaxAddressLen:
		return ErrRecipientTooLong
	case len(req.Sender) > MaxAddressLen:
		return ErrSenderTooLong
	}
	return nil
}

// clientKey is the client network's key for the auto-whitelist, which is
// counted per network whatever the identity: a verified name never
// whitelists a whole provider. In network mode the triplet's key bytes
// begin with it.
func (e *Engine) clientKey(st *checkState, buf []byte) uint64 {
	if st.ident == IdentName {
		return e.clientKeyOf(e.clientNetOf(st))
	}
	end := netEnd(st.network)
	buf[secretLen] = 'c'
	k := xxhash.Sum64(buf[:end])
	buf[secretLen] = 't'
	return k
}

// clientNetOf is the client network of a prepared request, which prepare
// leaves unmade for a client keyed by name.
func (e *Engine) clientNetOf(st *checkState) netip.Prefix {
	if st.ident == IdentName {
		return clientNet(st.addr, &e.opts.Keys)
	}
	return st.network
}

// known answers into d for a passed, live triplet in slot i, refreshing
// its last-seen time once per TouchInterval (touched). s is locked.
func (e *Engine) known(s *shard, now Time, k uint64, i int, ch *Changes, d *Decision) (touched bool) {
	if en := s.t.slots[i].e; uint64(now) >= uint64(en.last())+e.p.touch {
		en = passedEntry(en.first, now)
		s.t.slots[i].e = en
		ch.addTriplet(k, en)
		touched = true
	}
	s.stats.decisions[ReasonKnown]++
	*d = Decision{Verdict: Pass, Reason: ReasonKnown, Key: k}
	return touched
}

// decide runs the greylisting table (DESIGN §1) for a triplet that was not
// known a moment ago. s is locked. passed reports a first pass, which the
// client's auto-whitelist count must hear of. It decides into d.
func (e *Engine) decide(s *shard, now Time, k uint64, delay uint64, ch *Changes, d *Decision) (passed bool) {
	i := s.t.find(k)
	exists := i >= 0
	var en entry
	if exists {
		en = s.t.slots[i].e
	}
	live := exists && !e.p.expired(en, now)
	switch {
	case live && en.passed():
		e.known(s, now, k, i, ch, d)
		return false
	case live && !en.tomb():
		elapsed := uint64(0)
		if now > en.born() {
			elapsed = uint64(now - en.born())
		}
		if elapsed < delay {
			if en.word < tombWord-1 {
				s.t.slots[i].e.word++
			}
			s.stats.decisions[ReasonEarlyRetry]++
			*d = Decision{Verdict: Defer, Reason: ReasonEarlyRetry, Left: uint32(delay - elapsed), Key: k}
			return false
		}
		nen := passedEntry(en.first, now)
		s.put(k, en, true, nen)
		ch.addTriplet(k, nen)
		s.stats.decisions[ReasonPassed]++
		*d = Decision{Verdict: Pass, Reason: ReasonPassed, Delayed: uint32(elapsed), Key: k}
		return true
	}
	if !exists && !s.makeRoom(now, &e.p, e.maxPerShard) {
		s.stats.decisions[ReasonOverflow]++
		*d = Decision{Verdict: Pass, Reason: ReasonOverflow, Key: k}
		return false
	}
	nen := entry{first: e.p.birthAfter(now, en.first, live && en.tomb())}
	s.put(k, en, exists, nen)
	if !exists || en.tomb() {
		// An expired entry overwritten in place is still filed in the wheel
		// at a slot before its old deadline; that slot re-files it. A
		// tombstone's slot is a max age away: the new state is filed again.
		s.w.file(k, e.p.deadline(nen))
	}
	ch.addTriplet(k, nen)
	s.stats.decisions[ReasonNew]++
	*d = Decision{Verdict: Defer, Reason: ReasonNew, Left: uint32(delay), Key: k}
	return false
}

// clientListed reports whether the client network is auto-whitelisted,
// refreshing its last-seen time once per TouchInterval.
func (e *Engine) clientListed(now Time, ck uint64, ch *Changes) bool {
	s := e.shardOf(ck)
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.c[ck]
	if !ok || !c.listed(e.p.awl) || e.p.clientExpired(c, now) {
		return false
	}
	if uint64(now) >= uint64(c.last)+e.p.touch {
		c.last = now
		s.c[ck] = c
		ch.addClient(ck, c)
	}
	s.stats.decisions[ReasonClientAWL]++
	return true
}

// touchClient keeps a client's auto-whitelist entry alive while its known
// triplets are in use, as postgrey's does while its mail flows.
func (e *Engine) touchClient(now Time, ck uint64, ch *Changes) {
	s := e.shardOf(ck)
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.c[ck]
	if !ok || c.tomb() || e.p.clientExpired(c, now) || uint64(now) < uint64(c.last)+e.p.touch {
		return
	}
	c.last = now
	s.c[ck] = c
	ch.addClient(ck, c)
}

// countClientPass counts a triplet's first pass for its client network, at
// most once per AutoWhitelistInterval.
func (e *Engine) countClientPass(now Time, ck uint64, ch *Changes) {
	s := e.shardOf(ck)
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.c[ck]
	switch {
	case !ok || c.tomb() || e.p.clientExpired(c, now):
		live := ok && c.tomb() && !e.p.clientExpired(c, now)
		c = client{since: e.p.birthAfter(now, c.since, live), last: now, count: 1, counted: now}
	case uint64(now) >= uint64(c.counted)+e.p.awlInterval:
		c.count = min(c.count+1, tombCount-1)
		c.counted = now
		c.last = max(c.last, now)
	case uint64(now) >= uint64(c.last)+e.p.touch:
		c.last = now
	default:
		return
	}
	s.putClient(ck, c)
	ch.addClient(ck, c)
}

// Apply merges a payload of records (from the log, a peer, or a snapshot's
// rule blob) into the engine. It returns the number of records applied.
func (e *Engine) Apply(payload []byte) (int, error) {
	n := 0
	err := forEachRecord(payload, func(typ byte, body []byte) error {
		r, err := decodeRecord(typ, body)
		if err != nil {
			return err
		}
		n++
		switch typ {
		case recTriplet, recTripletReset:
			e.applyTriplet(r.key, r.e)
		case recClient, recClientReset:
			e.applyClient(r.key, r.c)
		case recRule, recRuleTTL:
			e.applyRule(r.rule, r.rst)
		default:
			e.unknownRecords.Add(1)
		}
		return nil
	})
	return n, err
}

// applyTriplet merges a record's state. A new key is held to the memory
// bound as a check's would be: the shard makes room by evicting its oldest
// pending triplets, and if it cannot, a pending record is dropped (counted
// as an eviction: its sender is deferred again, as after one). A passed
// triplet, or a forget's tombstone, is never dropped. Without this, a flood of new triplets on one
// MX host would fill every other host's memory through replication.
func (e *Engine) applyTriplet(k uint64, in entry) {
	s := e.shardOf(k)
	s.mu.Lock()
	if e.maxPerShard > 0 && s.t.len() >= e.maxPerShard && s.t.find(k) < 0 {
		now := in.born()
		if in.passed() {
			now = max(now, in.last())
		}
		// A forget's tombstone is kept like a pass: dropping it would
		// bring back what it forgot.
		if !s.makeRoom(now, &e.p, e.maxPerShard) && !in.passed() && !in.tomb() {
			s.stats.evicted++
			s.mu.Unlock()
			return
		}
	}
	s.merge(k, in, &e.p)
	s.mu.Unlock()
}

func (e *Engine) applyClient(k uint64, in client) {
	s := e.shardOf(k)
	s.mu.Lock()
	if cur, ok := s.c[k]; ok {
		in = e.p.mergeClient(cur, in)
	}
	s.putClient(k, in)
	s.mu.Unlock()
}

// Expire drops what expired by now and files what was refreshed, a wheel
// slot at a time (the wheel is coarse: an hour a slot). Checks never wait
// for it: they treat an entry past its deadline as absent. It returns the
// number of entries dropped.
func (e *Engine) Expire(now Time) int {
	e.expireRules(now)
	n := 0
	for i := range e.shards {
		s := &e.shards[i]
		s.mu.Lock()
		n += s.advance(now, &e.p)
		s.mu.Unlock()
	}
	return n
}

// ExportShard appends shard i's triplets to the given slices, under the
// shard's lock: a snapshot copies one shard at a time while checks go on in
// the others. States of a reset generation are left to ExportResets.
func (e *Engine) ExportShard(i int, keys []uint64, first, word []uint32) ([]uint64, []uint32, []uint32) {
	s := &e.shards[i]
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.t.len()
	keys, first, word = slices.Grow(keys, n), slices.Grow(first, n), slices.Grow(word, n)
	for _, sl := range s.t.slots {
		if sl.k != 0 && (s.resets == 0 || !sl.e.reset()) {
			keys = append(keys, sl.k)
			first = append(first, uint32(sl.e.first))
			word = append(word, sl.e.word)
		}
	}
	return keys, first, word
}

// ExportClients appends shard i's client networks to the given slices,
// but those of a reset generation (ExportResets).
func (e *Engine) ExportClients(i int, keys []uint64, cols [4][]uint32) ([]uint64, [4][]uint32) {
	s := &e.shards[i]
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, c := range s.c {
		if s.clientResets > 0 && c.reset() {
			continue
		}
		keys = append(keys, k)
		cols[0] = append(cols[0], uint32(c.since))
		cols[1] = append(cols[1], uint32(c.last))
		cols[2] = append(cols[2], c.count)
		cols[3] = append(cols[3], uint32(c.counted))
	}
	return keys, cols
}

// ImportTriplets merges rows from a snapshot. Rows of one shard should come
// together (a snapshot's chunk is one shard): each run of rows takes its
// shard's lock once, and an empty shard's map is sized for the run up front.
func (e *Engine) ImportTriplets(keys []uint64, first, word []uint32) error {
	if len(first) != len(keys) || len(word) != len(keys) {
		return fmt.Errorf("%w: triplet columns of %d, %d and %d rows", ErrBadRecord, len(keys), len(first), len(word))
	}
	for i := 0; i < len(keys); {
		si := e.ShardOf(keys[i])
		j := i + 1
		for j < len(keys) && e.ShardOf(keys[j]) == si {
			j++
		}
		s := &e.shards[si]
		s.mu.Lock()
		s.t.reserve(s.t.len() + j - i)
		for ; i < j; i++ {
			s.merge(keys[i], entry{first: Time(first[i]), word: word[i]}, &e.p)
		}
		s.mu.Unlock()
	}
	return nil
}

// ImportClients merges client rows from a snapshot.
func (e *Engine) ImportClients(keys []uint64, cols [][]uint32) error {
	if len(cols) != 4 {
		return fmt.Errorf("%w: client table with %d columns, want 4", ErrBadRecord, len(cols))
	}
	for _, c := range cols {
		if len(c) != len(keys) {
			return fmt.Errorf("%w: client column of %d rows for %d keys", ErrBadRecord, len(c), len(keys))
		}
	}
	for i, k := range keys {
		e.applyClient(k, client{since: Time(cols[0][i]), last: Time(cols[1][i]), count: cols[2][i], counted: Time(cols[3][i])})
	}
	return nil
}

// Stats is a snapshot of the engine's counters.
type Stats struct {
	Triplets  int // in memory, including expired ones the wheel has not dropped yet
	Pending   int
	Passed    int
	Forgotten int // tombstones of forgotten triplets (ForgetTriplet)
	Clients   int // client networks with a pass count
	Listed    int // client networks auto-whitelisted now
	// ForgottenClients counts tombstones of forgotten client networks.
	ForgottenClients int
	Rules            int
	Decisions        [numReasons]uint64 // indexed by Reason
	Evicted          uint64             // pending triplets dropped for room
	Expired          uint64             // entries dropped by the wheel
	// UnknownRecords counts records of types this version does not know,
	// skipped during Apply.
	UnknownRecords uint64
}

// Decided returns the count of decisions with reason r.
func (s *Stats) Decided(r Reason) uint64 {
	if r < numReasons {
		return s.Decisions[r]
	}
	return 0
}

// Stats sums the shards' counters; it takes each shard's lock in turn.
func (e *Engine) Stats() Stats {
	var st Stats
	for i := range e.shards {
		s := &e.shards[i]
		s.mu.Lock()
		st.Triplets += s.t.len()
		st.Pending += s.pending
		st.Passed += s.passed
		st.Forgotten += s.tombs
		for _, c := range s.c {
			switch {
			case c.tomb():
				st.ForgottenClients++
			case c.listed(e.p.awl):
				st.Listed++
				st.Clients++
			default:
				st.Clients++
			}
		}
		for r, n := range s.stats.decisions {
			st.Decisions[r] += n
		}
		st.Evicted += s.stats.evicted
		st.Expired += s.stats.expired
		s.mu.Unlock()
	}
	st.Rules = e.rules.Load().n
	st.UnknownRecords = e.unknownRecords.Load()
	return st
}

// TripletKey returns the key of a triplet whose client is keyed by its
// network, as Check computes it for a client without a name identity.
func (e *Engine) TripletKey(addr netip.Addr, sender, recipient string) uint64 {
	var kb keyBuf
	buf, _, _ := e.appendTriplet(kb[:0], clientNet(addr.Unmap().WithZone(""), &e.opts.Keys), "", false, sender, recipient)
	return xxhash.Sum64(buf)
}

// appendTriplet appends the bytes a triplet key is hashed from: secret, tag,
// client, sender length, normalised sender, normalised recipient. The
// client is the network, or with ident set the name identity: 'n', its
// length and its bytes, the 'n' setting it apart from a network's family
// byte (4 or 6). The length keeps sender and recipient apart without a
// reserved separator. senderAt and senderEnd delimit the normalised
// sender.
func (e *Engine) appendTriplet(buf []byte, network netip.Prefix, ident string, lower bool, sender, recipient string) (out []byte, senderAt, senderEnd int) {
	buf = append(buf, e.secret[:]...)
	buf = append(buf, 't')
	if ident != "" {
		buf = append(buf, 'n', byte(len(ident)))
		if lower {
			buf = append(buf, ident...)
		} else {
			buf = appendLower(buf, ident)
		}
	} else {
		buf = appendNet(buf, network)
	}
	lenAt := len(buf)
	buf = append(buf, 0, 0)
	buf = appendSender(buf, sender, e.opts.Keys.NoSenderNormalisation)
	senderEnd = len(buf)
	binary.LittleEndian.PutUint16(buf[lenAt:], uint16(senderEnd-lenAt-2))
	buf = appendRecipient(buf, recipient, e.opts.Keys.StripRecipientExtension)
	return buf, lenAt + 2, senderEnd
}

// Covers reports whether the engine already holds every state the records
// in payload carry, so applying them would change nothing: what a crash
// test asks of each change acknowledged before the crash.
func (e *Engine) Covers(payload []byte) (bool, error) {
	covered := true
	err := forEachRecord(payload, func(typ byte, body []byte) error {
		r, err := decodeRecord(typ, body)
		if err != nil {
			return err
		}
		switch typ {
		case recTriplet, recTripletReset:
			s := e.shardOf(r.key)
			s.mu.Lock()
			cur, ok := s.t.get(r.key)
			s.mu.Unlock()
			covered = covered && ok && e.p.mergeEntry(cur, r.e) == cur
		case recClient, recClientReset:
			s := e.shardOf(r.key)
			s.mu.Lock()
			cur, ok := s.c[r.key]
			s.mu.Unlock()
			covered = covered && ok && e.p.mergeClient(cur, r.c) == cur
		case recRule, recRuleTTL:
			e.rulesMu.Lock()
			cur, ok := e.ruleState[r.rule]
			e.rulesMu.Unlock()
			covered = covered && ok && cur.stamp >= r.rst.stamp
		}
		return nil
	})
	return covered, err
}

// ExportResets returns, as records, every triplet and client network state
// of a reset generation (a release, a forget's tombstone, a state born
// after one), which ExportShard and ExportClients leave out: a snapshot
// carries them apart, as records Apply reads back, so that an older
// version skips them as it skips their records in the log (record.go).
// They are few: only an operator's releases and forgets make them.
func (e *Engine) ExportResets() []byte {
	var out []byte
	for i := range e.shards {
		s := &e.shards[i]
		s.mu.Lock()
		if s.resets > 0 {
			for _, sl := range s.t.slots {
				if sl.k != 0 && sl.e.reset() {
					out = appendTripletRecord(out, sl.k, sl.e)
				}
			}
		}
		if s.clientResets > 0 {
			for k, c := range s.c {
				if c.reset() {
					out = appendClientRecord(out, k, c)
				}
			}
		}
		s.mu.Unlock()
	}
	return out
}
