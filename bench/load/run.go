package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// How a connection runs (closed loop): render a window of D requests into
// one reused buffer, send it with one write, read until D replies have
// been parsed, repeat. A reply's latency runs from just before the write
// that carried its request to just after the read that completed it; all
// replies completed by one read share that read's time, so the clock is
// read once per write and once per read, never per request, and rendering
// is not counted. Each connection has its own histogram and counters and
// the runner merges them at the end: connections share nothing on the hot
// path but, with --requests, one atomic add per window.

// plan is one measured (or warm-up) run.
type plan struct {
	target   string
	proto    string
	conns    int
	pipeline int
	duration time.Duration // 0: until every connection's sequence is sent (warm-up)
	limit    int64         // requests at most, 0 for no cap
	maxErrs  int64
	// Warm-up: send pool triplets in order, split among the
	// connections, with this policy_test_time (0 for none).
	sequential bool
	testTime   int64
	// stall is how long a window may wait for its replies before the run
	// fails: a server that stops answering must not hang the tool.
	stall time.Duration
}

type runner struct {
	p     plan
	w     *workload
	seed  uint64
	parse parseFunc

	stop     atomic.Bool
	stopAt   atomic.Int64
	issued   atomic.Int64
	errCount atomic.Int64

	mu       sync.Mutex
	fatal    error
	firstErr error
	workers  []*worker
}

type worker struct {
	r    *runner
	id   int
	conn net.Conn // replaced on reconnect, under r.mu
	g    *gen

	wbuf       []byte
	rbuf       []byte
	rstart     int
	rend       int
	expect     []int // HTTP: checks in each request of the window
	rs         replyState
	h          hist
	requests   uint64 // checks answered (HTTP: items, others: replies)
	httpReqs   uint64
	errors     uint64
	reconnects uint64

	// now is the clock as last read (after the last read or write), so
	// the duration check needs no clock read of its own.
	now time.Time

	// windowStart is the monotonic time (ns since the run began) a window
	// went out, 0 between windows; the watchdog reads it.
	windowStart atomic.Int64
}

// result is what a run measured.
type result struct {
	plan        plan
	batch       int
	newFraction float64
	pool        int
	requests    uint64
	httpReqs    uint64
	elapsed     time.Duration
	h           hist
	replies     map[string]uint64
	other       uint64
	errors      uint64
	reconnects  uint64
	firstErr    error
	cpu         time.Duration
	interrupted bool
}

const dialTimeout = 5 * time.Second

func dial(target string) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", target, dialTimeout)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("%s refused the connection: is the server running and listening there?", target)
		}
		return nil, fmt.Errorf("connect to %s: %w", target, err)
	}
	return c, nil
}

func newRunner(p plan, w *workload, seed uint64) *runner {
	r := &runner{p: p, w: w, seed: seed}
	switch p.proto {
	case "policy":
		r.parse = parsePolicyReply
	case "line":
		r.parse = parseLineReply
	case "http":
		r.parse = parseHTTPReply
	}
	return r
}

// run dials every connection, then measures until the duration, the
// request cap or the sequences run out, ctx is cancelled, or the run
// fails.
func (r *runner) run(ctx context.Context) (*result, error) {
	p := r.p
	now := time.Now().Unix()
	r.workers = make([]*worker, p.conns)
	for i := range r.workers {
		wk := &worker{r: r, id: i, g: newGen(r.w, r.seed, i, now)}
		// Grows only if one reply outgrows it (a huge HTTP batch): a
		// window of replies larger than it is parsed as it arrives.
		wk.rbuf = make([]byte, 16<<10)
		if p.sequential {
			// Connection i sends its share of the pool, in order.
			n := len(r.w.pool.c)
			wk.g.seqMode = true
			wk.g.next, wk.g.end = i*n/p.conns, (i+1)*n/p.conns
			wk.g.testTime = p.testTime
		}
		r.workers[i] = wk
	}
	if err := r.dialAll(); err != nil {
		r.closeAll()
		return nil, err
	}
	cpu0 := cpuTime()
	start := time.Now()
	var deadline time.Time
	if p.duration > 0 {
		deadline = start.Add(p.duration)
	}
	stopWatch := context.AfterFunc(ctx, func() { r.halt(nil) })
	defer stopWatch()
	done := make(chan struct{})
	go r.watchdog(start, done)
	var wg sync.WaitGroup
	for _, wk := range r.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wk.loop(start, deadline)
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu := cpuTime() - cpu0
	close(done)
	r.closeAll()

	res := &result{plan: p, batch: r.w.batch, newFraction: r.w.newFrac, pool: len(r.w.pool.c), elapsed: elapsed, cpu: cpu,
		replies: map[string]uint64{}, interrupted: ctx.Err() != nil}
	for _, wk := range r.workers {
		res.h.merge(&wk.h)
		res.requests += wk.requests
		res.httpReqs += wk.httpReqs
		res.errors += wk.errors
		res.reconnects += wk.reconnects
		res.other += wk.rs.kinds.into(res.replies)
	}
	r.mu.Lock()
	fatal, first := r.fatal, r.firstErr
	r.mu.Unlock()
	res.firstErr = first
	return res, fatal
}

// dialAll connects every worker, 32 at a time, so a run with thousands of
// connections starts quickly without a SYN flood against the backlog.
func (r *runner) dialAll() error {
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for _, wk := range r.workers {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			c, err := dial(r.p.target)
			if err != nil {
				once.Do(func() { first = err })
				return
			}
			r.mu.Lock()
			wk.conn = c
			r.mu.Unlock()
		}()
	}
	wg.Wait()
	return first
}

func (r *runner) closeAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, wk := range r.workers {
		if wk.conn != nil {
			wk.conn.Close()
			wk.conn = nil
		}
	}
}

// halt stops the run: with err it failed, without it was interrupted.
// Connections finish the window they are in.
func (r *runner) halt(err error) {
	r.mu.Lock()
	if err != nil && r.fatal == nil {
		r.fatal = err
	}
	r.mu.Unlock()
	if !r.stop.Swap(true) {
		r.stopAt.Store(time.Now().UnixNano())
	}
}

// noteErr counts a protocol error; after maxErrs the run fails.
func (r *runner) noteErr(err error) {
	r.mu.Lock()
	if r.firstErr == nil {
		r.firstErr = err
	}
	r.mu.Unlock()
	if n := r.errCount.Add(1); r.p.maxErrs > 0 && n >= r.p.maxErrs {
		r.halt(fmt.Errorf("aborted after %d errors; the first: %w", n, r.firstError()))
	}
}

func (r *runner) failed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fatal != nil
}

func (r *runner) firstError() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.firstErr
}

// watchdog fails the run when a window waits longer than the stall limit,
// and after a halt unblocks connections that do not finish their window
// within a grace period, so the tool always ends.
func (r *runner) watchdog(start time.Time, done <-chan struct{}) {
	const grace = 2 * time.Second
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		now := time.Since(start)
		for _, wk := range r.workers {
			if ws := wk.windowStart.Load(); ws != 0 && now-time.Duration(ws) > r.p.stall {
				r.halt(fmt.Errorf("%s sent no complete reply for %v (%s, connection %d): the server is stuck or does not speak this protocol",
					r.p.target, r.p.stall, r.p.proto, wk.id))
			}
		}
		// A failed run has nothing left to wait for; an interrupted one
		// gives windows in flight a moment to complete.
		if at := r.stopAt.Load(); at != 0 && (r.failed() || time.Since(time.Unix(0, at)) > grace) {
			r.mu.Lock()
			for _, wk := range r.workers {
				if wk.conn != nil {
					wk.conn.SetDeadline(time.Now())
				}
			}
			r.mu.Unlock()
		}
	}
}

// claim returns how many requests (HTTP: checks) the next window carries,
// 0 when this connection is done.
func (wk *worker) claim() int {
	r := wk.r
	per := r.p.pipeline
	if r.p.proto == "http" {
		per *= r.w.batch
	}
	if wk.g.seqMode {
		return min(per, wk.g.end-wk.g.next)
	}
	if r.p.limit == 0 {
		return per
	}
	got := r.issued.Add(int64(per))
	switch before := got - int64(per); {
	case before >= r.p.limit:
		return 0
	case got > r.p.limit:
		return int(r.p.limit - before)
	}
	return per
}

func (wk *worker) loop(start, deadline time.Time) {
	r := wk.r
	wk.now = start
	for !r.stop.Load() {
		if !deadline.IsZero() && !wk.now.Before(deadline) {
			return
		}
		n := wk.claim()
		if n == 0 {
			return
		}
		if !wk.window(start, n) {
			return
		}
	}
}

// window sends n requests (HTTP: n checks in batches) and reads their
// replies. It reports false when the connection cannot go on.
func (wk *worker) window(start time.Time, n int) bool {
	r := wk.r
	g := wk.g
	buf := wk.wbuf[:0]
	replies := n
	g.draw(n)
	k := 0
	if r.p.proto == "http" {
		b := r.w.batch
		replies = (n + b - 1) / b
		wk.expect = wk.expect[:0]
		for q := range replies {
			items := min(b, n-q*b)
			wk.expect = append(wk.expect, items)
			body := append(g.scratch[:0], '[')
			for j := range items {
				if j > 0 {
					body = append(body, ',')
				}
				body = g.appendPick(body, k)
				k++
			}
			body = append(body, ']')
			g.scratch = body
			buf = append(buf, r.w.httpHead...)
			buf = strconv.AppendInt(buf, int64(len(body)), 10)
			buf = append(buf, "\r\n\r\n"...)
			buf = append(buf, body...)
		}
	} else {
		for k := range n {
			buf = g.appendPick(buf, k)
		}
	}
	wk.wbuf = buf
	wk.rstart, wk.rend = 0, 0

	t0 := time.Now()
	wk.now = t0
	wk.windowStart.Store(max(int64(t0.Sub(start)), 1))
	defer wk.windowStart.Store(0)
	if _, err := wk.conn.Write(buf); err != nil {
		return wk.connFailed(err, "write")
	}
	var lat time.Duration
	got := 0
	for got < replies {
		for got < replies && wk.rstart < wk.rend {
			m, err := r.parse(wk.rbuf[wk.rstart:wk.rend], &wk.rs)
			if err != nil {
				wk.protoErr(err)
				if m == 0 {
					return wk.reconnect()
				}
			}
			if m == 0 {
				break
			}
			wk.rstart += m
			if err == nil {
				items := wk.rs.items
				if r.p.proto == "http" {
					if items != wk.expect[got] {
						wk.protoErr(fmt.Errorf("%w: %d answers to a batch of %d", errGarbage, items, wk.expect[got]))
					}
					wk.httpReqs++
				}
				wk.requests += uint64(items)
				wk.h.record(uint64(lat))
			}
			got++
		}
		if got == replies {
			break
		}
		if err := wk.fill(); err != nil {
			return wk.connFailed(err, "read")
		}
		wk.now = time.Now()
		lat = wk.now.Sub(t0)
	}
	if wk.rstart != wk.rend {
		wk.protoErr(garbage("more replies than requests", wk.rbuf[wk.rstart:wk.rend]))
		return wk.reconnect()
	}
	if wk.rs.closing {
		wk.rs.closing = false
		return wk.reconnect()
	}
	return true
}

// fill reads more replies, compacting the buffer or, for a reply larger
// than it, doubling it.
func (wk *worker) fill() error {
	if wk.rend == len(wk.rbuf) {
		if wk.rstart > 0 {
			wk.rend = copy(wk.rbuf, wk.rbuf[wk.rstart:wk.rend])
			wk.rstart = 0
		} else {
			nb := make([]byte, 2*len(wk.rbuf))
			wk.rend = copy(nb, wk.rbuf[:wk.rend])
			wk.rbuf = nb
		}
	}
	n, err := wk.conn.Read(wk.rbuf[wk.rend:])
	wk.rend += n
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

func (wk *worker) protoErr(err error) {
	wk.errors++
	wk.r.noteErr(err)
}

// connFailed handles a failed read or write: after a halt it just ends;
// a connection the server closed is counted and replaced.
func (wk *worker) connFailed(err error, op string) bool {
	r := wk.r
	if r.stop.Load() {
		return false
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		r.halt(fmt.Errorf("%s on %s: %w", op, r.p.target, err))
		return false
	}
	what := "closed the connection"
	if !errors.Is(err, io.EOF) {
		what = err.Error()
	}
	wk.protoErr(fmt.Errorf("%s %s in the middle of a window (%s)", r.p.target, what, op))
	return wk.reconnect()
}

func (wk *worker) reconnect() bool {
	r := wk.r
	r.mu.Lock()
	if wk.conn != nil {
		wk.conn.Close()
	}
	r.mu.Unlock()
	if r.stop.Load() {
		return false
	}
	c, err := dial(r.p.target)
	if err != nil {
		r.halt(fmt.Errorf("reconnecting: %w", err))
		return false
	}
	r.mu.Lock()
	wk.conn = c
	r.mu.Unlock()
	wk.reconnects++
	wk.rstart, wk.rend = 0, 0
	return !r.stop.Load()
}
