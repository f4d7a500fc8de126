//go:build (amd64 || arm64) && !purego

package engine

// prefetchLine hints the CPU to load the cache line holding addr. It never
// faults, whatever addr is.
//
//go:noescape
func prefetchLine(addr uintptr)

// prefetchLines is prefetchLine for two lines, in one call.
//
//go:noescape
func prefetchLines(a, b uintptr)
