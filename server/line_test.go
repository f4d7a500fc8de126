package server

import (
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
