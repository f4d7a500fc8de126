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
}

func newParams(o *Options) params {
	return params{
		delay:       seconds(o.Delay),
		retryWindow: seconds(o.RetryWindow),
		maxAge:      seconds(o.MaxAge),
		touch:       seconds(o.TouchInterval),
		awl:         uint32(o.AutoWhitelistClients),
		awlInterval: seconds(o.AutoWhitelistInterval),
	}
}

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
// this function is what makes applying them order-free and idempotent:
//
//   - If one state was born after the other had died, the younger wins: the
//     old generation expired and the triplet started over.
//   - Otherwise they are the same generation seen at two moments (or on two
//     MX hosts): the earliest first-seen, passed over pending, the latest
//     last-seen and the most attempts win.
//
// merge(a, a) == a, merge(a, b) == merge(b, a), and an older state of a
// generation never undoes a newer one, so a fuzzy snapshot plus the log
// after it, or the log applied twice, ends where the engine was.
func (p *params) mergeEntry(a, b entry) entry {
	if uint64(b.first) > p.deadline(a) {
		return b
	}
	if uint64(a.first) > p.deadline(b) {
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

// mergeClient is mergeEntry for client networks.
func (p *params) mergeClient(a, b client) client {
	if uint64(b.since) > p.clientDeadline(a) {
		return b
	}
	if uint64(a.since) > p.clientDeadline(b) {
		return a
	}
	return client{
		since:   min(a.since, b.since),
		last:    max(a.last, b.last),
		count:   max(a.count, b.count),
		counted: max(a.counted, b.counted),
	}
}
