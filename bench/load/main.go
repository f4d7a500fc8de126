package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// config is every flag, parsed once in main.
type config struct {
	proto        string
	target       string
	conns        int
	pipeline     int
	batch        int
	token        string
	duration     time.Duration
	requests     int64
	pool         int
	newFraction  float64
	seed         uint64
	warmup       bool
	warmupTarget string
	warmupDelay  time.Duration
	warmupAge    time.Duration
	warmupDepth  int
	json         bool
	clientName   string
	realistic    bool
	maxErrors    int
	replyTimeout time.Duration
	nullServer   string
	compareNull  bool
}

// Bounds on the flags. Pipelined windows are capped so the replies to one
// window fit the loopback socket buffers: the client writes a whole window
// before reading, and if the server's replies filled the client's receive
// buffer while the client still wrote, both would wait on each other.
const (
	maxDuration     = 10 * time.Minute
	maxConns        = 10000
	maxPipeline     = 256
	maxHTTPInFlight = 512 // checks in flight per connection when pipelining HTTP
	maxBatch        = 10000
	maxPool         = 5_000_000
)

// childEnv marks a null server started by --compare-null: it exits when
// its parent's end of the stdin pipe closes, so it never outlives the
// generator. Tests use it to run main from the test binary.
const childEnv = "GREYHOLD_LOAD_CHILD"

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

func parseFlags(args []string, stderr io.Writer) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.proto, "proto", "policy", "protocol: policy (Postfix policy delegation), line (greyhold's line protocol) or http (POST /v1/check/batch)")
	fs.StringVar(&c.target, "target", "", "server address, host:port on loopback (default 127.0.0.1:10023 for policy, :10025 for line, :10024 for http)")
	fs.IntVar(&c.conns, "conns", 64, "connections, each a closed loop")
	fs.IntVar(&c.pipeline, "pipeline", 1, "requests in flight per connection, written as one window (1: one at a time, as Postfix)")
	fs.IntVar(&c.batch, "batch", 100, "http: checks per request")
	fs.StringVar(&c.token, "token", "", "http: bearer token (greyhold --admin-token)")
	fs.DurationVar(&c.duration, "duration", 10*time.Second, "how long to measure (at most 10m)")
	fs.Int64Var(&c.requests, "requests", 0, "stop after this many requests (http: checks); 0 for no cap; --duration still bounds the run")
	fs.IntVar(&c.pool, "pool", 100000, "distinct triplets the known requests draw from")
	fs.Float64Var(&c.newFraction, "new-fraction", 0, "fraction of requests (0..1) with a triplet never seen before")
	fs.Uint64Var(&c.seed, "seed", 1, "seed for the pool and the order of requests")
	fs.BoolVar(&c.warmup, "warmup", false, "first pass every pool triplet through greylisting over the policy protocol (the target needs --test-clock, or use --warmup-delay)")
	fs.StringVar(&c.warmupTarget, "warmup-target", "", "policy protocol address for --warmup when --proto is line or http")
	fs.DurationVar(&c.warmupDelay, "warmup-delay", 0, "warm up without test times (postgrey, gross): send the pool, wait this long (at most 10m), send it again")
	fs.IntVar(&c.warmupDepth, "warmup-pipeline", 64, "requests in flight per connection during the warm-up (1 for servers that cannot take pipelined requests, such as postgrey)")
	fs.DurationVar(&c.warmupAge, "warmup-age", 400*time.Second, "with --warmup: how far back the first pass is dated (policy_test_time); must exceed the server's --delay")
	fs.BoolVar(&c.json, "json", false, "print the result as a JSON object on stdout (the text line goes to stderr)")
	fs.StringVar(&c.clientName, "client-name", "", "client name for every request (e.g. unknown); default: a name per client network, \"unknown\" for 15%")
	fs.BoolVar(&c.realistic, "realistic", true, "policy: send all the attributes Postfix 3.7 sends (about 650 bytes); false for the few a greylister reads")
	fs.IntVar(&c.maxErrors, "max-errors", 100, "abort after this many protocol errors")
	fs.DurationVar(&c.replyTimeout, "reply-timeout", 10*time.Second, "fail if a window waits this long for its replies")
	fs.StringVar(&c.nullServer, "null-server", "", "run the null server on this loopback address instead of generating load, until interrupted")
	fs.BoolVar(&c.compareNull, "compare-null", false, "run the same workload against a null server (a child process) and then --target, and print the ratio")
	fs.Usage = func() {
		fmt.Fprint(stderr, usageText)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (flags only; see --help)", fs.Arg(0))
	}
	return c, c.validate()
}

const usageText = `go run ./bench/load [flags]

Drives a greylisting policy server over loopback and prints throughput,
latency percentiles and the replies by kind, e.g.

  go run ./bench/load --proto policy --target 127.0.0.1:10023 --conns 64 --pipeline 1 --warmup --new-fraction 0.1
  go run ./bench/load --compare-null --target 127.0.0.1:10023 --pipeline 32
  go run ./bench/load --null-server 127.0.0.1:10099 --proto policy

Flags:
`

var defaultPorts = map[string]string{"policy": "10023", "line": "10025", "http": "10024"}

func (c *config) validate() error {
	if _, ok := defaultPorts[c.proto]; !ok {
		return fmt.Errorf("--proto %q: want policy, line or http", c.proto)
	}
	if c.nullServer != "" {
		addr, err := loopback(c.nullServer)
		if err != nil {
			return fmt.Errorf("--null-server: %w", err)
		}
		c.nullServer = addr
		return nil
	}
	if c.target == "" {
		c.target = "127.0.0.1:" + defaultPorts[c.proto]
	}
	var err error
	if c.target, err = loopback(c.target); err != nil {
		return fmt.Errorf("--target: %w", err)
	}
	switch {
	case c.conns < 1 || c.conns > maxConns:
		return fmt.Errorf("--conns %d: want 1 to %d", c.conns, maxConns)
	case c.pipeline < 1 || c.pipeline > maxPipeline:
		return fmt.Errorf("--pipeline %d: want 1 to %d (a larger window's replies could overflow the socket buffers while it is still being written)", c.pipeline, maxPipeline)
	case c.batch < 1 || c.batch > maxBatch:
		return fmt.Errorf("--batch %d: want 1 to %d", c.batch, maxBatch)
	case c.proto == "http" && c.pipeline > 1 && c.pipeline*c.batch > maxHTTPInFlight:
		return fmt.Errorf("--pipeline %d × --batch %d: at most %d checks in flight per connection when pipelining HTTP", c.pipeline, c.batch, maxHTTPInFlight)
	case c.duration <= 0 || c.duration > maxDuration:
		return fmt.Errorf("--duration %v: want more than 0 and at most %v", c.duration, maxDuration)
	case c.requests < 0:
		return fmt.Errorf("--requests %d: want 0 (no cap) or more", c.requests)
	case c.pool < 1 || c.pool > maxPool:
		return fmt.Errorf("--pool %d: want 1 to %d (each triplet is pre-rendered in memory)", c.pool, maxPool)
	case !(c.newFraction >= 0 && c.newFraction <= 1):
		return fmt.Errorf("--new-fraction %v: want 0 to 1", c.newFraction)
	case c.warmupDelay < 0 || c.warmupDelay > maxDuration:
		return fmt.Errorf("--warmup-delay %v: want 0 to %v", c.warmupDelay, maxDuration)
	case c.warmupDepth < 1 || c.warmupDepth > 256:
		return fmt.Errorf("--warmup-pipeline %d: want 1 to 256", c.warmupDepth)
	case c.warmupAge < time.Second:
		return fmt.Errorf("--warmup-age %v: want at least 1s", c.warmupAge)
	case c.maxErrors < 1:
		return fmt.Errorf("--max-errors %d: want at least 1", c.maxErrors)
	case c.replyTimeout <= 0:
		return fmt.Errorf("--reply-timeout %v: want more than 0", c.replyTimeout)
	case strings.ContainsAny(c.clientName, " \t\r\n\"\\") || len(c.clientName) > 255:
		return fmt.Errorf("--client-name %q: a host name, without spaces, quotes or line breaks", c.clientName)
	case strings.ContainsAny(c.token, "\r\n"):
		return errors.New("--token: no line breaks")
	}
	if c.warmupDelay > 0 {
		c.warmup = true
	}
	if c.warmup {
		switch {
		case c.warmupTarget != "":
			if c.warmupTarget, err = loopback(c.warmupTarget); err != nil {
				return fmt.Errorf("--warmup-target: %w", err)
			}
		case c.proto == "policy":
			c.warmupTarget = c.target
		default:
			return fmt.Errorf("--warmup with --proto %s needs --warmup-target, the server's policy protocol address (greyhold: 127.0.0.1:10023)", c.proto)
		}
	}
	return nil
}

// loopback checks that addr is host:port on a loopback address
// (127.0.0.0/8 or ::1, or localhost for 127.0.0.1) and returns it with an
// IP literal: the generator is built to saturate what it targets, and
// nothing beyond this machine should ever receive that.
func loopback(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("%q: want host:port: %v", addr, err)
	}
	if host == "localhost" {
		host = "127.0.0.1"
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || ip.Zone() != "" {
		return "", fmt.Errorf("%q: the host must be a loopback IP address (127.0.0.1, ::1) or localhost", addr)
	}
	if ip = ip.Unmap(); !ip.IsLoopback() {
		return "", fmt.Errorf("%q is not loopback: this tool only drives servers on 127.0.0.0/8 or ::1", addr)
	}
	return net.JoinHostPort(ip.String(), port), nil
}

func realMain(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "load:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The first signal ends the run cleanly; a second one kills as usual.
	context.AfterFunc(ctx, stop)
	switch {
	case cfg.nullServer != "":
		return runNullServer(ctx, cfg, stdout, stderr)
	case cfg.compareNull:
		return runCompare(ctx, cfg, stdout, stderr)
	}
	return runOne(ctx, cfg, stdout, stderr)
}

func runNullServer(ctx context.Context, cfg *config, stdout, stderr io.Writer) int {
	ln, err := net.Listen("tcp", cfg.nullServer)
	if err != nil {
		fmt.Fprintln(stderr, "load: null server:", err)
		return 1
	}
	if os.Getenv(childEnv) == "1" {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		go func() {
			io.Copy(io.Discard, os.Stdin)
			cancel()
		}()
	}
	// The parent of a --compare-null run reads the address from this line.
	fmt.Fprintf(stdout, "null-server proto=%s listening on %s\n", cfg.proto, ln.Addr())
	if err := serveNull(ctx, ln, cfg.proto); err != nil {
		fmt.Fprintln(stderr, "load: null server:", err)
		return 1
	}
	return 0
}

// prepare builds the workload and says what it is.
func prepare(cfg *config, stderr io.Writer) *workload {
	t0 := time.Now()
	w := buildWorkload(cfg, cfg.proto, uint64(time.Now().UnixNano()))
	what := fmt.Sprintf("%s requests of about %d bytes", cfg.proto, w.sampleSize())
	switch cfg.proto {
	case "policy":
		what = map[bool]string{true: "realistic ", false: "minimal "}[cfg.realistic] + what
	case "http":
		what = fmt.Sprintf("http batches of %d checks, about %d bytes a check", cfg.batch, w.sampleSize())
	}
	fmt.Fprintf(stderr, "load: %s; pool of %d triplets (%.1f MB) built in %.2fs\n",
		what, cfg.pool, float64(len(w.pool.arena))/1e6, time.Since(t0).Seconds())
	return w
}

// sampleSize renders a few requests to report their mean size.
func (w *workload) sampleSize() int {
	g := newGen(w, 0, 0, time.Now().Unix())
	var buf []byte
	const n = 256
	for range n {
		buf = g.appendOne(buf)
	}
	return len(buf) / n
}

func (cfg *config) plan(target string) plan {
	return plan{target: target, proto: cfg.proto, conns: cfg.conns, pipeline: cfg.pipeline, duration: cfg.duration,
		limit: cfg.requests, maxErrs: int64(cfg.maxErrors), stall: cfg.replyTimeout}
}

func runOne(ctx context.Context, cfg *config, stdout, stderr io.Writer) int {
	w := prepare(cfg, stderr)
	if cfg.warmup {
		if err := warmup(ctx, cfg, w, stderr); err != nil {
			fmt.Fprintln(stderr, "load: warmup:", err)
			return 1
		}
	}
	res, err := measure(ctx, cfg, w, cfg.target)
	if res == nil {
		fmt.Fprintln(stderr, "load:", err)
		return 1
	}
	if cfg.json {
		fmt.Fprintln(stderr, res.line())
		writeJSON(stdout, res.json())
	} else {
		fmt.Fprintln(stdout, res.line())
	}
	return verdict(res, err, stderr)
}

func measure(ctx context.Context, cfg *config, w *workload, target string) (*result, error) {
	if ctx.Err() != nil {
		return nil, errors.New("interrupted")
	}
	res, err := newRunner(cfg.plan(target), w, cfg.seed).run(ctx)
	if res != nil {
		res.pool = cfg.pool
	}
	return res, err
}

// verdict turns a finished run into the exit status: 0 only for a clean,
// complete run.
func verdict(res *result, err error, stderr io.Writer) int {
	switch {
	case err != nil:
		fmt.Fprintln(stderr, "load:", err)
		return 1
	case res.errors > 0:
		fmt.Fprintf(stderr, "load: %d errors; the first: %v\n", res.errors, res.firstErr)
		return 1
	case res.interrupted:
		fmt.Fprintln(stderr, "load: interrupted; the figures cover the run so far")
		return 130
	}
	return 0
}
