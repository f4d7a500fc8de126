package main

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// all stands for the whole input's length.
const all = -1

func kindsOf(rs *replyState) map[string]uint64 {
	m := map[string]uint64{}
	if o := rs.kinds.into(m); o > 0 {
		m["other"] = o
	}
	return m
}

func TestParsePolicyReply(t *testing.T) {
	f := func(in string, wantN int, wantKind string, wantErr bool) {
		t.Helper()
		var rs replyState
		if wantN == all {
			wantN = len(in)
		}
		n, err := parsePolicyReply([]byte(in), &rs)
		if n != wantN || (err != nil) != wantErr {
			t.Fatalf("parsePolicyReply(%q) = %d, %v; want %d, error %v", in, n, err, wantN, wantErr)
		}
		if err != nil && !errors.Is(err, errGarbage) {
			t.Fatalf("parsePolicyReply(%q): error %v does not wrap errGarbage", in, err)
		}
		if got := kindsOf(&rs); wantKind != "" && got[wantKind] != 1 {
			t.Fatalf("parsePolicyReply(%q) counted %v; want %s once", in, got, wantKind)
		}
	}
	// greyhold's three answers, as server/reply.go writes them.
	f("action=DEFER_IF_PERMIT 4.7.1 Greylisted, please retry in 4m59s\n\n", all, "DEFER_IF_PERMIT", false)
	f("action=DUNNO\n\n", all, "DUNNO", false)
	f("action=PREPEND X-Greylist: delayed 312 seconds by greyhold-dev at mx.test; Mon, 23 Nov 2026 10:00:00 +0000\n\n", all, "PREPEND", false)
	// --greylist-action=450: a code, not a word.
	f("action=450 4.7.1 Greylisted\n\n", all, "450", false)
	// Only the first reply of a pipelined read is taken.
	f("action=DUNNO\n\naction=DUNNO\n\n", 14, "DUNNO", false)
	// Not yet complete: wait for more.
	f("action=DUNNO\n", 0, "", false)
	f("action=DEFER_IF_PERMIT 4.7.1 Greyl", 0, "", false)
	// Postfix ignores attributes after the action; so do we.
	f("action=DUNNO\nfoo=bar\n\n", all, "DUNNO", false)
	// Garbage with a visible end keeps the stream in step.
	f("hello\n\n", all, "", true)
	f("action=\n\n", all, "", true)
	// A reply that never ends is garbage and loses the stream.
	f(strings.Repeat("x", maxReply+1), 0, "", true)
}

func TestParseLineReply(t *testing.T) {
	f := func(in string, wantN int, wantKind string, wantErr bool) {
		t.Helper()
		var rs replyState
		if wantN == all {
			wantN = len(in)
		}
		n, err := parseLineReply([]byte(in), &rs)
		if n != wantN || (err != nil) != wantErr {
			t.Fatalf("parseLineReply(%q) = %d, %v; want %d, error %v", in, n, err, wantN, wantErr)
		}
		if got := kindsOf(&rs); wantKind != "" && got[wantKind] != 1 {
			t.Fatalf("parseLineReply(%q) counted %v; want %s once", in, got, wantKind)
		}
	}
	// The four replies README.md documents.
	f("DEFER 299 4.7.1 Greylisted, please retry in 4m59s\n", all, "DEFER", false)
	f("PASS\n", all, "PASS", false)
	f("PREPEND X-Greylist: delayed 300 seconds by greyhold-dev at mx; date\n", all, "PREPEND", false)
	f("ERROR want CLIENT_IP SENDER RECIPIENT [CLIENT_NAME]\n", all, "ERROR", false)
	f("PASS\nPASS\n", 5, "PASS", false)
	f("PAS", 0, "", false)
	f("\n", 1, "", true)
	f("<html>\n", all, "", true)
	f(strings.Repeat("P", maxReply+1), 0, "", true)
}

func httpResponse(status string, body string, extra ...string) string {
	h := "HTTP/1.1 " + status + "\r\nServer: greyhold\r\nDate: Mon, 23 Nov 2026 10:00:00 GMT\r\nContent-Type: application/json\r\n"
	for _, e := range extra {
		h += e + "\r\n"
	}
	return h + fmt.Sprintf("Content-Length: %d\r\n\r\n", len(body)) + body
}

func TestParseHTTPReply(t *testing.T) {
	// As greyhold's httpBatch writes it (server/http.go).
	body := `[{"verdict":"defer","reason":"new","seconds_left":300,"action":"DEFER_IF_PERMIT","text":"4.7.1 Greylisted, please retry in 5m"},` +
		`{"verdict":"pass","reason":"known"},` +
		`{"verdict":"pass","reason":"passed","delayed":312,"header":"X-Greylist: delayed 312 seconds by greyhold-dev at mx; \"q\" \\ x"},` +
		`{"error":"client_address: client address is not an IP address: \"x\"","field":"client_address"}]` + "\n"
	resp := httpResponse("200 OK", body)
	var rs replyState
	n, err := parseHTTPReply([]byte(resp+"HTTP/1.1 200"), &rs)
	if err != nil || n != len(resp) || rs.items != 4 {
		t.Fatalf("parseHTTPReply = %d, %v, %d items; want %d, nil, 4", n, err, rs.items, len(resp))
	}
	want := map[string]uint64{"defer/new": 1, "pass/known": 1, "pass/passed": 1, "error": 1}
	if got := kindsOf(&rs); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("kinds %v; want %v", got, want)
	}

	// Every cut short of the end is "not yet".
	for i := range len(resp) {
		var rs replyState
		if n, err := parseHTTPReply([]byte(resp[:i]), &rs); n != 0 || err != nil {
			t.Fatalf("cut at %d: %d, %v; want 0, nil", i, n, err)
		}
	}

	f := func(name, in string, wantN int, wantErr string) {
		t.Helper()
		var rs replyState
		n, err := parseHTTPReply([]byte(in), &rs)
		if n != wantN || err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("%s: %d, %v; want %d and an error with %q", name, n, err, wantN, wantErr)
		}
	}
	unauth := httpResponse("401 Unauthorized", `{"error": "this endpoint needs Authorization: Bearer <admin token>"}`)
	f("401", unauth, len(unauth), "HTTP 401")
	f("chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n[]\r\n", 0, "chunked")
	f("no length", "HTTP/1.1 200 OK\r\nServer: x\r\n\r\n[]", 0, "Content-Length")
	f("not http", "SSH-2.0-OpenSSH_9.6\r\n\r\n", 0, "not an HTTP response")
	notArray := httpResponse("200 OK", `{"verdict":"pass"}`)
	f("object", notArray, len(notArray), "not a JSON array")
	noVerdict := httpResponse("200 OK", `[{"reason":"known"}]`)
	f("no verdict", noVerdict, len(noVerdict), "without verdict")

	var closing replyState
	cl := httpResponse("200 OK", "[]", "Connection: close")
	if n, err := parseHTTPReply([]byte(cl), &closing); n != len(cl) || err != nil || !closing.closing || closing.items != 0 {
		t.Fatalf("Connection: close: %d, %v, closing %v", n, err, closing.closing)
	}
}

func TestKindsOverflow(t *testing.T) {
	var k kinds
	for i := range maxKinds + 3 {
		k.add([]byte(fmt.Sprintf("K%d", i)))
	}
	k.add([]byte("K0"))
	k.add([]byte(strings.Repeat("L", kindLen+1)))
	m := map[string]uint64{}
	if other := k.into(m); other != 4 || len(m) != maxKinds || m["K0"] != 2 {
		t.Fatalf("other %d, %d kinds, K0=%d; want 4, %d, 2", other, len(m), m["K0"], maxKinds)
	}
}
