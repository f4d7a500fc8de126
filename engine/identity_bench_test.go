package engine

import (
	"fmt"
	"net/netip"
	"testing"
)

// BenchmarkAnalyseName reads the names BenchmarkCheckRealistic sends, as
// name mode does on every check, with the rests in the cache.
func BenchmarkAnalyseName(b *testing.B) {
	var c suffixCache
	names := make([]string, 4096)
	addrs := make([]netip.Addr, len(names))
	for i := range names {
		names[i] = fmt.Sprintf("mx%d.shop%d-mail.example", i%40, i%997)
		addrs[i] = netip.AddrFrom4([4]byte{198, 18, byte(i / 256), byte(i)})
	}
	i := 0
	for b.Loop() {
		c.analyseName(names[i%len(names)], &addrs[i%len(names)], &nameHint{})
		i++
	}
}
