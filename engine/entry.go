package engine

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

func passedEntry(first, last Time) entry { return entry{first: first, word: passedBit | uint32(last)} }

// client is a client network's auto-whitelist state.
type client struct {
	since   Time   // when this generation of the entry began
	last    Time   // last seen, for expiry
	count   uint32 // triplets passed, at most one per AutoWhitelistInterval
	counted Time   // when count last rose
}

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
func (p *params) epochOf(t Time) uint64 { return uint64(t) / p.epoch }

// deadline is the last second at which e is alive.
func (p *params) deadline(e entry) uint64 {
	if e.passed() {
		return uint64(e.last()) + p.maxAge
	}
	return uint64(e.first) + p.retryWindow
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
// shorter). The state of the later epoch wins whole; within an epoch the
// earliest first-seen, passed over pending, the latest last-seen and the
// most attempts win.
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
	switch ea, eb := p.epochOf(a.first), p.epochOf(b.first); {
	case ea > eb:
		return a
	case eb > ea:
		return b
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
// more than a max age after it was last seen.
func (p *params) mergeClient(a, b client) client {
	switch ea, eb := p.epochOf(a.since), p.epochOf(b.since); {
	case ea > eb:
		return a
	case eb > ea:
		return b
	}
	return client{
		since:   min(a.since, b.since),
		last:    max(a.last, b.last),
		count:   max(a.count, b.count),
		counted: max(a.counted, b.counted),
	}
}
