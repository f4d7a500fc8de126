package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/greyhold/greyhold/dnsbl"
	"github.com/greyhold/greyhold/engine"
	"github.com/greyhold/greyhold/store"
	"github.com/greyhold/greyhold/whitelist"
)

// DecisionLog says which decisions get a log line.
type DecisionLog int

// Decision log levels.
const (
	LogAll    DecisionLog = iota // every decision, as postgrey logs
	LogDefers                    // only defers
	LogOff                       // none
)

// LogAddresses says how log lines show a request's addresses.
type LogAddresses int

// Ways of showing addresses.
const (
	LogPlain  LogAddresses = iota // as sent, as postgrey logs them
	LogHashes                     // keyed hashes (Checker.LogKey)
)

// ParseLogAddresses reads plain or hash.
func ParseLogAddresses(s string) (LogAddresses, error) {
	switch s {
	case "plain":
		return LogPlain, nil
	case "hash":
		return LogHashes, nil
	}
	return 0, fmt.Errorf("log addresses %q: want plain or hash", s)
}

// ParseDecisionLog reads all, defers or off.
func ParseDecisionLog(s string) (DecisionLog, error) {
	switch s {
	case "all":
		return LogAll, nil
	case "defers":
		return LogDefers, nil
	case "off", "none":
		return LogOff, nil
	}
	return 0, fmt.Errorf("decision log %q: want all, defers or off", s)
}

// DefaultHTTPConnections is Config.HTTPMaxConnections's default.
const DefaultHTTPConnections = 4096

// Checker is what a Server uses of the state behind it: decisions, the
// runtime and static whitelists, snapshots and figures. *store.Store is
// the one greyhold runs with; a test can stand another in its place (a
// store whose log fails, say) and see every protocol answer through it.
type Checker interface {
	// Now is the time checks without a test time are decided at.
	Now() engine.Time
	// CheckAt decides one request; an error wrapping store.ErrNotLogged
	// or store.ErrClock means the answer must fail open.
	CheckAt(now engine.Time, req *engine.Request) (engine.Decision, error)
	// CheckBatch decides many with one log append, one Result each,
	// appended to out.
	CheckBatch(now engine.Time, reqs []engine.Request, out []store.Result) []store.Result
	SetRule(r engine.Rule, present bool) (changed bool, err error)
	Rules() []engine.RuleInfo
	SetStaticWhitelist(w *whitelist.Set)
	Snapshot() (store.SnapshotInfo, error)
	Stats() store.Stats
	// LogKey is the keyed hash of a request field that logs show in
	// place of the value with Config.LogAddresses set to LogHashes.
	LogKey(field byte, value string) uint64
	// AppendIdentity appends who the client of a decision was taken to
	// be, as engine.Engine.AppendIdentity does.
	AppendIdentity(dst []byte, req *engine.Request, d *engine.Decision) []byte
	// EngineOptions are the options the decisions are made with, the
	// client identity and the selection rules among them.
	EngineOptions() engine.Options

	// One triplet and one client network, for an operator (triplet.go):
	// Explain changes nothing; the others log their change before they
	// return, as SetRule does.
	Explain(req *engine.Request) (engine.Explanation, error)
	ClientNetworkState(addr string) (engine.ClientState, error)
	PassTriplet(req *engine.Request) (changed bool, err error)
	ForgetTriplet(req *engine.Request) (had bool, err error)
	ForgetClient(addr string) (had bool, network netip.Prefix, err error)
	// SetRuleFor is SetRule for a rule that ends by itself ttl from now.
	SetRuleFor(r engine.Rule, present bool, ttl time.Duration) (changed bool, err error)
	// TopDeferred is the clients and sender domains deferred most in
	// the last hour, n of each, estimated from a sample.
	TopDeferred(n int) engine.Top
}

var _ Checker = (*store.Store)(nil)

// Fleet is what the server shows of the node's replication, when it has
// one (cluster.Node).
type Fleet interface {
	// Ready reports whether the node has caught up with the fleet, or
	// serves alone while NATS is away.
	Ready() bool
	// Status is the fleet's section of /v1/stats, ready for JSON.
	Status() any
}

// Config is everything a Server needs. Zero durations and limits take the
// documented defaults.
type Config struct {
	Store Checker
	// Fleet, if set, holds /readyz at 503 until the node has caught up with
	// its fleet, and fills /v1/stats' fleet section.
	Fleet Fleet

	// Listen addresses; "" turns a listener off.
	PolicyListen string // default 127.0.0.1:10023
	PolicySocket string // a unix socket for Postfix, e.g. /var/spool/postfix/greyhold/policy (README: the directory it needs)
	LineListen   string // default 127.0.0.1:10025
	HTTPListen   string // default 127.0.0.1:10024

	Replies ReplyOptions
	Limits  Limits

	// MaxConnections caps open connections per listener (policy, socket,
	// line). Postfix opens one per smtpd process; 16384 covers a big MX.
	MaxConnections int
	// HTTPMaxConnections caps the HTTP listener's (default 4096).
	HTTPMaxConnections int
	// IdleTimeout closes a connection with no request in progress after
	// this long. Postfix closes its own after smtpd_policy_service_max_idle
	// (300 s), so the default of 10 minutes never cuts one Postfix uses.
	IdleTimeout time.Duration
	// ReadTimeout bounds how long a request, once started, may take to
	// arrive whole, so a slow client cannot hold a connection's worker.
	ReadTimeout time.Duration
	// WriteTimeout bounds writing a reply.
	WriteTimeout time.Duration

	// AdminToken, when set, is required as "Authorization: Bearer <token>"
	// on every HTTP request that changes state. Without it the HTTP
	// listener only binds loopback addresses.
	AdminToken string
	// TestClock lets requests carry their own time (policy_test_time, the
	// API's "time"; the line protocol has none), for tests that must not
	// wait out a delay. Only on loopback listeners.
	TestClock bool
	// HTTPMaxBody caps an HTTP request body (a batch of 1000 checks is
	// about 150 KiB); a larger one is answered 413.
	HTTPMaxBody int
	// HTTPBodyBudget caps the bytes of HTTP request bodies held at once,
	// over every connection (at least HTTPMaxBody); a request beyond it
	// is answered 503 with Retry-After. Bodies are read only for requests
	// whose headers pass the token check.
	HTTPBodyBudget int64
	// DrainDelay keeps /readyz answering 503 this long before listeners
	// close, so load balancers stop sending first.
	DrainDelay time.Duration
	// Pprof serves Go's profiler under /debug/pprof/ on the HTTP listener
	// (behind the admin token when there is one), to find where CPU goes
	// under real load.
	Pprof bool
	// Shadow decides, records, counts and logs as usual but always answers
	// DUNNO (PASS on the line protocol, a pass over HTTP), so an operator
	// sees in the metrics and logs what enforcement would delay before
	// turning it on.
	Shadow bool

	// DNSLists, when set, scores each client on DNS block and allow
	// lists for the rules' dnsbl condition, never waiting for the DNS.
	DNSLists *dnsbl.Lists

	Whitelist     *whitelist.Set
	WhitelistLoad func() (*whitelist.Set, error) // for reloads; nil: none
	// ReloadTimeout bounds a reload of the whitelist files (default 10 s):
	// a file on a hung network mount must not hold the caller, which may
	// be the signal loop or an HTTP request. A reload that times out
	// fails; its files are read on in the background, and the next reload
	// is refused until that read ends.
	ReloadTimeout time.Duration

	DecisionLog DecisionLog
	// LogAddresses, set to LogHashes, puts keyed hashes in place of the
	// client address and name, sender and recipient in every log line
	// (decisions, errors, whitelist changes), and adds the triplet's key
	// to decision lines.
	LogAddresses LogAddresses
	Logger       *slog.Logger
	Registry     *prometheus.Registry

	// idleShrink is conn.go's idleShrink, shortened by tests.
	idleShrink time.Duration
}

func (c *Config) setDefaults() {
	def := DefaultLimits()
	if c.Limits.RequestBytes == 0 {
		c.Limits.RequestBytes = def.RequestBytes
	}
	if c.Limits.Attributes == 0 {
		c.Limits.Attributes = def.Attributes
	}
	if c.Limits.LineBytes == 0 {
		c.Limits.LineBytes = def.LineBytes
	}
	if c.MaxConnections == 0 {
		c.MaxConnections = 16384
	}
	if c.HTTPMaxConnections == 0 {
		c.HTTPMaxConnections = DefaultHTTPConnections
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = 10 * time.Minute
	}
	if c.ReadTimeout == 0 {
		c.ReadTimeout = 10 * time.Second
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.HTTPMaxBody == 0 {
		c.HTTPMaxBody = 8 << 20
	}
	if c.HTTPBodyBudget == 0 {
		c.HTTPBodyBudget = 64 << 20
	}
	c.HTTPBodyBudget = max(c.HTTPBodyBudget, int64(c.HTTPMaxBody))
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.ReloadTimeout == 0 {
		c.ReloadTimeout = 10 * time.Second
	}
	if c.idleShrink == 0 {
		c.idleShrink = idleShrink
	}
}

// Server answers greylisting questions over the policy protocol, the
// compact line protocol and HTTP.
type Server struct {
	cfg     Config
	st      Checker
	replies *Replies
	log     *slog.Logger
	m       *metrics
	rl      *logLimits
	bodies  bodyBudget
	// shrunk counts connections that gave back their buffers.
	shrunk atomic.Uint64

	listeners []net.Listener
	protos    map[net.Listener]string
	http      *fasthttp.Server
	httpLn    net.Listener

	connMu   sync.Mutex
	conns    map[net.Conn]struct{}
	wg       sync.WaitGroup
	stopping atomic.Bool
	ready    atomic.Bool

	wl atomic.Pointer[whitelist.Set]
	// reloading is held from the start of a reload until its files have
	// been read, even after its caller gave up waiting.
	reloading atomic.Bool
	// socketID is the policy socket this server made (socket.go).
	socketID *fileID

	// ruleNames names the selection rules by Decision.Rule ("default"
	// for 0); nil when the engine has none.
	ruleNames []string
}

// New checks the configuration and builds a server; Start binds it.
func New(cfg Config) (*Server, error) {
	cfg.setDefaults()
	if cfg.Store == nil {
		return nil, errors.New("server: no store")
	}
	r, err := NewReplies(cfg.Replies)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, st: cfg.Store, replies: r, log: cfg.Logger.With("component", "server"), conns: map[net.Conn]struct{}{}, protos: map[net.Listener]string{}}
	if cfg.Whitelist != nil {
		s.setWhitelist(cfg.Whitelist)
	}
	if sel := s.st.EngineOptions().Select; len(sel.Rules) > 0 || sel.Default == engine.ActPass {
		s.ruleNames = []string{"default"}
		for _, r := range sel.Rules {
			s.ruleNames = append(s.ruleNames, r.Name)
		}
	}
	s.m = newMetrics(s, cfg.Registry)
	s.rl = newLogLimits(s.log)
	s.bodies.max = cfg.HTTPBodyBudget
	return s, nil
}

func (s *Server) setWhitelist(w *whitelist.Set) {
	s.wl.Store(w)
	s.st.SetStaticWhitelist(w)
}

// ErrReloadTimeout is returned by a reload whose files were not read
// within Config.ReloadTimeout.
var ErrReloadTimeout = errors.New("whitelist reload timed out")

// ReloadWhitelist reads the whitelist files again (SIGHUP and the API call
// it), waiting at most Config.ReloadTimeout. On error the old lists stay
// in force.
func (s *Server) ReloadWhitelist() (*whitelist.Set, error) {
	if s.cfg.WhitelistLoad == nil {
		return nil, errors.New("no whitelist files configured")
	}
	if !s.reloading.CompareAndSwap(false, true) {
		err := errors.New("a whitelist reload is still reading its files (a file on a hung mount?); try again once it ends")
		s.log.Error("whitelist reload refused; the previous lists stay in force", "err", err)
		return nil, err
	}
	type loaded struct {
		w   *whitelist.Set
		err error
	}
	done := make(chan loaded, 1)
	go func() {
		defer s.reloading.Store(false)
		w, err := s.cfg.WhitelistLoad()
		done <- loaded{w, err}
	}()
	t := time.NewTimer(s.cfg.ReloadTimeout)
	defer t.Stop()
	select {
	case l := <-done:
		if l.err != nil {
			s.log.Error("whitelist reload failed; the previous lists stay in force", "err", l.err)
			return nil, l.err
		}
		s.setWhitelist(l.w)
		s.logWhitelist(l.w, "whitelist reloaded")
		return l.w, nil
	case <-t.C:
		err := fmt.Errorf("%w: the files were not read within %v (a file on a hung mount?)", ErrReloadTimeout, s.cfg.ReloadTimeout)
		s.log.Error("whitelist reload failed; the previous lists stay in force", "err", err)
		return nil, err
	}
}

func (s *Server) logWhitelist(w *whitelist.Set, msg string) {
	for _, f := range w.Files {
		s.log.Info(msg, "file", f.Path, "kind", f.Kind, "entries", f.Entries, "skipped", len(f.Skipped))
		for _, sk := range f.Skipped {
			s.log.Warn("whitelist entry skipped", "file", f.Path, "entry", sk)
		}
	}
}

// isLoopback reports whether a listen address only binds loopback.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// CheckListeners reports a listener setting that Start refuses: the test
// clock beyond loopback TCP (another address, or a unix socket), or the
// HTTP API beyond loopback without a token.
// It reads only c, so a caller can turn such a configuration down before
// it opens (and, on the way out, snapshots) the data directory.
func (c *Config) CheckListeners() error {
	for _, a := range []string{c.PolicyListen, c.LineListen, c.HTTPListen} {
		if c.TestClock && a != "" && !isLoopback(a) {
			return fmt.Errorf("--test-clock lets clients set the time; refusing to listen on %s, which is not loopback", a)
		}
	}
	if c.HTTPListen != "" && c.AdminToken == "" && !isLoopback(c.HTTPListen) {
		return fmt.Errorf("the HTTP API changes greylisting state; refusing to listen on %s without --admin-token (loopback needs none)", c.HTTPListen)
	}
	if c.TestClock && c.PolicySocket != "" {
		return errors.New("--test-clock is for loopback TCP tests; do not combine it with --policy-socket")
	}
	return nil
}

// Start binds every configured listener and begins serving. It fails
// before serving anything if one cannot be bound.
func (s *Server) Start() error {
	c := &s.cfg
	if err := c.CheckListeners(); err != nil {
		return err
	}
	fail := func(err error) error {
		for _, l := range s.listeners {
			l.Close()
		}
		if s.httpLn != nil {
			s.httpLn.Close()
		}
		s.removeSocket()
		return err
	}
	if c.PolicyListen != "" {
		l, err := net.Listen("tcp", c.PolicyListen)
		if err != nil {
			return fail(fmt.Errorf("policy listener: %w", err))
		}
		s.serveConns(l, "policy", s.servePolicy)
	}
	if c.PolicySocket != "" {
		l, err := s.listenSocket(c.PolicySocket)
		if err != nil {
			return fail(err)
		}
		s.serveConns(l, "policy", s.servePolicy)
	}
	if c.LineListen != "" {
		l, err := net.Listen("tcp", c.LineListen)
		if err != nil {
			return fail(fmt.Errorf("line listener: %w", err))
		}
		s.serveConns(l, "line", s.serveLine)
	}
	if c.HTTPListen != "" {
		l, err := net.Listen("tcp", c.HTTPListen)
		if err != nil {
			return fail(fmt.Errorf("http listener: %w", err))
		}
		s.httpLn = l
		s.http = s.newHTTPServer()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := s.http.Serve(l); err != nil && !s.stopping.Load() {
				s.log.Error("http listener stopped", "err", err)
			}
		}()
	}
	if w := s.wl.Load(); w != nil {
		s.logWhitelist(w, "whitelist loaded")
	}
	s.ready.Store(true)
	for _, l := range s.listeners {
		s.log.Info("listening", "addr", l.Addr().String())
	}
	if s.httpLn != nil {
		s.log.Info("listening", "addr", s.httpLn.Addr().String(), "protocol", "http")
	}
	return nil
}

// Addr returns the bound address of the named listener ("policy", "line",
// "http"), for tests that listen on port 0; nil if it is off.
func (s *Server) Addr(name string) net.Addr {
	if name == "http" {
		if s.httpLn != nil {
			return s.httpLn.Addr()
		}
		return nil
	}
	for _, l := range s.listeners {
		if l.Addr().Network() == "tcp" && s.protos[l] == name {
			return l.Addr()
		}
	}
	return nil
}

// serveConns accepts connections on l and runs handle for each, up to
// MaxConnections at once.
func (s *Server) serveConns(l net.Listener, proto string, handle func(net.Conn)) {
	s.listeners = append(s.listeners, l)
	s.protos[l] = proto
	open := s.m.connsOpen.WithLabelValues(proto)
	total := s.m.connsTotal.WithLabelValues(proto)
	refused := s.m.limitHits.WithLabelValues("connections")
	var n atomic.Int64
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		acceptFailed := s.rl.new(slog.LevelError, "accept failed; retrying every 50 ms (too many open files: raise the descriptor limit, LimitNOFILE, or lower --max-connections)")
		for {
			c, err := l.Accept()
			if err != nil {
				if s.stopping.Load() {
					return
				}
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					continue
				}
				if errors.Is(err, net.ErrClosed) {
					return
				}
				// Out of file descriptors and the like: back off a little
				// rather than spin.
				acceptFailed.Log("listener", proto, "err", err)
				time.Sleep(50 * time.Millisecond)
				continue
			}
			total.Inc()
			if n.Load() >= int64(s.cfg.MaxConnections) {
				refused.Inc()
				c.Close()
				s.rl.connLimit.Log("listener", proto, "limit", s.cfg.MaxConnections)
				continue
			}
			n.Add(1)
			open.Inc()
			s.track(c, true)
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer func() {
					s.track(c, false)
					c.Close()
					open.Dec()
					n.Add(-1)
				}()
				handle(c)
			}()
		}
	}()
}

func (s *Server) track(c net.Conn, add bool) {
	s.connMu.Lock()
	if add {
		s.conns[c] = struct{}{}
	} else {
		delete(s.conns, c)
	}
	s.connMu.Unlock()
}

// shutdownGrace is how long an idle connection may still start a request
// once shutdown begins: long enough for one Postfix had already sent.
const shutdownGrace = 250 * time.Millisecond

// closeReserve is the least time connections get to close at shutdown,
// past ctx's deadline if need be: the grace of an idle one, and fasthttp's
// 100 ms look at its open connections, with room.
const closeReserve = 2 * shutdownGrace

// Shutdown stops accepting, lets requests already read finish and be
// answered, closes every connection and waits, up to ctx's deadline or,
// when the drain took all of it, closeReserve past it. It does not close
// the store.
func (s *Server) Shutdown(ctx context.Context) error {
	s.ready.Store(false)
	if d := s.cfg.DrainDelay; d > 0 {
		s.log.Info("draining: /readyz answers 503", "for", d)
		select {
		case <-time.After(d):
		case <-ctx.Done():
		}
	}
	s.stopping.Store(true)
	// Connections get closeReserve to close even when the drain took the
	// whole timeout: an idle one (Postfix's, a scraper's keep-alive) then
	// closes in its grace instead of being cut and counted as busy.
	closeCtx := ctx
	if dl, ok := ctx.Deadline(); ctx.Err() != nil || ok && time.Until(dl) < closeReserve {
		var cancel context.CancelFunc
		closeCtx, cancel = context.WithTimeout(context.WithoutCancel(ctx), closeReserve)
		defer cancel()
	}
	for _, l := range s.listeners {
		l.Close()
	}
	s.removeSocket()
	// A connection waiting for its next request closes after a short
	// grace, in which a request already on its way is still read; one that
	// is reading a request finishes it, answers and then closes.
	s.connMu.Lock()
	for c := range s.conns {
		c.SetReadDeadline(time.Now().Add(shutdownGrace))
	}
	s.connMu.Unlock()
	var errs []error
	if s.http != nil {
		if err := s.http.ShutdownWithContext(closeCtx); err != nil {
			errs = append(errs, fmt.Errorf("http shutdown: %w (raise --shutdown-timeout if requests are slow to finish)", err))
		}
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-closeCtx.Done():
		// The wait may lose the race to a deadline that passed as the last
		// connection went: only those still open count.
		s.connMu.Lock()
		n := len(s.conns)
		for c := range s.conns {
			c.Close()
		}
		s.connMu.Unlock()
		if n > 0 {
			errs = append(errs, fmt.Errorf("%d connections still busy at the shutdown deadline were closed", n))
		}
		<-done
	}
	s.rl.flush()
	return errors.Join(errs...)
}

// dnsScore returns the client's DNS list score as far as it is known now,
// starting the lookups it lacks (dnsbl.Lists.Score never waits); 0 without
// lists or for an address that does not parse.
func (s *Server) dnsScore(addr string) int32 {
	if s.cfg.DNSLists == nil || len(addr) == 0 {
		return 0
	}
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return 0
	}
	score, _ := s.cfg.DNSLists.Score(a)
	return score
}

// now returns the time for a request, honouring a test time when the test
// clock is on.
func (s *Server) now(testTime int64) engine.Time {
	if s.cfg.TestClock && testTime > 0 {
		return engine.FromUnix(testTime)
	}
	return s.st.Now()
}

// logDecision writes the line postgrey users grep for.
func (s *Server) logDecision(proto string, req *engine.Request, d engine.Decision, queueID []byte) {
	switch s.cfg.DecisionLog {
	case LogOff:
		return
	case LogDefers:
		if d.Verdict != engine.Defer {
			return
		}
	}
	action := "pass"
	if d.Verdict == engine.Defer {
		action = "greylist"
	}
	attrs := []slog.Attr{
		slog.String("action", action),
		slog.String("reason", d.Reason.String()),
	}
	if s.cfg.Shadow {
		attrs = append(attrs, slog.Bool("shadow", true))
	}
	switch {
	case d.Verdict == engine.Defer:
		attrs = append(attrs, slog.Int("retry_in", int(d.Left)))
	case d.Reason == engine.ReasonPassed:
		attrs = append(attrs, slog.Int("delay", int(d.Delayed)))
	}
	if s.ruleNames != nil {
		attrs = append(attrs, slog.String("rule", s.ruleNames[d.Rule]))
	}
	if s.cfg.DNSLists != nil {
		attrs = append(attrs, slog.Int("dnsbl", int(req.DNSScore)))
	}
	attrs = append(attrs,
		slog.String("identity", s.shown('i', string(s.st.AppendIdentity(nil, req, &d)))),
		slog.String("client_name", s.shown('n', req.ClientName)),
		slog.String("client_address", s.shown('a', req.ClientAddr)),
		slog.String("sender", s.shown('s', req.Sender)),
		slog.String("recipient", s.shown('r', req.Recipient)),
		slog.String("protocol", proto),
	)
	if s.cfg.LogAddresses == LogHashes {
		// The key the state holds for the triplet: lines of one triplet
		// share it, and it can be looked for in the data directory.
		attrs = append(attrs, slog.String("triplet", fmt.Sprintf("%016x", d.Key)))
	}
	if len(queueID) > 0 {
		attrs = append(attrs, slog.String("queue_id", string(queueID)))
	}
	s.log.LogAttrs(context.Background(), slog.LevelInfo, "decision", attrs...)
}

// noteOutcome counts errors, the retry delay of first passes and the
// decisions of selection rules, and logs what an operator must hear of
// (rate-limited: these repeat with every request while their cause lasts).
func (s *Server) noteOutcome(proto string, req *engine.Request, d engine.Decision, err error) {
	if err == nil {
		switch d.Reason {
		case engine.ReasonPassed:
			s.m.retryDelay.Observe(float64(d.Delayed))
		case engine.ReasonOverflow:
			s.rl.overflow.Log("protocol", proto)
		}
		if s.ruleNames != nil {
			s.m.countRule(&d)
		}
		return
	}
	if errors.Is(err, store.ErrClock) {
		// The store logs the clock turning implausible, once.
		s.m.errors.WithLabelValues("clock").Inc()
		return
	}
	if errors.Is(err, store.ErrNotLogged) {
		s.m.errors.WithLabelValues("not_logged").Inc()
		s.rl.notLogged.Log("protocol", proto, "client_address", s.shown('a', req.ClientAddr), "err", err)
		return
	}
	s.m.errors.WithLabelValues("bad_request").Inc()
	s.rl.badRequest.Log("protocol", proto, "client_address", s.shown('a', req.ClientAddr), "recipient", s.shown('r', req.Recipient), "err", s.shownErr(err))
}

// shown is a request field as log lines show it: as sent, or its keyed
// hash ("h:" and 16 hex digits) with LogHashes.
func (s *Server) shown(field byte, v string) string {
	if s.cfg.LogAddresses != LogHashes {
		return v
	}
	return fmt.Sprintf("h:%016x", s.st.LogKey(field, v))
}

// shownErr is a check's error as log lines show it: engine errors quote
// the field they refuse, which LogHashes must not show.
func (s *Server) shownErr(err error) string {
	if s.cfg.LogAddresses == LogHashes {
		if f := engine.BadRequestField(err); f != "" {
			return f + ": refused (value not shown: --log-addresses=hash)"
		}
	}
	return err.Error()
}

// clientAddr renders a peer for logs.
func peer(c net.Conn) string {
	if a := c.RemoteAddr(); a != nil && a.String() != "" {
		return a.String()
	}
	return "unix"
}

// shownRule is a whitelist rule's value as log lines show it.
func (s *Server) shownRule(kind engine.RuleKind, v string) string {
	switch kind {
	case engine.RuleClient:
		return s.shown('a', v)
	case engine.RuleClientName:
		return s.shown('n', v)
	case engine.RuleSender:
		return s.shown('s', v)
	}
	return s.shown('r', v)
}

// isReady is recovery done and listeners up, and, with a fleet, caught up
// with it.
func (s *Server) isReady() bool {
	return s.ready.Load() && (s.cfg.Fleet == nil || s.cfg.Fleet.Ready())
}
