package server

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/greyhold/greyhold/engine"
	"github.com/greyhold/greyhold/internal/testutil"
	"github.com/greyhold/greyhold/store"
	"github.com/greyhold/greyhold/wal"
	"github.com/greyhold/greyhold/whitelist"
)

func TestMain(m *testing.M) {
	// fasthttp keeps a process-wide date updater, and its worker pool leaves
	// a cleaner asleep for up to ten seconds after Shutdown.
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"))
}

const t0 = testutil.T0

type testServer struct {
	t     testing.TB
	srv   *Server
	st    *store.Store
	clock *engine.ManualClock
	logs  *testutil.SyncBuffer
	reg   *prometheus.Registry
}

func startServer(t testing.TB, mut func(*Config)) *testServer {
	t.Helper()
	return startServerWith(t, nil, mut)
}

// startServerWith is startServer with the store's options changed by
// storeMut first.
func startServerWith(t testing.TB, storeMut func(*store.Options), mut func(*Config)) *testServer {
	t.Helper()
	return newTestServer(t, storeMut, mut, true)
}

// startServerStopped builds a server on a store of its own and leaves
// Start to the test.
func startServerStopped(t testing.TB, mut func(*Config)) *Server {
	t.Helper()
	return newTestServer(t, nil, mut, false).srv
}

func newTestServer(t testing.TB, storeMut func(*store.Options), mut func(*Config), start bool) *testServer {
	t.Helper()
	ts := &testServer{t: t, clock: engine.NewManualClock(t0), logs: &testutil.SyncBuffer{}, reg: prometheus.NewRegistry()}
	o := store.DefaultOptions()
	o.Clock = ts.clock
	o.Sync = wal.SyncNever
	o.SnapshotInterval = 0
	o.SnapshotLogBytes = 0
	o.NoFinalSnapshot = true
	o.Registerer = ts.reg
	o.Logger = slog.New(slog.NewTextHandler(ts.logs, nil))
	if storeMut != nil {
		storeMut(&o)
	}
	st, err := store.Open(t.TempDir(), o)
	if err != nil {
		t.Fatal(err)
	}
	ts.st = st
	cfg := Config{
		Store:        st,
		PolicyListen: "127.0.0.1:0",
		LineListen:   "127.0.0.1:0",
		HTTPListen:   "127.0.0.1:0",
		Replies:      ReplyOptions{Text: DefaultText, Header: DefaultHeader, Host: "mx.test", Version: "test"},
		Logger:       slog.New(slog.NewTextHandler(ts.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Registry:     ts.reg,
		TestClock:    true,
	}
	if mut != nil {
		mut(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		st.Close()
		t.Fatal(err)
	}
	if start {
		if err := srv.Start(); err != nil {
			st.Close()
			t.Fatal(err)
		}
	}
	ts.srv = srv
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := st.Close(); err != nil {
			t.Errorf("store close: %v", err)
		}
	})
	return ts
}

func (ts *testServer) dial(name string) net.Conn {
	ts.t.Helper()
	c, err := net.Dial("tcp", ts.srv.Addr(name).String())
	if err != nil {
		ts.t.Fatal(err)
	}
	ts.t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return c
}

// policy builds a request with Postfix 3.7's attributes.
func policy(client, sender, rcpt string, extra ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\nclient_address=%s\nclient_name=mail.sender.example\n"+
		"client_port=43496\nreverse_client_name=mail.sender.example\nserver_address=127.0.0.1\nserver_port=25\nhelo_name=mail.sender.example\n"+
		"sender=%s\nrecipient=%s\nrecipient_count=0\nqueue_id=\ninstance=5273.6b03e193.c6c42.0\nsize=0\netrn_domain=\nstress=\n"+
		"sasl_method=\nsasl_username=\nsasl_sender=\nccert_subject=\nccert_issuer=\nccert_fingerprint=\nccert_pubkey_fingerprint=\n"+
		"encryption_protocol=\nencryption_cipher=\nencryption_keysize=0\npolicy_context=\n", client, sender, rcpt)
	for _, e := range extra {
		b.WriteString(e + "\n")
	}
	b.WriteString("\n")
	return b.String()
}

// readReplies reads n policy replies (action=... and an empty line).
func readReplies(t testing.TB, r *bufio.Reader, n int) []string {
	t.Helper()
	var out []string
	for range n {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reply %d: %v", len(out), err)
		}
		blank, err := r.ReadString('\n')
		if err != nil || blank != "\n" {
			t.Fatalf("reply %d not ended by an empty line: %q %v", len(out), blank, err)
		}
		out = append(out, strings.TrimSuffix(line, "\n"))
	}
	return out
}

func (ts *testServer) ask(c net.Conn, r *bufio.Reader, req string) string {
	ts.t.Helper()
	if _, err := io.WriteString(c, req); err != nil {
		ts.t.Fatal(err)
	}
	return readReplies(ts.t, r, 1)[0]
}

func TestPolicyDecisions(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.dial("policy")
	r := bufio.NewReader(c)
	req := policy("192.0.2.10", "alice@sender.example", "rcpt1@example.test")
	want := func(got, want string) {
		t.Helper()
		if got != want {
			t.Errorf("got %q\nwant %q", got, want)
		}
	}
	want(ts.ask(c, r, req), "action=DEFER_IF_PERMIT 4.7.1 Greylisted, please retry in 5m")
	ts.clock.Advance(61 * time.Second)
	want(ts.ask(c, r, req), "action=DEFER_IF_PERMIT 4.7.1 Greylisted, please retry in 3m59s")
	ts.clock.Advance(239 * time.Second)
	got := ts.ask(c, r, req)
	if !strings.HasPrefix(got, "action=PREPEND X-Greylist: delayed 300 seconds by greyhold-test at mx.test; ") {
		t.Errorf("first pass: %q", got)
	}
	want(ts.ask(c, r, req), "action=DUNNO")
	// Another protocol state is not greylisted.
	want(ts.ask(c, r, strings.Replace(policy("192.0.2.99", "x@y.example", "z@example.test"), "protocol_state=RCPT", "protocol_state=DATA", 1)), "action=DUNNO")
	// The builtin recipient whitelist is off in this server; a request
	// without a recipient is let through with a warning.
	want(ts.ask(c, r, policy("192.0.2.99", "x@y.example", "")), "action=DUNNO")
	if !strings.Contains(ts.logs.String(), "request not greylisted: incomplete") {
		t.Error("no warning for the request without recipient")
	}
	// policy_test_time sets the time with --test-clock.
	at := t0.Unix() + 100000
	want(ts.ask(c, r, policy("198.51.100.1", "a@b.example", "c@example.test", fmt.Sprintf("policy_test_time=%d", at))),
		"action=DEFER_IF_PERMIT 4.7.1 Greylisted, please retry in 5m")
	got = ts.ask(c, r, policy("198.51.100.1", "a@b.example", "c@example.test", fmt.Sprintf("policy_test_time=%d", at+300)))
	if !strings.HasPrefix(got, "action=PREPEND") {
		t.Errorf("with test time after the delay: %q", got)
	}
	// Decisions are logged with the fields postgrey users grep for.
	logs := ts.logs.String()
	for _, s := range []string{"action=greylist reason=new", "action=pass reason=passed delay=300", "client_address=192.0.2.10", "sender=alice@sender.example", "recipient=rcpt1@example.test"} {
		if !strings.Contains(logs, s) {
			t.Errorf("log lacks %q", s)
		}
	}
}

// TestPolicyFixtures replays the requests a real Postfix 3.7.11 sent, one
// by one and then pipelined, and checks each answer.
func TestPolicyFixtures(t *testing.T) {
	raw, err := os.ReadFile("../../shared/testdata/postfix-3.7.11-policy-requests.txt")
	if err != nil {
		t.Skipf("shared test data not beside the repository: %v", err)
	}
	reqs := strings.SplitAfter(string(raw), "\n\n")
	reqs = reqs[:len(reqs)-1]
	if len(reqs) != 9 {
		t.Fatalf("%d requests in the fixture, want 9", len(reqs))
	}
	// All at one moment: alice's first is new, her repeats are early, the
	// BATV-tagged carol is one sender whatever her tag, the /24 neighbour
	// shares alice's triplet, bob and the IPv6 client are new.
	want := []string{"new", "early", "new", "early", "early", "early", "early", "new", "new"}
	check := func(t *testing.T, got []string) {
		for i, g := range got {
			kind := "new"
			if strings.Contains(g, "retry in 5m") {
				kind = "new"
			} else if strings.Contains(g, "DEFER_IF_PERMIT") {
				kind = "early"
			}
			if !strings.HasPrefix(g, "action=DEFER_IF_PERMIT") || kind != want[i] {
				t.Errorf("request %d: %q, want a %s defer", i+1, g, want[i])
			}
		}
	}
	t.Run("one by one", func(t *testing.T) {
		ts := startServer(t, nil)
		c := ts.dial("policy")
		r := bufio.NewReader(c)
		var got []string
		for i, req := range reqs {
			if i > 0 {
				ts.clock.Advance(time.Second)
			}
			got = append(got, ts.ask(c, r, req))
		}
		check(t, got)
	})
	t.Run("pipelined", func(t *testing.T) {
		ts := startServer(t, nil)
		c := ts.dial("policy")
		if _, err := io.WriteString(c, strings.Join(reqs, "")); err != nil {
			t.Fatal(err)
		}
		got := readReplies(t, bufio.NewReader(c), len(reqs))
		for i := range got {
			// Same moment for all: early retries have the full delay left.
			got[i] = strings.Replace(got[i], "retry in 5m", "retry in 5m", 1)
		}
		for i, g := range got {
			if !strings.HasPrefix(g, "action=DEFER_IF_PERMIT 4.7.1 Greylisted, please retry in 5m") {
				t.Errorf("pipelined request %d: %q", i+1, g)
			}
		}
		if f := ts.st.Stats().WAL.Frames; f > 2 {
			t.Errorf("%d log frames for one pipelined read, want one batch", f)
		}
	})
	t.Run("split into single bytes", func(t *testing.T) {
		ts := startServer(t, nil)
		c := ts.dial("policy")
		all := strings.Join(reqs[:2], "")
		for i := 0; i < len(all); i++ {
			if _, err := c.Write([]byte{all[i]}); err != nil {
				t.Fatal(err)
			}
		}
		got := readReplies(t, bufio.NewReader(c), 2)
		if got[0] != "action=DEFER_IF_PERMIT 4.7.1 Greylisted, please retry in 5m" || !strings.HasPrefix(got[1], "action=DEFER_IF_PERMIT") {
			t.Errorf("split request: %q", got)
		}
	})
}

// stateOf summarises what bad input must not change.
func stateOf(st *store.Store) string {
	s := st.Stats()
	return fmt.Sprintf("triplets=%d clients=%d rules=%d frames=%d", s.Engine.Triplets, s.Engine.Clients, s.Engine.Rules, s.WAL.Frames)
}

// TestPolicyBadInput: each kind of bad input is answered DUNNO where the
// protocol still allows it, the connection is closed, the peer is logged,
// nothing changes, and the server goes on answering others.
func TestPolicyBadInput(t *testing.T) {
	ts := startServer(t, func(c *Config) {
		c.Limits = Limits{RequestBytes: 4096, Attributes: 40, LineBytes: 512}
	})
	before := stateOf(ts.st)
	cases := map[string]string{
		"random bytes":        "\x8f\x01garbage without equals\n\n",
		"line too long":       "request=smtpd_access_policy\nsender=" + strings.Repeat("a", 600) + "\n",
		"request too large":   strings.Repeat("x_attribute=0123456789012345678901234567890123456789\n", 39) + strings.Repeat("y=", 1) + strings.Repeat("z", 400) + "\n" + strings.Repeat("w=1\n", 300),
		"too many attributes": strings.Repeat("a=b\n", 41) + "\n",
		"nul byte":            strings.Replace(policy("192.0.2.10", "a\x00b@x.example", "r@example.test"), "", "", 1),
		"empty request":       "\n",
		"no equals sign":      "request smtpd_access_policy\n\n",
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			c := ts.dial("policy")
			if _, err := io.WriteString(c, in); err != nil {
				t.Fatal(err)
			}
			rest, err := io.ReadAll(c) // the server answers and closes
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			if string(rest) != "action=DUNNO\n\n" {
				t.Errorf("answer %q, want one DUNNO before the close", rest)
			}
		})
	}
	if after := stateOf(ts.st); after != before {
		t.Errorf("bad input changed state: %s -> %s", before, after)
	}
	if !strings.Contains(ts.logs.String(), "policy request broke the protocol") || !strings.Contains(ts.logs.String(), "peer=127.0.0.1:") {
		t.Error("no warning naming the peer")
	}
	// The server still answers a good request.
	c := ts.dial("policy")
	if got := ts.ask(c, bufio.NewReader(c), policy("192.0.2.10", "a@x.example", "r@example.test")); !strings.HasPrefix(got, "action=DEFER_IF_PERMIT") {
		t.Errorf("after bad input: %q", got)
	}
}

func TestPolicyVanishingAndSlowClients(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.ReadTimeout = 200 * time.Millisecond })
	before := stateOf(ts.st)
	// Clients that vanish mid-request.
	for range 50 {
		c := ts.dial("policy")
		req := policy("192.0.2.10", "a@x.example", "r@example.test")
		io.WriteString(c, req[:len(req)/2])
		c.Close()
	}
	// A slow client: half a request, then nothing. The server closes it
	// after the read timeout without answering or changing anything.
	c := ts.dial("policy")
	req := policy("192.0.2.11", "a@x.example", "r@example.test")
	io.WriteString(c, req[:100])
	start := time.Now()
	rest, _ := io.ReadAll(c)
	if len(rest) != 0 || time.Since(start) > 5*time.Second {
		t.Errorf("slow client got %q after %v", rest, time.Since(start))
	}
	if !strings.Contains(ts.logs.String(), "client too slow") {
		t.Error("no warning for the slow client")
	}
	if after := stateOf(ts.st); after != before {
		t.Errorf("vanishing clients changed state: %s -> %s", before, after)
	}
	c = ts.dial("policy")
	if got := ts.ask(c, bufio.NewReader(c), policy("192.0.2.10", "a@x.example", "r@example.test")); !strings.HasPrefix(got, "action=DEFER_IF_PERMIT") {
		t.Errorf("after: %q", got)
	}
}

// TestPolicyManyConnections holds 5000 connections open at once, each
// asking one question and then another.
func TestPolicyManyConnections(t *testing.T) {
	ts := startServer(t, nil)
	const n = 5000
	conns := make([]net.Conn, n)
	for i := range conns {
		conns[i] = ts.dial("policy")
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := bufio.NewReader(c)
			for round := range 2 {
				req := policy(fmt.Sprintf("10.%d.%d.1", i/256, i%256), "a@x.example", "r@example.test")
				if _, err := io.WriteString(c, req); err != nil {
					errs <- err
					return
				}
				line, err := r.ReadString('\n')
				if err != nil {
					errs <- err
					return
				}
				r.ReadString('\n')
				if !strings.HasPrefix(line, "action=DEFER_IF_PERMIT") {
					errs <- fmt.Errorf("conn %d round %d: %q", i, round, line)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := ts.st.Stats().Engine.Triplets; got != n {
		t.Errorf("%d triplets, want %d", got, n)
	}
}

func TestLineProtocol(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.dial("line")
	r := bufio.NewReader(c)
	send := func(lines ...string) []string {
		t.Helper()
		io.WriteString(c, strings.Join(lines, "\n")+"\n")
		var out []string
		for range lines {
			l, err := r.ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, strings.TrimSuffix(l, "\n"))
		}
		return out
	}
	got := send("192.0.2.10 <alice@sender.example> <rcpt@example.test> mail.sender.example", "192.0.2.20 <> rcpt@example.test", "bogus", "192.0.2.10 a b c d e", "nonsense-ip a@b c@d")
	want := []string{
		"DEFER 300 4.7.1 Greylisted, please retry in 5m",
		"DEFER 300 4.7.1 Greylisted, please retry in 5m",
		"ERROR want CLIENT_IP SENDER RECIPIENT [CLIENT_NAME]",
		"ERROR too many fields: want CLIENT_IP SENDER RECIPIENT [CLIENT_NAME]",
		`ERROR client address is not an IP address: "nonsense-ip"`,
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("line %d: %q, want %q", i, got[i], want[i])
		}
	}
	ts.clock.Advance(300 * time.Second)
	got = send("192.0.2.10 alice@sender.example rcpt@example.test", "192.0.2.10 alice@sender.example rcpt@example.test")
	if !strings.HasPrefix(got[0], "PREPEND X-Greylist: delayed 300 seconds") || got[1] != "PASS" {
		t.Errorf("after the delay: %q", got)
	}
	// Exim's readsocket may end without a newline and half-close.
	c2 := ts.dial("line")
	io.WriteString(c2, "192.0.2.30 x@y.example z@example.test")
	c2.(*net.TCPConn).CloseWrite()
	rest, _ := io.ReadAll(c2)
	if string(rest) != "DEFER 300 4.7.1 Greylisted, please retry in 5m\n" {
		t.Errorf("unterminated last line: %q", rest)
	}
	// A line beyond the limit closes the connection.
	c3 := ts.dial("line")
	io.WriteString(c3, strings.Repeat("x", 9000))
	rest, _ = io.ReadAll(c3)
	if string(rest) != "ERROR line too long\n" {
		t.Errorf("long line: %q", rest)
	}
}

func TestWhitelistFilesAndReload(t *testing.T) {
	dir := t.TempDir()
	path := dir + "/clients"
	os.WriteFile(path, []byte("trusted.example\n"), 0o644)
	load := func() (*whitelist.Set, error) {
		return whitelist.LoadFiles([]string{path}, []string{whitelist.Builtin})
	}
	wl, err := load()
	if err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, func(c *Config) { c.Whitelist = wl; c.WhitelistLoad = load })
	c := ts.dial("policy")
	r := bufio.NewReader(c)
	req := strings.Replace(policy("192.0.2.10", "a@x.example", "r@example.test"), "client_name=mail.sender.example", "client_name=mx1.trusted.example", 1)
	if got := ts.ask(c, r, req); got != "action=DUNNO" {
		t.Errorf("whitelisted client: %q", got)
	}
	if got := ts.ask(c, r, policy("192.0.2.10", "a@x.example", "postmaster@example.test")); got != "action=DUNNO" {
		t.Errorf("postmaster@: %q", got)
	}
	os.WriteFile(path, []byte("other.example\n"), 0o644)
	if _, err := ts.srv.ReloadWhitelist(); err != nil {
		t.Fatal(err)
	}
	if got := ts.ask(c, r, req); !strings.HasPrefix(got, "action=DEFER_IF_PERMIT") {
		t.Errorf("after reload: %q", got)
	}
}

func TestShutdownAnswersInFlight(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.dial("policy")
	r := bufio.NewReader(c)
	req := policy("192.0.2.10", "a@x.example", "r@example.test")
	// One answered request first, so the connection is surely accepted.
	ts.ask(c, r, policy("192.0.2.99", "a@x.example", "r@example.test"))
	io.WriteString(c, req[:200])
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- ts.srv.Shutdown(ctx)
	}()
	// The rest of the request arrives during the shutdown: it is answered.
	io.WriteString(c, req[200:])
	got := readReplies(t, r, 1)
	if !strings.HasPrefix(got[0], "action=DEFER_IF_PERMIT") {
		t.Errorf("in-flight request: %q", got)
	}
	if err := <-done; err != nil {
		t.Error(err)
	}
	if _, err := net.Dial("tcp", ts.srv.Addr("policy").String()); err == nil {
		t.Error("still accepting after shutdown")
	}
}

func TestStartRefusals(t *testing.T) {
	for name, mut := range map[string]func(*Config){
		"http beyond loopback without token": func(c *Config) { c.TestClock = false; c.HTTPListen = "0.0.0.0:0" },
		"test clock beyond loopback":         func(c *Config) { c.PolicyListen = "0.0.0.0:0" },
		"bad action":                         func(c *Config) { c.Replies.Action = "550" },
		"bad template":                       func(c *Config) { c.Replies.Text = "retry in %q" },
	} {
		t.Run(name, func(t *testing.T) {
			o := store.DefaultOptions()
			o.Clock = engine.NewManualClock(t0)
			o.NoFinalSnapshot = true
			st, err := store.Open(t.TempDir(), o)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			cfg := Config{Store: st, PolicyListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0", TestClock: true, Registry: prometheus.NewRegistry()}
			mut(&cfg)
			srv, err := New(cfg)
			if err == nil {
				err = srv.Start()
				if err == nil {
					srv.Shutdown(context.Background())
				}
			}
			if err == nil {
				t.Error("accepted")
			}
		})
	}
}

// TestPipelinedTestTime: in a pipelined read, a request without
// policy_test_time is decided at the clock's time, not at the time the
// request before it carried (bench/load found it inheriting it).
func TestPipelinedTestTime(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.dial("policy")
	r := bufio.NewReader(c)
	future := fmt.Sprintf("policy_test_time=%d", t0.Unix()+10000)
	io.WriteString(c, policy("198.51.100.1", "a@x.example", "r@example.test", future)+policy("198.51.100.2", "b@x.example", "r@example.test"))
	readReplies(t, r, 2)
	ts.clock.Advance(300 * time.Second)
	if got := ts.ask(c, r, policy("198.51.100.2", "b@x.example", "r@example.test")); !strings.HasPrefix(got, "action=PREPEND") {
		t.Errorf("request without a test time after the delay: %q", got)
	}
}

// TestPipelinedLargeReads: a deep pipeline is read in large reads, not
// in the initial 2 KiB (which made a write per three requests).
func TestPipelinedLargeReads(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.dial("policy")
	var all strings.Builder
	for i := range 200 {
		all.WriteString(policy(fmt.Sprintf("10.1.%d.1", i), "a@x.example", "r@example.test"))
	}
	io.WriteString(c, all.String())
	readReplies(t, bufio.NewReader(c), 200)
	if f := ts.st.Stats().WAL.Frames; f > 40 {
		t.Errorf("200 pipelined requests took %d log frames: read in small pieces", f)
	}
}
