package server

import (
	"encoding/binary"
)

// maskBatch is how many 64-byte blocks parseWhole masks at once: 256 bytes,
// so that a 673-byte Postfix request costs 12 blocks, not 16.
const maskBatch = 4

// maskBlocksGo is the portable maskBlocks: the zero-byte trick eight bytes at
// a time, each word's flags packed to eight bits by one multiplication.
func maskBlocksGo(src []byte, a, b byte, am, bm []uint64) {
	pa, pb := everyByte*uint64(a), everyByte*uint64(b)
	for k := range am {
		blk := src[k*64 : k*64+64]
		var x, y uint64
		for j := 0; j < 64; j += 8 {
			w := binary.LittleEndian.Uint64(blk[j:])
			x |= packFlags(zeroBytes(w^pa)) << j
			y |= packFlags(zeroBytes(w^pb)) << j
		}
		am[k], bm[k] = x, y
	}
}

// everyByte times a byte repeats it in all eight bytes of a word.
const everyByte = 0x0101010101010101

// zeroBytes sets the high bit of each byte of x that is zero, and no other
// bit: exact, unlike the borrow trick of lineEnd, because a word holds
// several matches and every one is used.
func zeroBytes(x uint64) uint64 {
	const m7 = 0x7f7f7f7f7f7f7f7f
	return ^((x&m7 + m7) | x | m7)
}

// packFlags gathers the high bits of x's eight bytes into its low eight
// bits, byte i to bit i: the multiplication moves each to bit 56+i; every
// other partial product lands above bit 63 or below bit 56, and those below
// sum to less than 2^56 even with all flags set, so nothing carries into
// the result (TestPackFlags tries all 256 patterns).
func packFlags(x uint64) uint64 {
	return (x >> 7) * 0x0102040810204080 >> 56
}
