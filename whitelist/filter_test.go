package whitelist

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// TestStrFilter: a filter never turns down a string it was given, and
// turns down most others, for sets shaped like the real ones.
func TestStrFilter(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	word := func() string {
		b := make([]byte, 1+r.IntN(30))
		for i := range b {
			b[i] = "abcdefghijklmnopqrstuvwxyz0123456789.-_"[r.IntN(39)]
		}
		return string(b)
	}
	for _, size := range []int{1, 2, 10, 100, 300} {
		set := map[string]struct{}{}
		ss := newStrSet()
		for range size {
			w := word()
			set[w] = struct{}{}
			ss.add(w)
		}
		f := &ss.f
		for k := range set {
			if !f.mayHave([]byte(k)) {
				t.Fatalf("set of %d: %q turned down", size, k)
			}
		}
		for range 1000 {
			w := []byte(word())
			for i := range w {
				if r.IntN(2) == 0 && 'a' <= w[i] && w[i] <= 'z' {
					w[i] -= 'a' - 'A'
				}
			}
			if got, want := f.mayHaveLower(w), f.mayHave([]byte(strings.ToLower(string(w)))); got != want {
				t.Fatalf("mayHaveLower(%q) = %v, mayHave of it lowercased %v", w, got, want)
			}
		}
		passed, tries := 0, 20000
		for range tries {
			w := word()
			if _, in := set[w]; !in && f.mayHave([]byte(w)) {
				passed++
			}
		}
		// Filled at random, 1024 bits let through about size/1024 of the rest.
		if limit := float64(size)/1024*2 + 0.01; float64(passed)/float64(tries) > limit {
			t.Errorf("set of %d: let %d of %d others through, more than %.0f%%", size, passed, tries, 100*limit)
		}
	}
	var empty strFilter
	if empty.mayHave(nil) || empty.mayHave([]byte("x")) {
		t.Fatal("an empty filter let a string through")
	}
	// The built-in lists' recipients and domains against the shapes of real
	// mail: most names and recipients get past without a map lookup.
	s := Parse(strings.NewReader(defaultClients), strings.NewReader(defaultRecipients))
	through := 0
	for i := range 1000 {
		if s.rcptLocals.f.mayHave(fmt.Appendf(nil, "user%d", i)) {
			through++
		}
	}
	if through > 50 {
		t.Errorf("postmaster@/abuse@ filter let %d of 1000 ordinary local parts through", through)
	}
	through = 0
	for i := range 1000 {
		if s.domainEnds.f.mayHave(fmt.Appendf(nil, "example-isp%d.net", i)) {
			through++
		}
	}
	if through > 300 {
		t.Errorf("client domain filter (%d domains) let %d of 1000 other domains through", len(s.domainEnds.m), through)
	}
}
