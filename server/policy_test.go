package server

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
)

func TestParsePolicy(t *testing.T) {
	lim := Limits{RequestBytes: 4096, Attributes: 40, LineBytes: 256}
	f := func(in string, wantN int, wantErr string, check func(*policyRequest)) {
		t.Helper()
		var r policyRequest
		n, err := parsePolicy([]byte(in), &lim, &r)
		switch {
		case wantErr != "":
			if err == nil || !errors.Is(err, errProtocol) || !strings.Contains(err.Error(), wantErr) {
				t.Errorf("parse(%q) = %d, %v; want error %q", in, n, err, wantErr)
			}
			return
		case err != nil || n != wantN:
			t.Errorf("parse(%q) = %d, %v; want %d bytes", in, n, err, wantN)
			return
		}
		if check != nil {
			check(&r)
		}
	}
	req := policy("192.0.2.10", "alice@sender.example", "rcpt@example.test")
	f(req, len(req), "", func(r *policyRequest) {
		if string(r.clientAddress) != "192.0.2.10" || string(r.sender) != "alice@sender.example" || string(r.recipient) != "rcpt@example.test" ||
			string(r.protocolState) != "RCPT" || string(r.request) != "smtpd_access_policy" || r.attrs != 29 || !r.hasSender {
			t.Errorf("fields: %+v", r)
		}
	})
	// Incomplete: no error, nothing taken, at every cut.
	for i := 0; i < len(req); i++ {
		f(req[:i], 0, "", nil)
	}
	// Two pipelined: the first only.
	f(req+req, len(req), "", nil)
	// An empty value is a value; the empty sender is present.
	f("sender=\nrecipient=a@b\n\n", 23, "", func(r *policyRequest) {
		if !r.hasSender || len(r.sender) != 0 {
			t.Errorf("empty sender: %+v", r)
		}
	})
	// A value may hold '=' (SRS, BATV).
	f("sender=SRS0=a=b=c=d@e\n\n", 23, "", func(r *policyRequest) {
		if string(r.sender) != "SRS0=a=b=c=d@e" {
			t.Errorf("sender %q", r.sender)
		}
	})
	// CRLF from telnet users.
	f("recipient=a@b\r\n\r\n", 17, "", func(r *policyRequest) {
		if string(r.recipient) != "a@b" {
			t.Errorf("recipient %q", r.recipient)
		}
	})
	f("\n", 0, "empty request", nil)
	f("noequals\n\n", 0, "attribute without name=value", nil)
	f("=value\n\n", 0, "attribute without name=value", nil)
	f(strings.Repeat("a=b\n", 41)+"\n", 0, "more attributes", nil)
	f("a="+strings.Repeat("x", 300)+"\n\n", 0, "line longer", nil)
	f("a="+strings.Repeat("x", 300), 0, "line longer", nil) // before its end arrives
	f(strings.Repeat("a="+strings.Repeat("y", 240)+"\n", 20), 0, "request larger", nil)
	f("sender=a\x00b\n\n", 0, "NUL byte", nil)
}

func BenchmarkParsePolicy(b *testing.B) {
	req := []byte(policy("192.0.2.10", "alice@sender.example", "rcpt@example.test"))
	lim := DefaultLimits()
	var r policyRequest
	b.SetBytes(int64(len(req)))
	b.ReportAllocs()
	for _, p := range []struct {
		name  string
		parse func([]byte, *Limits, *policyRequest) (int, error)
	}{{"all", parsePolicy}, {"lines", parseLines}} {
		b.Run(p.name, func(b *testing.B) {
			for b.Loop() {
				if n, err := p.parse(req, &lim, &r); n != len(req) || err != nil {
					b.Fatal(n, err)
				}
			}
		})
	}
}

// TestLineEnd checks the word-at-a-time scan against the obvious one on
// random short lines of newlines, '=' and bytes that differ from them in
// one bit (where a borrow could fool the zero-byte trick).
func TestLineEnd(t *testing.T) {
	alphabet := []byte{'\n', '=', 'a', '\n' ^ 1, '=' ^ 1, 0x80 | '\n', 0x80 | '=', 0, 0xff}
	r := rand.New(rand.NewPCG(3, 4))
	for range 200000 {
		b := make([]byte, r.IntN(40))
		for i := range b {
			b[i] = alphabet[r.IntN(len(alphabet))]
		}
		wantNL := bytes.IndexByte(b, '\n')
		line := b
		if wantNL >= 0 {
			line = b[:wantNL]
		}
		wantEq := bytes.IndexByte(line, '=')
		if nl, eq := lineEnd(b); nl != wantNL || eq != wantEq {
			t.Fatalf("lineEnd(%q) = %d, %d; want %d, %d", b, nl, eq, wantNL, wantEq)
		}
	}
}

// TestReadAttrs: every attribute read passes the pre-check and is stored,
// and a name that differs in length or first letter is turned down.
func TestReadAttrs(t *testing.T) {
	for _, a := range readAttrs {
		var r policyRequest
		r.set([]byte(a), []byte("v"))
		if !mayReadName([]byte(a)) || reflect.DeepEqual(r, policyRequest{}) {
			t.Errorf("%s: pre-check %v, stored %v", a, mayReadName([]byte(a)), !reflect.DeepEqual(r, policyRequest{}))
		}
		for _, other := range []string{a + "x", "x" + a[1:], strings.ToUpper(a[:1]) + a[1:]} {
			if mayReadName([]byte(other)) {
				t.Errorf("%s passes the pre-check", other)
			}
		}
	}
}
