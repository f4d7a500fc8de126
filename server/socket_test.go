package server

import (
	"bufio"
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func askSocket(t *testing.T, path string) string {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("connect to %s: %v", path, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, policy("192.0.2.10", "a@x.example", "r@example.test"))
	line, _ := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line)
}

// A second server given the socket path a live one listens on refuses to
// start, naming the path, and the first stays reachable; a socket left by
// a server that died is taken over; and a server removes the socket at
// Shutdown only if it is still its own (issue 9, defect 11).
func TestPolicySocketNotTakenOver(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy")
	sock := func(c *Config) {
		c.PolicySocket = path
		c.TestClock = false
		c.PolicyListen, c.LineListen, c.HTTPListen = "", "", ""
	}
	first := startServer(t, sock)
	if got := askSocket(t, path); !strings.HasPrefix(got, "action=DEFER_IF_PERMIT") {
		t.Fatalf("first server: %q", got)
	}

	second := startServerStopped(t, sock)
	err := second.Start()
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "another process is listening on it") {
		t.Fatalf("second server on a live socket: %v", err)
	}
	if got := askSocket(t, path); !strings.HasPrefix(got, "action=") {
		t.Fatalf("first server after the second was refused: %q", got)
	}

	// The path is replaced under the first server (by hand here): a new
	// server takes it, and the first one's Shutdown leaves it alone.
	os.Remove(path)
	third := startServer(t, sock)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := first.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if got := askSocket(t, path); !strings.HasPrefix(got, "action=") {
		t.Fatalf("third server after the first stopped: %q", got)
	}
	if err := third.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("the socket is left after its own server stopped: %v", err)
	}

	// A socket file nobody listens on (a server killed) is taken over.
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	startServer(t, sock)
	if got := askSocket(t, path); !strings.HasPrefix(got, "action=") {
		t.Fatalf("server on a stale socket: %q", got)
	}
}
