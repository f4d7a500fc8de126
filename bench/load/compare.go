package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// nullChild is a null server in a child process: the generator and the
// null server then compete for the CPUs as the generator and a real
// server do, which an in-process null server would not.
type nullChild struct {
	cmd   *exec.Cmd
	stdin io.Closer
	addr  string
}

func startNullChild(proto string, stderr io.Writer) (*nullChild, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own binary: %w", err)
	}
	cmd := exec.Command(exe, "--null-server", "127.0.0.1:0", "--proto", proto)
	cmd.Env = append(os.Environ(), childEnv+"=1")
	cmd.Stderr = stderr
	ownGroup(cmd)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start null server: %w", err)
	}
	nc := &nullChild{cmd: cmd, stdin: stdin}
	lines := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		lines <- line
		io.Copy(io.Discard, stdout)
	}()
	select {
	case line := <-lines:
		_, addr, ok := strings.Cut(strings.TrimSpace(line), " listening on ")
		if !ok {
			nc.stop()
			return nil, fmt.Errorf("null server did not start (said %q)", line)
		}
		nc.addr = addr
	case <-time.After(10 * time.Second):
		nc.stop()
		return nil, errors.New("null server did not start within 10s")
	}
	return nc, nil
}

// stop ends the child by its PID: SIGTERM, then SIGKILL if it lingers.
func (nc *nullChild) stop() {
	nc.stdin.Close()
	nc.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		nc.cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		nc.cmd.Process.Kill()
		<-done
	}
}

// lockedWriter lets the child's stderr, which exec copies in a goroutine
// of its own, share a writer with the generator's messages.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func runCompare(ctx context.Context, cfg *config, stdout, stderr io.Writer) int {
	if _, ok := stderr.(*os.File); !ok {
		stderr = &lockedWriter{w: stderr}
	}
	nc, err := startNullChild(cfg.proto, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "load:", err)
		return 1
	}
	defer nc.stop()
	w := prepare(cfg, stderr)
	fmt.Fprintf(stderr, "load: null server (pid %d) on %s\n", nc.cmd.Process.Pid, nc.addr)
	null, err := measure(ctx, cfg, w, nc.addr)
	if null == nil {
		fmt.Fprintln(stderr, "load: against the null server:", err)
		return 1
	}
	if code := verdict(null, err, stderr); code != 0 {
		fmt.Fprintln(stderr, "null:", null.line())
		return code
	}
	if cfg.warmup {
		if err := warmup(ctx, cfg, w, stderr); err != nil {
			fmt.Fprintln(stderr, "load: warmup:", err)
			return 1
		}
	}
	target, err := measure(ctx, cfg, w, cfg.target)
	if target == nil {
		fmt.Fprintln(stderr, "load:", err)
		return 1
	}
	ratio := 0.0
	if n := null.reqPerSec(); n > 0 {
		ratio = target.reqPerSec() / n
	}
	text := fmt.Sprintf("null:   %s\ntarget: %s\nratio=%.3f (target/null req/s)", null.line(), target.line(), ratio)
	if cfg.json {
		fmt.Fprintln(stderr, text)
		writeJSON(stdout, map[string]any{"null": null.json(), "target": target.json(), "ratio": ratio})
	} else {
		fmt.Fprintln(stdout, text)
	}
	return verdict(target, err, stderr)
}
