package engine

import "sync"

// The wheel files each triplet's key in a slot by its deadline, so expiry
// visits only what may have expired instead of scanning every map. Slots are
// coarse on purpose: an entry is never trusted past its deadline (checks test
// it themselves), so the wheel only has to free memory eventually, and an
// hour's lateness costs nothing.
const (
	// wheelWidth is the seconds a slot covers: 4096 s, a little over an
	// hour. A power of two makes the slot of a time a shift.
	wheelWidth = 4096
	// wheelSlots times wheelWidth is the horizon, 48.5 days: more than the
	// default max-age of 35 days plus the touch interval, so a passed entry
	// is visited once, when it is due. Longer deadlines go round and are
	// re-filed when their slot comes up early. 1024 slices are 24 KiB a
	// shard.
	wheelSlots = 1024
	horizon    = wheelWidth * wheelSlots
)

type wheel struct {
	// cursor is the start of the next slot to process; 0 until the first
	// advance, which then sweeps every slot once (entries filed during
	// recovery may be long due).
	cursor uint64
	slots  [wheelSlots][]uint64
}

func slotOf(t uint64) int { return int(t / wheelWidth % wheelSlots) }

// file puts k in the slot of its deadline; a deadline already behind the
// cursor goes in the cursor's slot, processed next.
func (w *wheel) file(k uint64, deadline uint64) {
	if w.cursor != 0 && deadline < w.cursor {
		deadline = w.cursor
	}
	i := slotOf(deadline)
	w.slots[i] = append(w.slots[i], k)
}

// shard is one lock's share of the state. Every key filed in the wheel has
// exactly one slot at or before its deadline (more than one only after a
// merge moved a deadline earlier, and those extra copies fall out when
// visited).
type shard struct {
	mu      sync.Mutex
	t       table
	c       map[uint64]client
	pending int // entries in t by state, expired ones included
	passed  int
	tombs   int
	// resets and clientResets count the states of a reset generation in
	// t and c, which snapshots carry apart (Engine.ExportResets).
	resets       int
	clientResets int
	// fullUntil stops eviction walks for a while after one found nothing to
	// evict, so a shard full of passed triplets does not walk its wheel on
	// every new triplet.
	fullUntil Time
	stats     struct {
		decisions [numReasons]uint64
		evicted   uint64
		expired   uint64
	}
	// tx holds, by transaction key, when a recipient of the transaction
	// last passed (transaction.go); nil until one does.
	tx map[uint64]Time
	// w lives apart from the shard: inline, its 24 KiB would spread the 256
	// mutexes over 6 MiB, and taking a lock would miss the cache (measured:
	// a fifth of a known-triplet check).
	w *wheel
	_ [64]byte // keeps neighbouring shards' locks off each other's cache line
}

// put stores en for k, replacing old (if existed) and keeping the counts.
func (s *shard) put(k uint64, old entry, existed bool, en entry) {
	if existed {
		s.uncount(old)
	}
	s.count(en)
	s.t.set(k, en)
}

func (s *shard) count(en entry) {
	switch {
	case en.passed():
		s.passed++
	case en.tomb():
		s.tombs++
	default:
		s.pending++
	}
	if en.reset() {
		s.resets++
	}
}

func (s *shard) uncount(en entry) {
	switch {
	case en.passed():
		s.passed--
	case en.tomb():
		s.tombs--
	default:
		s.pending--
	}
	if en.reset() {
		s.resets--
	}
}

// putClient stores a client network's state, counting reset ones.
func (s *shard) putClient(k uint64, c client) {
	if old, ok := s.c[k]; ok && old.reset() {
		s.clientResets--
	}
	if c.reset() {
		s.clientResets++
	}
	s.c[k] = c
}

func (s *shard) delClient(k uint64, c client) {
	if c.reset() {
		s.clientResets--
	}
	delete(s.c, k)
}

func (s *shard) del(k uint64, en entry) {
	s.uncount(en)
	s.t.del(k)
}

// merge applies a record's state for k (see mergeEntry).
func (s *shard) merge(k uint64, in entry, p *params) {
	cur, ok := s.t.get(k)
	if !ok {
		s.put(k, cur, false, in)
		s.w.file(k, p.deadline(in))
		return
	}
	out := p.mergeEntry(cur, in)
	if out == cur {
		return
	}
	s.put(k, cur, true, out)
	if p.deadline(out) < p.deadline(cur) {
		s.w.file(k, p.deadline(out))
	}
}

// advance processes every slot whose time has fully passed by now and
// returns the number of entries it dropped. Client networks, far fewer than
// triplets, are swept whole whenever a slot was processed.
func (s *shard) advance(now Time, p *params) int {
	w := s.w
	t := uint64(now)
	start := t - t%wheelWidth
	n := 0
	if w.cursor == 0 || t >= w.cursor+horizon || t+horizon < w.cursor {
		// First run, or the clock jumped by more than the horizon either
		// way: sweep every slot once.
		w.cursor = start
		for i := range w.slots {
			n += s.process(i, now, p)
		}
	} else {
		if w.cursor+wheelWidth > t {
			return 0
		}
		for w.cursor+wheelWidth <= t {
			i := slotOf(w.cursor)
			w.cursor += wheelWidth
			n += s.process(i, now, p)
		}
	}
	for k, c := range s.c {
		if p.clientExpired(c, now) {
			s.delClient(k, c)
		}
	}
	return n
}

// process empties slot i, dropping what expired and filing again what was
// refreshed since.
func (s *shard) process(i int, now Time, p *params) int {
	keys := s.w.slots[i]
	s.w.slots[i] = nil
	n := 0
	for _, k := range keys {
		en, ok := s.t.get(k)
		if !ok {
			continue
		}
		if p.expired(en, now) {
			s.del(k, en)
			n++
			continue
		}
		s.w.file(k, p.deadline(en))
	}
	s.stats.expired += uint64(n)
	return n
}

// fullPause is how long a shard that found nothing to evict turns new
// triplets away before it walks its wheel again.
const fullPause = 60

// makeRoom makes space for one new triplet when the shard is at its bound,
// evicting the oldest pending triplets first. The wheel already orders them:
// a pending triplet's deadline is its first-seen time plus the retry window,
// so walking slots from the cursor meets the oldest first. Passed triplets
// and tombstones (a forgotten triplet would come back with an old record)
// are never evicted. Eviction takes 1/64 of the bound at once so the walk
// runs once per that many new triplets, not for each. It reports whether
// there is room.
func (s *shard) makeRoom(now Time, p *params, max int) bool {
	if max == 0 || s.t.len() < max {
		return true
	}
	if now < s.fullUntil {
		return false
	}
	need := s.t.len() - (max - max/64 - 1)
	start := slotOf(s.w.cursor)
	if s.w.cursor == 0 {
		start = slotOf(uint64(now))
	}
	evicted, expired := 0, 0
	for j := 0; j < wheelSlots && need > 0; j++ {
		i := (start + j) % wheelSlots
		keys := s.w.slots[i]
		kept := keys[:0]
		for x, k := range keys {
			if need <= 0 {
				kept = append(kept, keys[x:]...)
				break
			}
			en, ok := s.t.get(k)
			switch {
			case !ok:
			case p.expired(en, now):
				s.del(k, en)
				expired++
				need--
			case !en.passed() && !en.tomb():
				s.del(k, en)
				evicted++
				need--
			default:
				kept = append(kept, k)
			}
		}
		s.w.slots[i] = kept
	}
	s.stats.evicted += uint64(evicted)
	s.stats.expired += uint64(expired)
	if s.t.len() >= max {
		s.fullUntil = now + fullPause
		return false
	}
	return true
}
