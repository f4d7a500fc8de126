package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/greyhold/greyhold/cluster"
)

// The fleet's process tests: greyhold binaries joined through a real
// nats-server process, the version go.mod requires, built by
// e2e/nats-server.sh (and kept in its cache directory between runs).

var (
	natsOnce sync.Once
	natsBin  string
	natsErr  error
)

// natsServerBinary returns the nats-server to run: $GREYHOLD_NATS_SERVER,
// or the one e2e/nats-server.sh builds.
func natsServerBinary(t *testing.T) string {
	t.Helper()
	if b := os.Getenv("GREYHOLD_NATS_SERVER"); b != "" {
		return b
	}
	natsOnce.Do(func() {
		var stderr bytes.Buffer
		cmd := exec.Command("bash", "../../e2e/nats-server.sh")
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			natsErr = fmt.Errorf("e2e/nats-server.sh: %v\n%s", err, stderr.String())
			return
		}
		natsBin = strings.TrimSpace(string(out))
	})
	if natsErr != nil {
		t.Fatal(natsErr)
	}
	return natsBin
}

// natsProc is a nats-server process with JetStream, its store and its
// configuration in a directory of the test's, restartable on the same
// ports and store.
type natsProc struct {
	t       *testing.T
	dir     string
	conf    string // the configuration file
	url     string // for clients
	monitor string // host:port of its HTTP monitoring
	log     *lockedBuffer
	cmd     *exec.Cmd
	done    chan struct{}
}

// startNATS runs a nats-server on loopback with JetStream and monitoring,
// and extra configuration lines (authorisation, TLS) if given.
func startNATS(t *testing.T, extra string) *natsProc {
	t.Helper()
	n := &natsProc{t: t, dir: t.TempDir(), log: &lockedBuffer{}}
	addr, mon := freePort(t), freePort(t)
	n.url, n.monitor = "nats://"+addr, mon
	conf := fmt.Sprintf("server_name: nats-test\nlisten: %s\nhttp: %s\njetstream { store_dir: %q }\n%s",
		addr, mon, filepath.Join(n.dir, "js"), extra)
	n.conf = filepath.Join(n.dir, "nats.conf")
	if err := os.WriteFile(n.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	n.start()
	return n
}

// start runs the server and waits until its JetStream is ready.
func (n *natsProc) start() {
	n.t.Helper()
	n.launch()
	n.waitHealthy()
}

// launch runs the server without waiting for it.
func (n *natsProc) launch() {
	n.t.Helper()
	fmt.Fprintf(n.log, "==== nats-server start %s ====\n", time.Now().UTC().Format(time.RFC3339Nano))
	cmd := exec.Command(natsServerBinary(n.t), "-c", n.conf)
	cmd.Stdout, cmd.Stderr = n.log, n.log
	if err := cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	n.cmd, n.done = cmd, done
	n.t.Cleanup(func() {
		select {
		case <-done:
			return
		default:
		}
		cmd.Process.Signal(syscall.SIGCONT) // a frozen server cannot stop
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if n.t.Failed() {
			n.t.Logf("nats-server's log (%s):\n%s", n.conf, n.log)
		}
	})
}

// waitHealthy polls the monitoring port's /healthz, which answers 200
// once the server and its JetStream take requests.
func (n *natsProc) waitHealthy() {
	n.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + n.monitor + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		select {
		case <-n.done:
			n.t.Fatalf("nats-server exited:\n%s", n.log)
		default:
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("nats-server not healthy after 30 s:\n%s", n.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// freeze stops the server's process (SIGSTOP): its connections stay open
// and what is sent to it waits, unread and unanswered, until thaw.
func (n *natsProc) freeze() { n.cmd.Process.Signal(syscall.SIGSTOP) }
func (n *natsProc) thaw()   { n.cmd.Process.Signal(syscall.SIGCONT) }

// streamState is a stream's state as the monitoring's /jsz tells it,
// with the replicas of its configuration.
type streamState struct {
	Messages uint64 `json:"messages"`
	Bytes    uint64 `json:"bytes"`
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
	Replicas int    `json:"-"`
}

// stream reads the state of a stream from /jsz, in any account.
func (n *natsProc) stream(name string) (streamState, bool) {
	n.t.Helper()
	resp, err := http.Get("http://" + n.monitor + "/jsz?accounts=true&streams=true&config=true")
	if err != nil {
		n.t.Fatal(err)
	}
	defer resp.Body.Close()
	var jsz struct {
		Accounts []struct {
			Streams []struct {
				Name   string `json:"name"`
				Config struct {
					Replicas int `json:"num_replicas"`
				} `json:"config"`
				State streamState `json:"state"`
			} `json:"stream_detail"`
		} `json:"account_details"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&jsz); err != nil {
		n.t.Fatalf("/jsz: %v", err)
	}
	for _, a := range jsz.Accounts {
		for _, s := range a.Streams {
			if s.Name == name {
				st := s.State
				st.Replicas = s.Config.Replicas
				return st, true
			}
		}
	}
	return streamState{}, false
}

// fleetSecret writes a secret for a fleet's nodes to share, as the README
// makes one.
func fleetSecret(t *testing.T) string {
	t.Helper()
	b := make([]byte, 32)
	rand.Read(b)
	path := filepath.Join(t.TempDir(), "fleet-secret")
	if err := os.WriteFile(path, []byte(hex.EncodeToString(b)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// fleetArgs are the flags that join a node to the fleet on url, with
// --test-clock so that requests date themselves.
func fleetArgs(url, id, secret string, extra ...string) []string {
	return append([]string{"--test-clock", "--nats", url, "--node-id", id, "--secret-file", secret}, extra...)
}

// fleetStats reads /v1/stats' fleet section.
func (d *daemon) fleetStats(t *testing.T) cluster.Stats {
	t.Helper()
	var st struct {
		Fleet *cluster.Stats `json:"fleet"`
	}
	d.stats(t, &st)
	if st.Fleet == nil {
		t.Fatal("/v1/stats has no fleet section")
	}
	return *st.Fleet
}

// waitFleet polls the node's fleet stats until cond holds, for up to 60 s.
func (d *daemon) waitFleet(t *testing.T, what string, cond func(cluster.Stats) bool) cluster.Stats {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		st := d.fleetStats(t)
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after 60 s: %+v\n%s", what, st, d.logText())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// shippedTo waits until from's log is all acknowledged by the stream and
// every node in to has applied it.
func shippedTo(t *testing.T, from *daemon, to ...*daemon) {
	t.Helper()
	st := from.waitFleet(t, "the backlog shipped", func(s cluster.Stats) bool { return s.Connected && s.Backlog.Frames == 0 })
	for _, d := range to {
		d.waitFleet(t, fmt.Sprintf("sequence %d applied", st.PubSeq), func(s cluster.Stats) bool { return s.Applied >= st.PubSeq })
	}
}

// tripletState asks the node what it holds for triplet i, changing
// nothing (GET /v1/triplet): "unknown", "pending" or "passed", with the
// first-seen time.
func (d *daemon) tripletState(t *testing.T, i int) (state, first string) {
	t.Helper()
	q := url.Values{"client_address": {fmt.Sprintf("10.%d.%d.7", i/250, i%250)}, "client_name": {fmt.Sprintf("mail%d.sender.example", i)},
		"sender": {"news@sender.example"}, "recipient": {fmt.Sprintf("user%d@example.test", i)}}
	resp, err := http.Get("http://" + d.httpAd + "/v1/triplet?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var ex struct {
		State string `json:"state"`
		First string `json:"first_seen"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(body, &ex) != nil {
		t.Fatalf("GET /v1/triplet: %d %s", resp.StatusCode, body)
	}
	return ex.State, ex.First
}

// askAll asks triplets from..to-1 at Unix time at and fails unless each
// answer starts with want.
func askAll(t *testing.T, d *daemon, from, to int, at int64, want string) {
	t.Helper()
	pc := dialPolicy(t, d.policy)
	for i := from; i < to; i++ {
		got, err := pc.ask(tripletRequest(i, at))
		if err != nil || !strings.HasPrefix(got, want) {
			t.Fatalf("triplet %d at %d: %q, %v; want %q", i, at, got, err, want)
		}
	}
}

// TestFleetKillAfterDefers: a node killed with SIGKILL right after it
// answered defers, with NATS frozen so that none of the last ones could
// be acknowledged, ships them when it is back, and their retries pass on
// another node.
func TestFleetKillAfterDefers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts nats-server and greyhold processes")
	}
	ns := startNATS(t, "")
	secret := fleetSecret(t)
	a := startDaemon(t, fleetArgs(ns.url, "mx1", secret)...)
	b := startDaemon(t, fleetArgs(ns.url, "mx2", secret)...)

	// Shipped while all is well.
	const before, n = 200, 1200
	askAll(t, a, 0, before, testT0, deferAnswer)
	shippedTo(t, a, b)

	// NATS frozen: its connection stays up, nothing is acknowledged. The
	// first message holds what came in its 5 ms linger; the rest of the
	// 1,000 defers are only in mx1's log when it is killed.
	ns.freeze()
	askAll(t, a, before, n, testT0, deferAnswer)
	if bl := a.fleetStats(t).Backlog; bl.Frames == 0 {
		t.Fatalf("mx1's backlog %+v: NATS was frozen, the defers cannot have been acknowledged", bl)
	}
	a.kill(t)
	ns.thaw()

	// mx2 has applied what the stream holds, and it lacks most of those.
	last, _ := ns.stream("GREYHOLD")
	b.waitFleet(t, "the stream applied", func(s cluster.Stats) bool { return s.Applied >= last.LastSeq })
	known := 0
	for i := before; i < n; i++ {
		if st, _ := b.tripletState(t, i); st != "unknown" {
			known++
		}
	}
	if known >= (n-before)/2 {
		t.Fatalf("mx2 knew %d of the %d defers mx1 answered while NATS was frozen: the test meant most to be in mx1's log only", known, n-before)
	}
	t.Logf("mx2 knew %d of %d defers before mx1 came back", known, n-before)

	// Back, mx1 ships what its log holds beyond the stream; every retry on
	// mx2 passes.
	a.start(t)
	shippedTo(t, a, b)
	askAll(t, b, 0, n, testT0+300, passAnswer)
}

// TestFleetOtherSecretRefused: a node whose data directory has a secret
// of its own does not start in a fleet recorded with another: it exits 1
// saying that the secret differs, with both ids, and how to join. Doing
// what it says works: its directory, keyed by its own secret, refuses the
// fleet's one saying to take a new directory, and a new one with the
// fleet's secret joins the fleet.
func TestFleetOtherSecretRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("starts nats-server and greyhold processes")
	}
	ns := startNATS(t, "")
	secret := fleetSecret(t)
	a := startDaemon(t, fleetArgs(ns.url, "mx1", secret)...)
	x := &daemon{dir: t.TempDir(), args: []string{"--test-clock", "--nats", ns.url, "--node-id", "mx9"}}
	exit := func(want ...string) {
		t.Helper()
		x.launch(t)
		err, ok := x.exited(30 * time.Second)
		if !ok {
			t.Fatalf("still running after 30 s:\n%s", x.logText())
		}
		if ee, isExit := err.(*exec.ExitError); !isExit || ee.ExitCode() != 1 {
			t.Fatalf("exit %v, want status 1:\n%s", err, x.logText())
		}
		for _, w := range want {
			if !strings.Contains(x.logText(), w) {
				t.Fatalf("its log does not say %q:\n%s", w, x.logText())
			}
		}
		if strings.Contains(x.logText(), "serving alone") {
			t.Fatalf("a refused node said it serves:\n%s", x.logText())
		}
	}
	exit("not this fleet's node: the secret differs", "recorded by mx1", "new, empty data directory", "--secret-file")
	x.log = nil
	x.args = fleetArgs(ns.url, "mx9", secret)
	exit("the secret of "+secret, "give a new, empty --data-dir")

	x = startDaemon(t, fleetArgs(ns.url, "mx9", secret)...)
	askAll(t, a, 0, 5, testT0, deferAnswer)
	shippedTo(t, a, x)
	askAll(t, x, 0, 5, testT0+300, passAnswer)
}

// natsGate is a TCP proxy on loopback between a node and nats-server that
// holds everything the server sends once the node has sent a given
// subject (a JetStream request the test wants to keep unanswered), until
// release: the node stays connected, and waits there.
type natsGate struct {
	l       net.Listener
	addr    string
	target  string
	pattern []byte
	mu      sync.Mutex
	hit     chan struct{} // closed once the pattern has passed
	open    chan struct{} // closed by release
	hitOnce sync.Once
	conns   []net.Conn
}

func newNATSGate(t *testing.T, target, pattern string) *natsGate {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &natsGate{l: l, addr: "nats://" + l.Addr().String(), target: strings.TrimPrefix(target, "nats://"),
		pattern: []byte(pattern), hit: make(chan struct{}), open: make(chan struct{})}
	t.Cleanup(func() {
		l.Close()
		g.release()
		g.mu.Lock()
		for _, c := range g.conns {
			c.Close()
		}
		g.mu.Unlock()
	})
	go g.serve()
	return g
}

func (g *natsGate) release() {
	select {
	case <-g.open:
	default:
		close(g.open)
	}
}

func (g *natsGate) serve() {
	for {
		c, err := g.l.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", g.target)
		if err != nil {
			c.Close()
			continue
		}
		g.mu.Lock()
		g.conns = append(g.conns, c, s)
		g.mu.Unlock()
		go g.clientToServer(c, s)
		go g.serverToClient(s, c)
	}
}

// clientToServer forwards the node's bytes, looking for the pattern; the
// hold starts before the bytes that carry it go on, so no answer to them
// can slip through.
func (g *natsGate) clientToServer(c, s net.Conn) {
	defer s.Close()
	buf := make([]byte, 32<<10)
	var tail []byte
	for {
		k, err := c.Read(buf)
		if k > 0 {
			seen := append(tail, buf[:k]...)
			if bytes.Contains(seen, g.pattern) {
				g.hitOnce.Do(func() { close(g.hit) })
			}
			if keep := len(g.pattern) - 1; len(seen) > keep {
				tail = append(tail[:0], seen[len(seen)-keep:]...)
			} else {
				tail = append(tail[:0], seen...)
			}
			if _, err := s.Write(buf[:k]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (g *natsGate) serverToClient(s, c net.Conn) {
	defer c.Close()
	buf := make([]byte, 32<<10)
	for {
		k, err := s.Read(buf)
		if k > 0 {
			select {
			case <-g.hit:
				<-g.open
			default:
			}
			if _, err := c.Write(buf[:k]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// readyz returns /readyz's status, or 0 when nothing answers.
func (d *daemon) readyz() int {
	resp, err := http.Get("http://" + d.httpAd + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestFleetNewNodeBootstraps: a fresh node, an empty data directory and
// the fleet's secret, joins a fleet whose stream no longer holds its early
// history (trimmed by --nats-max-bytes). It merges the fleet snapshot,
// answers 503 on /readyz while it does and until it has applied the stream
// after it, then 200, and from then on answers like the others.
func TestFleetNewNodeBootstraps(t *testing.T) {
	if testing.Short() {
		t.Skip("starts nats-server and greyhold processes")
	}
	ns := startNATS(t, "")
	secret := fleetSecret(t)
	// A 64 KiB stream: 1,500 defers, a message for a few each, outgrow it
	// many times over.
	a := startDaemon(t, fleetArgs(ns.url, "mx1", secret, "--nats-max-bytes", "64KiB")...)
	b := startDaemon(t, fleetArgs(ns.url, "mx2", secret)...)
	const early, n = 1500, 1550
	askAll(t, a, 0, early, testT0, deferAnswer)
	shippedTo(t, a, a, b)
	a.snapshotNow(t)
	a.waitFleet(t, "the snapshot uploaded", func(s cluster.Stats) bool { return s.Uploads > 0 })
	// Later defers, on both nodes, stay in the stream.
	askAll(t, a, early, early+25, testT0, deferAnswer)
	askAll(t, b, early+25, n, testT0, deferAnswer)
	shippedTo(t, a, a, b)
	shippedTo(t, b, a, b)
	st, _ := ns.stream("GREYHOLD")
	if st.FirstSeq <= 1 {
		t.Fatalf("stream %+v: its limit was meant to have dropped the early history", st)
	}
	t.Logf("stream before the new node: %+v", st)

	// The new node's bootstrap waits at the gate: its first request to
	// the object store's stream goes unanswered until release.
	gate := newNATSGate(t, ns.url, "CONSUMER.CREATE.OBJ_GREYHOLD_SNAPSHOTS")
	c := &daemon{dir: t.TempDir(), args: fleetArgs(gate.addr, "mx3", secret)}
	c.launch(t)
	select {
	case <-gate.hit:
	case <-time.After(30 * time.Second):
		t.Fatalf("the new node never asked for the fleet's snapshots:\n%s", c.logText())
	}
	deadline := time.Now().Add(20 * time.Second)
	for c.readyz() != 503 {
		if time.Now().After(deadline) {
			t.Fatalf("/readyz answered %d while the node bootstraps, want 503:\n%s", c.readyz(), c.logText())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if s := c.fleetStats(t); s.CaughtUp || !s.Connected {
		t.Fatalf("held at the gate, the node says %+v", s)
	}
	gate.release()
	c.waitReady(t)
	cs := c.fleetStats(t)
	if !cs.CaughtUp || cs.Bootstraps != 1 || cs.Applied < st.LastSeq {
		t.Fatalf("ready, but %+v (the stream's last sequence was %d)", cs, st.LastSeq)
	}
	// Like the others, changing nothing: the early triplets from the
	// snapshot, the later ones from the stream.
	for i := range n {
		want, wantFirst := a.tripletState(t, i)
		for _, d := range []*daemon{b, c} {
			if got, first := d.tripletState(t, i); got != want || first != wantFirst {
				t.Fatalf("triplet %d: %s since %s, mx1 holds it %s since %s", i, got, first, want, wantFirst)
			}
		}
	}
	askAll(t, c, 0, n, testT0+300, passAnswer)
}
