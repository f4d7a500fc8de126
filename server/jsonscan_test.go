package server

import (
	"slices"
	"testing"

	"github.com/greyhold/greyhold/engine"
	"github.com/valyala/fastjson"
)

// scanAgrees fails if scanBatch reads body and fastjson with parseChecks
// reads it otherwise: refuses it, finds a bad check, or other requests or
// another time.
func scanAgrees(t *testing.T, s *Server, body []byte) bool {
	t.Helper()
	reqs, at, ok := s.scanBatch(body, nil)
	if !ok {
		return false
	}
	var p fastjson.Parser
	v, err := p.ParseBytes(body)
	if err != nil {
		t.Fatalf("scanBatch read %q; fastjson: %v", body, err)
	}
	items, err := v.Array()
	if err != nil {
		t.Fatalf("scanBatch read %q; fastjson finds no array: %v", body, err)
	}
	var b httpBatch
	wantT, bad := s.parseChecks(items, &b)
	if bad > 0 || wantT != at || !slices.Equal(reqs, b.reqs) {
		t.Fatalf("%q:\nscanBatch: %d %+v\nfastjson:  %d %+v %v", body, at, reqs, wantT, b.reqs, b.errs)
	}
	return true
}

func TestScanBatch(t *testing.T) {
	clock := &Server{cfg: Config{TestClock: true}}
	real := &Server{}
	for _, tc := range []struct {
		s    *Server
		body string
		want []engine.Request
		at   int64
	}{
		{real, `[{"client_address":"192.0.2.1","sender":"a@b.example","recipient":"c@d.example"}]`,
			[]engine.Request{{ClientAddr: "192.0.2.1", ClientName: "unknown", Sender: "a@b.example", Recipient: "c@d.example"}}, 0},
		{clock, " \r\n\t[ {\"time\" : 1800000000 , \"recipient\":\"c@d.example\",\"client_name\":\"mx.example\",\"client_address\":\"2001:db8::1\",\"sender\":\"\"} ,\n" +
			`{"client_address":"192.0.2.2","recipient":"e@d.example","time":1800000000,"sender":"x@y"}]` + "\n",
			[]engine.Request{{ClientAddr: "2001:db8::1", ClientName: "mx.example", Recipient: "c@d.example"},
				{ClientAddr: "192.0.2.2", ClientName: "unknown", Sender: "x@y", Recipient: "e@d.example"}}, 1800000000},
		// The last of a member given twice, as parseCheck takes it.
		{real, `[{"client_address":"192.0.2.1","recipient":"c@d.example","recipient":"e@d.example"}]`,
			[]engine.Request{{ClientAddr: "192.0.2.1", ClientName: "unknown", Recipient: "e@d.example"}}, 0},
		// Left to fastjson.
		{real, `[{"client_address":"192.0.2.1","recipient":"c@d.example","time":1800000000}]`, nil, 0},
		{clock, `[{"client_address":"192.0.2.1","recipient":"c@d.example","time":1800000000},{"client_address":"192.0.2.1","recipient":"c@d.example"}]`, nil, 0},
		{clock, `[{"client_address":"192.0.2.1","recipient":"c@d.example","time":0}]`, nil, 0},
		{clock, `[{"client_address":"192.0.2.1","recipient":"c@d.example","time":1e9}]`, nil, 0},
		{real, `[{"client_address":"192.0.2.1","recipient":"c\u0040d.example"}]`, nil, 0},
		{real, `[{"client_address":"192.0.2.1","recipient":"c@d.example","helo":"x"}]`, nil, 0},
		{real, `[{"client_address":"192.0.2.1","sender":"a@b.example"}]`, nil, 0},
		{real, `[{"client_address":"","recipient":"c@d.example"}]`, nil, 0},
		{real, `[{"client_address":"192.0.2.1","recipient":null}]`, nil, 0},
		{real, `[{"client_address":"192.0.2.1","recipient":"c@d.example"}] x`, nil, 0},
		{real, `[{"client_address":"192.0.2.1","recipient":"c@d.example"},]`, nil, 0},
		{real, `[]`, nil, 0},
		{real, `{"client_address":"192.0.2.1","recipient":"c@d.example"}`, nil, 0},
	} {
		got, at, ok := tc.s.scanBatch([]byte(tc.body), nil)
		if ok != (tc.want != nil) || (ok && (!slices.Equal(got, tc.want) || at != tc.at)) {
			t.Errorf("scanBatch(%s) = %+v, %d, %v; want %+v, %d", tc.body, got, at, ok, tc.want, tc.at)
		}
		if ok {
			scanAgrees(t, tc.s, []byte(tc.body))
		}
	}
}

func FuzzScanBatch(f *testing.F) {
	f.Add([]byte(`[{"client_address":"192.0.2.1","client_name":"mx.example","sender":"a@b.example","recipient":"c@d.example","time":1800000000}]`), true)
	f.Add([]byte(" [ {\"recipient\" : \"c@d.example\" , \"client_address\":\"2001:db8::1\",\"sender\":\"\"} ,\n{\"client_address\":\"x\",\"recipient\":\"y\"}]\n"), false)
	f.Add([]byte(`[{"client_address":"192.0.2.1","recipient":"c\"d","time":01}]`), true)
	f.Fuzz(func(t *testing.T, body []byte, testClock bool) {
		scanAgrees(t, &Server{cfg: Config{TestClock: testClock}}, body)
	})
}
