//go:build !(amd64 || arm64) || purego

package engine

// prefetchLine would hint the CPU to load the cache line holding addr; Go
// has no portable way, and a load instead could fault on a stale view.
func prefetchLine(addr uintptr) {}

func prefetchLines(a, b uintptr) {}
