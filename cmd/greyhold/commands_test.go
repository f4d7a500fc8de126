package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/greyhold/greyhold/engine"
	"github.com/greyhold/greyhold/store"
)

// runBin runs the built greyhold with args and returns its output and exit
// status.
func runBin(t *testing.T, bin string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), code
}

// TestCheckCommand: greyhold check against a running server says defer
// with exit status 75, and pass with 0 once the delay is over.
func TestCheckCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server process")
	}
	d := startDaemon(t, "--test-clock")
	bin := d.cmd.Path
	now := time.Now().Unix()
	args := []string{"check", "--server", d.policy, "--client", "192.0.2.10", "--sender", "a@b.example", "--recipient", "c@d.example"}
	out, code := runBin(t, bin, append(args, "--time", fmt.Sprint(now))...)
	if code != exitDefer || !strings.HasPrefix(out, "DEFER_IF_PERMIT 4.7.1 Greylisted") {
		t.Errorf("first check: exit %d, %q", code, out)
	}
	out, code = runBin(t, bin, append(args, "--time", fmt.Sprint(now+300))...)
	if code != 0 || !strings.HasPrefix(out, "PREPEND X-Greylist: delayed 300 seconds") {
		t.Errorf("after the delay: exit %d, %q", code, out)
	}
	out, code = runBin(t, bin, "stats", "--http", d.httpAd)
	if code != 0 || !strings.Contains(out, `"passed": 1`) {
		t.Errorf("stats: exit %d, %q", code, out)
	}
	out, code = runBin(t, bin, "snapshot", "--http", d.httpAd)
	if code != 0 || !strings.Contains(out, `"wal_index"`) {
		t.Errorf("snapshot: exit %d, %q", code, out)
	}
	if _, code := runBin(t, bin, "check", "--server", "127.0.0.1:1", "--client", "192.0.2.1", "--recipient", "x@y"); code != 1 {
		t.Errorf("check against nothing: exit %d, want 1", code)
	}
	if _, code := runBin(t, bin, "check"); code != 2 {
		t.Errorf("check without arguments: exit %d, want 2", code)
	}
	d.stop(t, 30*time.Second)
}

// TestInspectCommand: inspect reports a good directory as verified and a
// damaged one as damaged, without changing either.
func TestInspectCommand(t *testing.T) {
	dir := t.TempDir()
	o := store.DefaultOptions()
	o.Clock = engine.NewManualClock(200_000_000)
	o.NoFinalSnapshot = true
	s, err := store.Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if _, err := s.CheckAt(200_000_000, &engine.Request{ClientAddr: fmt.Sprintf("10.0.%d.1", i), Sender: "a@b.example", Recipient: "c@d.example"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Snapshot(); err != nil {
		t.Fatal(err)
	}
	s.CheckAt(200_000_000, &engine.Request{ClientAddr: "10.9.9.9", Sender: "a@b.example", Recipient: "c@d.example"})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	inspect := func() (string, int) {
		old := os.Stdout
		r, w, _ := os.Pipe()
		os.Stdout = w
		code := runInspect([]string{dir})
		w.Close()
		os.Stdout = old
		out, _ := io.ReadAll(r)
		return string(out), code
	}
	out, code := inspect()
	if code != 0 || !strings.Contains(out, "50 triplets") || !strings.Contains(out, "all verified") || !strings.Contains(out, "keys=1 ipv4=/24") {
		t.Errorf("good directory: exit %d\n%s", code, out)
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "wal", "0*"))
	before, _ := os.ReadFile(segs[len(segs)-1])
	f, _ := os.OpenFile(segs[len(segs)-1], os.O_WRONLY|os.O_APPEND, 0)
	f.Write([]byte{0x20, 1, 2, 3})
	f.Close()
	out, code = inspect()
	if code != 1 || !strings.Contains(out, "DAMAGED") {
		t.Errorf("torn log: exit %d\n%s", code, out)
	}
	after, _ := os.ReadFile(segs[len(segs)-1])
	if len(after) != len(before)+4 {
		t.Error("inspect changed the log")
	}
}

// TestRefusedListenersTouchNoData: a start refused for its listeners
// (the HTTP API beyond loopback without a token, the test clock beyond
// loopback) fails before the data directory is made, recovered or
// snapshotted.
func TestRefusedListenersTouchNoData(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func(c *serveConfig)
		want string
	}{
		{"http without token", func(c *serveConfig) { c.httpListen = "0.0.0.0:0" }, "without --admin-token"},
		{"test clock", func(c *serveConfig) { c.testClock, c.adminToken, c.policyListen = true, "t", "0.0.0.0:0" }, "not loopback"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := defaultServeConfig()
			c.dataDir = filepath.Join(t.TempDir(), "data")
			c.policyListen, c.lineListen, c.httpListen = "127.0.0.1:0", "", "127.0.0.1:0"
			tc.set(&c)
			err := serve(&c, slog.New(slog.DiscardHandler))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("serve: %v, want an error saying %q", err, tc.want)
			}
			if _, err := os.Stat(c.dataDir); !os.IsNotExist(err) {
				t.Errorf("the data directory was made (stat: %v)", err)
			}
		})
	}
}

// TestClientIdentityOption: --client-identity is name or network; unset,
// a new data directory is name mode, and a directory is refused another
// mode than its own with an error saying what to do.
func TestClientIdentityOption(t *testing.T) {
	c := defaultServeConfig()
	c.clientIdentity = "host"
	if _, err := c.options(slog.New(slog.DiscardHandler), nil); err == nil || !strings.Contains(err.Error(), "--client-identity") {
		t.Errorf("--client-identity=host: %v", err)
	}
	c = defaultServeConfig()
	c.dataDir = filepath.Join(t.TempDir(), "data")
	o, err := c.options(slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(c.dataDir, o)
	if err != nil {
		t.Fatal(err)
	}
	if id := st.Engine().Options().Keys.Identity; id != engine.IdentityName {
		t.Errorf("a new directory without --client-identity: %v, want name", id)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	c.clientIdentity = "network"
	c.policyListen, c.lineListen, c.httpListen = "127.0.0.1:0", "", ""
	err = serve(&c, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "--client-identity=name") || !strings.Contains(err.Error(), "--data-dir") {
		t.Errorf("--client-identity=network on a name directory: %v", err)
	}
}

// TestExampleConfig: the shipped "greylist only suspicious clients"
// configuration reads, and its rules come out in order.
func TestExampleConfig(t *testing.T) {
	const path = "../../examples/greylist-suspicious.conf"
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	file, err := readConfigFile(f, path)
	if err != nil {
		t.Fatal(err)
	}
	c := defaultServeConfig()
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	c.flags(fs)
	if err := applySources(fs, file, path); err != nil {
		t.Fatal(err)
	}
	o, err := c.options(slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	sel := o.Engine.Select
	if len(sel.Rules) != 7 || sel.Rules[0].Name != "authenticated" || sel.Rules[6].Name != "watch" || sel.Default != engine.ActPass {
		t.Errorf("rules: %+v", sel)
	}
	if !c.shadow || o.Engine.Keys.Identity != engine.IdentityName {
		t.Errorf("shadow %v, identity %v", c.shadow, o.Engine.Keys.Identity)
	}
	// A rule on the command line replaces the file's.
	c = defaultServeConfig()
	fs = flag.NewFlagSet("serve", flag.ContinueOnError)
	c.flags(fs)
	if err := fs.Parse([]string{"--rule", "only: no-name => greylist"}); err != nil {
		t.Fatal(err)
	}
	if err := applySources(fs, file, path); err != nil {
		t.Fatal(err)
	}
	if len(c.rules) != 1 {
		t.Errorf("command line and file: %q", c.rules)
	}
	c.rules = []string{"bad: nosuch => pass"}
	if _, err := c.options(slog.New(slog.DiscardHandler), nil); err == nil || !strings.Contains(err.Error(), "--rule") {
		t.Errorf("a bad rule: %v", err)
	}
}

// TestDNSListOptions: --dnsbl and --dnswl read ZONE WEIGHT; a rule that
// reads dnsbl needs a list.
func TestDNSListOptions(t *testing.T) {
	c := defaultServeConfig()
	c.rules = []string{"listed: dnsbl >= 5 => greylist"}
	sel, err := c.selection()
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	if _, err := c.dnsLists(reg, slog.New(slog.DiscardHandler), sel); err == nil || !strings.Contains(err.Error(), "--dnsbl") {
		t.Errorf("a dnsbl rule without lists: %v", err)
	}
	c.dnsbls = []string{"zen.spamhaus.org 10", "bl.spamcop.net=127.0.0.2 5"}
	c.dnswls = []string{"list.dnswl.org 5"}
	c.dnsServers = []string{"127.0.0.1:5353"}
	lists, err := c.dnsLists(reg, slog.New(slog.DiscardHandler), sel)
	if err != nil {
		t.Fatal(err)
	}
	defer lists.Close()
	if z := lists.Zones(); len(z) != 3 || !z[2].Allow || z[1].Weight != 5 {
		t.Errorf("zones: %+v", z)
	}
	c.dnsbls = []string{"zen.spamhaus.org"}
	if _, err := c.dnsLists(prometheus.NewRegistry(), slog.New(slog.DiscardHandler), sel); err == nil || !strings.Contains(err.Error(), "--dnsbl") {
		t.Errorf("a list without a weight: %v", err)
	}
}

// stuckCloser is a store whose close never returns, as on a disk that
// stopped answering in the middle of the final snapshot's write.
type stuckCloser struct{ release chan struct{} }

func (s stuckCloser) CloseContext(context.Context) (bool, error) {
	<-s.release
	return false, nil
}

// TestCloseStoreBounded: a store that does not close by the stop's
// deadline and the grace after it is left behind with an error saying so,
// so that the process exits whatever its disk does.
func TestCloseStoreBounded(t *testing.T) {
	stuck := stuckCloser{release: make(chan struct{})}
	defer close(stuck.release)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := closeStore(ctx, stuck, 10*time.Millisecond)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "did not close within --shutdown-timeout") {
			t.Errorf("closeStore of a stuck store: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("closeStore waited for a store that does not close")
	}
}
