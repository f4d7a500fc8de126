package engine

import (
	"fmt"
	"net/netip"
	"testing"
)

// TestNameCacheSeeded: each engine's name cache hashes with its own seed,
// so a rest's slot, found by its hash alone, cannot be aimed at from
// outside; and a cache answers alike whatever its seed.
func TestNameCacheSeeded(t *testing.T) {
	a, b := newSuffixCache(), newSuffixCache()
	const name = "mail-wr1-f54.google.com"
	ha, hb := a.hashName(name), b.hashName(name)
	if ha.rest == hb.rest || ha.label == hb.label {
		t.Fatalf("two caches hash alike: %+v %+v", ha, hb)
	}
	addr := netip.MustParseAddr("209.85.221.54")
	if fa, fb := a.analyseName(name, &addr, &ha), b.analyseName(name, &addr, &hb); fa != fb || !fa.keyed() {
		t.Fatalf("facts %b and %b", fa, fb)
	}
}

// TestNameCacheHoldsAThousandRests: BenchmarkIdentityCost's 997 rests and
// 40 first labels, a fifth of the cache's slots, all stay in it whatever
// the seed (100 fixed ones), none pushed out by another that hashed to
// its set.
func TestNameCacheHoldsAThousandRests(t *testing.T) {
	names := make([]string, 40*997)
	for i := range names {
		names[i] = fmt.Sprintf("mx%d.shop%d-mail.example", i%40, i%997)
	}
	addr := netip.MustParseAddr("198.18.1.2")
	for seed := uint64(1); seed <= 100; seed++ {
		c := &suffixCache{seed: seed * 0x9e3779b97f4a7c15}
		for _, n := range names {
			h := c.hashName(n)
			c.analyseName(n, &addr, &h)
		}
		lost := 0
		for _, n := range names[:997] { // every rest, and every label
			h := c.hashName(n)
			if _, ok := c.get(h.rest); !ok {
				lost++
			}
			if _, ok := c.get(h.label); !ok {
				lost++
			}
		}
		if lost > 0 {
			t.Errorf("seed %d: %d of the 1,037 entries pushed out", seed, lost)
		}
	}
}
