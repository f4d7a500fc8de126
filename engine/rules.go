package engine

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/greyhold/greyhold/whitelist"
)

// RuleKind says what a whitelist rule matches.
type RuleKind uint8

// Rule kinds.
const (
	// RuleClient matches a client address or network: "192.0.2.7",
	// "192.0.2.0/24", "2001:db8::/32".
	RuleClient RuleKind = 1 + iota
	// RuleClientName matches a client's reverse DNS name and every name
	// under it: "mail.example.com", "example.com".
	RuleClientName
	// RuleSender matches the envelope sender: "user@example.com" (the
	// address, after normalisation), "user@" (that local part at any
	// domain) or "example.com" (the domain and its subdomains).
	RuleSender
	// RuleRecipient matches the envelope recipient, in the same forms.
	RuleRecipient
)

var ruleKindNames = [...]string{RuleClient: "client", RuleClientName: "client-name", RuleSender: "sender", RuleRecipient: "recipient"}

func (k RuleKind) String() string {
	if int(k) < len(ruleKindNames) && ruleKindNames[k] != "" {
		return ruleKindNames[k]
	}
	return fmt.Sprintf("kind-%d", uint8(k))
}

// ParseRuleKind reads a kind's String form.
func ParseRuleKind(s string) (RuleKind, error) {
	for k, name := range ruleKindNames {
		if name != "" && name == s {
			return RuleKind(k), nil
		}
	}
	return 0, fmt.Errorf("rule kind %q: want client, client-name, sender or recipient", s)
}

// Rule is a whitelist rule as an operator writes it.
type Rule struct {
	Kind  RuleKind
	Value string
}

// ruleForm is how a rule's value is kept.
type ruleForm uint8

const (
	formPrefix   ruleForm = 1 // a network, clear text
	formDomain   ruleForm = 2 // a domain and its subdomains, clear text
	formLocal    ruleForm = 3 // a local part at any domain, clear text
	formAddrHash ruleForm = 4 // an address: only its keyed hash is kept
)

// ruleID is a rule's stored identity. Addresses are the one form kept as a
// keyed hash: DESIGN §5 keeps every address off the disk, and a whitelist
// entry is an address like any other.
type ruleID struct {
	kind  RuleKind
	form  ruleForm
	value string
}

// hashPrefix marks a hashed address in listings, and lets an operator remove
// a rule by what the listing shows.
const hashPrefix = "address-hash:"

// ErrBadRule is returned for a rule whose value does not fit its kind.
var ErrBadRule = errors.New("invalid whitelist rule")

func (e *Engine) ruleID(r Rule) (ruleID, error) {
	v := strings.TrimSpace(r.Value)
	bad := func(why string) (ruleID, error) {
		return ruleID{}, fmt.Errorf("%w: %s %q: %s", ErrBadRule, r.Kind, r.Value, why)
	}
	if v == "" {
		return bad("empty value")
	}
	switch r.Kind {
	case RuleClient:
		var p netip.Prefix
		var err error
		if strings.Contains(v, "/") {
			p, err = netip.ParsePrefix(v)
		} else {
			var a netip.Addr
			a, err = netip.ParseAddr(v)
			a = a.Unmap().WithZone("")
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if err != nil {
			return bad("want an IP address or CIDR network")
		}
		if p.Addr().Is4In6() {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
			if p.Bits() < 0 {
				return bad("an IPv4-mapped network must be /96 or longer")
			}
		}
		return ruleID{kind: r.Kind, form: formPrefix, value: p.Masked().String()}, nil
	case RuleClientName:
		d := strings.Trim(strings.ToLower(v), ".")
		if !validDomain(d) {
			return bad("want a host or domain name")
		}
		return ruleID{kind: r.Kind, form: formDomain, value: d}, nil
	case RuleSender, RuleRecipient:
		if h, ok := strings.CutPrefix(v, hashPrefix); ok {
			b, err := hex.DecodeString(h)
			if err != nil || len(b) != 8 {
				return bad("want " + hashPrefix + " and 16 hex digits")
			}
			return ruleID{kind: r.Kind, form: formAddrHash, value: string(b)}, nil
		}
		low := strings.ToLower(v)
		at := strings.LastIndexByte(low, '@')
		hasAt := at >= 0
		local, domain := low, ""
		if hasAt {
			local, domain = low[:at], low[at+1:]
		}
		switch {
		case !hasAt:
			d := strings.Trim(low, ".")
			if !validDomain(d) {
				return bad("want user@domain, user@ or a domain")
			}
			return ruleID{kind: r.Kind, form: formDomain, value: d}, nil
		case domain == "":
			// Normalise the local part as the request's will be, so a rule
			// written "bounce-1234@" matches the "bounce-#@" it is compared to.
			local = strings.TrimSuffix(e.normaliseFor(r.Kind, local+"@"), "@")
			if local == "" {
				return bad("want user@domain, user@ or a domain")
			}
			return ruleID{kind: r.Kind, form: formLocal, value: local}, nil
		case local == "":
			return bad("an address needs a local part; for a whole domain write just the domain")
		}
		h := e.addrRuleHash(r.Kind, []byte(e.normaliseFor(r.Kind, v)))
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], h)
		return ruleID{kind: r.Kind, form: formAddrHash, value: string(b[:])}, nil
	}
	return bad("unknown kind")
}

func (e *Engine) normaliseFor(k RuleKind, addr string) string {
	if k == RuleSender {
		return NormaliseSender(addr, e.opts.Keys)
	}
	return NormaliseRecipient(addr, e.opts.Keys)
}

// addrRuleHash is the keyed hash an address rule is stored and looked up by.
func (e *Engine) addrRuleHash(k RuleKind, addr []byte) uint64 {
	var scratch [320]byte
	b := append(scratch[:0], e.secret[:]...)
	b = append(b, 'a', byte(k))
	b = append(b, addr...)
	return xxhash.Sum64(b)
}

// validDomain accepts what can be a DNS name: no spaces, no '@', no empty
// labels. It does not insist on letters-digits-hyphens, since operators
// whitelist underscore names too.
func validDomain(d string) bool {
	if d == "" || len(d) > 253 || strings.ContainsAny(d, "@ \t/\\") {
		return false
	}
	return !strings.Contains(d, "..")
}

// display renders a rule for listings.
func (id ruleID) display() string {
	if id.form == formAddrHash {
		return hashPrefix + hex.EncodeToString([]byte(id.value))
	}
	if id.form == formLocal {
		return id.value + "@"
	}
	return id.value
}

type ruleState struct {
	present bool
	stamp   uint64
	// expires is the first second a rule with a lifetime no longer
	// holds; 0 for a rule without one.
	expires Time
}

// live reports whether a rule in this state holds at now.
func (st ruleState) live(now Time) bool {
	return st.present && (st.expires == 0 || now < st.expires)
}

// RuleInfo is a rule as listed.
type RuleInfo struct {
	Kind  RuleKind
	Value string // as written, except addresses, shown as address-hash:HEX
	Added Time
	// Expires is when a rule with a lifetime stops holding; 0 for one
	// without.
	Expires Time
}

// ruleSet is an immutable view of the live rules, swapped whole on every
// change so checks read it without a lock.
type ruleSet struct {
	n int
	// expires is the soonest end of a rule in the set that has a
	// lifetime, 0 if none has: from then on the set is built again.
	expires    Time
	prefixes   map[netip.Prefix]struct{}
	v4Bits     []int
	v6Bits     []int
	names      map[string]struct{}
	sender     addrRules
	recipient  addrRules
	hasAddress bool
}

type addrRules struct {
	hashes  map[uint64]struct{}
	locals  map[string]struct{}
	domains map[string]struct{}
}

func (a *addrRules) add(id ruleID) {
	switch id.form {
	case formAddrHash:
		if a.hashes == nil {
			a.hashes = map[uint64]struct{}{}
		}
		a.hashes[binary.LittleEndian.Uint64([]byte(id.value))] = struct{}{}
	case formLocal:
		if a.locals == nil {
			a.locals = map[string]struct{}{}
		}
		a.locals[id.value] = struct{}{}
	case formDomain:
		if a.domains == nil {
			a.domains = map[string]struct{}{}
		}
		a.domains[id.value] = struct{}{}
	}
}

// buildRuleSet makes the set of the rules that hold at now (0: every
// present rule, as after replay, which has no time; the first check
// after a lifetime ends builds it again).
func buildRuleSet(state map[ruleID]ruleState, now Time) *ruleSet {
	rs := &ruleSet{}
	v4, v6 := map[int]bool{}, map[int]bool{}
	for id, st := range state {
		if !st.live(now) {
			continue
		}
		if st.expires != 0 && (rs.expires == 0 || st.expires < rs.expires) {
			rs.expires = st.expires
		}
		rs.n++
		switch id.kind {
		case RuleClient:
			p, err := netip.ParsePrefix(id.value)
			if err != nil {
				continue
			}
			if rs.prefixes == nil {
				rs.prefixes = map[netip.Prefix]struct{}{}
			}
			rs.prefixes[p] = struct{}{}
			if p.Addr().Is4() {
				v4[p.Bits()] = true
			} else {
				v6[p.Bits()] = true
			}
		case RuleClientName:
			if rs.names == nil {
				rs.names = map[string]struct{}{}
			}
			rs.names[id.value] = struct{}{}
		case RuleSender:
			rs.sender.add(id)
		case RuleRecipient:
			rs.recipient.add(id)
		}
		if id.form == formAddrHash {
			rs.hasAddress = true
		}
	}
	for b := range v4 {
		rs.v4Bits = append(rs.v4Bits, b)
	}
	for b := range v6 {
		rs.v6Bits = append(rs.v6Bits, b)
	}
	sort.Ints(rs.v4Bits)
	sort.Ints(rs.v6Bits)
	return rs
}

func (e *Engine) matchAddr(a *addrRules, k RuleKind, addr []byte) bool {
	local, domain, hasAt := splitAddress(addr)
	if a.hashes != nil {
		if _, ok := a.hashes[e.addrRuleHash(k, addr)]; ok {
			return true
		}
	}
	if hasAt && a.locals != nil {
		if _, ok := a.locals[string(local)]; ok {
			return true
		}
	}
	return a.domains != nil && whitelist.MatchDomain(a.domains, domain)
}

// liveRules returns the rule set in force at now, building it again when
// a rule's lifetime has ended: once a lifetime, by the first check after
// it.
func (e *Engine) liveRules(rs *ruleSet, now Time) *ruleSet {
	if rs.expires == 0 || now < rs.expires {
		return rs
	}
	e.rulesMu.Lock()
	defer e.rulesMu.Unlock()
	if rs = e.rules.Load(); rs.expires != 0 && now >= rs.expires {
		rs = buildRuleSet(e.ruleState, now)
		e.rules.Store(rs)
	}
	return rs
}

// match reports whether a request is whitelisted. sender and recipient are
// normalised.
func (e *Engine) match(rs *ruleSet, now Time, client netip.Addr, name string, sender, recipient []byte) bool {
	rs = e.liveRules(rs, now)
	if rs.prefixes != nil {
		bitsList := rs.v6Bits
		if client.Is4() {
			bitsList = rs.v4Bits
		}
		for _, b := range bitsList {
			p, err := client.Prefix(b)
			if err != nil {
				continue
			}
			if _, ok := rs.prefixes[p]; ok {
				return true
			}
		}
	}
	if rs.names != nil && name != "" {
		var scratch [256]byte
		if whitelist.MatchDomain(rs.names, appendLower(scratch[:0], name)) {
			return true
		}
	}
	return e.matchAddr(&rs.sender, RuleSender, sender) || e.matchAddr(&rs.recipient, RuleRecipient, recipient)
}

// SetRule adds (present) or removes a rule at time now and returns the
// record that makes the change durable; changed is false when the rule was
// already in that state. The caller logs rec before acknowledging.
func (e *Engine) SetRule(now Time, r Rule, present bool) (rec []byte, changed bool, err error) {
	return e.SetRuleFor(now, r, present, 0)
}

// MaxRuleLifetime bounds a rule's lifetime (SetRuleFor).
const MaxRuleLifetime = maxDuration

// SetRuleFor is SetRule for a rule that holds for ttl from now and then
// ends by itself (0: until removed). Adding a rule that holds already
// sets its lifetime anew: from now, or none.
func (e *Engine) SetRuleFor(now Time, r Rule, present bool, ttl time.Duration) (rec []byte, changed bool, err error) {
	if ttl < 0 || ttl > MaxRuleLifetime || ttl%time.Second != 0 || (ttl > 0 && !present) {
		return nil, false, fmt.Errorf("%w: a lifetime is whole seconds up to %v, for a rule being added", ErrBadRule, MaxRuleLifetime)
	}
	id, err := e.ruleID(r)
	if err != nil {
		return nil, false, err
	}
	var expires Time
	if ttl > 0 {
		expires = now + Time(ttl/time.Second)
	}
	e.rulesMu.Lock()
	defer e.rulesMu.Unlock()
	cur, ok := e.ruleState[id]
	switch {
	case !present && (!ok || !cur.live(now)):
		return nil, false, nil
	case present && ok && cur.live(now) && cur.expires == expires:
		return nil, false, nil
	}
	// Stamps order changes to one rule; seconds shifted left leave room for
	// a million changes a second and still order changes across MX hosts by
	// wall time.
	stamp := max(uint64(now)<<20, e.lastStamp+1)
	e.lastStamp = stamp
	st := ruleState{present: present, stamp: stamp, expires: expires}
	e.ruleState[id] = st
	e.rules.Store(buildRuleSet(e.ruleState, now))
	return appendRuleRecord(nil, id, st), true, nil
}

// ruleWins reports whether rule state a replaces b: the later stamp wins;
// on a tie removal wins, then a rule without a lifetime, then the later
// end, so every order of the same records ends alike.
func ruleWins(a, b ruleState) bool {
	if a.stamp != b.stamp {
		return a.stamp > b.stamp
	}
	if a.present != b.present {
		return !a.present
	}
	end := func(t Time) uint64 {
		if t == 0 {
			return 1 << 32
		}
		return uint64(t)
	}
	return end(a.expires) > end(b.expires)
}

// applyRuleLocked merges one rule state (ruleWins).
func (e *Engine) applyRuleLocked(id ruleID, st ruleState) {
	cur, ok := e.ruleState[id]
	if ok && !ruleWins(st, cur) {
		return
	}
	e.ruleState[id] = st
	e.lastStamp = max(e.lastStamp, st.stamp)
	if !ok || cur.present != st.present || cur.expires != st.expires {
		e.rules.Store(buildRuleSet(e.ruleState, 0))
	}
}

// expireRules puts the rule set of now in force, without the rules whose
// lifetime ended.
func (e *Engine) expireRules(now Time) { e.liveRules(e.rules.Load(), now) }

func (e *Engine) applyRule(id ruleID, st ruleState) {
	e.rulesMu.Lock()
	e.applyRuleLocked(id, st)
	e.rulesMu.Unlock()
}

// Rules lists every rule added and not removed, sorted by kind and value,
// those whose lifetime has ended included (RulesAt leaves them out).
func (e *Engine) Rules() []RuleInfo { return e.RulesAt(0) }

// RulesAt lists the rules in force at now, sorted by kind and value.
func (e *Engine) RulesAt(now Time) []RuleInfo {
	e.rulesMu.Lock()
	defer e.rulesMu.Unlock()
	var out []RuleInfo
	for id, st := range e.ruleState {
		if st.live(now) {
			out = append(out, RuleInfo{Kind: id.kind, Value: id.display(), Added: Time(st.stamp >> 20), Expires: st.expires})
		}
	}
	sortRules(out)
	return out
}

// sortRules orders rules by kind, then value, as listings show them.
func sortRules(rs []RuleInfo) {
	slices.SortFunc(rs, func(a, b RuleInfo) int {
		if a.Kind != b.Kind {
			return int(a.Kind) - int(b.Kind)
		}
		return strings.Compare(a.Value, b.Value)
	})
}

// ExportRules returns every rule state, removals included, as records, for
// a snapshot's rule blob; Apply reads it back.
func (e *Engine) ExportRules() []byte {
	e.rulesMu.Lock()
	defer e.rulesMu.Unlock()
	var out []byte
	for id, st := range e.ruleState {
		out = appendRuleRecord(out, id, st)
	}
	return out
}
