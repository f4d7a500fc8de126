//go:build !purego

package server

// maskBlocks sets am[k] and bm[k] to the bitmasks of the bytes a and b in
// src[64k:64k+64], bit i for byte i; src holds at least 64*len(am) bytes
// and bm is as long as am. SSE2, which every amd64 has, compares 16 bytes
// an instruction, where the portable code takes about as many instructions
// for 8.
func maskBlocks(src []byte, a, b byte, am, bm []uint64) {
	if len(am) == 0 {
		return
	}
	_ = src[64*len(am)-1]
	_ = bm[len(am)-1]
	maskBlocksSSE2(&src[0], len(am), everyByte*uint64(a), everyByte*uint64(b), &am[0], &bm[0])
}

//go:noescape
func maskBlocksSSE2(src *byte, blocks int, pa, pb uint64, am, bm *uint64)
