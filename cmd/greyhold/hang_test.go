package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A whitelist path that turns into a FIFO (in practice: a file on a hung
// mount) must not block the SIGHUP reload inside the signal loop, where
// it would keep SIGTERM waiting, nor POST /v1/whitelist/reload (issue 9,
// defect 10): both reloads fail at once saying why, and SIGTERM stops the
// server.
func TestReloadOfFIFODoesNotHang(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server process")
	}
	wl := filepath.Join(t.TempDir(), "clients")
	if err := os.WriteFile(wl, []byte("example.org\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startDaemon(t, "--whitelist-clients", "builtin,"+wl)
	os.Remove(wl)
	if err := syscall.Mkfifo(wl, 0o644); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	p.cmd.Process.Signal(syscall.SIGHUP)
	// One reload at a time: the HTTP one waits until the SIGHUP one has
	// failed, or it would be refused as overlapping.
	if !p.log.waitFor("not a regular file") {
		t.Fatalf("the SIGHUP reload of a FIFO did not fail at once:\n%s", p.log)
	}

	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Post("http://"+p.httpAd+"/v1/whitelist/reload", "application/json", nil)
	if err != nil {
		t.Fatalf("POST /v1/whitelist/reload: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 500 || !strings.Contains(string(body), "is not a regular file (a FIFO)") {
		t.Errorf("reload of a FIFO: %d %s", resp.StatusCode, body)
	}
	p.stop(t, 20*time.Second)
	if n := strings.Count(p.log.String(), "not a regular file"); n < 2 {
		t.Errorf("the log names the FIFO %d times, want both reloads:\n%s", n, p.log)
	}
}

// With stderr a pipe that nobody reads, SIGTERM wrote the final snapshot
// and then hung for ever closing the log writer (issue 9, defect 10). The
// test fills the pipe with decision lines, never reads it, and holds the
// process to a bounded exit.
func TestExitWithStderrNobodyReads(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server process")
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	p := &daemon{dir: t.TempDir(), args: []string{"--log-decisions", "all"}, stderr: w}
	p.start(t)
	w.Close() // the child holds the write end; nothing reads r

	c, err := net.Dial("tcp", p.policy)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	const n = 2000 // about 500 KiB of decision lines, far past a pipe's 64 KiB
	go func() {
		bw := bufio.NewWriter(c)
		for i := range n {
			fmt.Fprint(bw, strings.Replace(goodRequest, "rcpt1@", fmt.Sprintf("rcpt%d@", i), 1))
		}
		bw.Flush()
	}()
	br := bufio.NewReader(c)
	for i := 0; i < n; {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		if line == "\n" {
			i++
		}
	}
	p.stop(t, 30*time.Second)
}

// ulimitWrap runs the binary under a shell that lowers its open-file
// limit, soft and hard, to n first.
func ulimitWrap(n int) []string {
	return []string{"sh", "-c", fmt.Sprintf(`ulimit -n %d && exec "$0" "$@"`, n)}
}

// Under an open-file limit that cannot hold the connection limits
// (issue 9, defect 9: 3 x 16384 + 4096 allowed whatever the limit, and
// idle connections then starved the log, snapshots and HTTP of
// descriptors), greyhold lowers the limits and says so, and with more
// connections piled on its listener than the limit allows, a check is
// still logged and a snapshot still written. Under a limit too low for
// anything it refuses to start, saying what to raise.
func TestDescriptorLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("starts server processes")
	}
	const nofile = 400
	p := &daemon{dir: t.TempDir(), wrap: ulimitWrap(nofile)}
	p.start(t)
	logs := p.log
	if !logs.waitFor("lowering them") || !strings.Contains(logs.String(), "nofile=400") {
		t.Errorf("no line about lowering the connection limits:\n%s", logs)
	}

	var idle []net.Conn
	defer func() {
		for _, c := range idle {
			c.Close()
		}
	}()
	for range nofile + 50 {
		c, err := net.Dial("tcp", p.policy)
		if err != nil {
			t.Fatalf("connection %d: %v", len(idle), err)
		}
		idle = append(idle, c)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	post := func(path, body string) string {
		t.Helper()
		resp, err := client.Post("http://"+p.httpAd+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatalf("POST %s with %d connections piled up: %v", path, len(idle), err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("POST %s with %d connections piled up: %d %s", path, len(idle), resp.StatusCode, b)
		}
		return string(b)
	}
	if got := post("/v1/check", `{"client_address":"192.0.2.10","sender":"a@x.example","recipient":"r@example.test"}`); !strings.Contains(got, `"verdict":"defer"`) {
		t.Errorf("check: %s", got)
	}
	if got := post("/v1/snapshot", ""); !strings.Contains(got, `"triplets": 1`) {
		t.Errorf("snapshot: %s", got)
	}
	resp, err := client.Get("http://" + p.httpAd + "/v1/stats")
	if err != nil {
		t.Fatal(err)
	}
	stats, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(stats), `"frames_written": 1`) {
		t.Errorf("the check was not logged: %s", stats)
	}
	for _, c := range idle {
		c.Close()
	}
	idle = nil
	p.stop(t, 30*time.Second)
	if strings.Contains(logs.String(), "too many open files") {
		t.Errorf("descriptors ran out:\n%s", logs)
	}

	out, err := exec.Command("sh", "-c", `ulimit -n 100 && exec "$0" serve --data-dir "$1" --policy-listen 127.0.0.1:0 --http-listen 127.0.0.1:0`,
		greyholdBinary(t), t.TempDir()).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "the open-file limit is 100 descriptors") {
		t.Errorf("start under a limit of 100: %v\n%s", err, out)
	}
}

// The final snapshot is inside --shutdown-timeout, not after it: a stop
// whose drain takes the whole time (--drain-delay longer than the
// timeout, a balancer given all of it to notice) abandons the snapshot,
// says so, and exits cleanly; the next start replays every acknowledged
// pass from the log. (store's TestCloseAbandonsSlowSnapshot holds a
// snapshot mid-way.)
func TestStopBoundedWithFinalSnapshot(t *testing.T) {
	if testing.Short() {
		t.Skip("starts server processes")
	}
	const n = 200
	d := startDaemon(t, "--test-clock", "--auto-whitelist-clients", "0", "--shutdown-timeout", "1s", "--drain-delay", "30s")
	pc := dialPolicy(t, d.policy)
	deferAll(t, pc, n)
	for i := range n {
		if got, err := pc.ask(tripletRequest(i, testT0+400)); err != nil || !strings.HasPrefix(got, passAnswer) {
			t.Fatalf("retry of triplet %d: %q, %v", i, got, err)
		}
	}
	pc.c.Close() // an idle connection left at the deadline is cut, and that is an error

	start := time.Now()
	d.cmd.Process.Signal(syscall.SIGTERM)
	err, ok := d.exited(20 * time.Second)
	took := time.Since(start)
	if !ok {
		t.Fatalf("still running %v after SIGTERM with --shutdown-timeout 1s", took)
	}
	if err != nil {
		t.Errorf("exit: %v\n%s", err, d.logText())
	}
	// 1 s of drain, then the snapshot's abandonment and the log's close,
	// which has 5 s of grace.
	if took > 6*time.Second {
		t.Errorf("the stop took %v, over the shutdown timeout and the close's grace", took)
	}
	for _, want := range []string{`msg="final snapshot abandoned: the stop ran out of time`, `msg="stopped cleanly" final_snapshot=abandoned`} {
		if !strings.Contains(d.logText(), want) {
			t.Errorf("the log does not say %q:\n%s", want, d.logText())
		}
	}
	if snaps, _ := filepath.Glob(filepath.Join(d.dir, "snapshots", "*")); len(snaps) != 0 {
		t.Errorf("snapshot files %v after the abandoned one", snaps)
	}
	t.Logf("stopped in %v", took.Round(time.Millisecond))

	d.args = []string{"--test-clock", "--auto-whitelist-clients", "0"}
	d.start(t)
	if !d.log.waitFor(fmt.Sprintf("msg=recovered component=store frames=%d", 2*n)) {
		t.Errorf("the restart did not replay the %d frames:\n%s", 2*n, d.logText())
	}
	for i, k := range knownAfterRestart(t, d, n) {
		if !k {
			t.Errorf("acknowledged pass %d unknown after the bounded stop", i)
		}
	}
	d.stop(t, 30*time.Second)
}
