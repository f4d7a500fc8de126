package server

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"testing"
)

// TestMaskBlocks holds the vector and portable scans to the obvious one, on
// random bytes that favour the two sought (the policy parser's '\n' and
// '=', the line protocol's '\n' and ' ', or any two) and their neighbours.
func TestMaskBlocks(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for i := range 20000 {
		pair := [][2]byte{{'\n', '='}, {'\n', ' '}, {byte(r.Uint32()), byte(r.Uint32())}}[i%3]
		a, b := pair[0], pair[1]
		blocks := 1 + r.IntN(2*maskBatch)
		src := make([]byte, 64*blocks)
		for i := range src {
			switch r.IntN(4) {
			case 0:
				src[i] = a
			case 1:
				src[i] = b
			case 2:
				src[i] = []byte{a ^ 1, b ^ 1, a ^ 0x80, b ^ 0x80, 0, 0xff}[r.IntN(6)]
			default:
				src[i] = byte(r.Uint32())
			}
		}
		want := func(c byte) []uint64 {
			m := make([]uint64, blocks)
			for i, x := range src {
				if x == c {
					m[i/64] |= 1 << (i % 64)
				}
			}
			return m
		}
		wantA, wantB := want(a), want(b)
		for _, f := range []struct {
			name string
			scan func(src []byte, a, b byte, am, bm []uint64)
		}{{"maskBlocks", maskBlocks}, {"maskBlocksGo", maskBlocksGo}} {
			am, bm := make([]uint64, blocks), make([]uint64, blocks)
			f.scan(src, a, b, am, bm)
			for k := range blocks {
				if am[k] != wantA[k] || bm[k] != wantB[k] {
					t.Fatalf("%s of %q and %q, block %d of %q: %x %x; want %x %x", f.name, a, b, k, src[64*k:64*k+64], am[k], bm[k], wantA[k], wantB[k])
				}
			}
		}
	}
}

// TestPackFlags covers every pattern of eight flags.
func TestPackFlags(t *testing.T) {
	for p := range 256 {
		var x uint64
		for i := range 8 {
			if p&(1<<i) != 0 {
				x |= 0x80 << (8 * i)
			}
		}
		if got := packFlags(x); got != uint64(p) {
			t.Fatalf("packFlags(%016x) = %08b; want %08b", x, got, p)
		}
	}
}

// TestParseWholeAgrees holds the fast path to parseLines: on random
// requests, well formed or nearly so, under random limits, whatever the fast
// path accepts parseLines reads the same, and what the fast path turns down
// is parseLines' to answer.
func TestParseWholeAgrees(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	fixture := policy("192.0.2.10", "prvs=0123abcdef=a@b.example", "c@d.example")
	accepted := 0
	for range 100000 {
		var b bytes.Buffer
		if r.IntN(4) == 0 {
			b.WriteString(fixture)
		}
		for range r.IntN(40) {
			name := []string{"request", "sender", "recipient", "client_address", "client_name", "x", "", "protocol_state", "policy_test_time", "queue_id", "instance"}[r.IntN(11)]
			b.WriteString(name)
			if r.IntN(20) != 0 {
				b.WriteByte('=')
			}
			b.WriteString(strings.Repeat("v=", r.IntN(3)))
			b.WriteString(strings.Repeat("y", r.IntN(90)))
			if r.IntN(50) == 0 {
				b.WriteByte([]byte{'\r', 0, '\n'}[r.IntN(3)])
			}
			b.WriteByte('\n')
		}
		if r.IntN(10) != 0 {
			b.WriteByte('\n')
		}
		if r.IntN(3) == 0 {
			b.WriteString(fixture)
		}
		data := b.Bytes()
		if cut := r.IntN(len(data) + 1); r.IntN(5) == 0 {
			data = data[:cut]
		}
		lim := Limits{RequestBytes: 1 + r.IntN(3000), Attributes: 1 + r.IntN(50), LineBytes: 1 + r.IntN(3000)}
		if r.IntN(2) == 0 {
			lim = DefaultLimits()
		}
		var fast, slow policyRequest
		n := parseWhole(data, &lim, &fast)
		if n == 0 {
			continue
		}
		accepted++
		sn, err := parseLines(data, &lim, &slow)
		if err != nil || sn != n || !samePolicy(&fast, &slow) {
			t.Fatalf("limits %+v, %q:\nfast path %d %+v\nline by line %d, %v, %+v", lim, data, n, fast, sn, err, slow)
		}
	}
	if accepted < 10000 {
		t.Fatalf("the fast path took only %d of the requests: the test does not reach it", accepted)
	}
}

// samePolicy compares two parsed requests by content and by where in the
// buffer each value lies.
func samePolicy(a, b *policyRequest) bool {
	same := func(x, y []byte) bool {
		return len(x) == len(y) && (len(x) == 0 || &x[0] == &y[0]) && (x == nil) == (y == nil)
	}
	return same(a.request, b.request) && same(a.protocolState, b.protocolState) &&
		same(a.clientAddress, b.clientAddress) && same(a.clientName, b.clientName) &&
		same(a.sender, b.sender) && same(a.recipient, b.recipient) && same(a.queueID, b.queueID) &&
		same(a.instance, b.instance) && same(a.testTime, b.testTime) &&
		a.hasSender == b.hasSender && a.attrs == b.attrs
}

// FuzzParseWhole is TestParseWholeAgrees with the fuzzer choosing the bytes
// and the limits.
func FuzzParseWhole(f *testing.F) {
	f.Add([]byte(policy("192.0.2.10", "alice@sender.example", "rcpt@example.test")), uint16(4096), uint16(40), uint16(2048))
	f.Add([]byte("sender=SRS0=a=b=c=d@e\n\n"), uint16(100), uint16(2), uint16(100))
	f.Add([]byte("recipient=a@b\r\n\r\n"), uint16(100), uint16(2), uint16(100))
	f.Add([]byte("a=b\n=c\n\n"), uint16(100), uint16(2), uint16(100))
	f.Fuzz(func(t *testing.T, data []byte, reqBytes, attrs, lineBytes uint16) {
		lim := Limits{RequestBytes: int(reqBytes) + 1, Attributes: int(attrs) + 1, LineBytes: int(lineBytes) + 1}
		var fast, slow policyRequest
		n := parseWhole(data, &lim, &fast)
		if n == 0 {
			return
		}
		sn, err := parseLines(data, &lim, &slow)
		if err != nil || sn != n || !samePolicy(&fast, &slow) {
			t.Fatalf("limits %+v:\nfast path %d %+v\nline by line %d, %v, %+v", lim, n, fast, sn, err, slow)
		}
	})
}
