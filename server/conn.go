package server

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"time"
	"unsafe"

	"github.com/greyhold/greyhold/engine"
	"github.com/greyhold/greyhold/store"
)

// str views b as a string without copying. The engine and the logger use
// request strings only during the call, while the read buffer holds still.
func str(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// connBuf is a connection's read buffer: bytes [start:end) are read but not
// yet parsed. It starts small, since thousands of idle Postfix connections
// each hold one, and grows to the request limit when a request needs it.
type connBuf struct {
	b          []byte
	start, end int
	// grow is set when a read filled all the room there was: a pipelining
	// client has more waiting, and reading it 2 KiB at a time cost twelve
	// times the null server's reads and writes (measured with bench/load,
	// 32 deep: greyhold at 0.21 of the null server).
	grow bool
	// readBy and writeBy are the deadlines last set on the connection.
	readBy, writeBy time.Time
	// inRequest is set once a request has begun to arrive, and readBy is
	// then its ReadTimeout deadline, kept until a request completes: a
	// client sending a byte now and then must not stretch one request
	// forever.
	inRequest bool
	// stopSeen is set once the read loop has seen the server stopping and
	// given the connection its grace deadline.
	stopSeen bool
	// lastChance is set once, at shutdown, a request still arriving has
	// been given one more ReadTimeout to finish.
	lastChance bool
	// shrinkBy, when set, is the earlier deadline that wakes an idle
	// connection holding buffers a burst grew, to give them back.
	shrinkBy time.Time
	// setBy is the read deadline last set on the connection by the
	// lazy path (readBy or shrinkBy, whichever is first).
	setBy time.Time
}

// A connection keeps the buffers a burst grew (a 64 KiB read buffer, the
// requests, results and replies of a thousand pipelined lines: about
// 410 KiB) for as long as requests keep coming, since growing them again
// for every window cost the pipelined fast path its speed. Once it has
// been idle idleShrink it gives them back, and costs about what a new
// connection does. A client that never pauses for that long has its
// buffers given back once every idleShrink at most, when they are empty
// at the moment, which costs one regrowth a second.
const (
	idleShrink = time.Second
	// keepBytes is what a connection may hold idle without shrinking.
	keepBytes = 8 << 10
)

// deadlineSlack is how far a deadline may lag behind "timeout from now"
// before it is moved: a busy Postfix connection sends a request every few
// hundred microseconds, and resetting the runtime's timer for each costs
// more than parsing the request. A tenth of the timeout, at most a second,
// keeps every timeout within 10% of its setting.
func deadlineSlack(timeout time.Duration) time.Duration {
	return min(timeout/10, time.Second)
}

// keepDeadline moves a deadline (*by) to now+timeout when it is later than
// that or lags by more than the slack, and reports whether it moved.
func keepDeadline(by *time.Time, now time.Time, timeout time.Duration) bool {
	want := now.Add(timeout)
	if by.IsZero() || want.Before(*by) || want.Sub(*by) > deadlineSlack(timeout) {
		*by = want
		return true
	}
	return false
}

const initialBuf = 2048

// fill reads more, compacting or growing first. limit caps the buffer.
func (cb *connBuf) fill(c net.Conn, limit int) (int, error) {
	if cb.start == cb.end {
		cb.start, cb.end = 0, 0
	}
	if cb.end == len(cb.b) && cb.start > 0 {
		cb.end = copy(cb.b, cb.b[cb.start:cb.end])
		cb.start = 0
	}
	if (cb.end == len(cb.b) || cb.grow) && len(cb.b) < limit {
		nb := make([]byte, min(limit, 2*len(cb.b)))
		cb.end = copy(nb, cb.b[cb.start:cb.end])
		cb.start = 0
		cb.b = nb
	}
	if cb.end == len(cb.b) {
		return 0, errBufferFull
	}
	n, err := c.Read(cb.b[cb.end:])
	cb.grow = n > 0 && cb.end+n == len(cb.b)
	cb.end += n
	return n, err
}

var errBufferFull = errors.New("read buffer full")

// pending reports whether part of a request has been read.
func (cb *connBuf) pending() bool { return cb.end > cb.start }

// connState is what a protocol's connection gives readLoop besides its
// buffer: process parses and answers what the buffer holds and reports
// false to close the connection (atEOF asks it to take a final
// unterminated request if the protocol has such a thing); held is how many
// bytes its own buffers hold, and shrink lets them go.
type connState interface {
	process(now time.Time, atEOF bool) bool
	held() int
	shrink()
}

// readLoop runs the read side both stream protocols share: deadlines (idle
// between requests, ReadTimeout within one), reads, giving back buffers
// after a burst, and what to do at shutdown and on errors.
func (s *Server) readLoop(c net.Conn, proto string, cb *connBuf, limit int, cs connState) {
	for {
		// Between requests the deadline is the idle timeout, moved lazily
		// (keepDeadline); once a request has begun it is ReadTimeout from
		// then, fixed until the request is whole.
		// A connection holding what a burst grew also wakes at shrinkBy,
		// set once and left in place while requests come (moving it with
		// each window would cost the pipelined path a timer reset each).
		move := false
		switch now := time.Now(); {
		case !cb.pending():
			cb.inRequest = false
			move = keepDeadline(&cb.readBy, now, s.cfg.IdleTimeout)
			if cb.shrinkBy.IsZero() && len(cb.b)+cs.held() > keepBytes {
				cb.shrinkBy = now.Add(s.cfg.idleShrink)
				move = true
			}
		case !cb.inRequest:
			cb.inRequest = true
			cb.readBy = now.Add(s.cfg.ReadTimeout)
			move = true
		}
		if s.stopping.Load() {
			// At shutdown a short grace deadline ends an idle connection
			// (returning here instead would drop a request already on its
			// way). Shutdown sets it on the connections it knows; one
			// accepted as it began may not be among them, so set it here
			// too, once.
			if !cb.stopSeen {
				cb.stopSeen = true
				c.SetReadDeadline(time.Now().Add(shutdownGrace))
			}
		} else if move {
			by := cb.readBy
			if !cb.shrinkBy.IsZero() && cb.shrinkBy.Before(by) {
				by = cb.shrinkBy
			}
			if !by.Equal(cb.setBy) {
				cb.setBy = by
				c.SetReadDeadline(by)
			}
			if s.stopping.Load() {
				// Shutdown began in between and its short deadline may
				// have just been overwritten.
				c.SetReadDeadline(time.Now().Add(shutdownGrace))
			}
		}
		n, err := cb.fill(c, limit)
		if n > 0 {
			at := cb.start
			if !cs.process(time.Now(), false) {
				return
			}
			if cb.start != at {
				// A request completed: what is left is the next one,
				// which gets a whole ReadTimeout of its own.
				cb.inRequest = false
			}
		}
		if err == nil {
			continue
		}
		switch {
		case errors.Is(err, io.EOF):
			if cb.pending() {
				cs.process(time.Now(), true)
			}
		case errors.Is(err, os.ErrDeadlineExceeded):
			if !cb.shrinkBy.IsZero() && !s.stopping.Load() && time.Now().Before(cb.readBy) {
				// The shrink deadline, not a timeout. Idle: give the
				// buffers back; in a request: leave them, it goes on.
				cb.shrinkBy = time.Time{}
				if !cb.pending() {
					cb.b, cb.start, cb.end, cb.grow = make([]byte, initialBuf), 0, 0, false
					cs.shrink()
					s.shrunk.Add(1)
				}
				cb.setBy = cb.readBy
				c.SetReadDeadline(cb.readBy)
				continue
			}
			if s.stopping.Load() {
				if cb.pending() && !cb.lastChance {
					// Shutting down: give a request that is arriving its
					// read timeout to finish, once.
					cb.lastChance = true
					cb.readBy = time.Now().Add(s.cfg.ReadTimeout)
					cb.setBy = cb.readBy
					c.SetReadDeadline(cb.readBy)
					continue
				}
				if !cb.pending() {
					return
				}
			}
			if cb.pending() {
				s.m.limitHits.WithLabelValues("read_timeout").Inc()
				s.rl.tooSlow.Log("protocol", proto, "peer", peer(c), "timeout", s.cfg.ReadTimeout, "bytes_read", cb.end-cb.start)
			}
		case errors.Is(err, errBufferFull):
			// parse reports the limit itself; this is a backstop.
			s.m.limitHits.WithLabelValues("request_bytes").Inc()
		}
		return
	}
}

// write sends out with the write timeout.
func (s *Server) write(c net.Conn, cb *connBuf, out []byte, now time.Time) bool {
	if len(out) == 0 {
		return true
	}
	if keepDeadline(&cb.writeBy, now, s.cfg.WriteTimeout) {
		c.SetWriteDeadline(cb.writeBy)
	}
	_, err := c.Write(out)
	return err == nil
}

// policyConn is a policy connection's state, reused request after request.
type policyConn struct {
	s       *Server
	c       net.Conn
	cb      connBuf
	out     []byte
	parsed  []policyRequest
	slot    []int // per parsed request: its index in results, or -1 for DUNNO
	reqs    []engine.Request
	from    []int // per request in reqs: its index in parsed
	results []store.Result
}

var (
	rcptState         = []byte("RCPT")
	policyRequestName = []byte("smtpd_access_policy")
)

func (s *Server) servePolicy(c net.Conn) {
	pc := &policyConn{s: s, c: c, cb: connBuf{b: make([]byte, initialBuf)}}
	s.readLoop(c, "policy", &pc.cb, s.cfg.Limits.RequestBytes+initialBuf, pc)
}

func (pc *policyConn) held() int {
	return cap(pc.out) + cap(pc.parsed)*int(unsafe.Sizeof(policyRequest{})) + 8*(cap(pc.slot)+cap(pc.from)) +
		cap(pc.reqs)*int(unsafe.Sizeof(engine.Request{})) + cap(pc.results)*int(unsafe.Sizeof(store.Result{}))
}

func (pc *policyConn) shrink() {
	pc.out, pc.parsed, pc.slot, pc.reqs, pc.from, pc.results = nil, nil, nil, nil, nil, nil
}

// process answers every complete request in the buffer with one write.
func (pc *policyConn) process(start time.Time, atEOF bool) bool {
	s := pc.s
	cb := &pc.cb
	pc.parsed = pc.parsed[:0]
	var perr error
	for cb.pending() {
		pc.parsed = append(pc.parsed, policyRequest{})
		n, err := parsePolicy(cb.b[cb.start:cb.end], &s.cfg.Limits, &pc.parsed[len(pc.parsed)-1])
		if err != nil || n == 0 {
			pc.parsed = pc.parsed[:len(pc.parsed)-1]
			perr = err
			break
		}
		cb.start += n
	}
	if atEOF && perr == nil && cb.pending() {
		perr = protoErr("incomplete", "connection closed in the middle of a request", cb.b[cb.start:cb.end], 0)
	}
	pc.decide()
	pc.out = pc.out[:0]
	for i := range pc.parsed {
		pc.out = pc.reply(pc.out, i)
	}
	if perr != nil {
		var pe *protocolError
		if errors.As(perr, &pe) {
			s.m.limitHits.WithLabelValues(pe.limit).Inc()
		}
		s.rl.protocol.Log("peer", peer(pc.c), "err", perr)
		if !atEOF {
			pc.out = append(pc.out, "action=DUNNO\n\n"...)
		}
	}
	ok := s.write(pc.c, &pc.cb, pc.out, start)
	s.m.policyDur.observe(time.Since(start).Seconds(), len(pc.parsed))
	return ok && perr == nil
}

// decide runs the greylisting checks for the parsed requests: those in
// RCPT state go to the store in one batch (one log append for all); the
// rest are answered DUNNO.
func (pc *policyConn) decide() {
	s := pc.s
	pc.slot = pc.slot[:0]
	pc.results = pc.results[:0]
	var testTime int64
	for i := range pc.parsed {
		r := &pc.parsed[i]
		if !bytes.Equal(r.protocolState, rcptState) || !bytes.Equal(r.request, policyRequestName) {
			// A request at CONNECT, HELO or MAIL starts the client's DNS
			// list lookups, so that RCPT finds them answered.
			s.dnsScore(str(r.clientAddress))
			pc.slot = append(pc.slot, -1)
			continue
		}
		var t int64 // 0: the clock
		if s.cfg.TestClock && r.testTime != nil {
			var err error
			if t, err = parseTestTime(r.testTime); err != nil {
				s.rl.badTime.Log("peer", peer(pc.c), "err", err)
			}
		}
		// One batch has one time: a request with another starts the next.
		if t != testTime {
			pc.flush(testTime)
			testTime = t
		}
		pc.slot = append(pc.slot, len(pc.results)+len(pc.reqs))
		pc.from = append(pc.from, i)
		pc.reqs = append(pc.reqs, engine.Request{
			ClientAddr:   str(r.clientAddress),
			ClientName:   str(r.clientName),
			Sender:       str(r.sender),
			Recipient:    str(r.recipient),
			Instance:     str(r.instance),
			HELOName:     str(r.heloName),
			SASLUsername: str(r.saslUsername),
			DNSScore:     s.dnsScore(str(r.clientAddress)),
		})
	}
	pc.flush(testTime)
}

// flush decides the collected requests at one time, appending to results.
func (pc *policyConn) flush(testTime int64) {
	if len(pc.reqs) == 0 {
		return
	}
	s := pc.s
	base := len(pc.results)
	pc.results = s.st.CheckBatch(s.now(testTime), pc.reqs, pc.results)
	for i := range pc.reqs {
		res := &pc.results[base+i]
		s.noteOutcome("policy", &pc.reqs[i], res.Decision, res.Err)
		if res.Err == nil {
			s.logDecision("policy", &pc.reqs[i], res.Decision, pc.parsed[pc.from[i]].queueID)
		}
	}
	clear(pc.reqs) // drop the strings that point into the read buffer
	pc.reqs = pc.reqs[:0]
	pc.from = pc.from[:0]
}

// reply appends the answer to parsed request i.
func (pc *policyConn) reply(out []byte, i int) []byte {
	j := pc.slot[i]
	if j < 0 {
		return append(out, "action=DUNNO\n\n"...)
	}
	res := &pc.results[j]
	if res.Err != nil || pc.s.cfg.Shadow {
		return append(out, "action=DUNNO\n\n"...)
	}
	switch {
	case res.Verdict == engine.Defer:
		out = append(out, "action="...)
		out = pc.s.replies.appendDefer(out, res.Left, str(pc.parsed[i].recipient))
		return append(out, "\n\n"...)
	case res.Reason == engine.ReasonPassed:
		mark := len(out)
		out = append(out, "action=PREPEND "...)
		if out, ok := pc.s.replies.appendHeader(out, res.Delayed, time.Now()); ok {
			return append(out, "\n\n"...)
		}
		out = out[:mark]
	}
	return append(out, "action=DUNNO\n\n"...)
}
