package engine

import "math/bits"

// table is a shard's triplets: an open-addressing hash table with linear
// probing over one flat array of 16-byte slots (key, entry). It stands in
// for a map[uint64]entry because a lookup in it touches one cache line
// where Go's map walks directory, table and group first: on this project's
// 2-core EPYC host, 1M random lookups take 75 ns in it and 125–155 ns in a
// Go map, and a check of a known triplet is mostly that lookup. Like the
// map it holds no pointer, so the garbage collector never scans it.
//
// Key 0 marks an empty slot; the key 0 itself is stored as zeroKey (keys are
// 64-bit hashes, so the two meeting is as likely as any other collision).
// A key's home slot is a fixed-point scaling of its bits below the shard
// bits, so slots run in key order and a table's keys come out nearly sorted.
// Deletion shifts the following run back instead of leaving tombstones, so
// lookups never slow down as entries come and go.
type table struct {
	slots []slot
	n     int
	shift uint       // the key bits that chose the shard, dropped for the home slot
	view  *tableView // published to at each resize; nil in tests of the table alone
}

type slot struct {
	k uint64
	e entry
}

const zeroKey = 1

// maxLoad bounds probe runs: at 80% full an absent key costs about 13 probes
// (three or four cache lines), a present one about 3. Growth by half keeps
// the table between 53% and 80% full, so 16-byte slots cost 20–30 bytes an
// entry; doubling would let it fall to 40% (40 bytes).
const (
	maxLoadNum, maxLoadDen = 4, 5
	minTableSlots          = 16
)

func fixKey(k uint64) uint64 {
	if k == 0 {
		return zeroKey
	}
	return k
}

func (t *table) home(k uint64) int { return int(homeSlot(k, t.shift, uint64(len(t.slots)))) }

// homeSlot maps a key to a slot of a table of n slots, dropping the shift
// high bits that chose its shard; the prefetch computes it without the
// table's lock.
func homeSlot(k uint64, shift uint, n uint64) uint64 {
	hi, _ := bits.Mul64(k<<shift, n)
	return hi
}

// find returns the slot index of k, or -1.
func (t *table) find(k uint64) int {
	if len(t.slots) == 0 {
		return -1
	}
	k = fixKey(k)
	i := t.home(k)
	for {
		switch t.slots[i].k {
		case k:
			return i
		case 0:
			return -1
		}
		if i++; i == len(t.slots) {
			i = 0
		}
	}
}

func (t *table) get(k uint64) (entry, bool) {
	if i := t.find(k); i >= 0 {
		return t.slots[i].e, true
	}
	return entry{}, false
}

// set stores e for k, inserting it if absent.
func (t *table) set(k uint64, e entry) {
	if (t.n+1)*maxLoadDen > len(t.slots)*maxLoadNum {
		t.resize(max(minTableSlots, len(t.slots)+len(t.slots)/2))
	}
	k = fixKey(k)
	i := t.home(k)
	for {
		switch t.slots[i].k {
		case k:
			t.slots[i].e = e
			return
		case 0:
			t.slots[i] = slot{k: k, e: e}
			t.n++
			return
		}
		if i++; i == len(t.slots) {
			i = 0
		}
	}
}

// reserve makes room for n entries in all without growing again. It grows
// at least by half, as set does: callers reserve a little at a time (an
// import of unsorted rows reserves for each run of one shard's keys), and
// growing to the exact need each time rehashed the table on every call.
func (t *table) reserve(n int) {
	if need := n*maxLoadDen/maxLoadNum + 1; need > len(t.slots) {
		t.resize(max(minTableSlots, need, len(t.slots)+len(t.slots)/2))
	}
}

func (t *table) resize(size int) {
	old := t.slots
	t.slots = make([]slot, size)
	if t.view != nil {
		t.view.publish(t.slots, t.shift)
	}
	t.n = 0
	for _, s := range old {
		if s.k != 0 {
			t.set(s.k, s.e)
		}
	}
}

// del removes k and reports whether it was there.
func (t *table) del(k uint64) bool {
	i := t.find(k)
	if i < 0 {
		return false
	}
	t.deleteAt(i)
	return true
}

// deleteAt empties slot i and moves back every later entry of the run that
// may now sit closer to its home (the classic backward shift for linear
// probing).
func (t *table) deleteAt(i int) {
	size := len(t.slots)
	for j := i; ; {
		if j++; j == size {
			j = 0
		}
		k := t.slots[j].k
		if k == 0 {
			break
		}
		// The entry at j may move to i unless its home lies cyclically in
		// (i, j]: then i is before where it may live.
		h := t.home(k)
		if (i <= j && (h <= i || h > j)) || (i > j && h <= i && h > j) {
			t.slots[i] = t.slots[j]
			i = j
		}
	}
	t.slots[i] = slot{}
	t.n--
}

func (t *table) len() int { return t.n }
