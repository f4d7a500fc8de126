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
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/greyhold/greyhold/internal/testutil"
)

// The process tests run the real greyhold binary, built once, on loopback
// ports and a data directory of the test's: daemon starts it, stops it
// (SIGTERM) or kills it (SIGKILL), and starts it again on the same
// directory.

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// greyholdBinary builds the binary once for the tests that run it. With
// GREYHOLD_TEST_BINARY set, the tests run that binary instead: another
// build (an older commit's, to see a test fail without a fix; a
// package's).
func greyholdBinary(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("GREYHOLD_TEST_BINARY"); bin != "" {
		return bin
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "greyhold-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "greyhold")
		if out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// freePort asks the kernel for a free loopback port.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// daemon is a greyhold serve process started by a test. Its data directory
// outlives the process, so the test can start it again on the same state.
type daemon struct {
	dir    string    // the data directory
	args   []string  // serve's arguments, after the harness's own
	env    []string  // GREYHOLD_ settings, added to the test's environment
	wrap   []string  // a command to run the binary under (ulimitWrap)
	stderr io.Writer // where stderr goes; nil: log
	log    *lockedBuffer

	cmd            *exec.Cmd
	policy, httpAd string
	done           chan struct{} // closed once cmd has exited
	exitErr        error         // cmd.Wait's, once done is closed
}

// startDaemon starts greyhold serve on a new data directory and waits
// until it is ready.
func startDaemon(t *testing.T, args ...string) *daemon {
	t.Helper()
	d := &daemon{dir: t.TempDir(), args: args}
	d.start(t)
	return d
}

// start runs the process on fresh ports and waits until /readyz answers
// 200, failing the test if it exits first.
func (d *daemon) start(t *testing.T) {
	t.Helper()
	d.launch(t)
	d.waitReady(t)
}

// waitReady waits until /readyz answers 200, failing the test if the
// process exits first or 20 s pass.
func (d *daemon) waitReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + d.httpAd + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		select {
		case <-d.done:
			t.Fatalf("greyhold exited before it was ready: %v\n%s", d.exitErr, d.logText())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("greyhold not ready after 20 s:\n%s", d.logText())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// launch runs the process without waiting for it. Cleanup stops it if the
// test left it running: SIGTERM, and SIGKILL after 30 s.
func (d *daemon) launch(t *testing.T) {
	t.Helper()
	if d.log == nil {
		d.log = &lockedBuffer{}
	}
	d.policy, d.httpAd = freePort(t), freePort(t)
	argv := append(append([]string{}, d.wrap...), greyholdBinary(t))
	argv = append(argv, append([]string{"serve", "--data-dir", d.dir, "--policy-listen", d.policy,
		"--http-listen", d.httpAd, "--line-listen", "", "--log-decisions", "off"}, d.args...)...)
	cmd := exec.Command(argv[0], argv[1:]...)
	if d.env != nil {
		cmd.Env = append(os.Environ(), d.env...)
	}
	cmd.Stderr = d.stderr
	if d.stderr == nil {
		cmd.Stderr = d.log
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	d.cmd, d.done = cmd, done
	go func() {
		err := cmd.Wait()
		d.exitErr = err // read only once done is closed
		close(done)
	}()
	t.Cleanup(func() {
		select {
		case <-done:
			return
		default:
		}
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
}

// exited waits up to limit for the process to exit and returns how it did.
func (d *daemon) exited(limit time.Duration) (err error, ok bool) {
	select {
	case <-d.done:
		return d.exitErr, true
	case <-time.After(limit):
		return nil, false
	}
}

// stop sends SIGTERM and fails the test unless the process exits with
// status 0 within limit.
func (d *daemon) stop(t *testing.T, limit time.Duration) {
	t.Helper()
	d.cmd.Process.Signal(syscall.SIGTERM)
	err, ok := d.exited(limit)
	switch {
	case !ok:
		t.Errorf("greyhold still running %v after SIGTERM", limit)
	case err != nil:
		t.Errorf("greyhold exited with %v after SIGTERM:\n%s", err, d.logText())
	}
}

// kill ends the process with SIGKILL, as a crash would: no final
// snapshot, nothing flushed but what the kernel holds.
func (d *daemon) kill(t *testing.T) {
	t.Helper()
	d.cmd.Process.Kill()
	if _, ok := d.exited(10 * time.Second); !ok {
		t.Fatal("greyhold still running 10 s after SIGKILL")
	}
}

// logText is everything the process wrote to stderr, over every start.
func (d *daemon) logText() string {
	if d.log == nil {
		return ""
	}
	return d.log.String()
}

// lockedBuffer collects a process's stderr.
type lockedBuffer struct{ testutil.SyncBuffer }

// waitFor polls for s in the log, which the server writes every 100 ms,
// up to 20 s.
func (l *lockedBuffer) waitFor(s string) bool {
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(l.String(), s) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// policyConn is a Postfix policy connection that asks one request at a
// time, as Postfix does.
type policyConn struct {
	c net.Conn
	r *bufio.Reader
}

func dialPolicy(t *testing.T, addr string) *policyConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &policyConn{c: c, r: bufio.NewReader(c)}
}

// ask sends req and returns the answer's action line without its newline.
func (p *policyConn) ask(req string) (string, error) {
	p.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(p.c, req); err != nil {
		return "", err
	}
	line, err := p.r.ReadString('\n')
	if err != nil {
		return "", err
	}
	if blank, err := p.r.ReadString('\n'); err != nil || blank != "\n" {
		return "", fmt.Errorf("answer %q not ended by an empty line (%q, %v)", line, blank, err)
	}
	return strings.TrimSuffix(line, "\n"), nil
}

// testT0 is the test clock's start: 2027-01-01, inside the years the
// server holds plausible.
const testT0 = 1798761600

// tripletRequest is the policy request for triplet i at Unix time at,
// which needs --test-clock. Every triplet has a recipient of its own.
func tripletRequest(i int, at int64) string {
	return fmt.Sprintf("request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n"+
		"client_address=10.%d.%d.7\nclient_name=mail%d.sender.example\nsender=news@sender.example\n"+
		"recipient=user%d@example.test\ninstance=%x.1\npolicy_test_time=%d\n\n", i/250, i%250, i, i, i, at)
}
