//go:build !amd64 || purego

package server

// maskBlocks sets am[k] and bm[k] to the bitmasks of the bytes a and b in
// src[64k:64k+64], bit i for byte i; src holds at least 64*len(am) bytes
// and bm is as long as am.
func maskBlocks(src []byte, a, b byte, am, bm []uint64) { maskBlocksGo(src, a, b, am, bm) }
