package server

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A client that trickles a request, each piece well within the read
// timeout, is cut off once the request as a whole has taken longer than
// the timeout: the deadline belongs to the request, not to each read. The
// trickle is bounded (3 s) and the check allows five times the timeout.
func TestTrickledRequestTimesOut(t *testing.T) {
	const timeout = 300 * time.Millisecond
	for _, proto := range []string{"policy", "line"} {
		t.Run(proto, func(t *testing.T) {
			ts := startServer(t, func(c *Config) { c.ReadTimeout = timeout })
			before := stateOf(ts.st)
			c := ts.dial(proto)
			piece := "x"
			if proto == "policy" {
				piece = "client_name=trickle.example\n"
			}
			start := time.Now()
			closed := false
			for time.Since(start) < 3*time.Second {
				if _, err := io.WriteString(c, piece); err != nil {
					closed = true
					break
				}
				time.Sleep(timeout / 6)
			}
			if !closed {
				// Writes may still land in the socket buffer after the
				// server closed; a read tells.
				c.SetReadDeadline(time.Now().Add(timeout))
				_, err := c.Read(make([]byte, 64))
				closed = err == io.EOF || isReset(err)
			}
			if took := time.Since(start); !closed || took > 5*timeout+time.Second {
				t.Fatalf("trickling client still served after %v (read timeout %v)", took, timeout)
			}
			if !strings.Contains(ts.logs.String(), "client too slow") {
				t.Error("no warning for the trickling client")
			}
			if after := stateOf(ts.st); after != before {
				t.Errorf("state changed: %s -> %s", before, after)
			}
		})
	}
}

func isReset(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "reset by peer") || strings.Contains(err.Error(), "broken pipe"))
}

// The other side of the request deadline: a client whose requests each
// arrive in pieces, but whole within the timeout, is served for as long
// as it keeps going, far past one timeout.
func TestSlowButSteadyClientIsServed(t *testing.T) {
	const timeout = 500 * time.Millisecond
	ts := startServer(t, func(c *Config) { c.ReadTimeout = timeout })
	c := ts.dial("policy")
	r := bufio.NewReader(c)
	start := time.Now()
	for i := range 12 {
		req := policy("192.0.2.10", "steady@x.example", "r@example.test")
		io.WriteString(c, req[:len(req)/2])
		time.Sleep(timeout / 5)
		io.WriteString(c, req[len(req)/2:])
		if got := readReplies(t, r, 1)[0]; !strings.HasPrefix(got, "action=") {
			t.Fatalf("request %d after %v: %q", i, time.Since(start), got)
		}
	}
	if took := time.Since(start); took < 2*timeout {
		t.Fatalf("the test ran in %v, not longer than the timeout it is about", took)
	}
}

// Connections accepted just as Shutdown begins get the grace deadline from
// their own read loop, so Shutdown does not wait out its context for them.
func TestShutdownWhileAccepting(t *testing.T) {
	for round := range 5 {
		ts := startServer(t, func(c *Config) { c.HTTPListen = ""; c.LineListen = "" })
		addr := ts.srv.Addr("policy").String()
		var stop atomic.Bool
		var wg sync.WaitGroup
		var mu sync.Mutex
		var conns []net.Conn
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 10000 && !stop.Load(); i++ {
					c, err := net.Dial("tcp", addr)
					if err != nil {
						return
					}
					mu.Lock()
					conns = append(conns, c)
					mu.Unlock()
				}
			}()
		}
		// Shut down with the dialers going: once a few connections are in.
		waitFor(t, "the dialers to connect", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(conns) >= 16
		})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		start := time.Now()
		err := ts.srv.Shutdown(ctx)
		cancel()
		stop.Store(true)
		wg.Wait()
		for _, c := range conns {
			c.Close()
		}
		if err != nil {
			t.Fatalf("round %d: shutdown took %v: %v", round, time.Since(start), err)
		}
	}
}

// A shutdown whose deadline has passed before it begins (a drain delay
// that took the whole shutdown timeout) closes idle connections, a
// policy client's and an HTTP keep-alive, in their grace, and reports no
// error: there was nothing busy to cut. With none open it says nothing of
// connections either (20 rounds: the wait for them raced the deadline).
func TestShutdownPastItsDeadline(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.LineListen = "" })
	idle, err := net.Dial("tcp", ts.srv.Addr("policy").String())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	r := bufio.NewReader(idle)
	ts.ask(idle, r, policy("192.0.2.10", "a@x.example", "r@example.test"))
	keep, err := net.Dial("tcp", ts.srv.Addr("http").String())
	if err != nil {
		t.Fatal(err)
	}
	defer keep.Close()
	io.WriteString(keep, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(keep), nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := ts.srv.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown past its deadline with idle connections: %v", err)
	}
	idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := idle.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Errorf("the idle policy connection is still open (%d, %v)", n, err)
	}

	for round := range 20 {
		ts := startServer(t, func(c *Config) { c.HTTPListen = ""; c.LineListen = "" })
		if err := ts.srv.Shutdown(ctx); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
	}
}

// Shutdown waits for connections handed over with ServeConn, and refuses
// new ones once it has begun.
func TestShutdownWaitsForServeConn(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.HTTPListen = ""; c.LineListen = ""; c.ReadTimeout = 200 * time.Millisecond })
	a, b := net.Pipe()
	defer b.Close()
	done := make(chan error, 1)
	go func() { done <- ts.srv.ServeConn(a, "policy") }()
	req := policy("192.0.2.10", "a@x.example", "r@example.test")
	go io.Copy(io.Discard, b)
	// A pipe's write returns once the other end has read it all: the
	// handshake that ServeConn is serving, with a request begun.
	if _, err := io.WriteString(b, req[:200]); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ts.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	// The connection leaves the server's set as it stops being served,
	// before it lets Shutdown go.
	ts.srv.connMu.Lock()
	left := len(ts.srv.conns)
	ts.srv.connMu.Unlock()
	if left != 0 {
		t.Errorf("Shutdown returned while %d connection(s) were still being served", left)
	}
	if err := <-done; err != nil {
		t.Errorf("ServeConn: %v", err)
	}
	c, d := net.Pipe()
	defer c.Close()
	defer d.Close()
	if err := ts.srv.ServeConn(c, "policy"); err == nil || !strings.Contains(err.Error(), "shutting down") {
		t.Errorf("ServeConn after Shutdown: %v", err)
	}
}

// Limits left at zero take their defaults one by one.
func TestPartialLimits(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.Limits = Limits{RequestBytes: 32 << 10} })
	c := ts.dial("policy")
	if got := ts.ask(c, bufio.NewReader(c), policy("192.0.2.10", "a@x.example", "r@example.test")); !strings.HasPrefix(got, "action=DEFER_IF_PERMIT") {
		t.Errorf("with only RequestBytes set: %q", got)
	}
}

// JSON errors name the member that was wrong, and a broken check does not
// make the good ones of its batch fail.
func TestHTTPErrorFields(t *testing.T) {
	ts := startServer(t, nil)
	type apiError struct{ Error, Field string }
	one := func(path, body string) apiError {
		t.Helper()
		code, got := ts.http("POST", path, body, "")
		var e apiError
		if code != 400 || json.Unmarshal([]byte(got), &e) != nil {
			t.Fatalf("POST %s %s: %d %s", path, body, code, got)
		}
		return e
	}
	if e := one("/v1/whitelist", `{"kind":5,"value":"x"}`); e.Field != "kind" {
		t.Errorf("kind of the wrong type: %+v", e)
	}
	if e := one("/v1/whitelist", `{"kind":"sender","valeu":"x"}`); e.Field != "valeu" {
		t.Errorf("unknown member: %+v", e)
	}
	if e := one("/v1/check", `[1]`); strings.HasPrefix(e.Error, ":") || e.Error == "" {
		t.Errorf("not an object: %+v", e)
	}

	body := `[{"client_address":"192.0.2.1","time":1800000000},` +
		`{"client_address":"192.0.2.2","recipient":"r@example.test","time":1800000000}]`
	code, got := ts.http("POST", "/v1/check/batch", body, "")
	var answers []map[string]any
	if code != 200 || json.Unmarshal([]byte(got), &answers) != nil || len(answers) != 2 {
		t.Fatalf("batch: %d %s", code, got)
	}
	if answers[0]["field"] != "recipient" || answers[1]["verdict"] != "defer" {
		t.Errorf("batch with a broken first check: %s", got)
	}
}
