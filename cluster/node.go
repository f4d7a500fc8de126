package cluster

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/greyhold/greyhold/internal/ratelog"
	"github.com/greyhold/greyhold/store"
	"github.com/greyhold/greyhold/wal"
)

// Store is what a Node needs of the store: its identity, its log to ship,
// the replay path for others' records, and its snapshots.
type Store interface {
	Identity() store.Identity
	Follow(from uint64) *wal.Cursor
	HoldLog(index uint64) *wal.Pin
	LogEras() []wal.Era
	ApplyRemote(payload []byte) (int, error)
	ImportSnapshot(path string) (store.ImportInfo, error)
	Snapshot() (store.SnapshotInfo, error)
	SetSnapshotState(fn func() []byte)
	OnSnapshot(fn func(store.SnapshotInfo))
	TempFile(pattern string) (*os.File, error)
	Stats() store.Stats
}

// ErrRefused says this node may not join the fleet on the stream: its
// secret or key options are not the fleet's.
var ErrRefused = errors.New("cluster: not this fleet's node")

// Node is one MX host's replication: it ships the store's log to the
// stream and applies the other nodes' records. Methods are safe for
// concurrent use.
type Node struct {
	opts  Options
	st    Store
	id    store.Identity
	fleet string
	key   uint32
	log   *slog.Logger
	m     *metrics
	warn  *limiters

	nc  *nats.Conn
	js  jetstream.JetStream
	str jetstream.Stream
	obs jetstream.ObjectStore

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	setUp     atomic.Bool
	connected atomic.Bool
	refused   atomic.Pointer[string]
	caughtUp  atomic.Bool
	broken    atomic.Bool // setting up or applying fails: the node is alone

	applied  atomic.Uint64 // stream sequence of the last message handled
	pubSeq   atomic.Uint64 // stream sequence of this node's last message acknowledged
	changeMu sync.Mutex
	joined   chan struct{} // closed and replaced at each connect
	closed   chan struct{} // closed by nats.go once the connection is closed, its callbacks run
	// sess ends when the connection drops: requests in flight then (a
	// stream lookup, a publish awaiting its ack) give up at once rather
	// than wait out their timeouts past the reconnect. Guarded by
	// changeMu; nil until session makes one.
	sess       context.Context
	sessStop   context.CancelFunc
	changed    chan struct{} // closed and replaced when the node's progress changes
	snapSeq    atomic.Uint64 // applied, as the last snapshot began
	acked      atomic.Uint64 // last log index the stream acknowledged
	pin        *wal.Pin
	snapNeed   atomic.Bool // frames were lost to the stream: ship a snapshot
	bootstraps atomic.Uint64
	uploadsN   atomic.Uint64
	uploadC    chan store.SnapshotInfo
	lastUpMu   sync.Mutex
	lastUp     time.Time
	peerMu     sync.Mutex
	peers      map[string]*peer
	published  counters
	appliedN   counters

	// lagHook, if set, hears every applied frame's lag (benchmarks).
	lagHook func(time.Duration)
	// backlogEvery is how often the backlog is checked (tests shorten it).
	backlogEvery time.Duration
}

type counters struct {
	messages, frames, records, bytes atomic.Uint64
}

// peer is what this node knows of another, from its messages.
type peer struct {
	lastSeen time.Time
	lag      time.Duration
	seq      uint64
	frames   uint64
}

// New makes a node for st; Start connects it.
func New(st Store, opts Options) (*Node, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	n := &Node{
		opts:    opts,
		st:      st,
		id:      st.Identity(),
		log:     opts.Logger.With("component", "cluster", "node", opts.NodeID),
		uploadC: make(chan store.SnapshotInfo, 1),
		peers:   map[string]*peer{},
		changed: make(chan struct{}),
		joined:  make(chan struct{}),
		closed:  make(chan struct{}),
	}
	n.fleet = fleetID(n.id)
	n.key = keyID(n.id.SecretID)
	n.warn = &limiters{out: n.log, m: map[string]*ratelog.Limiter{}}
	m, err := newMetrics(opts.Registerer, n)
	if err != nil {
		return nil, err
	}
	n.m = m
	if pos, ok := parseState(st.Stats().Recovery.State, opts.Stream); ok {
		n.applied.Store(pos)
	}
	return n, nil
}

// state is what a node keeps in its snapshots: the stream position it had
// applied when the snapshot began.
type state struct {
	Stream string `json:"stream"`
	Seq    uint64 `json:"seq"`
}

func parseState(b []byte, stream string) (uint64, bool) {
	var s state
	if len(b) == 0 || json.Unmarshal(b, &s) != nil || s.Stream != stream {
		return 0, false
	}
	return s.Seq, true
}

// Start connects to NATS and waits up to Options.ConnectWait for it. If
// it comes, the node checks that it belongs to the fleet (ErrRefused if
// not), makes the stream and buckets if missing, and starts shipping and
// applying. If NATS does not come in time the node serves alone and does
// all that once it connects. Start returns once that is settled. The
// catch-up comes after, in the background: merging the newest fleet
// snapshot if the stream no longer holds what the node needs (a new node,
// or one away for longer than the stream keeps), then applying the stream;
// the node reports Ready once it has caught up. So the server listens,
// answers /readyz with 503 and shows its metrics meanwhile, however long a
// big snapshot takes to come.
func (n *Node) Start(ctx context.Context) error {
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.pin = n.st.HoldLog(n.st.Stats().WAL.FirstIndex)
	n.st.SetSnapshotState(func() []byte {
		seq := n.applied.Load()
		n.snapSeq.Store(seq)
		b, _ := json.Marshal(state{Stream: n.opts.Stream, Seq: seq})
		return b
	})
	n.st.OnSnapshot(func(info store.SnapshotInfo) {
		select {
		case n.uploadC <- info:
		default:
		}
	})
	nc, err := n.connect()
	if err != nil {
		n.cancel()
		n.pin.Release()
		return err
	}
	n.nc = nc
	js, err := jetstream.New(nc)
	if err != nil {
		n.cancel()
		n.pin.Release()
		nc.Close()
		return fmt.Errorf("cluster: %w", err)
	}
	n.js = js

	wait, cancel := context.WithTimeout(ctx, n.opts.ConnectWait)
	defer cancel()
	if err := n.waitConnected(wait); err != nil {
		n.log.Warn("NATS not reachable yet: serving alone, and joining the fleet once it is",
			"urls", n.opts.URLs, "waited", n.opts.ConnectWait,
			"hint", "the node answers from its own state; its log keeps every change for the fleet")
	} else if err := n.setup(ctx); err != nil {
		n.Close()
		return err
	}
	n.wg.Add(2)
	go n.run()
	go n.watchBacklog()
	return nil
}

// watchBacklog checks the log kept for the stream against its bound, from
// the start: a node that never reaches NATS must not keep its log for ever.
func (n *Node) watchBacklog() {
	defer n.wg.Done()
	every := n.backlogEvery
	if every == 0 {
		every = 5 * time.Second
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-tick.C:
			n.checkBacklog()
		}
	}
}

// connect dials NATS as the options say: retrying a failed first connect,
// reconnecting without limit, and with nats.go's reconnect buffer off, so
// that a publish while disconnected fails at once and the log, not memory,
// holds the backlog.
func (n *Node) connect() (*nats.Conn, error) {
	o := []nats.Option{
		nats.Name("greyhold " + n.opts.NodeID),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectBufSize(-1),
		nats.ReconnectWait(time.Second),
		nats.ConnectHandler(func(c *nats.Conn) { n.onConnect(c, "connected to NATS") }),
		nats.ReconnectHandler(func(c *nats.Conn) { n.onConnect(c, "reconnected to NATS") }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			n.connected.Store(false)
			n.endSession()
			n.progressed()
			if n.ctx.Err() != nil {
				return // Close's own: the node is stopping, not serving alone
			}
			n.log.Warn("disconnected from NATS: serving alone until it is back", "err", err,
				"hint", "the log keeps every change; the fleet converges once NATS returns")
		}),
		nats.ClosedHandler(func(*nats.Conn) { close(n.closed) }),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			n.warn.log("could not connect to NATS; retrying", "urls", n.opts.URLs, "err", err,
				"hint", "a refusal, a TLS or certificate error, an authorization violation or a timeout: check the servers, the network to them, and the CA, certificate and credentials given")
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			n.warn.log("NATS reported an error", "err", err)
		}),
	}
	switch {
	case n.opts.CredsFile != "":
		o = append(o, nats.UserCredentials(n.opts.CredsFile))
	case n.opts.NKeyFile != "":
		opt, err := nats.NkeyOptionFromSeed(n.opts.NKeyFile)
		if err != nil {
			return nil, fmt.Errorf("cluster: nkey file %s: %w", n.opts.NKeyFile, err)
		}
		o = append(o, opt)
	case n.opts.User != "":
		o = append(o, nats.UserInfo(n.opts.User, n.opts.Password))
	case n.opts.Token != "":
		o = append(o, nats.Token(n.opts.Token))
	}
	if n.opts.TLSCA != "" {
		o = append(o, nats.RootCAs(n.opts.TLSCA))
	}
	if n.opts.TLSCert != "" {
		o = append(o, nats.ClientCert(n.opts.TLSCert, n.opts.TLSKey))
	}
	if n.opts.TLSCA != "" || n.opts.TLSCert != "" {
		o = append(o, nats.Secure(&tls.Config{MinVersion: tls.VersionTLS12}))
	}
	nc, err := nats.Connect(n.opts.URLs, o...)
	if err != nil {
		return nil, fmt.Errorf("cluster: connect to %s: %w", n.opts.URLs, err)
	}
	if nc.IsConnected() {
		n.onConnect(nc, "connected to NATS")
	}
	return nc, nil
}

func (n *Node) onConnect(c *nats.Conn, msg string) {
	if n.connected.Swap(true) {
		return
	}
	n.log.Info(msg, "url", c.ConnectedUrlRedacted())
	n.changeMu.Lock()
	close(n.joined)
	n.joined = make(chan struct{})
	n.changeMu.Unlock()
	n.progressed()
}

// session returns the context of the connection as it is now, which ends
// when the connection drops or the node closes.
func (n *Node) session() context.Context {
	n.changeMu.Lock()
	defer n.changeMu.Unlock()
	if n.sess == nil {
		n.sess, n.sessStop = context.WithCancel(n.ctx)
	}
	return n.sess
}

// endSession ends the session of a connection that dropped.
func (n *Node) endSession() {
	n.changeMu.Lock()
	defer n.changeMu.Unlock()
	if n.sessStop != nil {
		n.sessStop()
		n.sess, n.sessStop = nil, nil
	}
}

// waitConnected returns once the connection is up, or ctx's error. Every
// waiter (publisher, consumer, setup) wakes at a connect: joined is a
// broadcast, taken before connected is read so that a connect between the
// two is not missed.
func (n *Node) waitConnected(ctx context.Context) error {
	for {
		n.changeMu.Lock()
		joined := n.joined
		n.changeMu.Unlock()
		if n.connected.Load() {
			return nil
		}
		select {
		case <-joined:
		case <-ctx.Done():
			return ctx.Err()
		case <-n.ctx.Done():
			return n.ctx.Err()
		}
	}
}

// run sets the node up on its first connection (if Start could not), then
// ships and applies until Close.
func (n *Node) run() {
	defer n.wg.Done()
	for !n.setUp.Load() {
		if err := n.waitConnected(n.ctx); err != nil {
			return
		}
		err := n.setup(n.ctx)
		switch {
		case errors.Is(err, ErrRefused):
			n.log.Error("this node is refused by the fleet: replication stays off, the node serves alone", "err", err,
				"hint", "start it on a new, empty data directory with the fleet's secret (--secret-file) and key options: this directory's state is keyed by its own")
			return
		case err != nil && n.ctx.Err() == nil:
			n.broken.Store(true)
			n.warn.log("could not set up replication; retrying", "err", err)
			if !sleep(n.ctx, 2*time.Second) {
				return
			}
		}
	}
	n.wg.Add(3)
	go func() { defer n.wg.Done(); n.publish() }()
	go func() { defer n.wg.Done(); n.consume() }()
	go func() { defer n.wg.Done(); n.uploads() }()
}

// pause waits before a retry: d, or until NATS connects again, whichever
// comes first, so that a node does not sit out a long backoff after an
// outage ends. It reports false once the node is closing.
func (n *Node) pause(d time.Duration) bool {
	n.changeMu.Lock()
	joined := n.joined
	n.changeMu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-joined:
	case <-n.ctx.Done():
		return false
	}
	return true
}

// sleep waits d or until ctx ends, reporting whether it waited d.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// setupWait bounds setup: a NATS cluster electing its JetStream leader
// takes seconds, and the node serves alone meanwhile.
const setupWait = time.Minute

// identity is the fleet's record in the KV bucket.
type identity struct {
	SecretID string    `json:"secret_id"`
	Keys     string    `json:"keys"`
	By       string    `json:"recorded_by"`
	At       time.Time `json:"recorded_at"`
}

// setup checks the fleet's identity and makes what is missing (stream,
// buckets): requests of a few milliseconds each, bounded by setupWait.
// Merging a fleet snapshot, which may take minutes, is left to the
// consumer (catchUpStart), so that neither a start nor a stop waits for it.
func (n *Node) setup(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, setupWait)
	defer cancel()
	if err := n.checkIdentity(ctx); err != nil {
		if errors.Is(err, ErrRefused) {
			msg := err.Error()
			n.refused.Store(&msg)
		}
		return err
	}
	str, err := n.js.Stream(ctx, n.opts.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		str, err = n.js.CreateStream(ctx, jetstream.StreamConfig{
			Name:        n.opts.Stream,
			Description: "greyhold: every node's state changes (cluster/doc.go)",
			Subjects:    []string{subjectPrefix + "*"},
			Storage:     jetstream.FileStorage,
			Replicas:    n.opts.Replicas,
			MaxAge:      n.opts.MaxAge,
			MaxBytes:    n.opts.MaxBytes,
			Discard:     jetstream.DiscardOld,
			Compression: jetstream.S2Compression,
			// JetStream refuses a window longer than the stream keeps
			// messages.
			Duplicates:  min(2*time.Minute, n.opts.MaxAge),
			AllowDirect: true,
		})
		if err == nil {
			n.log.Info("made the stream", "stream", n.opts.Stream, "replicas", n.opts.Replicas,
				"max_age", n.opts.MaxAge, "max_bytes", n.opts.MaxBytes)
		}
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			str, err = n.js.Stream(ctx, n.opts.Stream) // another node made it meanwhile
		}
	}
	if err != nil {
		return fmt.Errorf("cluster: stream %s: %w", n.opts.Stream, err)
	}
	n.str = str
	bucket := n.opts.Stream + "_SNAPSHOTS"
	obs, err := n.js.ObjectStore(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		obs, err = n.js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{
			Bucket:      bucket,
			Description: "greyhold: each node's newest snapshot, for new nodes",
			Storage:     jetstream.FileStorage,
			Replicas:    n.opts.Replicas,
			Compression: true,
		})
		if errors.Is(err, jetstream.ErrBucketExists) {
			obs, err = n.js.ObjectStore(ctx, bucket)
		}
	}
	if err != nil {
		return fmt.Errorf("cluster: object store %s: %w", bucket, err)
	}
	n.obs = obs
	n.setUp.Store(true)
	n.broken.Store(false)
	return nil
}

// checkIdentity records this node's identity as the fleet's if none is
// recorded, or compares it with the one that is.
func (n *Node) checkIdentity(ctx context.Context) error {
	bucket := n.opts.Stream + "_FLEET"
	kv, err := n.js.KeyValue(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = n.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      bucket,
			Description: "greyhold: what the nodes of the fleet share (secret id and key options)",
			Storage:     jetstream.FileStorage,
			Replicas:    n.opts.Replicas,
		})
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = n.js.KeyValue(ctx, bucket)
		}
	}
	if err != nil {
		return fmt.Errorf("cluster: fleet bucket %s: %w", bucket, err)
	}
	mine := identity{SecretID: fmt.Sprintf("%016x", n.id.SecretID), Keys: n.id.Keys, By: n.opts.NodeID, At: time.Now().UTC().Truncate(time.Second)}
	b, _ := json.Marshal(mine)
	if _, err := kv.Create(ctx, "identity", b); err == nil {
		n.log.Info("recorded this node's secret id and key options as the fleet's", "bucket", bucket, "secret_id", mine.SecretID, "keys", mine.Keys)
		return nil
	} else if !errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("cluster: record the fleet's identity: %w", err)
	}
	e, err := kv.Get(ctx, "identity")
	if err != nil {
		return fmt.Errorf("cluster: read the fleet's identity: %w", err)
	}
	var fleet identity
	if err := json.Unmarshal(e.Value(), &fleet); err != nil {
		return fmt.Errorf("cluster: the fleet's identity in %s is not greyhold's: %w", bucket, err)
	}
	sameKeys := fleetKeys(fleet.Keys) == fleetKeys(mine.Keys)
	switch {
	case fleet.SecretID != mine.SecretID && !sameKeys:
		return fmt.Errorf("%w: both the secret (id %s, the fleet's %s) and the key options (%q, the fleet's %q) differ: start the node on a new, empty data directory with the fleet's secret and key options", ErrRefused, mine.SecretID, fleet.SecretID, mine.Keys, fleet.Keys)
	case fleet.SecretID != mine.SecretID:
		return fmt.Errorf("%w: the secret differs: id %s, the fleet's %s (recorded by %s): this data directory's state is keyed by its own secret and cannot join; start the node on a new, empty data directory with the fleet's secret (--secret-file, or the fleet's secret file copied into it as secret)", ErrRefused, mine.SecretID, fleet.SecretID, fleet.By)
	case !sameKeys:
		return fmt.Errorf("%w: the key options differ: %q, the fleet's %q (recorded by %s): start the node on a new, empty data directory with the fleet's prefix lengths, normalisation and identity mode (this directory's state is keyed by its own)", ErrRefused, mine.Keys, fleet.Keys, fleet.By)
	case fleet.Keys != mine.Keys:
		n.log.Warn("this node's public suffix list is not the one the fleet recorded: names the two lists classify apart are keyed apart",
			"mine", mine.Keys, "fleet", fleet.Keys, "hint", "upgrade every node to the same greyhold")
	}
	return nil
}

// Ready reports whether the node has caught up with the stream, or serves
// alone because NATS is away (the fleet is an option, never a condition of
// answering).
//
// A node whose replication is broken (NATS reachable, but the stream or
// the consumer failing) is ready too, and says what is wrong in its log
// and metrics: /readyz takes a node out of a balancer's rotation, and a
// node alone still answers rightly. Only a catch-up under way holds it.
func (n *Node) Ready() bool {
	if !n.connected.Load() || n.refused.Load() != nil || n.broken.Load() {
		return true
	}
	return n.setUp.Load() && n.caughtUp.Load()
}

// Close stops shipping and applying and closes the connection. What was
// not acknowledged stays in the log for the next start.
func (n *Node) Close() error {
	if n.cancel != nil {
		n.cancel()
	}
	n.wg.Wait()
	if n.nc != nil {
		n.nc.Close()
		// nats.go runs its callbacks on a goroutine of its own: the
		// disconnect's comes before the close's, and neither logs after
		// Close has returned.
		select {
		case <-n.closed:
		case <-time.After(5 * time.Second):
		}
	}
	if n.pin != nil {
		n.pin.Release()
	}
	n.warn.flush()
	n.m.unregister()
	return nil
}

// limiters rate-limits the node's repeating warnings, one limiter a
// message (internal/ratelog).
type limiters struct {
	out *slog.Logger
	mu  sync.Mutex
	m   map[string]*ratelog.Limiter
}

func (l *limiters) log(msg string, args ...any) {
	l.mu.Lock()
	lim, ok := l.m[msg]
	if !ok {
		lim = ratelog.New(l.out, slog.LevelWarn, msg, 0)
		l.m[msg] = lim
	}
	l.mu.Unlock()
	lim.Log(args...)
}

func (l *limiters) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, lim := range l.m {
		lim.Flush()
	}
}

// progressed wakes Wait's callers.
func (n *Node) progressed() {
	n.changeMu.Lock()
	close(n.changed)
	n.changed = make(chan struct{})
	n.changeMu.Unlock()
}

// Wait returns once cond holds for the node's Stats, checking at each
// change of its progress (a message acknowledged or applied, a connection
// made or lost), or ctx's error.
func (n *Node) Wait(ctx context.Context, cond func(Stats) bool) error {
	for {
		n.changeMu.Lock()
		ch := n.changed
		n.changeMu.Unlock()
		if cond(n.Stats()) {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
