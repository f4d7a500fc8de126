package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// --compare-null re-executes its own binary as the null server; in
	// tests that binary is this one.
	if os.Getenv(childEnv) == "1" {
		os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
	}
	goleak.VerifyTestMain(m,
		// fasthttp's background helpers, which sleep between rounds and
		// so outlive a stopped server or client by seconds (the worker
		// pool's cleaner, the client's connection cleaner) or for good
		// (the cached Date header, the dialer's address cache).
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*HostClient).connsCleaner"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*TCPDialer).tcpAddrsClean"))
}

// startNull runs a null server on a free loopback port for the test. With
// cuts, no read of the server's crosses one of those offsets of the bytes
// a connection sends (see splitConn).
func startNull(t testing.TB, proto string, cuts ...int) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var srvLn net.Listener = ln
	if len(cuts) > 0 {
		srvLn = splitListener{Listener: ln, cuts: cuts}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serveNull(ctx, srvLn, proto) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("null server: %v", err)
		}
	})
	return ln.Addr().String()
}

// splitListener hands out splitConns, each cut at the same offsets.
type splitListener struct {
	net.Listener
	cuts []int
}

func (l splitListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &splitConn{Conn: c, cuts: l.cuts}, nil
}

// splitConn ends every read at the next cut: the reader sees the bytes
// before an offset in cuts apart from those after it, whatever the
// sender's writes and the kernel made of them. Writing a request whole
// and pausing before the rest only hopes for that.
type splitConn struct {
	net.Conn
	read int   // bytes read so far
	cuts []int // offsets of the stream, ascending
}

func (c *splitConn) Read(b []byte) (int, error) {
	for len(c.cuts) > 0 && c.cuts[0] <= c.read {
		c.cuts = c.cuts[1:]
	}
	if len(c.cuts) > 0 && len(b) > c.cuts[0]-c.read {
		b = b[:c.cuts[0]-c.read]
	}
	n, err := c.Conn.Read(b)
	c.read += n
	return n, err
}

// noMore closes c's sending side and fails the test if anything but the
// server's close follows: every reply due has been read.
func noMore(t *testing.T, c net.Conn) {
	t.Helper()
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if rest, err := io.ReadAll(c); err != nil || len(rest) > 0 {
		t.Fatalf("after the last reply: %q, %v; want the server to close", rest, err)
	}
}

func dialT(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

const fixtureReq = "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\nclient_address=192.0.2.10\n" +
	"client_name=mail.sender.example\nsender=alice@knddct.sender.example\nrecipient=rcpt1@example.test\ninstance=5273.6b03e193.c6c42.0\n\n"

// TestNullServerPolicy sends pipelined requests as one write, then a
// request cut at every awkward place (between the two newlines of its
// end too), and wants one DUNNO per request and nothing more.
func TestNullServerPolicy(t *testing.T) {
	splits := []int{1, len(fixtureReq) / 2, len(fixtureReq) - 1}
	var cuts []int
	for i, cut := range splits {
		cuts = append(cuts, (3+i)*len(fixtureReq)+cut)
	}
	c := dialT(t, startNull(t, "policy", cuts...))
	if _, err := io.WriteString(c, strings.Repeat(fixtureReq, 3)); err != nil {
		t.Fatal(err)
	}
	want := strings.Repeat(nullPolicyReply, 3)
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != want {
		t.Fatalf("got %q, %v; want %q", got, err, want)
	}
	for _, cut := range splits {
		if _, err := io.WriteString(c, fixtureReq); err != nil { // the server reads it in two parts
			t.Fatal(err)
		}
		got := make([]byte, len(nullPolicyReply))
		if _, err := io.ReadFull(c, got); err != nil || string(got) != nullPolicyReply {
			t.Fatalf("cut at %d: got %q, %v", cut, got, err)
		}
	}
	noMore(t, c)
}

// TestNullServerLine: two requests and a third cut in its client address,
// read by the server in two parts.
func TestNullServerLine(t *testing.T) {
	first := "192.0.2.10 <alice@example.org> <bob@example.net> mail.example.org\n192.0.2.11 <> bob@example.net\n192.0.2"
	c := dialT(t, startNull(t, "line", len(first)))
	io.WriteString(c, first+".12 a@b c@d\n")
	want := strings.Repeat(nullLineReply, 3)
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != want {
		t.Fatalf("got %q, %v; want %q", got, err, want)
	}
	noMore(t, c)
}

func TestNullServerHTTP(t *testing.T) {
	c := dialT(t, startNull(t, "http"))
	body := `[{"client_address":"192.0.2.10","sender":"a@b","recipient":"c@d"},{"client_address":"192.0.2.11","sender":"{x}","recipient":"e@f"}]`
	req := fmt.Sprintf("POST /v1/check/batch HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	io.WriteString(c, req+req) // pipelined
	buf := make([]byte, 0, 4096)
	for _, want := range []int{2, 2} {
		var rs replyState
		for {
			n, err := parseHTTPReply(buf, &rs)
			if err != nil {
				t.Fatal(err)
			}
			if n > 0 {
				buf = buf[n:]
				break
			}
			k, err := c.Read(buf[len(buf):cap(buf)])
			if err != nil {
				t.Fatal(err)
			}
			buf = buf[:len(buf)+k]
		}
		if rs.items != want || kindsOf(&rs)["pass/known"] != uint64(want) {
			t.Fatalf("%d items, kinds %v; want %d pass/known", rs.items, kindsOf(&rs), want)
		}
	}
}

var lineRE = regexp.MustCompile(`^proto=(\w+) target=\S+ conns=\d+ pipeline=\d+ (batch=\d+ )?new=[\d.]+ requests=(\d+) (http_requests=\d+ )?` +
	`elapsed=[\d.]+s req/s=(\d+) p50=([\d.]+)ms p99=([\d.]+)ms p999=([\d.]+)ms max=([\d.]+)ms errors=(\d+) ` +
	`client_cpu=[\d.]+ client_us/req=[\d.]+ replies:( \S+=\d+)* other=\d+$`)

// runMain runs the tool as the command line would and returns its exit
// status, stdout and stderr.
func runMain(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := realMain(args, &out, &errb)
	return code, out.String(), errb.String()
}

// TestAgainstNull runs the generator against each null server for a
// second and checks the counts add up.
func TestAgainstNull(t *testing.T) {
	for _, tc := range []struct {
		proto, kind string
		args        []string
	}{
		{"policy", "DUNNO", []string{"--pipeline", "1"}},
		{"policy", "DUNNO", []string{"--pipeline", "16", "--new-fraction", "0.5", "--realistic=false"}},
		{"line", "PASS", []string{"--pipeline", "8", "--new-fraction", "1"}},
		{"http", "pass/known", []string{"--pipeline", "2", "--batch", "50", "--new-fraction", "0.1"}},
	} {
		t.Run(tc.proto+strings.Join(tc.args, ""), func(t *testing.T) {
			addr := startNull(t, tc.proto)
			args := append([]string{"--proto", tc.proto, "--target", addr, "--conns", "8", "--duration", "1s", "--pool", "5000", "--json"}, tc.args...)
			code, out, errOut := runMain(t, args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			lines := strings.Split(strings.TrimSpace(errOut), "\n")
			text := lines[len(lines)-1]
			m := lineRE.FindStringSubmatch(text)
			if m == nil {
				t.Fatalf("result line does not parse: %q", text)
			}
			requests, _ := strconv.Atoi(m[3])
			rps, _ := strconv.Atoi(m[5])
			var lat [4]float64
			for i := range lat {
				lat[i], _ = strconv.ParseFloat(m[6+i], 64)
			}
			if requests < 1000 || rps < 1000 || m[10] != "0" {
				t.Fatalf("requests %d, req/s %d, errors %s: %s", requests, rps, m[10], text)
			}
			if !(0 < lat[0] && lat[0] <= lat[1] && lat[1] <= lat[2] && lat[2] <= lat[3]) {
				t.Fatalf("percentiles out of order: %s", text)
			}
			if !strings.Contains(text, fmt.Sprintf(" %s=%d other=0", tc.kind, requests)) {
				t.Fatalf("want every reply %s: %s", tc.kind, text)
			}
			if !strings.Contains(out, fmt.Sprintf(`"requests":%d,`, requests)) || !strings.Contains(out, `"req_per_s":`) {
				t.Fatalf("JSON output does not match the text line: %s", out)
			}
		})
	}
}

// TestRequestsCap: the cap is exact, whatever the windows and batches.
func TestRequestsCap(t *testing.T) {
	for _, tc := range []struct{ proto, pipeline, batch, want string }{
		{"policy", "1", "1", "777"},
		{"line", "8", "1", "1001"}, // 7 connections × 8 do not divide it
		{"http", "3", "40", "1001"},
	} {
		t.Run(tc.proto, func(t *testing.T) {
			addr := startNull(t, tc.proto)
			code, out, errOut := runMain(t, "--proto", tc.proto, "--target", addr, "--conns", "7", "--pipeline", tc.pipeline,
				"--batch", tc.batch, "--requests", tc.want, "--duration", "20s", "--pool", "100")
			if code != 0 || !strings.Contains(out, " requests="+tc.want+" ") {
				t.Fatalf("exit %d: %s%s", code, out, errOut)
			}
		})
	}
}

func TestLoopbackOnly(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:10023":          "127.0.0.1:10023",
		"127.45.6.7:1":             "127.45.6.7:1",
		"[::1]:10023":              "[::1]:10023",
		"localhost:10023":          "127.0.0.1:10023",
		"[::ffff:127.0.0.1]:10023": "127.0.0.1:10023",
	} {
		if got, err := loopback(in); got != want || err != nil {
			t.Errorf("loopback(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"10.0.0.1:10023", "192.168.1.1:10023", "0.0.0.0:10023", "[::]:10023", "[2001:db8::1]:10023",
		"[fe80::1%lo]:10023", "example.com:10023", "127.0.0.1", "mx.example.org:25"} {
		if got, err := loopback(in); err == nil {
			t.Errorf("loopback(%q) = %q; want refused", in, got)
		}
	}
	// Refused before anything is sent, for every address flag.
	for _, args := range [][]string{
		{"--target", "192.0.2.1:10023"},
		{"--proto", "line", "--warmup", "--warmup-target", "10.1.1.1:10023"},
		{"--null-server", "0.0.0.0:10099"},
	} {
		code, _, errOut := runMain(t, args...)
		if code != 2 || !strings.Contains(errOut, "loopback") {
			t.Errorf("%v: exit %d, %q; want 2 and a word about loopback", args, code, errOut)
		}
	}
}

func TestRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	code, _, errOut := runMain(t, "--target", addr, "--duration", "1s", "--pool", "10")
	if code != 1 || !strings.Contains(errOut, "refused the connection") {
		t.Fatalf("exit %d, %q; want 1 and a refusal", code, errOut)
	}
}

// fakeServer answers each policy request with what answer returns, over
// real loopback.
func fakeServer(t *testing.T, answer func(req string) string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				var req strings.Builder
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					req.WriteString(line)
					if line == "\n" {
						if _, err := io.WriteString(c, answer(req.String())); err != nil {
							return
						}
						req.Reset()
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// TestGarbage: a server that answers nonsense is counted and, after
// --max-errors, the run stops with a clear message and status 1.
func TestGarbage(t *testing.T) {
	addr := fakeServer(t, func(string) string { return "<html>hello</html>\n\n" })
	start := time.Now()
	code, out, errOut := runMain(t, "--target", addr, "--conns", "2", "--duration", "20s", "--max-errors", "50", "--pool", "10")
	// The run stops at the 50th error; the other connection's, counted at
	// the same moment as the 51st, may be the one that says so.
	m := regexp.MustCompile(`aborted after (\d+) errors`).FindStringSubmatch(errOut)
	if code != 1 || m == nil || (m[1] != "50" && m[1] != "51") || !strings.Contains(errOut, "does not start with action=") {
		t.Fatalf("exit %d: %s%s", code, out, errOut)
	}
	if time.Since(start) > 10*time.Second {
		t.Fatal("took the whole duration to give up")
	}
}

// TestSilentServer: a server that reads and never answers fails the run
// after --reply-timeout, not never.
func TestSilentServer(t *testing.T) {
	addr := fakeServer(t, func(string) string { return "" })
	code, _, errOut := runMain(t, "--target", addr, "--conns", "2", "--duration", "20s", "--reply-timeout", "500ms", "--pool", "10")
	if code != 1 || !strings.Contains(errOut, "sent no complete reply") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
}

// attrs parses a policy request into its attribute names and values.
func attrs(t *testing.T, req string) ([]string, map[string]string) {
	t.Helper()
	if !strings.HasSuffix(req, "\n\n") {
		t.Fatalf("request does not end with an empty line: %q", req)
	}
	var names []string
	vals := map[string]string{}
	for _, l := range strings.Split(strings.TrimSuffix(req, "\n\n"), "\n") {
		name, val, ok := strings.Cut(l, "=")
		if !ok {
			t.Fatalf("line %q is not name=value", l)
		}
		names = append(names, name)
		vals[name] = val
	}
	return names, vals
}

// TestRealisticRequests holds realistic requests to the fixture: the same
// attributes in the same order, the size Postfix sends, and client_port
// and instance changing from request to request.
func TestRealisticRequests(t *testing.T) {
	fixture, err := os.ReadFile("../../../shared/testdata/postfix-3.7.11-policy-requests.txt")
	if err != nil {
		t.Skip("fixture not found:", err)
	}
	first, _, _ := strings.Cut(string(fixture), "\n\n")
	wantNames, _ := attrs(t, first+"\n\n")

	cfg := &config{proto: "policy", pool: 1000, seed: 7, realistic: true, newFraction: 0.3, batch: 1}
	w := buildWorkload(cfg, "policy", 42)
	g := newGen(w, 7, 3, 1_800_000_000)
	seen := map[string]bool{}
	newRcpt := regexp.MustCompile(`^n[0-9a-f]{24}@`)
	total, news := 0, 0
	const n = 2000
	for i := range n {
		req := string(g.appendOne(nil))
		total += len(req)
		names, v := attrs(t, req)
		if strings.Join(names, " ") != strings.Join(wantNames, " ") {
			t.Fatalf("attributes\n%v\nwant the fixture's\n%v", names, wantNames)
		}
		for _, a := range []string{"client_port", "instance"} {
			if seen[a+v[a]] {
				t.Fatalf("request %d repeats %s=%s", i, a, v[a])
			}
			seen[a+v[a]] = true
		}
		if v["request"] != "smtpd_access_policy" || v["protocol_state"] != "RCPT" || v["recipient"] == "" {
			t.Fatalf("not a RCPT-stage policy request: %q", req)
		}
		if !regexp.MustCompile(`^[0-9a-f]{4}\.[0-9a-f]{8}\.[0-9a-f]{5}\.0$`).MatchString(v["instance"]) {
			t.Fatalf("instance %q not shaped like Postfix's", v["instance"])
		}
		if newRcpt.MatchString(v["recipient"]) {
			news++
			if seen[v["recipient"]] {
				t.Fatalf("new triplet's recipient %s repeated", v["recipient"])
			}
			seen[v["recipient"]] = true
		}
	}
	if news < n/5 || news > n*2/5 {
		t.Fatalf("%d new triplets in %d requests; want about 30%%", news, n)
	}
	if mean := total / n; mean < 600 || mean > 750 {
		t.Fatalf("mean request %d bytes; Postfix 3.7 sends about 600-700", mean)
	}
}

// TestSameTriplets: line and HTTP requests carry the very triplets policy
// requests do, or a policy warm-up would not make them known.
func TestSameTriplets(t *testing.T) {
	cfg := &config{pool: 50, seed: 9, realistic: true, batch: 1}
	render := func(proto string) []string {
		w := buildWorkload(cfg, proto, 1)
		var out []string
		for i := range w.pool.c {
			c := &w.pool.c[i]
			out = append(out, string(w.pool.arena[c.off:c.off+uint32(c.n)]))
		}
		return out
	}
	pol, line, js := render("policy"), render("line"), render("http")
	for i := range pol {
		_, v := attrs(t, "client_address="+strings.SplitN(pol[i], "\nclient_port", 2)[0]+"\n"+
			strings.SplitN(pol[i], "00000\n", 2)[1]+"x\n\n")
		sender := v["sender"]
		if sender == "" {
			sender = "<>"
		}
		wantLine := strings.Join([]string{v["client_address"], sender, v["recipient"], v["client_name"]}, " ") + "\n"
		if line[i] != wantLine {
			t.Fatalf("triplet %d: line %q; want %q", i, line[i], wantLine)
		}
		wantJSON := fmt.Sprintf(`{"client_address":%q,"client_name":%q,"sender":%q,"recipient":%q}`, v["client_address"], v["client_name"], v["sender"], v["recipient"])
		if js[i] != wantJSON {
			t.Fatalf("triplet %d: http %s; want %s", i, js[i], wantJSON)
		}
	}
}

// TestWarmup runs the warm-up against a toy greylister that honours
// policy_test_time (defer the first 300 s, then pass once with a header,
// then DUNNO) and checks the measurement then meets only known triplets;
// a server that ignores test times must make the warm-up fail loudly.
func TestWarmup(t *testing.T) {
	var mu sync.Mutex
	first := map[string]int64{}
	passed := map[string]bool{}
	greylister := func(honour bool) func(string) string {
		return func(req string) string {
			_, v := attrs(t, req)
			now := time.Now().Unix()
			if tt, err := strconv.ParseInt(v["policy_test_time"], 10, 64); err == nil && honour {
				now = tt
			}
			key := v["client_address"] + "/" + v["sender"] + "/" + v["recipient"]
			mu.Lock()
			defer mu.Unlock()
			switch f, ok := first[key]; {
			case passed[key]:
				return "action=DUNNO\n\n"
			case !ok:
				first[key] = now
				return "action=DEFER_IF_PERMIT 4.7.1 Greylisted\n\n"
			case now-f < 300:
				return "action=DEFER_IF_PERMIT 4.7.1 Greylisted\n\n"
			}
			passed[key] = true
			return "action=PREPEND X-Greylist: delayed\n\n"
		}
	}
	addr := fakeServer(t, greylister(true))
	code, out, errOut := runMain(t, "--target", addr, "--warmup", "--pool", "3000", "--conns", "4", "--duration", "300ms")
	if code != 0 || !strings.Contains(errOut, "first pass DEFER_IF_PERMIT=3000; second pass PREPEND=3000") ||
		!strings.Contains(out, "replies: DUNNO=") || strings.Contains(out, "DEFER") {
		t.Fatalf("exit %d: %s%s", code, out, errOut)
	}

	clear(first)
	clear(passed)
	addr = fakeServer(t, greylister(false))
	code, _, errOut = runMain(t, "--target", addr, "--warmup", "--pool", "100", "--conns", "2", "--duration", "300ms")
	if code != 1 || !strings.Contains(errOut, "still deferred") || !strings.Contains(errOut, "--test-clock") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
}

// TestCompareNull runs --compare-null with a null server as the target
// too: both lines, a ratio near 1, and no child left behind.
func TestCompareNull(t *testing.T) {
	addr := startNull(t, "line")
	code, out, errOut := runMain(t, "--compare-null", "--proto", "line", "--target", addr, "--conns", "4", "--pipeline", "4",
		"--duration", "500ms", "--pool", "1000")
	if code != 0 {
		t.Fatalf("exit %d: %s%s", code, out, errOut)
	}
	m := regexp.MustCompile(`(?s)null: +proto=line .* PASS=\d+ other=0\ntarget: proto=line target=` + regexp.QuoteMeta(addr) + ` .*\nratio=([\d.]+) `).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("output: %s", out)
	}
	if r, _ := strconv.ParseFloat(m[1], 64); r < 0.2 || r > 5 {
		t.Fatalf("ratio %v between two null servers", r)
	}
	pid := regexp.MustCompile(`null server \(pid (\d+)\)`).FindStringSubmatch(errOut)
	if pid == nil {
		t.Fatalf("no child pid in %s", errOut)
	}
	if _, err := os.Stat("/proc/" + pid[1]); err == nil {
		if st, _ := os.ReadFile("/proc/" + pid[1] + "/stat"); !bytes.Contains(st, []byte(") Z ")) {
			t.Fatalf("null server %s still running", pid[1])
		}
	}
}

// TestNoAllocations: rendering a window, parsing its replies and
// recording latencies allocate nothing once the buffers have grown.
func TestNoAllocations(t *testing.T) {
	for _, tc := range []struct {
		proto, reply string
		parse        parseFunc
	}{
		{"policy", "action=DEFER_IF_PERMIT 4.7.1 Greylisted, please retry in 4m59s\n\n", parsePolicyReply},
		{"line", "PREPEND X-Greylist: delayed 300 seconds\n", parseLineReply},
		{"http", httpResponse("200 OK", `[{"verdict":"defer","reason":"new","seconds_left":300},{"verdict":"pass","reason":"known"}]`), parseHTTPReply},
	} {
		cfg := &config{proto: tc.proto, pool: 1000, seed: 1, realistic: true, newFraction: 0.2, batch: 2, target: "127.0.0.1:1"}
		w := buildWorkload(cfg, tc.proto, 5)
		g := newGen(w, 1, 0, 1_800_000_000)
		var buf []byte
		var rs replyState
		var h hist
		replies := []byte(strings.Repeat(tc.reply, 32))
		allocs := testing.AllocsPerRun(200, func() {
			buf = buf[:0]
			for range 32 {
				buf = g.appendOne(buf)
			}
			b := replies
			for len(b) > 0 {
				n, err := tc.parse(b, &rs)
				if err != nil || n == 0 {
					t.Fatalf("%s: parse: %d, %v", tc.proto, n, err)
				}
				b = b[n:]
				h.record(uint64(n))
			}
		})
		if allocs != 0 {
			t.Errorf("%s: %v allocations per window", tc.proto, allocs)
		}
	}
}
