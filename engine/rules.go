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
}

// RuleInfo is a rule as listed.
type RuleInfo struct {
	Kind  RuleKind
	Value string // as written, except addresses, shown as address-hash:HEX
	Added Time
}

// ruleSet is an immutable view of the live rules, swapped whole on every
// change so checks read it without a lock.
type ruleSet struct {
	n          int
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

func buildRuleSet(state map[ruleID]ruleState) *ruleSet {
	rs := &ruleSet{}
	v4, v6 := map[int]bool{}, map[int]bool{}
	for id, st := range state {
		if !st.present {
			continue
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

// match reports whether a request is whitelisted. sender and recipient are
// normalised.
func (e *Engine) match(rs *ruleSet, client netip.Addr, name string, sender, recipient []byte) bool {
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
	id, err := e.ruleID(r)
	if err != nil {
		return nil, false, err
	}
	e.rulesMu.Lock()
	defer e.rulesMu.Unlock()
	if cur, ok := e.ruleState[id]; ok && cur.present == present {
		return nil, false, nil
	} else if !ok && !present {
		return nil, false, nil
	}
	// Stamps order changes to one rule; seconds shifted left leave room for
	// a million changes a second and still order changes across MX hosts by
	// wall time.
	stamp := max(uint64(now)<<20, e.lastStamp+1)
	e.lastStamp = stamp
	e.applyRuleLocked(id, ruleState{present: present, stamp: stamp})
	return appendRuleRecord(nil, id, present, stamp), true, nil
}

// applyRuleLocked merges one rule state: the later stamp wins, and on a tie
// removal wins, so every order of the same records ends alike.
func (e *Engine) applyRuleLocked(id ruleID, st ruleState) {
	cur, ok := e.ruleState[id]
	if ok && (cur.stamp > st.stamp || (cur.stamp == st.stamp && (!cur.present || st.present))) {
		return
	}
	e.ruleState[id] = st
	e.lastStamp = max(e.lastStamp, st.stamp)
	if !ok || cur.present != st.present {
		e.rules.Store(buildRuleSet(e.ruleState))
	}
}

func (e *Engine) applyRule(id ruleID, st ruleState) {
	e.rulesMu.Lock()
	e.applyRuleLocked(id, st)
	e.rulesMu.Unlock()
}

// Rules lists the rules in force, sorted by kind and value.
func (e *Engine) Rules() []RuleInfo {
	e.rulesMu.Lock()
	defer e.rulesMu.Unlock()
	var out []RuleInfo
	for id, st := range e.ruleState {
		if st.present {
			out = append(out, RuleInfo{Kind: id.kind, Value: id.display(), Added: Time(st.stamp >> 20)})
		}
	}
	slices.SortFunc(out, func(a, b RuleInfo) int {
		if a.Kind != b.Kind {
			return int(a.Kind) - int(b.Kind)
		}
		return strings.Compare(a.Value, b.Value)
	})
	return out
}

// ExportRules returns every rule state, removals included, as records, for
// a snapshot's rule blob; Apply reads it back.
func (e *Engine) ExportRules() []byte {
	e.rulesMu.Lock()
	defer e.rulesMu.Unlock()
	var out []byte
	for id, st := range e.ruleState {
		out = appendRuleRecord(out, id, st.present, st.stamp)
	}
	return out
}
