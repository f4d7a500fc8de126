package engine

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// The clients and sender domains deferred most in the last hour (greyhold
// top), at no cost of a lock or an allocation on the check path: a check
// that defers samples itself, one defer in topSampleRate, by a hash of its
// key and the second (no counter shared between cores), and a sampled
// defer copies its client (network or name identity, as keyed) and sender
// domain, from the key bytes it already has, into a slot of a fixed ring
// of atomic words. The ring is drained off the check path (DrainTop, from
// the store's background loop and before each query) into a summary per
// minute of the last hour, each bounded by the space-saving algorithm
// (Metwally et al.): at most topKeep keys a minute, a newcomer taking the
// place of the smallest with its count. Counts are estimates: samples
// times the rate, scaled up by the samples the ring lost when writers
// lapped the drain.

const (
	// topSampleBits: one defer in 2^3 is sampled.
	topSampleBits = 3
	topSampleRate = 1 << topSampleBits
	// topRingSize samples fit between drains: 8192 slots of 112 bytes,
	// enough for 13,000 defers a second between drains 5 s apart; past
	// that, samples are lost and the rest stand for them.
	topRingSize = 1 << 13
	// topFieldLen is the most of a client or domain a sample keeps; a
	// longer one is cut (and shown with a trailing "…").
	topFieldLen = 48
	topKeep     = 256 // keys a minute's summary holds, of each kind
)

type topSlot struct {
	// seq is 2(n+1) once sample n is whole in the slot, odd while a
	// writer is filling it.
	seq atomic.Uint64
	// w[0] is the time and the two lengths; then the client's bytes and
	// the domain's, topFieldLen each.
	w [1 + 2*topFieldLen/8]atomic.Uint64
}

type topRing struct {
	next  atomic.Uint64
	slots [topRingSize]topSlot
}

// sampled says whether the defer of key k at now is one of those sampled:
// a test small enough to inline, so that the defers not sampled (7 in 8)
// cost no call.
func sampled(now Time, k uint64) bool {
	return (k^uint64(now)*0x9e3779b97f4a7c15)>>(64-topSampleBits) == 0
}

// sampleDefer keeps a sampled defer of the prepared request st at now.
func (r *topRing) sampleDefer(now Time, st *checkState, buf []byte) {
	client := buf[secretLen+1 : st.senderAt-2]
	sender := buf[st.senderAt:st.senderEnd]
	domain := sender[bytes.LastIndexByte(sender, '@')+1:]
	n := r.next.Add(1) - 1
	sl := &r.slots[n%topRingSize]
	seq := sl.seq.Load()
	if seq&1 != 0 || !sl.seq.CompareAndSwap(seq, seq+1) {
		return // another writer lapped the ring onto this slot: drop it
	}
	var b [2 * topFieldLen]byte
	cl, dl := copy(b[:topFieldLen], client), copy(b[topFieldLen:], domain)
	flags := uint64(0)
	if len(client) > topFieldLen {
		flags |= 1
	}
	if len(domain) > topFieldLen {
		flags |= 2
	}
	sl.w[0].Store(uint64(now) | uint64(cl)<<32 | uint64(dl)<<40 | flags<<48)
	for i := 1; i < len(sl.w); i++ {
		sl.w[i].Store(binary.LittleEndian.Uint64(b[(i-1)*8:]))
	}
	sl.seq.Store((n + 1) << 1)
}

// topMinute is one minute's space-saving summaries.
type topMinute struct {
	at               Time // the minute's first second; 0: unused
	clients, domains map[string]uint32
	samples          uint32
}

func (m *topMinute) add(set map[string]uint32, key string) {
	if _, ok := set[key]; ok || len(set) < topKeep {
		set[key]++
		return
	}
	least, min := "", uint32(1<<32-1)
	for k, v := range set {
		if v < min || (v == min && k < least) {
			least, min = k, v
		}
	}
	delete(set, least)
	set[key] = min + 1
}

// topSummary is the drained side: the last hour by minute.
type topSummary struct {
	mu   sync.Mutex
	read uint64 // the next sample to read
	// lost counts samples the ring dropped (lapped, or torn), kept
	// against read ones to scale the estimates.
	lost, kept uint64
	mins       [60]topMinute
}

// TopEntry is one client or sender domain and its estimated defers.
type TopEntry struct {
	Key    string
	Defers uint64
}

// Top is what TopDeferred reports.
type Top struct {
	Clients []TopEntry // "net:192.0.2.0/24", "name:example.org"
	Domains []TopEntry // sender domains; "<>" for bounces
	// Samples is the defers sampled in the window, SampleRate how many
	// defers a sample stands for (before scaling for lost samples, of
	// which Lost were counted since start).
	Samples    uint64
	SampleRate int
	Lost       uint64
	Window     int // seconds
}

// DrainTop moves what the check path sampled into the summaries; the
// store calls it every few seconds, and TopDeferred before it reads.
func (e *Engine) DrainTop() {
	if e.top == nil {
		return
	}
	t := &e.topSum
	t.mu.Lock()
	defer t.mu.Unlock()
	r := e.top
	end := r.next.Load()
	if end-t.read > topRingSize {
		t.lost += end - t.read - topRingSize
		t.read = end - topRingSize
	}
	var b [2 * topFieldLen]byte
	for ; t.read < end; t.read++ {
		n := t.read
		sl := &r.slots[n%topRingSize]
		if sl.seq.Load() != (n+1)<<1 {
			t.lost++ // being written, dropped, or already overwritten
			continue
		}
		w0 := sl.w[0].Load()
		for i := 1; i < len(sl.w); i++ {
			binary.LittleEndian.PutUint64(b[(i-1)*8:], sl.w[i].Load())
		}
		if sl.seq.Load() != (n+1)<<1 {
			t.lost++
			continue
		}
		at := Time(uint32(w0))
		cl, dl, flags := int(w0>>32&0xff), int(w0>>40&0xff), w0>>48
		m := &t.mins[uint64(at)/60%60]
		if start := at - at%60; m.at != start {
			if m.at > start {
				t.lost++ // older than the minute its bucket holds now
				continue
			}
			*m = topMinute{at: start, clients: map[string]uint32{}, domains: map[string]uint32{}}
		}
		m.samples++
		t.kept++
		m.add(m.clients, topClient(b[:cl], flags&1 != 0))
		dom := string(b[topFieldLen : topFieldLen+dl])
		switch {
		case flags&2 != 0:
			dom += "…"
		case dom == "":
			dom = "<>"
		}
		m.add(m.domains, dom)
	}
}

// topClient renders a sample's client as decisions show it.
func topClient(b []byte, cut bool) string {
	switch {
	case len(b) >= 2 && b[0] == 'n':
		s := "name:" + string(b[2:])
		if cut {
			s += "…"
		}
		return s
	case len(b) == 6 && b[0] == 4:
		return "net:" + netip.PrefixFrom(netip.AddrFrom4([4]byte(b[2:6])), int(b[1])).String()
	case len(b) == 18 && b[0] == 6:
		return "net:" + netip.PrefixFrom(netip.AddrFrom16([16]byte(b[2:18])), int(b[1])).String()
	}
	return "?"
}

// TopDeferred returns the n clients and n sender domains deferred most in
// the hour up to now, estimated from the samples. It never touches the
// check path's locks.
func (e *Engine) TopDeferred(now Time, n int) Top {
	out := Top{SampleRate: topSampleRate, Window: 3600}
	if e.top == nil {
		return out
	}
	e.DrainTop()
	t := &e.topSum
	t.mu.Lock()
	clients, domains := map[string]uint64{}, map[string]uint64{}
	for i := range t.mins {
		m := &t.mins[i]
		if m.at == 0 || m.at+60 <= now-3600 || m.at > now {
			continue
		}
		out.Samples += uint64(m.samples)
		for k, v := range m.clients {
			clients[k] += uint64(v)
		}
		for k, v := range m.domains {
			domains[k] += uint64(v)
		}
	}
	lost, kept := t.lost, t.kept
	t.mu.Unlock()
	out.Lost = lost
	scale := func(v uint64) uint64 {
		v *= topSampleRate
		if kept > 0 {
			v = v * (kept + lost) / kept
		}
		return v
	}
	rank := func(m map[string]uint64) []TopEntry {
		l := make([]TopEntry, 0, len(m))
		for k, v := range m {
			l = append(l, TopEntry{Key: k, Defers: scale(v)})
		}
		slices.SortFunc(l, func(a, b TopEntry) int {
			if a.Defers != b.Defers {
				if a.Defers > b.Defers {
					return -1
				}
				return 1
			}
			return strings.Compare(a.Key, b.Key)
		})
		return l[:min(n, len(l))]
	}
	out.Clients, out.Domains = rank(clients), rank(domains)
	return out
}
