package main

import (
	"testing"
	"time"
)

// TestDaySameForEveryServer: a seed gives the same messages, and each
// message the same attempts, however the servers answered before.
func TestDaySameForEveryServer(t *testing.T) {
	a, b := day(7, 500), day(7, 500)
	kinds := map[Kind]int{}
	for i := range a {
		if a[i].At != b[i].At || a[i].Sender != b[i].Sender || a[i].Kind != b[i].Kind {
			t.Fatalf("message %d differs", i)
		}
		kinds[a[i].Kind]++
		// Ask b's attempts backwards, as another server's answers might.
		for n := 6; n >= 1; n-- {
			if a[i].attempt(n) != b[i].attempt(n) || a[i].retry(n) != b[i].retry(n) {
				t.Fatalf("message %d attempt %d differs", i, n)
			}
		}
		if a[i].At < 0 || a[i].At > 20*time.Hour {
			t.Fatalf("message %d at %v", i, a[i].At)
		}
	}
	if len(kinds) != int(numKinds) {
		t.Errorf("kinds drawn: %v", kinds)
	}
}
