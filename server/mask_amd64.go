//go:build !purego

package server

// maskBlocks sets nl[k] and eq[k] to the bitmasks of the '\n' and '=' bytes
// of src[64k:64k+64], bit i for byte i; src holds at least 64*len(nl)
// bytes and eq is as long as nl. SSE2, which every amd64 has, compares 16
// bytes an instruction, where the portable code takes about as many
// instructions for 8.
func maskBlocks(src []byte, nl, eq []uint64) {
	if len(nl) == 0 {
		return
	}
	_ = src[64*len(nl)-1]
	_ = eq[len(nl)-1]
	maskBlocksSSE2(&src[0], len(nl), &nl[0], &eq[0])
}

//go:noescape
func maskBlocksSSE2(src *byte, blocks int, nl, eq *uint64)
