package whitelist

// strFilter says "certainly not in the set" for most strings in a few
// instructions, before a map lookup that hashes the whole string: the sets
// it guards are small (postmaster@ and abuse@; the registered domains of a
// few hundred senders) and nearly every name and recipient looked up is in
// none of them. It looks at the length and three bytes only, which
// separates the short, varied keys of these sets well enough: without it,
// those lookups take about 90 ns a check in the server's profile.
type strFilter struct {
	bits [16]uint64 // 1024
}

func filterBit(b []byte) uint32 {
	n := len(b)
	if n == 0 {
		return 0
	}
	return mixBit(n, b[0], b[n/2], b[n-1])
}

// filterBitLower is filterBit of b with its ASCII letters lowercased.
func filterBitLower(b []byte) uint32 {
	n := len(b)
	if n == 0 {
		return 0
	}
	return mixBit(n, lowerByte(b[0]), lowerByte(b[n/2]), lowerByte(b[n-1]))
}

func mixBit(n int, first, mid, last byte) uint32 {
	x := uint32(n) | uint32(first)<<8 | uint32(mid)<<16 | uint32(last)<<24
	return (x * 0x9e3779b1) >> 22
}

func lowerByte(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		c += 'a' - 'A'
	}
	return c
}

func (f *strFilter) add(s string) {
	i := filterBit([]byte(s))
	f.bits[i/64] |= 1 << (i % 64)
}

// mayHave is false only for strings never added.
func (f *strFilter) mayHave(b []byte) bool {
	i := filterBit(b)
	return f.bits[i/64]&(1<<(i%64)) != 0
}

// mayHaveLower is mayHave of b lowercased, without lowercasing it: the
// filter reads three bytes, so only those are.
func (f *strFilter) mayHaveLower(b []byte) bool {
	i := filterBitLower(b)
	return f.bits[i/64]&(1<<(i%64)) != 0
}

// strSet is a set of strings with its filter in front.
type strSet struct {
	m map[string]struct{}
	f strFilter
}

func newStrSet() strSet { return strSet{m: map[string]struct{}{}} }

func (s *strSet) add(k string) {
	s.m[k] = struct{}{}
	s.f.add(k)
}

// has reports whether b is in the set; most strings that are not cost no
// map lookup.
func (s *strSet) has(b []byte) bool {
	if !s.f.mayHave(b) {
		return false
	}
	_, ok := s.m[string(b)]
	return ok
}
