package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/greyhold/greyhold/engine"
	"github.com/greyhold/greyhold/internal/testutil"
	"github.com/greyhold/greyhold/store"
	"github.com/greyhold/greyhold/wal"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// nats-server's and nats.go's own background goroutines outlive a
		// shut-down server by a moment.
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).Start.func1"),
		goleak.IgnoreTopFunction("time.Sleep"),
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).startGoRoutine.func1"),
		goleak.IgnoreAnyFunction("github.com/nats-io/nats.go.(*Conn).doReconnect"),
	)
}

const t0 = testutil.T0

// guard bounds a wait for something the test itself set going: it fails
// instead of hanging.
func guard(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// natsNode is an embedded nats-server with JetStream, restartable on the
// same port and store directory.
type natsNode struct {
	t     testing.TB
	opts  *natsserver.Options
	s     *natsserver.Server
	url   string
	alive bool
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func startNATS(t testing.TB) *natsNode {
	t.Helper()
	return startNATSOn(t, freePort(t))
}

func startNATSOn(t testing.TB, port int) *natsNode {
	t.Helper()
	n := &natsNode{t: t, opts: &natsserver.Options{
		Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: t.TempDir(),
		NoLog: true, NoSigs: true,
	}}
	n.url = fmt.Sprintf("nats://127.0.0.1:%d", n.opts.Port)
	n.start()
	t.Cleanup(n.stop)
	return n
}

func (n *natsNode) start() {
	n.t.Helper()
	s, err := natsserver.NewServer(n.opts)
	if err != nil {
		n.t.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(20 * time.Second) {
		n.t.Fatal("nats-server not ready")
	}
	n.s, n.alive = s, true
}

func (n *natsNode) stop() {
	if n.alive {
		n.s.Shutdown()
		n.s.WaitForShutdown()
		n.alive = false
	}
}

// testNode is a store and its replication, as one MX host runs them.
type testNode struct {
	t     testing.TB
	name  string
	dir   string
	url   string
	sopts store.Options
	copts Options
	st    *store.Store
	n     *Node
	// prestart, if set, runs between New and Start, for the node's test
	// knobs.
	prestart func(*Node)
}

// newNode opens a store in dir (a new one if ""), with the secret of
// secretFrom (the fleet's, if not ""), and starts its replication.
func newNode(t testing.TB, url, name, dir, secretFrom string, mut func(*Options)) *testNode {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	if secretFrom != "" {
		copySecret(t, secretFrom, dir)
	}
	tn := &testNode{t: t, name: name, dir: dir, url: url}
	tn.sopts = store.DefaultOptions()
	tn.sopts.Clock = engine.NewManualClock(t0)
	tn.sopts.SnapshotInterval = 0
	tn.sopts.SnapshotLogBytes = 0
	tn.sopts.Sync = wal.SyncNever
	tn.sopts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	tn.copts = Options{URLs: url, NodeID: name, ConnectWait: 10 * time.Second, SnapshotUploadInterval: time.Nanosecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if testing.Verbose() {
		tn.copts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test_node", name)
	}
	if mut != nil {
		mut(&tn.copts)
	}
	tn.open()
	t.Cleanup(tn.close)
	return tn
}

func (tn *testNode) open() {
	tn.t.Helper()
	st, err := store.Open(tn.dir, tn.sopts)
	if err != nil {
		tn.t.Fatal(err)
	}
	if tn.url == "" { // a node alone, for comparison
		tn.st = st
		return
	}
	n, err := New(st, tn.copts)
	if err != nil {
		st.Close()
		tn.t.Fatal(err)
	}
	if tn.prestart != nil {
		tn.prestart(n)
	}
	if err := n.Start(context.Background()); err != nil {
		st.Close()
		tn.t.Fatal(err)
	}
	tn.st, tn.n = st, n
}

func (tn *testNode) close() {
	if tn.st == nil {
		return
	}
	if tn.n != nil {
		tn.n.Close()
	}
	if err := tn.st.Close(); err != nil {
		tn.t.Error(err)
	}
	tn.n, tn.st = nil, nil
}

// restart closes the node as a stop does (final snapshot) and opens it again.
func (tn *testNode) restart() {
	tn.close()
	tn.open()
}

func copySecret(t testing.TB, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(src, "secret"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dst, "secret"), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func triplet(i int) *engine.Request {
	return &engine.Request{ClientAddr: fmt.Sprintf("10.%d.%d.7", i/250, i%250), ClientName: "mail.example",
		Sender: fmt.Sprintf("sender%d@news.example", i), Recipient: fmt.Sprintf("user%d@example.test", i)}
}

func (tn *testNode) expect(at engine.Time, r *engine.Request, v engine.Verdict, reason engine.Reason) {
	tn.t.Helper()
	d, err := tn.st.CheckAt(at, r)
	if err != nil {
		tn.t.Fatalf("%s: %v", tn.name, err)
	}
	if d.Verdict != v || d.Reason != reason {
		tn.t.Fatalf("%s: %s at %d: %v/%v, want %v/%v", tn.name, r.Sender, at, d.Verdict, d.Reason, v, reason)
	}
}

// shipped waits until everything the node logged is acknowledged by the
// stream, and returns the sequence of its last message.
func (tn *testNode) shipped(ctx context.Context) uint64 {
	tn.t.Helper()
	err := tn.n.Wait(ctx, func(s Stats) bool { return s.Backlog.Frames == 0 })
	if err != nil {
		tn.t.Fatalf("%s: backlog not shipped: %v (%+v)", tn.name, err, tn.n.Stats())
	}
	return tn.n.Stats().PubSeq
}

// applied waits until the node has applied the stream up to seq.
func (tn *testNode) applied(ctx context.Context, seq uint64) {
	tn.t.Helper()
	if err := tn.n.Wait(ctx, func(s Stats) bool { return s.Applied >= seq }); err != nil {
		tn.t.Fatalf("%s: not applied up to %d: %v (%+v)", tn.name, seq, err, tn.n.Stats())
	}
}

// hears waits until every node in to has applied what from has shipped.
func (tn *testNode) hears(ctx context.Context, to ...*testNode) {
	tn.t.Helper()
	seq := tn.shipped(ctx)
	for _, o := range to {
		o.applied(ctx, seq)
	}
}

func TestRetryPassesOnAnotherNode(t *testing.T) {
	ns := startNATS(t)
	ctx := guard(t)
	a := newNode(t, ns.url, "mx1", "", "", nil)
	b := newNode(t, ns.url, "mx2", "", a.dir, nil)
	for i := range 20 {
		a.expect(t0, triplet(i), engine.Defer, engine.ReasonNew)
	}
	a.hears(ctx, b)
	for i := range 20 {
		b.expect(t0+300, triplet(i), engine.Pass, engine.ReasonPassed)
	}
	// A third node, new, learns all of it from the stream.
	c := newNode(t, ns.url, "mx3", "", a.dir, nil)
	c.expect(t0, triplet(100), engine.Defer, engine.ReasonNew)
	b.hears(ctx, c, a)
	c.hears(ctx, a, b)
	for i := range 20 {
		c.expect(t0+301, triplet(i), engine.Pass, engine.ReasonKnown)
		a.expect(t0+302, triplet(i), engine.Pass, engine.ReasonKnown)
	}
	if !c.n.Ready() {
		t.Fatalf("caught up, but not ready: %+v", c.n.Stats())
	}
	st := b.n.Stats()
	if len(st.Peers) != 2 || st.Peers[0].Node != "mx1" || st.Peers[1].Node != "mx3" || st.AppliedRec == 0 {
		t.Fatalf("b's stats: %+v", st)
	}
}

func TestNATSOutage(t *testing.T) {
	ns := startNATS(t)
	ctx := guard(t)
	a := newNode(t, ns.url, "mx1", "", "", nil)
	b := newNode(t, ns.url, "mx2", "", a.dir, nil)
	a.expect(t0, triplet(1), engine.Defer, engine.ReasonNew)
	a.hears(ctx, b)

	// A request in flight when the connection drops gives up at once,
	// rather than wait out its timeout past the reconnect.
	sess := a.n.session()
	ns.stop()
	if err := a.n.Wait(ctx, func(s Stats) bool { return !s.Connected }); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sess.Done():
	case <-ctx.Done():
		t.Fatal("the session of the dropped connection did not end")
	}
	// Both keep answering from their own state, and log for the fleet.
	for i := 2; i < 30; i++ {
		a.expect(t0, triplet(i), engine.Defer, engine.ReasonNew)
	}
	b.expect(t0+300, triplet(1), engine.Pass, engine.ReasonPassed)
	if !a.n.Ready() || !b.n.Ready() {
		t.Fatal("a node without NATS must still be ready: it serves alone")
	}
	if bl := a.n.Stats().Backlog; bl.Frames != 28 {
		t.Fatalf("backlog %+v, want 28 frames", bl)
	}

	ns.start()
	a.hears(ctx, b)
	b.hears(ctx, a)
	for i := 2; i < 30; i++ {
		b.expect(t0+300, triplet(i), engine.Pass, engine.ReasonPassed)
	}
	a.expect(t0+301, triplet(1), engine.Pass, engine.ReasonKnown)
}

func TestRestartResumes(t *testing.T) {
	ns := startNATS(t)
	ctx := guard(t)
	a := newNode(t, ns.url, "mx1", "", "", nil)
	b := newNode(t, ns.url, "mx2", "", a.dir, nil)
	for i := range 10 {
		a.expect(t0, triplet(i), engine.Defer, engine.ReasonNew)
	}
	a.hears(ctx, b)
	appliedBefore := b.n.Stats().Applied
	b.close()
	for i := 10; i < 15; i++ {
		a.expect(t0, triplet(i), engine.Defer, engine.ReasonNew)
	}
	b.open()
	a.hears(ctx, b)
	if got := b.n.Stats().AppliedRec; got == 0 || got > 5*3 {
		t.Fatalf("after a restart b applied %d records: it should go on from sequence %d, not replay the stream", got, appliedBefore)
	}
	for i := range 15 {
		b.expect(t0+300, triplet(i), engine.Pass, engine.ReasonPassed)
	}
	// And a restarted publisher ships only what it had not: the one
	// record of the check after the restart.
	a.restart()
	a.expect(t0, triplet(99), engine.Defer, engine.ReasonNew)
	a.shipped(ctx)
	if got := a.n.Stats().Published; got != 1 {
		t.Fatalf("after a restart the publisher sent %d records, want the 1 written since", got)
	}
}

func TestTrimmedStreamBootstraps(t *testing.T) {
	ns := startNATS(t)
	ctx := guard(t)
	a := newNode(t, ns.url, "mx1", "", "", nil)
	b := newNode(t, ns.url, "mx2", "", a.dir, nil)
	a.expect(t0, triplet(0), engine.Defer, engine.ReasonNew)
	a.hears(ctx, b)
	b.close()
	for i := 1; i < 40; i++ {
		a.expect(t0, triplet(i), engine.Defer, engine.ReasonNew)
	}
	a.shipped(ctx)
	// A snapshot, uploaded for the fleet, then the stream trimmed past
	// what b had applied.
	if _, err := a.st.Snapshot(); err != nil {
		t.Fatal(err)
	}
	if err := a.n.Wait(ctx, func(s Stats) bool { return s.Uploads > 0 }); err != nil {
		t.Fatal(err)
	}
	purge(t, ns.url, "GREYHOLD")
	b.open()
	if err := b.n.Wait(ctx, func(s Stats) bool { return s.Bootstraps == 1 && s.CaughtUp }); err != nil {
		t.Fatalf("b did not bootstrap: %v (%+v)", err, b.n.Stats())
	}
	for i := range 40 {
		b.expect(t0+300, triplet(i), engine.Pass, engine.ReasonPassed)
	}
}

func purge(t testing.TB, url, stream string) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	s, err := js.Stream(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Purge(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestOtherSecretRefused(t *testing.T) {
	ns := startNATS(t)
	a := newNode(t, ns.url, "mx1", "", "", nil)
	_ = a
	dir := t.TempDir()
	sopts := store.DefaultOptions()
	sopts.Clock = engine.NewManualClock(t0)
	sopts.Logger = slog.New(slog.DiscardHandler)
	st, err := store.Open(dir, sopts) // a secret of its own
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	n, err := New(st, Options{URLs: ns.url, NodeID: "stranger"})
	if err != nil {
		t.Fatal(err)
	}
	err = n.Start(context.Background())
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "secret differs") || !strings.Contains(err.Error(), "new, empty data directory") {
		t.Fatalf("Start with another secret = %v, want ErrRefused naming the secret and the way to join", err)
	}
}

// TestForeignAndMalformedMessagesSkipped: messages on the stream that are
// not this fleet's, or not whole, are skipped, counted by reason, and
// nothing of them is applied, not even a good frame before the damage;
// the node goes on applying what comes after.
func TestForeignAndMalformedMessagesSkipped(t *testing.T) {
	ns := startNATS(t)
	ctx := guard(t)
	reg := prometheus.NewRegistry()
	a := newNode(t, ns.url, "mx1", "", "", nil)
	b := newNode(t, ns.url, "mx2", "", a.dir, func(o *Options) { o.Registerer = reg })
	nc, err := nats.Connect(ns.url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	bad := func(subject string, h map[string]string, body []byte) {
		m := nats.NewMsg(subject)
		for k, v := range h {
			m.Header.Set(k, v)
		}
		m.Data = body
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	good := map[string]string{hdrKind: kindFrames, hdrNode: "evil", hdrFleet: b.n.fleet, hdrGen: "1", hdrFirst: "1", hdrLast: "1"}
	bad(subjectPrefix+"evil", good, []byte("not frames at all"))
	foreign := map[string]string{hdrKind: kindFrames, hdrNode: "evil", hdrFleet: "0000-0000", hdrGen: "1", hdrFirst: "1", hdrLast: "1"}
	bad(subjectPrefix+"evil", foreign, nil)
	// A frame of the right fleet id but keyed by another secret.
	f, _ := wal.AppendFrame(nil, wal.Frame{Index: 1, Gen: 1, KeyID: 7, Records: 1, Payload: []byte{1, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}})
	bad(subjectPrefix+"evil", good, append([]byte{byte(len(f))}, f...))
	// A good frame of the fleet's (made by a lone store with its secret),
	// then a frame cut short.
	src := newNode(t, "", "src", "", a.dir, nil)
	src.expect(t0, triplet(100), engine.Defer, engine.ReasonNew)
	cur := src.st.Follow(1)
	defer cur.Close()
	gf, err := cur.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	whole, _ := wal.AppendFrame(nil, gf)
	body := binary.AppendUvarint(nil, uint64(len(whole)))
	body = append(append(body, whole...), 40, 1, 2, 3)
	bad(subjectPrefix+"evil", good, body)

	a.expect(t0, triplet(1), engine.Defer, engine.ReasonNew)
	a.hears(ctx, b)
	b.expect(t0+300, triplet(1), engine.Pass, engine.ReasonPassed)
	if got := b.n.Stats(); len(got.Peers) != 1 {
		t.Fatalf("peers %+v: the bad messages' node must not count as one", got.Peers)
	}
	// The good frame of the damaged message was not applied: the triplet
	// is new to b.
	b.expect(t0+300, triplet(100), engine.Defer, engine.ReasonNew)
	for reason, want := range map[string]float64{"malformed": 3, "foreign": 1} {
		if got := promtest.ToFloat64(b.n.m.skips.WithLabelValues(reason)); got != want {
			t.Errorf("skipped messages (%s) = %v, want %v", reason, got, want)
		}
	}
}

// TestOtherKeyOptionsRefused: a node with the fleet's secret but other
// key options (here a /16 for IPv4) would key the same mail otherwise:
// it is refused, and the error names the options.
func TestOtherKeyOptionsRefused(t *testing.T) {
	ns := startNATS(t)
	a := newNode(t, ns.url, "mx1", "", "", nil)
	dir := t.TempDir()
	copySecret(t, a.dir, dir)
	sopts := store.DefaultOptions()
	sopts.Clock = engine.NewManualClock(t0)
	sopts.Logger = slog.New(slog.DiscardHandler)
	sopts.Engine.Keys.IPv4Prefix = 16
	st, err := store.Open(dir, sopts)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	n, err := New(st, Options{URLs: ns.url, NodeID: "mx2"})
	if err != nil {
		t.Fatal(err)
	}
	err = n.Start(context.Background())
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "key options differ") || !strings.Contains(err.Error(), "ipv4=/16") {
		t.Fatalf("Start with other key options = %v, want ErrRefused naming them", err)
	}
}

// TestBigFrameShippedInPieces: a frame bigger than a message (a batch of
// checks group-committed at once) goes out in pieces and arrives whole.
func TestBigFrameShippedInPieces(t *testing.T) {
	ns := startNATS(t)
	ctx := guard(t)
	small := func(o *Options) { o.MaxMsgBytes = 16 << 10 }
	a := newNode(t, ns.url, "mx1", "", "", small)
	b := newNode(t, ns.url, "mx2", "", a.dir, small)
	batch := make([]engine.Request, 3000) // about 54 KB of records in one frame
	for i := range batch {
		batch[i] = *triplet(i)
	}
	for i, r := range a.st.CheckBatch(t0, batch, nil) {
		if r.Err != nil || r.Decision.Reason != engine.ReasonNew {
			t.Fatalf("check %d: %+v", i, r)
		}
	}
	if st := a.st.Stats().WAL; st.Frames != 1 {
		t.Fatalf("%d frames: the batch was meant to be one", st.Frames)
	}
	a.hears(ctx, b)
	if msgs := a.n.published.messages.Load(); msgs < 4 {
		t.Fatalf("%d messages for a 54 KB frame under a 16 KiB limit", msgs)
	}
	for i := range batch {
		b.expect(t0+300, triplet(i), engine.Pass, engine.ReasonPassed)
	}
}

// TestBacklogBound: a node that cannot reach NATS keeps its log for the
// fleet only up to the bound; past it the log is let go (snapshots
// truncate it again) and a snapshot is due for the fleet instead.
func TestBacklogBound(t *testing.T) {
	ctx := guard(t)
	port := freePort(t)
	url := fmt.Sprintf("nats://127.0.0.1:%d", port) // nothing listens yet
	bound := func(o *Options) {
		o.ConnectWait = time.Millisecond
		o.BacklogBytes = 16 << 10
	}
	a := newNode(t, url, "mx1", "", "", bound)
	a.sopts.WALSegmentSize = 2 << 10
	a.restart()
	for i := range 100 {
		a.expect(t0, triplet(i), engine.Defer, engine.ReasonNew)
	}
	if _, err := a.st.Snapshot(); err != nil {
		t.Fatal(err)
	}
	if first := a.st.Stats().WAL.FirstIndex; first != 1 {
		t.Fatalf("the log starts at %d under the bound: it was meant to be held", first)
	}
	for i := 100; i < 600; i++ {
		a.expect(t0, triplet(i), engine.Defer, engine.ReasonNew)
	}
	a.close()
	a.prestart = func(n *Node) { n.backlogEvery = time.Millisecond }
	a.open()
	if err := a.n.Wait(ctx, func(s Stats) bool { return s.ShipSnapshot }); err != nil {
		t.Fatalf("the backlog bound was not applied: %v (%+v)", err, a.n.Stats())
	}
	if _, err := a.st.Snapshot(); err != nil {
		t.Fatal(err)
	}
	if first := a.st.Stats().WAL.FirstIndex; first == 1 {
		t.Fatal("the log is still held past its bound")
	}

	// NATS comes: the node ships a snapshot in place of the frames it let
	// go, and a peer merges it.
	ns := startNATSOn(t, port)
	b := newNode(t, ns.url, "mx2", "", a.dir, nil)
	if err := a.n.Wait(ctx, func(s Stats) bool { return !s.ShipSnapshot && s.Backlog.Frames == 0 }); err != nil {
		t.Fatalf("no snapshot shipped: %v (%+v)", err, a.n.Stats())
	}
	a.hears(ctx, b)
	for i := range 600 {
		b.expect(t0+300, triplet(i), engine.Pass, engine.ReasonPassed)
	}
}

// TestStreamKeptBriefly: a stream made with a maximum age under two
// minutes, the dedup window's default, is made (JetStream refuses a
// window longer than the age) with a window of that age.
func TestStreamKeptBriefly(t *testing.T) {
	ns := startNATS(t)
	ctx := guard(t)
	a := newNode(t, ns.url, "mx1", "", "", func(o *Options) { o.MaxAge = 30 * time.Second })
	info, err := a.n.str.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.MaxAge != 30*time.Second || info.Config.Duplicates != 30*time.Second {
		t.Fatalf("stream made with max age %v and duplicates window %v, want 30s for both", info.Config.MaxAge, info.Config.Duplicates)
	}
	b := newNode(t, ns.url, "mx2", "", a.dir, nil)
	a.expect(t0, triplet(1), engine.Defer, engine.ReasonNew)
	a.hears(ctx, b)
	b.expect(t0+300, triplet(1), engine.Pass, engine.ReasonPassed)
}

// TestCloseIsNoOutage: a node that is stopped does not log that it lost
// NATS and serves alone, which a stop's own disconnect would otherwise
// say as its last words.
func TestCloseIsNoOutage(t *testing.T) {
	ns := startNATS(t)
	var out testutil.SyncBuffer
	a := newNode(t, ns.url, "mx1", "", "", func(o *Options) { o.Logger = slog.New(slog.NewTextHandler(&out, nil)) })
	a.close()
	if log := out.String(); !strings.Contains(log, "connected to NATS") || strings.Contains(log, "disconnected") {
		t.Fatalf("the node's log over a start and a stop:\n%s", log)
	}
}

// signalWriter collects a log and closes seen once a line holds want.
type signalWriter struct {
	testutil.SyncBuffer
	want string
	seen chan struct{}
	once sync.Once
}

func (w *signalWriter) Write(p []byte) (int, error) {
	n, err := w.SyncBuffer.Write(p)
	if strings.Contains(string(p), w.want) {
		w.once.Do(func() { close(w.seen) })
	}
	return n, err
}

// TestConnectFailureLogged: a node whose NATS goes away and cannot be
// reached again logs why each time it fails to reconnect (rate-limited),
// the line the disconnect alert sends the operator to.
func TestConnectFailureLogged(t *testing.T) {
	ns := startNATS(t)
	ctx := guard(t)
	w := &signalWriter{want: "could not connect to NATS; retrying", seen: make(chan struct{})}
	a := newNode(t, ns.url, "mx1", "", "", func(o *Options) { o.Logger = slog.New(slog.NewTextHandler(w, nil)) })
	ns.stop()
	select {
	case <-w.seen:
	case <-ctx.Done():
		t.Fatalf("no line says the reconnect failed:\n%s", w.String())
	}
	if log := w.String(); !strings.Contains(log, "err=") || !strings.Contains(log, "urls=") {
		t.Errorf("the line lacks the error or the URLs:\n%s", log)
	}
	a.close()
}
