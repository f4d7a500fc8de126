package engine

import (
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
