//go:build race

package fuzz

// raceEnabled: the race runtime instruments fmt and errors and adds
// allocations of its own, so allocation bounds widen under -race.
const raceEnabled = true
