package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

func (d *daemon) rssKiB(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.cmd.Process.Pid))
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

func (d *daemon) triplets(t *testing.T) float64 {
	t.Helper()
	var st struct {
		Triplets map[string]float64 `json:"triplets"`
	}
	d.stats(t, &st)
	return st.Triplets["total"]
}

// stats decodes the daemon's /v1/stats into v.
func (d *daemon) stats(t *testing.T, v any) {
	t.Helper()
	resp, err := http.Get("http://" + d.httpAd + "/v1/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

const goodRequest = "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\nclient_address=192.0.2.10\n" +
	"client_name=mail.sender.example\nsender=alice@sender.example\nrecipient=rcpt1@example.test\ninstance=1.2.3\n\n"

// ask sends a good request on a new connection and times the answer.
func (d *daemon) ask(t *testing.T) (string, time.Duration) {
	t.Helper()
	start := time.Now()
	c, err := net.DialTimeout("tcp", d.policy, 5*time.Second)
	if err != nil {
		t.Fatalf("connect after the hostile input: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, goodRequest)
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("answer after the hostile input: %v", err)
	}
	return strings.TrimSpace(line), time.Since(start)
}

// TestHostileInput throws at a real greyhold process, over loopback, what
// a broken or hostile client might send, then checks that it still answers
// a normal request correctly and at once, that its memory stayed bounded,
// and that none of it changed greylisting state.
func TestHostileInput(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server process and opens 10,000 connections")
	}
	d := startDaemon(t, "--read-timeout", "2s", "--max-connections", "20000")
	rss0 := d.rssKiB(t)
	hostile := func(name string, send func(t *testing.T, c net.Conn)) {
		t.Run(name, func(t *testing.T) {
			c, err := net.Dial("tcp", d.policy)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(30 * time.Second))
			send(t, c)
		})
	}
	// untilClosed reads what the server sends until it closes the
	// connection, which it must do before the deadline.
	untilClosed := func(t *testing.T, c net.Conn) string {
		t.Helper()
		var got bytes.Buffer
		_, err := io.Copy(&got, c)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Errorf("the server neither answered nor closed the connection in 30 s (sent %q)", got.String())
		}
		return got.String() // a reset after the answer, for input left unread, is a close too
	}
	const dunno = "action=DUNNO\n\n"
	random := make([]byte, 1<<20)
	rand.Read(random)
	hostile("random bytes", func(t *testing.T, c net.Conn) {
		go c.Write(random)
		if got := untilClosed(t, c); got != dunno {
			t.Errorf("random bytes answered %q, want DUNNO and a close", got)
		}
	})
	hostile("100 MiB line", func(t *testing.T, c net.Conn) {
		chunk := bytes.Repeat([]byte("x"), 1<<20)
		c.Write([]byte("sender="))
		for range 100 {
			if _, err := c.Write(chunk); err != nil {
				return // cut off at the line limit, as it should be
			}
		}
		t.Error("the server read a 100 MiB line to its end")
	})
	hostile("100,000 attributes", func(t *testing.T, c net.Conn) {
		go c.Write(bytes.Repeat([]byte("a=b\n"), 100000))
		if got := untilClosed(t, c); got != dunno {
			t.Errorf("100,000 attributes answered %q, want DUNNO and a close", got)
		}
	})
	hostile("NUL bytes", func(t *testing.T, c net.Conn) {
		io.WriteString(c, strings.Replace(goodRequest, "alice", "al\x00ice", 1))
		if got := untilClosed(t, c); got != dunno {
			t.Errorf("a sender with a NUL byte answered %q, want DUNNO and a close", got)
		}
	})
	hostile("invalid UTF-8", func(t *testing.T, c net.Conn) {
		io.WriteString(c, strings.Replace(goodRequest, "rcpt1@example.test", "r\xff\xfe@exa\xc3mple.test", 1))
		r := bufio.NewReader(c)
		if line, _ := r.ReadString('\n'); !strings.HasPrefix(line, "action=DEFER_IF_PERMIT") {
			t.Errorf("a request with invalid UTF-8 answered %q, want greylisting as any other", line)
		}
	})
	hostile("one byte per write with pauses", func(t *testing.T, c net.Conn) {
		req := strings.Replace(goodRequest, "alice", "slow", 1)
		for i := 0; i < len(req); i++ {
			c.Write([]byte{req[i]})
			time.Sleep(time.Millisecond)
		}
		line, _ := bufio.NewReader(c).ReadString('\n')
		if !strings.HasPrefix(line, "action=DEFER_IF_PERMIT") {
			t.Errorf("split request answered %q", line)
		}
	})
	for i := range 100 {
		hostile(fmt.Sprintf("close mid-request %d", i), func(t *testing.T, c net.Conn) {
			io.WriteString(c, goodRequest[:i*(len(goodRequest)-2)/100])
			c.(*net.TCPConn).CloseWrite()
			if got := untilClosed(t, c); got != "" {
				t.Errorf("a request cut by the client's close answered %q, want nothing", got)
			}
		})
	}

	// Only the two well-formed requests among them (the slow one and the
	// one with invalid UTF-8, which is still a request) made state.
	if n := d.triplets(t); n != 2 {
		t.Errorf("%v triplets after the hostile input, want 2", n)
	}

	// 10,000 idle connections, held while a normal request is answered.
	idle := make([]net.Conn, 0, 10000)
	for len(idle) < 10000 {
		c, err := net.Dial("tcp", d.policy)
		if err != nil {
			t.Fatalf("idle connection %d: %v", len(idle), err)
		}
		idle = append(idle, c)
	}
	got, took := d.ask(t)
	if !strings.HasPrefix(got, "action=DEFER_IF_PERMIT 4.7.1 Greylisted") {
		t.Errorf("normal request among 10,000 idle connections answered %q", got)
	}
	if took > time.Second {
		t.Errorf("normal request took %v among 10,000 idle connections", took)
	}
	rss1 := d.rssKiB(t)
	for _, c := range idle {
		c.Close()
	}
	if n := d.triplets(t); n != 3 {
		t.Errorf("%v triplets after the normal request, want 3", n)
	}
	t.Logf("RSS %d KiB at start, %d KiB with 10,000 idle connections after the hostile input", rss0, rss1)
	// 10,000 connections cost a goroutine and a 2 KiB buffer each; 400 MiB
	// would mean something held a hostile input whole.
	if rss1-rss0 > 400<<10 {
		t.Errorf("RSS grew from %d to %d KiB", rss0, rss1)
	}
	d.stop(t, 30*time.Second)
}
