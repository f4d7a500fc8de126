//go:build !amd64 || purego

package server

// maskBlocks sets nl[k] and eq[k] to the bitmasks of the '\n' and '=' bytes
// of src[64k:64k+64], bit i for byte i; src holds at least 64*len(nl)
// bytes and eq is as long as nl.
func maskBlocks(src []byte, nl, eq []uint64) { maskBlocksGo(src, nl, eq) }
