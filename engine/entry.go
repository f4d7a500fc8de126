package engine

import "cmp"

// entry is one triplet's state, eight bytes with no pointer in them, so a
// map of ten million costs the garbage collector nothing to scan and about
// 24 bytes each with the map's own overhead.
//
//	first  when the triplet was first seen (this generation of it)
//	word   pending: retries before the delay (saturating), top bit clear
//	       passed:  passedBit | when it was last seen
//
// A pending triplet's last attempt and a passed triplet's pass time are not
// kept: no decision needs them, and dropping them halves the entry.
type entry struct {
	first Time
	word  uint32
}

const passedBit = 1 << 31

func (e entry) passed() bool { return e.word&passedBit != 0 }
func (e entry) last() Time   { return Time(e.word &^ passedBit) }

// born is when the state was first seen, without its reset mark.
func (e entry) born() Time { return e.first &^ resetBit }

// reset reports a state of a reset generation (see mergeEntry).
func (e entry) reset() bool { return e.first&resetBit != 0 }

// tomb reports a forgotten triplet: a reset state that holds nothing.
func (e entry) tomb() bool { return e.first&resetBit != 0 && e.word == tombWord }

// resetBit marks, in a triplet's first-seen time or a client network's
// since, a state of a reset generation: one made by an operator's release
// or forget, or born after a forget within the same merge epoch. Times
// fit in 31 bits (MaxTime), so the top bit is free.
const resetBit Time = 1 << 31

// tombWord is the pending word of a forgotten triplet, and tombCount the
// count of a forgotten client network: values no retry count or pass
// count reaches, since both saturate below them.
const (
	tombWord  = passedBit - 1
	tombCount = 1<<32 - 1
)

func passedEntry(first, last Time) entry { return entry{first: first, word: passedBit | uint32(last)} }

// client is a client network's auto-whitelist state.
type client struct {
	since   Time   // when this generation of the entry began (resetBit: a reset generation)
	last    Time   // last seen, for expiry
	count   uint32 // triplets passed, at most one per AutoWhitelistInterval
	counted Time   // when count last rose
}

func (c client) born() Time             { return c.since &^ resetBit }
func (c client) reset() bool            { return c.since&resetBit != 0 }
func (c client) tomb() bool             { return c.since&resetBit != 0 && c.count == tombCount }
func (c client) listed(awl uint32) bool { return awl > 0 && c.count >= awl && !c.tomb() }

// params are Options in the units the hot path uses.
type params struct {
	delay, retryWindow, maxAge, touch uint64
	awl                               uint32
	awlInterval                       uint64
	epoch                             uint64 // seconds in a merge epoch (see mergeEntry)
}

// maxEpoch is the longest merge epoch: an hour.
const maxEpoch = 3600

func newParams(o *Options) params {
	p := params{
		delay:       seconds(o.Delay),
		retryWindow: seconds(o.RetryWindow),
		maxAge:      seconds(o.MaxAge),
		touch:       seconds(o.TouchInterval),
		awl:         uint32(o.AutoWhitelistClients),
		awlInterval: seconds(o.AutoWhitelistInterval),
	}
	p.epoch = max(min(maxEpoch, p.retryWindow, p.maxAge), 1)
	return p
}

// epochOf is the merge epoch a birth time falls in.
func (p *params) epochOf(t Time) uint64 { return uint64(t&^resetBit) / p.epoch }

// compareGen orders two states' generations by their birth times (a
// first-seen time or a client's since, reset mark included): the later
// epoch first; within an epoch a reset generation above the plain one;
// and reset generations by their exact second.
func (p *params) compareGen(a, b Time) int {
	if ea, eb := p.epochOf(a), p.epochOf(b); ea != eb {
		return cmp.Compare(ea, eb)
	}
	ra, rb := a&resetBit != 0, b&resetBit != 0
	switch {
	case ra != rb:
		if ra {
			return 1
		}
		return -1
	case ra:
		return cmp.Compare(a, b)
	}
	return 0
}

// forgetAt is the birth time of a forget's tombstone at now, given what
// the engine holds (cur, if exists): a generation above cur's, so the
// tombstone wins against cur and every older record, in any order.
func (p *params) forgetAt(now, cur Time, exists bool) Time {
	t := now
	if exists {
		if cur&resetBit != 0 {
			t = max(t, cur&^resetBit+1)
		} else {
			t = max(t, cur)
		}
	}
	return resetBit | t
}

// birthAfter is the first-seen time of a state born at now where cur (if
// exists) is what the engine holds: now, unless cur is a tombstone of
// this epoch or a later one, which the new state must outrank; it then
// takes the tombstone's generation (where the tombstone is the least
// state), at its second or after.
func (p *params) birthAfter(now, cur Time, tomb bool) Time {
	if !tomb || p.epochOf(now) > p.epochOf(cur) {
		return now
	}
	return resetBit | max(now, cur&^resetBit)
}

// deadline is the last second at which e is alive. A tombstone lives as
// long as any state it replaced could: a passed one seen at the moment of
// the forget lives a max age on, a pending one a retry window.
func (p *params) deadline(e entry) uint64 {
	switch {
	case e.passed():
		return uint64(e.last()) + p.maxAge
	case e.tomb():
		return uint64(e.born()) + max(p.maxAge, p.retryWindow)
	}
	return uint64(e.born()) + p.retryWindow
}

func (p *params) expired(e entry, now Time) bool { return uint64(now) > p.deadline(e) }

func (p *params) clientDeadline(c client) uint64 { return uint64(c.last) + p.maxAge }

func (p *params) clientExpired(c client, now Time) bool {
	return uint64(now) > p.clientDeadline(c)
}

// mergeEntry combines two states of one triplet, as a replayed or replicated
// record meets what the engine holds. Records carry resulting values, and
// this function is what makes applying them order-free and idempotent: it
// is the join of a semilattice, so any set of records, applied in any
// order, any number of times, on any MX host, ends in one state.
//
// A state belongs to the epoch its first-seen time falls in (epochs are
// params.epoch seconds: an hour, or the retry window or max age if
// shorter). The state of the later generation (compareGen) wins whole;
// within a plain generation the earliest first-seen, passed over pending,
// the latest last-seen and the most attempts win.
//
// Forgetting a triplet (an operator's DELETE /v1/triplet) must win
// against every state it forgets, including records of them that reach
// a host after the forget (from another MX host's backlog, or replay),
// and must lose to what the triplet does next. So a forget is a
// tombstone, a state of its own generation: a reset generation of the
// forget's epoch, ranked by its exact second above that epoch's plain
// generation and above the reset generations of earlier seconds
// (forgetAt picks a second above what it replaces). Within its generation
// the tombstone is the least state, so a triplet seen again after the
// forget, born into the tombstone's generation (birthAfter), wins over it,
// and an old record, of a lower generation, loses to both. A state of a
// reset generation is marked by resetBit in its first-seen time; two
// states of one reset generation have the same first-seen second, and
// join as above. The product of a chain of generations and a semilattice
// within each is a semilattice, so tombstones keep the algebra.
// Releasing a pending triplet keeps its generation (passed over pending
// wins within it); releasing an unknown one starts one, as a new
// attempt would.
//
// Epochs stand for generations. A triplet is only born again once its old
// state died: a pending one more than a retry window after it was first
// seen, a passed one more than a max age after it was last seen, both at
// least an epoch after the old first-seen time, so the new state is always
// of a later epoch and replaces the old wherever the two meet. Two hosts
// that see a first attempt within moments of each other share an epoch
// unless an epoch boundary falls between them (a chance of the replication
// lag in an hour); then the later first-seen time wins, at worst deferring
// the sender once more. Comparing deadlines instead, as "the younger wins
// if born after the other died", is not associative: three states where
// the first overlaps the second and the second the third merged to
// different results in different orders.
func (p *params) mergeEntry(a, b entry) entry {
	switch c := p.compareGen(a.first, b.first); {
	case c > 0:
		return a
	case c < 0:
		return b
	case a.tomb():
		return b
	case b.tomb():
		return a
	}
	first := min(a.first, b.first)
	switch {
	case a.passed() && b.passed():
		return passedEntry(first, max(a.last(), b.last()))
	case a.passed():
		return passedEntry(first, a.last())
	case b.passed():
		return passedEntry(first, b.last())
	}
	return entry{first: first, word: max(a.word, b.word)}
}

// mergeClient is mergeEntry for client networks, whose epoch is that of
// the time the entry began: a client network's entry is only made again
// more than a max age after it was last seen. Forgetting a client network
// is a tombstone as for triplets.
func (p *params) mergeClient(a, b client) client {
	switch c := p.compareGen(a.since, b.since); {
	case c > 0:
		return a
	case c < 0:
		return b
	case a.tomb():
		return b
	case b.tomb():
		return a
	}
	return client{
		since:   min(a.since, b.since),
		last:    max(a.last, b.last),
		count:   max(a.count, b.count),
		counted: max(a.counted, b.counted),
	}
}
