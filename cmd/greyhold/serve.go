package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/greyhold/greyhold/dnsbl"
	"github.com/greyhold/greyhold/engine"
	"github.com/greyhold/greyhold/server"
	"github.com/greyhold/greyhold/store"
	"github.com/greyhold/greyhold/wal"
	"github.com/greyhold/greyhold/whitelist"
)

// serveConfig holds every serve flag. Flags are parsed only here; the
// packages get Options structs built from it.
type serveConfig struct {
	configFile string
	dataDir    string

	policyListen, policySocket, lineListen, httpListen string

	delay, retryWindow, maxAge, touch, awlInterval time.Duration
	awlClients                                     int
	ipv4Prefix, ipv6Prefix                         int
	rawSender, stripRcptExt                        bool
	clientIdentity                                 string
	rules                                          []string
	dnsbls, dnswls, dnsServers                     []string
	dnsTimeout                                     time.Duration
	ruleDefault                                    string
	shadow, passTxRcpts                            bool

	fsync                          string
	snapshotInterval               time.Duration
	snapshotLogBytes               int64
	walSegmentSize                 int64
	maxEntries                     int
	shards                         int
	whitelistClients, whitelistRcp []string

	greylistAction, greylistText, xGreylistHeader, hostname string

	adminToken, adminTokenFile string
	testClock, pprof           bool

	maxConnections                          int
	idleTimeout, readTimeout, writeTimeout  time.Duration
	maxRequestBytes, maxLineBytes, maxAttrs int64
	httpMaxBody, httpBodyBudget             int64
	drainDelay, shutdownTimeout             time.Duration

	logLevel, logFormat, logDecisions, logAddresses string

	fleet fleetConfig
}

func defaultServeConfig() serveConfig {
	eo := engine.DefaultOptions()
	so := store.DefaultOptions()
	host, _ := os.Hostname()
	lim := server.DefaultLimits()
	return serveConfig{
		fleet:            defaultFleetConfig(),
		dataDir:          "./greyhold-data",
		policyListen:     "127.0.0.1:10023",
		lineListen:       "127.0.0.1:10025",
		httpListen:       "127.0.0.1:10024",
		delay:            eo.Delay,
		retryWindow:      eo.RetryWindow,
		maxAge:           eo.MaxAge,
		touch:            eo.TouchInterval,
		awlInterval:      eo.AutoWhitelistInterval,
		awlClients:       eo.AutoWhitelistClients,
		ipv4Prefix:       eo.Keys.IPv4Prefix,
		ipv6Prefix:       eo.Keys.IPv6Prefix,
		fsync:            "1s",
		snapshotInterval: so.SnapshotInterval,
		snapshotLogBytes: so.SnapshotLogBytes,
		walSegmentSize:   16 << 20,
		maxEntries:       -1,
		shards:           eo.Shards,
		whitelistClients: []string{whitelist.Builtin},
		whitelistRcp:     []string{whitelist.Builtin},
		greylistAction:   server.DefaultAction,
		greylistText:     server.DefaultText,
		xGreylistHeader:  server.DefaultHeader,
		hostname:         host,
		maxConnections:   16384,
		idleTimeout:      10 * time.Minute,
		readTimeout:      10 * time.Second,
		writeTimeout:     10 * time.Second,
		maxRequestBytes:  int64(lim.RequestBytes),
		maxLineBytes:     int64(lim.LineBytes),
		maxAttrs:         int64(lim.Attributes),
		httpMaxBody:      8 << 20,
		httpBodyBudget:   64 << 20,
		shutdownTimeout:  30 * time.Second,
		logLevel:         "info",
		logFormat:        "text",
		logDecisions:     "all",
		logAddresses:     "plain",
		ruleDefault:      "greylist",
		dnsTimeout:       2 * time.Second,
	}
}

func (c *serveConfig) flags(fs *flag.FlagSet) {
	fs.StringVar(&c.configFile, "config", "", "read settings from this file (lines of name = value, names as the flags); command-line flags and GREYHOLD_* variables win over it")
	fs.StringVar(&c.dataDir, "data-dir", c.dataDir, "directory for the log, snapshots and the hash secret")

	fs.StringVar(&c.policyListen, "policy-listen", c.policyListen, "address for the Postfix policy protocol (\"\" to turn off)")
	fs.StringVar(&c.policySocket, "policy-socket", c.policySocket, "also serve the policy protocol on this unix socket, e.g. /var/spool/postfix/greyhold/policy, in a directory of group postfix, setgid (README)")
	fs.StringVar(&c.lineListen, "line-listen", c.lineListen, "address for the compact line protocol (\"\" to turn off)")
	fs.StringVar(&c.httpListen, "http-listen", c.httpListen, "address for the HTTP API and /metrics (\"\" to turn off)")

	fs.Var(duration{&c.delay, time.Second}, "delay", "how long a new triplet is deferred; a bare number is seconds, as in postgrey")
	fs.Var(duration{&c.retryWindow, 24 * time.Hour}, "retry-window", "how long after first seen a retry still counts; a bare number is days")
	fs.Var(duration{&c.maxAge, 24 * time.Hour}, "max-age", "how long a passed triplet or whitelisted client is remembered unseen; a bare number is days")
	fs.Var(duration{&c.touch, time.Second}, "touch-interval", "how often a known triplet's last-seen time is refreshed and logged")
	fs.IntVar(&c.awlClients, "auto-whitelist-clients", c.awlClients, "pass everything from a client network after this many of its triplets passed (0: off)")
	fs.Var(duration{&c.awlInterval, time.Second}, "auto-whitelist-interval", "count at most one pass per client network in this long")
	fs.IntVar(&c.ipv4Prefix, "ipv4-prefix", c.ipv4Prefix, "IPv4 prefix length that makes a client network (32: exact address)")
	fs.IntVar(&c.ipv6Prefix, "ipv6-prefix", c.ipv6Prefix, "IPv6 prefix length that makes a client network (128: exact address)")
	fs.BoolVar(&c.rawSender, "no-sender-normalisation", false, "compare senders as sent (lowercased) without unwrapping BATV/SRS or collapsing VERP digits")
	fs.BoolVar(&c.stripRcptExt, "strip-recipient-extension", false, "drop +extensions from recipients, so user+a@ and user+b@ share a triplet")
	fs.StringVar(&c.clientIdentity, "client-identity", "", "who the client is: name (a verified, non-generic client_name's organisation, else the network) or network (the /24 or /64, as postgrey); unset: what the data directory was written with, name for a new one")

	fs.Var(&lines{v: &c.rules}, "rule", "a selective greylisting rule, NAME: CONDITIONS => ACTION (README: Greylisting only suspicious clients); repeat it, or write one rule = line each in the --config file")
	fs.StringVar(&c.ruleDefault, "rule-default", c.ruleDefault, "what a request no rule decides gets: greylist (every client, as postgrey) or pass")
	fs.Var(&lines{v: &c.dnsbls}, "dnsbl", "a DNS block list for the rules' dnsbl >= SCORE, ZONE WEIGHT (zen.spamhaus.org 10; ZONE=127.0.0.2,... counts only those answers); repeat it")
	fs.Var(&lines{v: &c.dnswls}, "dnswl", "a DNS allow list, ZONE WEIGHT: a listed client's score loses WEIGHT; repeat it")
	fs.Var(&list{v: &c.dnsServers}, "dns-servers", "resolvers for the DNS lists, host[:port] comma-separated (default: /etc/resolv.conf's); use your own, public ones are refused by most lists")
	fs.Var(duration{&c.dnsTimeout, time.Second}, "dns-timeout", "how long a DNS list lookup may take; until it answers, and after a timeout, the list counts as not listing the client")
	fs.BoolVar(&c.passTxRcpts, "pass-transaction-recipients", false, "let a recipient pass that would be deferred when another recipient of the same transaction (Postfix's instance, client and sender) passed")
	fs.BoolVar(&c.shadow, "shadow", false, "decide, record, count and log as usual, but always answer DUNNO: see what greylisting would delay before enforcing it")
	fs.StringVar(&c.fsync, "fsync", c.fsync, "when the log is fsynced: always (before answering), an interval such as 1s (writes before answering, syncs on the interval), or never")
	fs.Var(duration{&c.snapshotInterval, time.Minute}, "snapshot-interval", "take a snapshot this often (0: only on size, on request and at exit); a bare number is minutes")
	fs.Var(size{&c.snapshotLogBytes}, "snapshot-wal-size", "take a snapshot once the log has grown this much (0: off)")
	fs.Var(size{&c.walSegmentSize}, "wal-segment-size", "start a new log segment file at this size; the log holds its tail segment in memory, so this bounds its memory too (about four times it at worst)")
	fs.IntVar(&c.maxEntries, "max-entries", c.maxEntries, "triplets held in memory at most; the oldest pending go first (-1: from available memory, 0: no bound)")
	fs.IntVar(&c.shards, "shards", c.shards, "lock shards, a power of two up to 65536: about one per 25,000 triplets expected (4096 at 100M); a shard's table grows under its lock")
	fs.Var(&list{v: &c.whitelistClients}, "whitelist-clients", "client whitelist files in postgrey's format, comma-separated; \"builtin\" is the list greyhold ships, \"none\" for none")
	fs.Var(&list{v: &c.whitelistRcp}, "whitelist-recipients", "recipient whitelist files in postgrey's format; \"builtin\" is postmaster@ and abuse@, \"none\" for none")

	fs.StringVar(&c.greylistAction, "greylist-action", c.greylistAction, "policy action for a defer: DEFER_IF_PERMIT, DEFER, or a 4xx code such as 450 or 451")
	fs.StringVar(&c.greylistText, "greylist-text", c.greylistText, "text after the action: %s seconds left, %t time left (4m59s), %r recipient domain")
	fs.StringVar(&c.xGreylistHeader, "x-greylist-header", c.xGreylistHeader, "header added on a triplet's first pass (\"\" for none): %t seconds delayed, %v version, %h host, %d date")
	fs.StringVar(&c.hostname, "hostname", c.hostname, "host name for the X-Greylist header")

	fs.StringVar(&c.adminToken, "admin-token", "", "bearer token required on HTTP requests that change state; needed to listen beyond loopback")
	fs.StringVar(&c.adminTokenFile, "admin-token-file", "", "read the admin token from this file (keeps it out of ps)")
	fs.BoolVar(&c.pprof, "pprof", false, "serve Go's profiler under /debug/pprof/ on the HTTP listener (behind the admin token if set)")
	fs.BoolVar(&c.testClock, "test-clock", false, "tests only: let requests carry their own time (policy_test_time=, \"time\"); refused on non-loopback listeners")

	fs.IntVar(&c.maxConnections, "max-connections", c.maxConnections, "open connections per listener at most")
	fs.Var(duration{&c.idleTimeout, time.Second}, "idle-timeout", "close a connection idle this long between requests")
	fs.Var(duration{&c.readTimeout, time.Second}, "read-timeout", "a request, once begun, must arrive whole within this")
	fs.Var(duration{&c.writeTimeout, time.Second}, "write-timeout", "a reply must be written within this")
	fs.Var(size{&c.maxRequestBytes}, "max-request-bytes", "largest policy request accepted")
	fs.Var(size{&c.maxLineBytes}, "max-line-bytes", "longest line accepted (policy attributes and line protocol requests)")
	fs.Var(size{&c.maxAttrs}, "max-attributes", "most attributes in one policy request")
	fs.Var(size{&c.httpMaxBody}, "http-max-body", "largest HTTP request body (answered 413 beyond)")
	fs.Var(size{&c.httpBodyBudget}, "http-body-budget", "HTTP request bodies held at once, over all connections (answered 503 beyond; at least --http-max-body)")
	fs.Var(duration{&c.drainDelay, time.Second}, "drain-delay", "on SIGTERM, answer /readyz with 503 this long before closing listeners")
	fs.Var(duration{&c.shutdownTimeout, time.Second}, "shutdown-timeout", "on SIGTERM, stop within this: requests in flight, then the final snapshot, which is abandoned if not written by then (the log holds every change); the log's close gets 5s more")

	fs.StringVar(&c.logLevel, "log-level", c.logLevel, "debug, info, warn or error")
	fs.StringVar(&c.logFormat, "log-format", c.logFormat, "text (key=value) or json")
	fs.StringVar(&c.logDecisions, "log-decisions", c.logDecisions, "log each decision: all (as postgrey), defers, or off")
	fs.StringVar(&c.logAddresses, "log-addresses", c.logAddresses, "how log lines show client addresses and names, senders and recipients: plain (as sent), or hash (keyed hashes, as the state on disk holds them)")

	c.fleet.flags(fs)

	// postgrey's names, so its command lines carry over. Each sets the
	// flag it stands for through fs.Set, so that flag counts as given
	// wherever the alias was (aliasTargets tells applySources which).
	fs.Func("inet", "postgrey: listen on [HOST:]PORT for the policy protocol", func(v string) error {
		if !strings.Contains(v, ":") {
			v = "127.0.0.1:" + v
		}
		return fs.Set("policy-listen", v)
	})
	fs.Func("unix", "postgrey: serve the policy protocol on this unix socket", func(v string) error { return fs.Set("policy-socket", v) })
	fs.Func("dbdir", "postgrey: same as --data-dir", func(v string) error { return fs.Set("data-dir", v) })
	fs.Func("ipv4cidr", "postgrey: same as --ipv4-prefix", func(v string) error { return fs.Set("ipv4-prefix", v) })
	fs.Func("ipv6cidr", "postgrey: same as --ipv6-prefix", func(v string) error { return fs.Set("ipv6-prefix", v) })
	fs.BoolFunc("lookup-by-host", "postgrey: whole addresses, not networks (--ipv4-prefix=32 --ipv6-prefix=128)", func(v string) error {
		on, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("%q: want true or false", v)
		}
		if !on {
			return nil
		}
		if err := fs.Set("ipv4-prefix", "32"); err != nil {
			return err
		}
		return fs.Set("ipv6-prefix", "128")
	})
	fs.BoolFunc("privacy", "postgrey: store hashes, not addresses (always so in greyhold; accepted and ignored)", func(v string) error {
		if _, err := strconv.ParseBool(v); err != nil {
			return fmt.Errorf("%q: want true or false", v)
		}
		return nil
	})
	fs.BoolFunc("lookup-by-subnet", "postgrey: networks (the default; the prefixes are --ipv4-prefix and --ipv6-prefix)", func(v string) error {
		if _, err := strconv.ParseBool(v); err != nil {
			return fmt.Errorf("%q: want true or false", v)
		}
		return nil
	})
}

// aliasTargets names, for each postgrey alias, the flags it sets.
var aliasTargets = map[string][]string{
	"inet":             {"policy-listen"},
	"unix":             {"policy-socket"},
	"dbdir":            {"data-dir"},
	"ipv4cidr":         {"ipv4-prefix"},
	"ipv6cidr":         {"ipv6-prefix"},
	"lookup-by-host":   {"ipv4-prefix", "ipv6-prefix"},
	"lookup-by-subnet": nil,
	"privacy":          nil,
}

// selection reads the --rule and --rule-default settings.
func (c *serveConfig) selection() (engine.Selection, error) {
	var sel engine.Selection
	switch c.ruleDefault {
	case "greylist":
		sel.Default = engine.ActGreylist
	case "pass":
		sel.Default = engine.ActPass
	default:
		return sel, fmt.Errorf("--rule-default %q: want greylist or pass", c.ruleDefault)
	}
	for _, l := range c.rules {
		r, err := engine.ParseSelectRule(l)
		if err != nil {
			return sel, fmt.Errorf("--rule: %w", err)
		}
		sel.Rules = append(sel.Rules, r)
	}
	if err := sel.Validate(); err != nil {
		return sel, fmt.Errorf("--rule: %w", err)
	}
	return sel, nil
}

// dnsLists sets up the --dnsbl and --dnswl lists, nil when there are none,
// with their metrics on reg.
func (c *serveConfig) dnsLists(reg prometheus.Registerer, logger *slog.Logger, sel engine.Selection) (*dnsbl.Lists, error) {
	var zones []dnsbl.Zone
	for _, l := range c.dnsbls {
		z, err := dnsbl.ParseZone(l, false)
		if err != nil {
			return nil, fmt.Errorf("--dnsbl: %w", err)
		}
		zones = append(zones, z)
	}
	for _, l := range c.dnswls {
		z, err := dnsbl.ParseZone(l, true)
		if err != nil {
			return nil, fmt.Errorf("--dnswl: %w", err)
		}
		zones = append(zones, z)
	}
	if len(zones) == 0 {
		if sel.NeedsDNSBL() {
			return nil, errors.New("--rule: a rule reads dnsbl, but no --dnsbl or --dnswl list is given")
		}
		return nil, nil
	}
	if !sel.NeedsDNSBL() {
		logger.Warn("DNS lists are set but no --rule reads dnsbl: they are looked up for the log and the API only")
	}
	lookups := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "greyhold_dnsbl_lookups_total",
		Help: "DNS list lookups by zone and result: listed, clean, timeout, error (SERVFAIL, refused), dropped (too many in flight).",
	}, []string{"zone", "result"})
	var lastWarn atomic.Int64
	lists, err := dnsbl.New(dnsbl.Config{Zones: zones, Servers: c.dnsServers, Timeout: c.dnsTimeout,
		OnResult: func(zone, result string) {
			lookups.WithLabelValues(zone, result).Inc()
			if result == "timeout" || result == "error" || result == "dropped" {
				if now := time.Now().Unix(); lastWarn.Load() < now-60 {
					lastWarn.Store(now)
					logger.Warn("DNS list lookup failed; the list counts as not listing the client (check --dns-servers, and that the list answers your resolver)",
						"zone", zone, "result", result, "servers", strings.Join(c.dnsServers, ","))
				}
			}
		}})
	if err != nil {
		return nil, err
	}
	for _, z := range zones {
		for _, r := range []string{"listed", "clean", "timeout", "error", "dropped"} {
			lookups.WithLabelValues(z.Name, r)
		}
	}
	reg.MustRegister(lookups, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "greyhold_dnsbl_pending", Help: "DNS list lookups under way.",
	}, func() float64 { return float64(lists.Pending()) }))
	return lists, nil
}

// The bounds of --wal-segment-size: below 64 KiB a busy server makes a
// file every few milliseconds; above 1 GiB the tail segment held in
// memory costs gigabytes.
const (
	minSegmentSize = 64 << 10
	maxSegmentSize = 1 << 30
)

// options builds the packages' options from the flags.
func (c *serveConfig) options(logger *slog.Logger, reg prometheus.Registerer) (store.Options, error) {
	o := store.DefaultOptions()
	o.Engine.Delay = c.delay
	o.Engine.RetryWindow = c.retryWindow
	o.Engine.MaxAge = c.maxAge
	o.Engine.TouchInterval = c.touch
	o.Engine.AutoWhitelistClients = c.awlClients
	o.Engine.AutoWhitelistInterval = c.awlInterval
	o.Engine.Keys.IPv4Prefix = c.ipv4Prefix
	o.Engine.Keys.IPv6Prefix = c.ipv6Prefix
	o.Engine.Keys.NoSenderNormalisation = c.rawSender
	o.Engine.Keys.StripRecipientExtension = c.stripRcptExt
	id, err := engine.ParseIdentity(c.clientIdentity)
	if err != nil {
		return o, fmt.Errorf("--client-identity: %w", err)
	}
	o.Engine.Keys.Identity = id
	o.Engine.PassTransactionRecipients = c.passTxRcpts
	if o.Engine.Select, err = c.selection(); err != nil {
		return o, err
	}
	o.Engine.Shards = c.shards
	switch {
	case c.maxEntries < 0:
		o.Engine.MaxEntries = store.DefaultMaxEntries()
	default:
		o.Engine.MaxEntries = c.maxEntries
	}
	if err := store.CheckEngineOptions(o.Engine); err != nil {
		return o, err
	}
	mode, err := wal.ParseSyncMode(c.fsync)
	if err != nil {
		return o, fmt.Errorf("--fsync: %w", err)
	}
	o.Sync = mode
	o.SnapshotInterval = c.snapshotInterval
	o.SnapshotLogBytes = c.snapshotLogBytes
	if c.walSegmentSize < minSegmentSize || c.walSegmentSize > maxSegmentSize {
		return o, fmt.Errorf("--wal-segment-size %s: want 64KiB to 1GiB", size{&c.walSegmentSize})
	}
	o.WALSegmentSize = int(c.walSegmentSize)
	o.Logger = logger
	o.Registerer = reg
	o.SecretFile = c.fleet.secretFile
	return o, nil
}

func newLogger(level, format string, out *asyncWriter) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(out, opts)), nil
	case "json":
		out.dropNote = func(n uint64) []byte {
			return fmt.Appendf(nil, `{"time":%q,"level":"WARN","msg":"log output stalled; lines dropped","dropped_bytes":%d}`+"\n",
				time.Now().Format(time.RFC3339Nano), n)
		}
		return slog.New(slog.NewJSONHandler(out, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

func runServe(args []string) int {
	c := defaultServeConfig()
	fs := flag.NewFlagSet("greyhold serve", flag.ContinueOnError)
	c.flags(fs)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: greyhold serve [flags]\n\nRuns the greylisting server. Every flag can also be set as GREYHOLD_<NAME> in\nthe environment (GREYHOLD_DELAY=5m) or in a --config file (delay = 5m).\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "greyhold serve: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if err := applyConfig(fs, c.configFile); err != nil {
		fmt.Fprintf(os.Stderr, "greyhold serve: %v\n", err)
		return 2
	}

	out := newAsyncWriter(os.Stderr)
	// Bounded: with stderr a pipe nobody reads, exit after closeWait.
	defer out.Close()
	logger, err := newLogger(c.logLevel, c.logFormat, out)
	if err != nil {
		fmt.Fprintf(os.Stderr, "greyhold serve: %v\n", err)
		return 2
	}
	if err := serve(&c, logger); err != nil {
		logger.Error("greyhold stopped", "err", err)
		return 1
	}
	return 0
}

func serve(c *serveConfig, logger *slog.Logger) error {
	// From the start: a SIGHUP from logrotate or a SIGTERM during a long
	// recovery waits for the loop below instead of killing the process.
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sig)

	token := c.adminToken
	if c.adminTokenFile != "" {
		b, err := os.ReadFile(c.adminTokenFile)
		if err != nil {
			return fmt.Errorf("--admin-token-file: %w", err)
		}
		token = strings.TrimSpace(string(b))
		if token == "" {
			return fmt.Errorf("--admin-token-file %s is empty: put the token in it, or drop the flag", c.adminTokenFile)
		}
	}
	decisions, err := server.ParseDecisionLog(c.logDecisions)
	if err != nil {
		return err
	}
	addresses, err := server.ParseLogAddresses(c.logAddresses)
	if err != nil {
		return fmt.Errorf("--log-addresses: %w", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "greyhold_build_info", Help: "Always 1; the version is a label.", ConstLabels: prometheus.Labels{"version": version},
	}, func() float64 { return 1 }))

	opts, err := c.options(logger, reg)
	if err != nil {
		return err
	}
	loadWL := func() (*whitelist.Set, error) { return whitelist.LoadFiles(c.whitelistClients, c.whitelistRcp) }
	wl, err := loadWL()
	if err != nil {
		return err
	}

	lists, err := c.dnsLists(reg, logger, opts.Engine.Select)
	if err != nil {
		return err
	}
	if lists != nil {
		defer lists.Close()
	}

	scfg := server.Config{
		PolicyListen: c.policyListen,
		PolicySocket: c.policySocket,
		LineListen:   c.lineListen,
		HTTPListen:   c.httpListen,
		Replies: server.ReplyOptions{
			Action: c.greylistAction, Text: c.greylistText, Header: c.xGreylistHeader,
			Host: c.hostname, Version: version,
		},
		Limits:         server.Limits{RequestBytes: int(c.maxRequestBytes), Attributes: int(c.maxAttrs), LineBytes: int(c.maxLineBytes)},
		HTTPMaxBody:    int(c.httpMaxBody),
		HTTPBodyBudget: c.httpBodyBudget,
		MaxConnections: c.maxConnections,
		IdleTimeout:    c.idleTimeout,
		ReadTimeout:    c.readTimeout,
		WriteTimeout:   c.writeTimeout,
		AdminToken:     token,
		TestClock:      c.testClock,
		DrainDelay:     c.drainDelay,
		Pprof:          c.pprof,
		Shadow:         c.shadow,
		DNSLists:       lists,
		Whitelist:      wl,
		WhitelistLoad:  loadWL,
		DecisionLog:    decisions,
		LogAddresses:   addresses,
		Logger:         logger,
		Registry:       reg,
	}
	if err := scfg.CheckListeners(); err != nil {
		return err
	}
	listeners := 0
	for _, a := range []string{c.policyListen, c.policySocket, c.lineListen} {
		if a != "" {
			listeners++
		}
	}
	scfg.HTTPMaxConnections = server.DefaultHTTPConnections
	if c.httpListen == "" {
		scfg.HTTPMaxConnections = 0
	}
	if err := fitDescriptors(logger, listeners, &scfg.MaxConnections, &scfg.HTTPMaxConnections); err != nil {
		return err
	}

	logger.Info("starting greyhold", "version", version, "data_dir", c.dataDir, "delay", c.delay, "retry_window", c.retryWindow,
		"max_age", c.maxAge, "auto_whitelist_clients", c.awlClients, "keys", opts.Engine.Keys.String(), "fsync", opts.Sync.String(),
		"max_entries", opts.Engine.MaxEntries)
	start := time.Now()
	st, err := store.Open(c.dataDir, opts)
	if err != nil {
		return err
	}
	logger.Info("recovery done", "duration", time.Since(start).Round(time.Millisecond), "keys", st.Engine().Options().Keys.String())

	fleet, err := startFleet(&c.fleet, st, logger, reg)
	if err != nil {
		if cerr := st.Close(); cerr != nil {
			logger.Error("closing the store", "err", cerr)
		}
		return err
	}
	scfg.Store = st
	if fleet != nil {
		scfg.Fleet = fleet
	}
	srv, err := server.New(scfg)
	if err == nil {
		err = srv.Start()
	}
	if err != nil {
		if fleet != nil {
			fleet.Close()
		}
		if cerr := st.Close(); cerr != nil {
			logger.Error("closing the store", "err", cerr)
		}
		return err
	}
	if c.testClock {
		logger.Warn("--test-clock is on: requests may set their own time; never run so in production")
	}
	if c.shadow {
		logger.Warn("--shadow is on: every answer is DUNNO, nothing is greylisted; the log and metrics show what would be (drop --shadow to enforce)")
	}
	for _, r := range opts.Engine.Select.Rules {
		logger.Info("selection rule", "rule", r.String())
	}

	for s := range sig {
		if s == syscall.SIGHUP {
			// Off the loop, so a reload stuck on a file cannot keep
			// SIGTERM waiting; it is bounded by its own timeout.
			go func() {
				if _, err := srv.ReloadWhitelist(); err == nil {
					logger.Info("reloaded whitelists on SIGHUP")
				}
			}()
			continue
		}
		logger.Info("shutting down", "signal", s.String())
		break
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.shutdownTimeout)
	defer cancel()
	var errs []error
	if err := srv.Shutdown(ctx); err != nil {
		errs = append(errs, err)
	}
	if fleet != nil {
		// What it had not shipped stays in the log for the next start.
		fleet.Close()
	}
	abandoned, err := closeStore(ctx, st, closeGrace)
	if err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		final := "written"
		if abandoned {
			final = "abandoned"
		}
		logger.Info("stopped cleanly", "final_snapshot", final)
	}
	return errors.Join(errs...)
}

// storeCloser is what closeStore needs of the store.
type storeCloser interface {
	CloseContext(ctx context.Context) (abandoned bool, err error)
}

// closeGrace is how long the log's close may take past --shutdown-timeout:
// its last flush and fsync, milliseconds on a disk that answers.
const closeGrace = 5 * time.Second

// closeStore closes st within ctx's deadline and grace more: a final
// snapshot still unwritten at the deadline is abandoned (the log holds
// every change), and a close that still does not return, a disk that does
// not answer, is left behind, so that the stop is bounded whatever the
// disk does.
func closeStore(ctx context.Context, st storeCloser, grace time.Duration) (abandoned bool, err error) {
	type result struct {
		abandoned bool
		err       error
	}
	done := make(chan result, 1)
	go func() {
		a, err := st.CloseContext(ctx)
		done <- result{a, err}
	}()
	wait := grace
	if deadline, ok := ctx.Deadline(); ok {
		wait += time.Until(deadline)
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case r := <-done:
		if r.err != nil {
			return r.abandoned, fmt.Errorf("closing the store: %w", r.err)
		}
		return r.abandoned, nil
	case <-t.C:
		return true, fmt.Errorf("the store did not close within --shutdown-timeout and %v more (a disk that does not answer?): exiting without it; what the log wrote is with the kernel, and the next start replays it", grace)
	}
}
