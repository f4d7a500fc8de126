package main

import (
	"strings"
	"testing"
)

func TestFDPlan(t *testing.T) {
	f := func(nofile uint64, listeners, maxConns, httpConns, wantMax, wantHTTP int, wantErr string) {
		t.Helper()
		m, h, err := fdPlan(nofile, listeners, maxConns, httpConns)
		if wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), wantErr) {
				t.Errorf("fdPlan(%d, %d, %d, %d): %v, want an error with %q", nofile, listeners, maxConns, httpConns, err, wantErr)
			}
			return
		}
		if err != nil || m != wantMax || h != wantHTTP {
			t.Errorf("fdPlan(%d, %d, %d, %d) = %d, %d, %v; want %d, %d", nofile, listeners, maxConns, httpConns, m, h, err, wantMax, wantHTTP)
		}
		if uint64(listeners*m+h+fdReserve) > nofile {
			t.Errorf("fdPlan(%d, ...) plans %d descriptors", nofile, listeners*m+h+fdReserve)
		}
	}
	// Enough: nothing changes (3 x 16384 + 4096 + the reserve).
	f(1<<20, 3, 16384, 4096, 16384, 4096, "")
	f(3*16384+4096+fdReserve, 3, 16384, 4096, 16384, 4096, "")
	// The case: nofile 20,000 under 3 x 16384 + 4096.
	f(20000, 3, 16384, 4096, 6114, 1530, "")
	// Debian's default soft limit, were it left: 1024.
	f(1024, 2, 16384, 4096, 398, 100, "")
	// Too few for anything: refused, saying what to raise.
	f(150, 3, 16384, 4096, 0, 0, "raise it")
}
