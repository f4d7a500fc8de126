package server

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	rtmetrics "runtime/metrics"
	"strings"
	"sync"
	"testing"
	"time"
)

const testToken = "s3cret-token"

// rawRequest opens a connection and writes an HTTP request's head and
// the first bytes of its body; the rest of the body is never sent.
func (ts *testServer) rawRequest(method, path, token string, contentLength int, extra string, first []byte) net.Conn {
	ts.t.Helper()
	c, err := net.Dial("tcp", ts.srv.Addr("http").String())
	if err != nil {
		ts.t.Fatal(err)
	}
	ts.t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	head := fmt.Sprintf("%s %s HTTP/1.1\r\nHost: greyhold\r\nContent-Type: application/json\r\n", method, path)
	if token != "" {
		head += "Authorization: Bearer " + token + "\r\n"
	}
	if contentLength >= 0 {
		head += fmt.Sprintf("Content-Length: %d\r\n", contentLength)
	}
	head += extra + "\r\n"
	if _, err := c.Write(append([]byte(head), first...)); err != nil {
		ts.t.Fatal(err)
	}
	return c
}

// answer reads one response.
func answer(t testing.TB, c net.Conn) (int, string, http.Header) {
	t.Helper()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b)), resp.Header
}

// Each answer a request body can get, over a real socket: refused on its
// headers before the body is sent (401 for a wrong token, 413 for a
// Content-Length over the limit), 413 for a chunked body once it passes
// the limit, 503 when the bodies in flight fill the budget, and the body
// read and answered when it fits (issue 9, defect 4).
func TestHTTPBodyAnswers(t *testing.T) {
	ts := startServer(t, func(c *Config) {
		c.AdminToken = testToken
		c.HTTPMaxBody = 1 << 20
		c.HTTPBodyBudget = 1 << 20
	})
	check := []byte(`{"client_address":"192.0.2.10","sender":"a@x.example","recipient":"r@example.test"}`)

	// The head and one byte: the answer comes without the other 8 MiB.
	c := ts.rawRequest("POST", "/v1/check", "wrong", 8<<20, "", []byte("{"))
	if code, body, _ := answer(t, c); code != 401 || body != `{"error":"this endpoint needs Authorization: Bearer <admin token>"}` {
		t.Errorf("wrong token: %d %s", code, body)
	}
	c = ts.rawRequest("POST", "/v1/check/batch", "", 8<<20, "", []byte("["))
	if code, _, _ := answer(t, c); code != 401 {
		t.Errorf("no token: %d", code)
	}
	c = ts.rawRequest("POST", "/v1/check/batch", testToken, 8<<20, "", []byte("["))
	if code, body, _ := answer(t, c); code != 413 || body != `{"error":"body larger than the limit of 1048576 bytes (--http-max-body)"}` {
		t.Errorf("too large: %d %s", code, body)
	}

	// Chunked: refused once the chunks pass the limit.
	c = ts.rawRequest("POST", "/v1/check/batch", testToken, -1, "Transfer-Encoding: chunked\r\n", nil)
	go func() {
		chunk := bytes.Repeat([]byte(" "), 64<<10)
		for range 20 {
			if _, err := fmt.Fprintf(c, "%x\r\n%s\r\n", len(chunk), chunk); err != nil {
				return
			}
		}
	}()
	if code, body, _ := answer(t, c); code != 413 || !strings.Contains(body, "larger than the limit") {
		t.Errorf("chunked, too large: %d %s", code, body)
	}

	// The budget: one body of a megabyte in flight holds all of it.
	// (fasthttp reads 8 KiB ahead before the handler runs.)
	start := append([]byte("["), bytes.Repeat([]byte(" "), 16<<10)...)
	hold := ts.rawRequest("POST", "/v1/check/batch", testToken, 1<<20, "", start)
	waitFor(t, "the first body to hold the budget", func() bool { return ts.srv.bodies.used.Load() == 1<<20 })
	c = ts.rawRequest("POST", "/v1/check", testToken, len(check), "", check)
	if code, body, h := answer(t, c); code != 503 || h.Get("Retry-After") != "1" || !strings.Contains(body, "too many request bodies in flight") {
		t.Errorf("over the budget: %d %s %v", code, body, h)
	}
	// Once the first body is in, the budget is free again.
	rest := append(bytes.Repeat([]byte(" "), 1<<20-len(start)-1), ']')
	if _, err := hold.Write(rest); err != nil {
		t.Fatal(err)
	}
	if code, body, _ := answer(t, hold); code != 200 || body != "[]" {
		t.Errorf("the body that held the budget: %d %.100s", code, body)
	}
	waitFor(t, "the budget to be given back", func() bool { return ts.srv.bodies.used.Load() == 0 })
	c = ts.rawRequest("POST", "/v1/check", testToken, len(check), "", check)
	if code, body, _ := answer(t, c); code != 200 || !strings.Contains(body, `"verdict":"defer"`) {
		t.Errorf("after the budget was given back: %d %s", code, body)
	}
	// A chunked body that fits is read whole.
	c = ts.rawRequest("POST", "/v1/check", testToken, -1, "Transfer-Encoding: chunked\r\n", nil)
	fmt.Fprintf(c, "%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n", 10, check[:10], len(check)-10, check[10:])
	if code, body, _ := answer(t, c); code != 200 || !strings.Contains(body, `"reason":"early-retry"`) {
		t.Errorf("chunked that fits: %d %s", code, body)
	}

	_, m := ts.http("GET", "/metrics", "", "")
	for _, want := range []string{`greyhold_limit_hits_total{limit="http_body_bytes"} 2`, `greyhold_limit_hits_total{limit="http_body_budget"} 1`, "greyhold_http_body_bytes 0"} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// waitFor polls cond, for state another goroutine reaches, up to 10 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	if !waitUntil(cond) {
		t.Fatalf("timed out waiting for %s", what)
	}
}

// waitUntil polls cond up to 10 s and reports whether it came true.
func waitUntil(cond func() bool) bool {
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

// heapAllocs is the bytes the process has allocated on the heap so far,
// which only grows: what an attack makes the server allocate is the rise
// over the attack, whether or not the collector has run in between, and
// the heap can never have grown by more.
func heapAllocs() uint64 {
	s := []rtmetrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	rtmetrics.Read(s)
	return s[0].Value.Uint64()
}

// The attack from issue 9 (defect 4), over real sockets: 200 connections
// each announce an 8 MiB body with a wrong token, send 16 KiB of it and
// stall. Every one is answered 401 from its headers, and the whole attack
// makes the process allocate under 32 MiB, where reading the bodies first
// allocated 200 x 8 MiB = 1.6 GiB. Then the same with the right token:
// the budget lets two bodies in and answers the rest 503 at once, and the
// allocations stay under the budget plus the same margin.
func TestHTTPStalledBodies(t *testing.T) {
	const (
		conns  = 200
		body   = 8 << 20
		margin = 32 << 20
	)
	ts := startServer(t, func(c *Config) {
		c.AdminToken = testToken
		c.HTTPBodyBudget = 2 * body
	})
	first := bytes.Repeat([]byte("["), 16<<10)
	// attack sends the stalled bodies and returns the answers by status,
	// once all have come or reading stays the server's answer to the
	// bodies still held (0, for as many as the budget takes: waited for
	// as the budget filling up).
	attack := func(token string, held int) (codes map[int]int, allocated uint64) {
		before := heapAllocs()
		var mu sync.Mutex
		codes = map[int]int{}
		answered := 0
		var wg sync.WaitGroup
		cs := make([]net.Conn, conns)
		for i := range cs {
			cs[i] = ts.rawRequest("POST", "/v1/check/batch", token, body, "", first)
		}
		for _, c := range cs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				code := 0 // closed by the test while the server waited for the body
				if err == nil {
					code = resp.StatusCode
					resp.Body.Close()
				}
				mu.Lock()
				codes[code]++
				answered++
				mu.Unlock()
			}()
		}
		if !waitUntil(func() bool {
			mu.Lock()
			defer mu.Unlock()
			return answered == conns-held && ts.srv.bodies.used.Load() == int64(held)*body
		}) {
			t.Errorf("token %q: the answers did not come within 10 s", token)
		}
		allocated = heapAllocs() - before
		for _, c := range cs {
			c.Close()
		}
		wg.Wait()
		return codes, allocated
	}

	codes, allocated := attack("wrong", 0)
	t.Logf("wrong token: answers %v, %d KiB allocated", codes, allocated>>10)
	if codes[401] != conns {
		t.Errorf("answers to %d stalled bodies with a wrong token: %v, want all 401", conns, codes)
	}
	if allocated > margin {
		t.Errorf("%d stalled bodies with a wrong token made the process allocate %d MiB, want under %d MiB", conns, allocated>>20, margin>>20)
	}

	codes, allocated = attack(testToken, 2)
	t.Logf("right token: answers %v, %d KiB allocated", codes, allocated>>10)
	if codes[503] != conns-2 || codes[0] != 2 {
		t.Errorf("answers to %d stalled bodies with the token and a budget of two: %v, want 2 still reading and the rest 503", conns, codes)
	}
	if allocated > 2*body+margin {
		t.Errorf("bodies within a budget of %d MiB made the process allocate %d MiB", 2*body>>20, allocated>>20)
	}
	waitFor(t, "the stalled bodies' budget to be given back", func() bool { return ts.srv.bodies.used.Load() == 0 })
}
