package engine

import (
	"net/netip"

	"github.com/cespare/xxhash/v2"
)

// Importing the state of another greylisting tool (postgrey, sqlgrey):
// its triplets and client networks become records, keyed and merged as
// the engine's own, so that an import into a directory in use merges with
// what it holds, in any order.

// Imported is one triplet another tool held, with its client as a
// network: the tools being replaced key clients by network or address,
// never by name.
type Imported struct {
	Network   netip.Prefix
	Sender    string // as the other tool compared it, or raw: normalised again here
	Recipient string
	First     Time
	// Passed says the triplet passed; Last is then when it was last seen.
	Passed  bool
	Last    Time
	Retries uint32
}

// ImportNetwork is the network a client address or network of another tool
// stands for under the engine's key options: the network of its address,
// refused (ok false) when the other tool's network is wider than the
// engine's (a /24 of sqlgrey's under --ipv4-prefix 32), which no single
// key can hold.
func (e *Engine) ImportNetwork(p netip.Prefix) (netip.Prefix, bool) {
	a := p.Addr().Unmap().WithZone("")
	n := clientNet(a, &e.opts.Keys)
	bits := p.Bits()
	if p.Addr().Is4In6() {
		bits -= 96
	}
	return n, bits >= n.Bits()
}

// ImportTripletRecord returns the record of an imported triplet at now,
// or expired true (and no record) when it would be dead already under the
// engine's retry window or max age.
func (e *Engine) ImportTripletRecord(now Time, t Imported) (rec []byte, expired bool) {
	var kb keyBuf
	buf, _, _ := e.appendTriplet(kb[:0], t.Network, "", false, t.Sender, t.Recipient)
	k := xxhash.Sum64(buf)
	en := entry{first: t.First, word: min(t.Retries, tombWord-1)}
	if t.Passed {
		en = passedEntry(t.First, max(t.Last, t.First))
	}
	if e.p.expired(en, now) {
		return nil, true
	}
	return appendTripletRecord(nil, k, en), false
}

// ImportClientRecord returns the record of a client network's
// auto-whitelist state: count passes counted, the last seen at last and
// counted at counted; since is when the state began (importers give
// every network of one import the same, so that two addresses of one
// network merge to the larger count). expired is true when the state
// would be dead already under the max age.
func (e *Engine) ImportClientRecord(now Time, network netip.Prefix, since, last, counted Time, count uint32) (rec []byte, expired bool) {
	c := client{since: since, last: last, count: min(count, tombCount-1), counted: counted}
	if e.p.clientExpired(c, now) {
		return nil, true
	}
	return appendClientRecord(nil, e.clientKeyOf(network), c), false
}
