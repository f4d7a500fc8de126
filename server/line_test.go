package server

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/greyhold/greyhold/engine"
)

func TestParseLine(t *testing.T) {
	for _, tc := range []struct {
		line string
		want engine.Request
		why  string
	}{
		{line: "192.0.2.10 alice@example.org bob@example.net",
			want: engine.Request{ClientAddr: "192.0.2.10", Sender: "alice@example.org", Recipient: "bob@example.net", ClientName: "unknown"}},
		{line: "192.0.2.10 <> <bob@example.net> mail.example.org",
			want: engine.Request{ClientAddr: "192.0.2.10", Sender: "", Recipient: "bob@example.net", ClientName: "mail.example.org"}},
		{line: "  2001:db8::1\t<alice@example.org>  \t bob@example.net\t",
			want: engine.Request{ClientAddr: "2001:db8::1", Sender: "alice@example.org", Recipient: "bob@example.net", ClientName: "unknown"}},
		{line: "192.0.2.10\talice@example.org\tbob@example.net\tmx.example",
			want: engine.Request{ClientAddr: "192.0.2.10", Sender: "alice@example.org", Recipient: "bob@example.net", ClientName: "mx.example"}},
		{line: "", why: "want CLIENT_IP SENDER RECIPIENT [CLIENT_NAME]"},
		{line: "192.0.2.10 alice@example.org", why: "want CLIENT_IP SENDER RECIPIENT [CLIENT_NAME]"},
		{line: "a b c d e", why: "too many fields: want CLIENT_IP SENDER RECIPIENT [CLIENT_NAME]"},
	} {
		got, why := parseLine([]byte(tc.line))
		if why != tc.why || got != tc.want {
			t.Errorf("parseLine(%q) = %+v, %q; want %+v, %q", tc.line, got, why, tc.want, tc.why)
		}
	}
}

func BenchmarkParseLine(b *testing.B) {
	line := []byte("2001:db8:1234:5678::25 <bounce-md_10612303.5adf1f70.v1@mandrillapp.example> <recipient.name@example.net> mail-relay-42.example.org")
	b.SetBytes(int64(len(line)))
	b.ReportAllocs()
	for b.Loop() {
		if _, why := parseLine(line); why != "" {
			b.Fatal(why)
		}
	}
}

// splitBoth splits buf with and without the masks and fails if the two
// readings differ in any request, error, slot, byte taken or limit hit.
func splitBoth(t *testing.T, buf []byte, limit int, atEOF bool) {
	t.Helper()
	var fast, slow lineConn
	fn, ftl := fast.split(buf, limit, atEOF, true)
	sn, stl := slow.split(buf, limit, atEOF, false)
	if fn != sn || ftl != stl || !slices.Equal(fast.errs, slow.errs) || !slices.Equal(fast.slot, slow.slot) || !slices.Equal(fast.reqs, slow.reqs) {
		t.Fatalf("split(%q, limit %d, atEOF %v):\nfast: %d %v %q %v %+v\nslow: %d %v %q %v %+v", buf, limit, atEOF,
			fn, ftl, fast.errs, fast.slot, fast.reqs, sn, stl, slow.errs, slow.slot, slow.reqs)
	}
}

// TestSplitAgrees holds the masked reading of lines to the line-by-line
// one on windows made of the pieces that matter to it: separators, CR,
// blank-looking bytes, brackets, long fields, lines across 64-byte blocks.
func TestSplitAgrees(t *testing.T) {
	pieces := []string{" ", " ", "  ", "\t", "\n", "\r", "\r\n", "\v", "\u00a0", "\x00", "<>", "<", ">",
		"192.0.2.1", "2001:db8::25", "alice@example.org", "<bob@example.net>", "mx.example", "x",
		strings.Repeat("a", 70), strings.Repeat("b.", 40)}
	r := rand.New(rand.NewPCG(7, 8))
	plain := "192.0.2.10 alice@example.org bob@example.net mx.example\n"
	for range 30000 {
		var b strings.Builder
		for range r.IntN(60) {
			if r.IntN(3) == 0 {
				b.WriteString(plain)
				continue
			}
			b.WriteString(pieces[r.IntN(len(pieces))])
		}
		limit := []int{8 << 10, 100, 40, 57}[r.IntN(4)]
		splitBoth(t, []byte(b.String()), limit, r.IntN(4) == 0)
	}
	// Lines of three fields that bytes.TrimSpace finds blank, and their
	// neighbours that it does not.
	for _, w := range []string{"\u00a0 \u00a0 \u00a0\n", "\v \v \v\n", "\u0085 \u2003 \u00a0 \u3000\n", "\r \r \r\r\n",
		"\u00a0 a b\n", "\x01 b c\n", "\x7f b c\n", "\xc2 b c\n"} {
		splitBoth(t, []byte(w), 8<<10, false)
	}
	// Windows of plain lines whose ends fall on every byte of a block.
	for pad := range 130 {
		buf := []byte(strings.Repeat(plain, 3) + "192.0.2.1 " + strings.Repeat("s", pad) + "@x.example r@y.example\n" + plain)
		splitBoth(t, buf, 8<<10, false)
		splitBoth(t, buf[:len(buf)-1], 8<<10, true)
	}
}

func FuzzSplit(f *testing.F) {
	f.Add([]byte("192.0.2.10 alice@example.org bob@example.net mx.example\n192.0.2.10 <> <bob@example.net>\r\n"), 8<<10, false)
	f.Add([]byte("  2001:db8::1\t<alice@example.org>  \t bob@example.net\t\n\v \v \v\n"), 100, true)
	f.Fuzz(func(t *testing.T, buf []byte, limit int, atEOF bool) {
		if limit < 1 || limit > 1<<20 {
			return
		}
		splitBoth(t, buf, limit, atEOF)
	})
}

// BenchmarkLineSplit reads a window of 256 lines as the load generator
// sends them, with the masks and line by line.
func BenchmarkLineSplit(b *testing.B) {
	var w []byte
	for i := range 256 {
		w = fmt.Appendf(w, "198.51.%d.%d sender%d@example%d.org rcpt%d@example.net\n", i/100, i%250, i, i%7, i%13)
	}
	for _, fast := range []bool{true, false} {
		name := "masks"
		if !fast {
			name = "line-by-line"
		}
		b.Run(name, func(b *testing.B) {
			var lc lineConn
			b.SetBytes(int64(len(w)))
			for b.Loop() {
				if n, _ := lc.split(w, 8<<10, false, fast); n != len(w) || len(lc.reqs) != 256 {
					b.Fatalf("took %d of %d bytes, %d requests", n, len(w), len(lc.reqs))
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*256), "ns/line")
		})
	}
}
