package engine

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/greyhold/greyhold/whitelist"
)

// Selective greylisting: rules, evaluated in order before the triplet
// lookup, that greylist only the clients that look suspicious (Fastmail
// greylists clients with missing or dynamic reverse DNS, gross by DNSBL
// weights, rspamd by score). A rule is a name, conditions that must all
// hold, and an action:
//
//	sasl:    sasl                          => pass
//	no-rdns: no-name                       => greylist
//	dynamic: generic-name                  => greylist delay=10m
//	helo:    bad-helo                      => greylist
//	listed:  dnsbl >= 5                    => greylist
//	partner: client in 192.0.2.0/24        => pass
//	optin:   recipient-domain in example.org => greylist
//	watch:   sender-domain in example.com  => none
//
// The first rule whose conditions hold decides: greylist (the triplet
// lookup, with the rule's delay if it has one), or pass (no greylisting).
// A rule whose action is none decides nothing: its matches are counted,
// and the rules after it go on. With no rule deciding, the default
// decides (greylist, postgrey's behaviour, unless the operator chose pass).
// Whitelists come first: a whitelisted request passes whatever the rules.

// Action is what a selection rule does when its conditions hold.
type Action uint8

// Actions.
const (
	ActGreylist Action = 1 + iota // look the triplet up, as without rules
	ActPass                       // no greylisting
	ActNone                       // count the match and go on
)

func (a Action) String() string {
	switch a {
	case ActGreylist:
		return "greylist"
	case ActPass:
		return "pass"
	case ActNone:
		return "none"
	}
	return "unknown"
}

// CondKind says what a condition tests.
type CondKind uint8

// Conditions.
const (
	// CondNoName: the client has no verified name (client_name unknown).
	CondNoName CondKind = 1 + iota
	// CondGenericName: the client's verified name is generic (identity.go).
	CondGenericName
	// CondBadHELO: the HELO name is not a fully qualified domain name, or
	// is an address literal that is not the client's address.
	CondBadHELO
	// CondSASL: the client authenticated (sasl_username is set).
	CondSASL
	// CondClient: the client address is in one of Nets.
	CondClient
	// CondSenderDomain: the sender's domain is one of Domains or under one.
	CondSenderDomain
	// CondRecipientDomain: the recipient's domain is one of Domains or
	// under one.
	CondRecipientDomain
	// CondDNSBL: the client's DNS list score (Request.DNSScore) is at
	// least Min.
	CondDNSBL
)

// Cond is one condition of a rule.
type Cond struct {
	Kind    CondKind
	Not     bool
	Nets    []netip.Prefix      // CondClient
	Domains map[string]struct{} // CondSenderDomain, CondRecipientDomain: lowercase
	Min     int                 // CondDNSBL
	text    string              // as written, for String
}

// SelectRule is one selective greylisting rule.
type SelectRule struct {
	Name   string
	Conds  []Cond
	Action Action
	// Delay, for a greylist rule, replaces the engine's delay; 0 keeps it.
	Delay time.Duration
}

// String renders a rule in the syntax ParseSelectRule reads.
func (r *SelectRule) String() string {
	var b strings.Builder
	b.WriteString(r.Name)
	b.WriteString(":")
	for i, c := range r.Conds {
		if i > 0 {
			b.WriteString(" and")
		}
		b.WriteString(" ")
		b.WriteString(c.text)
	}
	b.WriteString(" => ")
	b.WriteString(r.Action.String())
	if r.Delay > 0 {
		b.WriteString(" delay=" + r.Delay.String())
	}
	return b.String()
}

// Selection is the rule list with its default.
type Selection struct {
	Rules []SelectRule
	// Default is what a request no rule decides gets: ActGreylist (the
	// zero value reads as it too) or ActPass.
	Default Action
}

// MaxSelectRules bounds the rules: a decision names the none rules that
// matched in a 64-bit mask.
const MaxSelectRules = 64

// NeedsNames reports whether a rule reads what the client name says, so
// a network-mode engine knows to read it.
func (s *Selection) NeedsNames() bool {
	for i := range s.Rules {
		for _, c := range s.Rules[i].Conds {
			if c.Kind == CondNoName || c.Kind == CondGenericName {
				return true
			}
		}
	}
	return false
}

// NeedsDNSBL reports whether a rule reads the DNS list score.
func (s *Selection) NeedsDNSBL() bool {
	for i := range s.Rules {
		for _, c := range s.Rules[i].Conds {
			if c.Kind == CondDNSBL {
				return true
			}
		}
	}
	return false
}

// Validate reports the first unusable rule.
func (s *Selection) Validate() error {
	if len(s.Rules) > MaxSelectRules {
		return fmt.Errorf("%d selection rules: at most %d", len(s.Rules), MaxSelectRules)
	}
	seen := map[string]bool{}
	for i := range s.Rules {
		r := &s.Rules[i]
		if r.Name == "" || r.Name == "default" || seen[r.Name] {
			return fmt.Errorf("rule %d: name %q is empty, reserved or used twice", i+1, r.Name)
		}
		seen[r.Name] = true
		if r.Action < ActGreylist || r.Action > ActNone {
			return fmt.Errorf("rule %s: no action", r.Name)
		}
		if r.Delay != 0 && (r.Action != ActGreylist || r.Delay < 0 || r.Delay > maxDuration || r.Delay%time.Second != 0) {
			return fmt.Errorf("rule %s: a delay goes with greylist, in whole seconds", r.Name)
		}
	}
	switch s.Default {
	case 0, ActGreylist, ActPass:
	default:
		return fmt.Errorf("default action %v: want greylist or pass", s.Default)
	}
	return nil
}

// ErrBadSelectRule wraps every error ParseSelectRule returns.
var ErrBadSelectRule = errors.New("bad rule")

// ParseSelectRule reads a rule: "NAME: COND [and COND]... => ACTION",
// where a condition is no-name, generic-name, bad-helo, sasl, "client in
// CIDR,...", "sender-domain in DOMAIN,...", "recipient-domain in
// DOMAIN,..." or "dnsbl >= N", each perhaps after "not", and the action
// greylist, "greylist delay=DURATION", pass or none.
func ParseSelectRule(s string) (SelectRule, error) {
	var r SelectRule
	bad := func(format string, args ...any) (SelectRule, error) {
		return SelectRule{}, fmt.Errorf("%w %q: %s", ErrBadSelectRule, s, fmt.Sprintf(format, args...))
	}
	name, rest, ok := strings.Cut(s, ":")
	r.Name = strings.TrimSpace(name)
	if !ok || r.Name == "" || strings.ContainsAny(r.Name, " \t=") {
		return bad("want NAME: CONDITIONS => ACTION")
	}
	conds, action, ok := strings.Cut(rest, "=>")
	if !ok {
		return bad("no '=>' before the action")
	}
	af := strings.Fields(action)
	if len(af) == 0 {
		return bad("no action after '=>': want greylist, pass or none")
	}
	switch af[0] {
	case "greylist":
		r.Action = ActGreylist
	case "pass":
		r.Action = ActPass
	case "none":
		r.Action = ActNone
	default:
		return bad("action %q: want greylist, pass or none", af[0])
	}
	for _, opt := range af[1:] {
		v, ok := strings.CutPrefix(opt, "delay=")
		if !ok || r.Action != ActGreylist {
			return bad("%q: only greylist takes an option, delay=DURATION", opt)
		}
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 || d%time.Second != 0 {
			return bad("delay %q: want a whole number of seconds such as 600s or 10m", v)
		}
		r.Delay = d
	}
	for _, part := range splitAnd(conds) {
		c, err := parseCond(part)
		if err != nil {
			return bad("%v", err)
		}
		r.Conds = append(r.Conds, c)
	}
	if len(r.Conds) == 0 {
		return bad("no condition before '=>'")
	}
	return r, nil
}

// splitAnd splits conditions at the word "and".
func splitAnd(s string) []string {
	var out []string
	var cur []string
	for _, w := range strings.Fields(s) {
		if w == "and" {
			out = append(out, strings.Join(cur, " "))
			cur = nil
			continue
		}
		cur = append(cur, w)
	}
	if len(cur) > 0 || len(out) > 0 {
		out = append(out, strings.Join(cur, " "))
	}
	return out
}

func parseCond(s string) (Cond, error) {
	c := Cond{text: s}
	f := strings.Fields(s)
	if len(f) > 0 && f[0] == "not" {
		c.Not = true
		f = f[1:]
	}
	if len(f) == 0 {
		return c, errors.New("empty condition")
	}
	switch f[0] {
	case "no-name", "generic-name", "bad-helo", "sasl":
		if len(f) != 1 {
			return c, fmt.Errorf("%s takes nothing after it", f[0])
		}
		c.Kind = map[string]CondKind{"no-name": CondNoName, "generic-name": CondGenericName, "bad-helo": CondBadHELO, "sasl": CondSASL}[f[0]]
		return c, nil
	case "dnsbl":
		if len(f) != 3 || f[1] != ">=" {
			return c, errors.New("want dnsbl >= SCORE")
		}
		n, err := strconv.Atoi(f[2])
		if err != nil {
			return c, fmt.Errorf("dnsbl score %q: want a whole number", f[2])
		}
		c.Kind, c.Min = CondDNSBL, n
		return c, nil
	case "client", "sender-domain", "recipient-domain":
		if len(f) < 3 || f[1] != "in" {
			return c, fmt.Errorf("want %s in LIST", f[0])
		}
		items := strings.FieldsFunc(strings.Join(f[2:], ","), func(r rune) bool { return r == ',' })
		if len(items) == 0 {
			return c, fmt.Errorf("%s in: empty list", f[0])
		}
		if f[0] == "client" {
			c.Kind = CondClient
			for _, it := range items {
				p, err := netip.ParsePrefix(it)
				if err != nil {
					a, aerr := netip.ParseAddr(it)
					if aerr != nil {
						return c, fmt.Errorf("client %q: want an address or a CIDR network", it)
					}
					p = netip.PrefixFrom(a, a.BitLen())
				}
				c.Nets = append(c.Nets, p.Masked())
			}
			return c, nil
		}
		c.Kind = CondSenderDomain
		if f[0] == "recipient-domain" {
			c.Kind = CondRecipientDomain
		}
		c.Domains = map[string]struct{}{}
		for _, it := range items {
			d := strings.ToLower(strings.Trim(it, "."))
			if d == "" || strings.ContainsAny(d, "@ ") {
				return c, fmt.Errorf("domain %q: want a domain such as example.org", it)
			}
			c.Domains[d] = struct{}{}
		}
		return c, nil
	}
	return c, fmt.Errorf("condition %q: want no-name, generic-name, bad-helo, sasl, client in, sender-domain in, recipient-domain in or dnsbl >=", f[0])
}

// selected is the outcome of the rules for one request.
type selected struct {
	rule   uint8  // the deciding rule's index + 1; 0 for the default
	action Action // ActGreylist or ActPass
	delay  uint64 // seconds, for ActGreylist
	noted  uint64 // none rules that matched, bit i for rule i
}

// selectFor runs the rules on a prepared request.
func (e *Engine) selectFor(sel *Selection, req *Request, st *checkState, buf []byte) selected {
	out := selected{action: ActGreylist, delay: e.p.delay}
	if sel.Default == ActPass {
		out.action = ActPass
	}
	for i := range sel.Rules {
		r := &sel.Rules[i]
		if !e.holds(r.Conds, req, st, buf) {
			continue
		}
		if r.Action == ActNone {
			out.noted |= 1 << i
			continue
		}
		out.rule, out.action = uint8(i+1), r.Action
		if r.Delay > 0 {
			out.delay = uint64(r.Delay / time.Second)
		}
		return out
	}
	return out
}

// holds reports whether all of conds hold for the request.
func (e *Engine) holds(conds []Cond, req *Request, st *checkState, buf []byte) bool {
	for i := range conds {
		c := &conds[i]
		var ok bool
		switch c.Kind {
		case CondNoName:
			ok = !st.names.verified()
		case CondGenericName:
			ok = st.names.verified() && st.names.generic()
		case CondBadHELO:
			ok = badHELO(req.HELOName, st.addr)
		case CondSASL:
			ok = req.SASLUsername != ""
		case CondClient:
			for _, p := range c.Nets {
				if p.Contains(st.addr) {
					ok = true
					break
				}
			}
		case CondSenderDomain:
			ok = domainIn(c.Domains, buf[st.senderAt:st.senderEnd])
		case CondRecipientDomain:
			ok = domainIn(c.Domains, buf[st.senderEnd:])
		case CondDNSBL:
			ok = int(req.DNSScore) >= c.Min
		}
		if ok == c.Not {
			return false
		}
	}
	return true
}

// domainIn reports whether the domain of a normalised address is in set
// or under a domain of it.
func domainIn(set map[string]struct{}, addr []byte) bool {
	i := bytes.LastIndexByte(addr, '@')
	if i < 0 {
		return false
	}
	return whitelist.MatchDomain(set, addr[i+1:])
}

// badHELO reports whether a HELO name is not a fully qualified domain
// name (at least two labels, letters, digits and '-', a TLD with a
// letter), or is an address literal other than the client's. An empty
// HELO (the attribute missing) is not judged.
func badHELO(helo string, client netip.Addr) bool {
	if helo == "" {
		return false
	}
	if helo[0] == '[' && helo[len(helo)-1] == ']' && len(helo) > 2 {
		lit := strings.TrimPrefix(helo[1:len(helo)-1], "IPv6:")
		a, err := netip.ParseAddr(lit)
		return err != nil || a.Unmap() != client
	}
	helo = strings.TrimSuffix(helo, ".")
	dots, labelAt := 0, 0
	for i := 0; i <= len(helo); i++ {
		if i == len(helo) || helo[i] == '.' {
			if i == labelAt || i-labelAt > 63 {
				return true
			}
			if i < len(helo) {
				dots++
				labelAt = i + 1
			}
			continue
		}
		c := helo[i] | 0x20
		switch {
		case 'a' <= c && c <= 'z' && helo[i] >= 'A':
		case '0' <= helo[i] && helo[i] <= '9', helo[i] == '-', helo[i] == '_':
		default:
			return true
		}
	}
	if dots == 0 {
		return true
	}
	// The last label must have a letter: "192.0.2.1" is an address, not a
	// name.
	last := helo[labelAt:]
	for i := 0; i < len(last); i++ {
		if c := last[i] | 0x20; 'a' <= c && c <= 'z' {
			return false
		}
	}
	return true
}
