package server

import (
	"bytes"
	"net"
	"strconv"
	"time"

	"github.com/greyhold/greyhold/engine"
	"github.com/greyhold/greyhold/store"
)

// The compact line protocol, for callers that are not Postfix (Exim's
// ${readsocket}, scripts, a provider's front end). One request a line:
//
//	CLIENT_IP SENDER RECIPIENT [CLIENT_NAME]
//
// fields separated by spaces; the empty sender is written <>, and an
// address may come in angle brackets. One reply a line, in order:
//
//	DEFER <seconds-left> <text>
//	PASS
//	PREPEND <header>
//	ERROR <why>
//
// Requests may be pipelined; every complete line in a read is answered in
// one write. A line over the line limit is answered ERROR and the
// connection closed; a bad line is answered ERROR and the connection kept.

type lineConn struct {
	s       *Server
	c       net.Conn
	cb      connBuf
	out     []byte
	reqs    []engine.Request
	errs    []string // per line: why it is not a request, or ""
	slot    []int
	results []store.Result
}

func (s *Server) serveLine(c net.Conn) {
	lc := &lineConn{s: s, c: c, cb: connBuf{b: make([]byte, initialBuf)}}
	s.readLoop(c, "line", &lc.cb, s.cfg.Limits.LineBytes+initialBuf, lc.process)
}

func (lc *lineConn) process(start time.Time, atEOF bool) bool {
	s := lc.s
	cb := &lc.cb
	lc.reqs, lc.errs, lc.slot = lc.reqs[:0], lc.errs[:0], lc.slot[:0]
	tooLong := false
	for cb.pending() {
		buf := cb.b[cb.start:cb.end]
		nl := bytes.IndexByte(buf, '\n')
		if nl < 0 {
			if len(buf) > s.cfg.Limits.LineBytes {
				tooLong = true
				break
			}
			if !atEOF {
				break
			}
			nl = len(buf) // Exim may send its last line without a newline
		}
		if nl > s.cfg.Limits.LineBytes {
			tooLong = true
			break
		}
		line := buf[:nl]
		cb.start += min(nl+1, len(buf))
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		req, why := parseLine(line)
		lc.errs = append(lc.errs, why)
		if why != "" {
			lc.slot = append(lc.slot, -1)
			continue
		}
		lc.slot = append(lc.slot, len(lc.reqs))
		lc.reqs = append(lc.reqs, req)
	}
	lc.out = lc.out[:0]
	if len(lc.reqs) > 0 {
		lc.results = s.st.CheckBatch(s.now(0), lc.reqs, lc.results[:0])
		for i := range lc.reqs {
			r := &lc.results[i]
			s.noteOutcome("line", &lc.reqs[i], r.Decision, r.Err)
			if r.Err == nil {
				s.logDecision("line", &lc.reqs[i], r.Decision, nil)
			}
		}
	}
	for i, why := range lc.errs {
		if why != "" {
			s.m.errors.WithLabelValues("bad_request").Inc()
			lc.out = append(lc.out, "ERROR "...)
			lc.out = append(lc.out, why...)
			lc.out = append(lc.out, '\n')
			continue
		}
		j := lc.slot[i]
		lc.out = lc.reply(lc.out, &lc.results[j], &lc.reqs[j])
	}
	clear(lc.reqs)
	if tooLong {
		s.m.limitHits.WithLabelValues(limitLine).Inc()
		s.log.Warn("line protocol request longer than the line limit; closing", "peer", peer(lc.c), "limit", s.cfg.Limits.LineBytes)
		lc.out = append(lc.out, "ERROR line too long\n"...)
	}
	ok := s.write(lc.c, &lc.cb, lc.out, start)
	s.m.lineDur.observe(time.Since(start).Seconds(), len(lc.errs))
	return ok && !tooLong
}

func (lc *lineConn) reply(out []byte, r *store.Result, req *engine.Request) []byte {
	s := lc.s
	if r.Err != nil {
		out = append(out, "ERROR "...)
		out = append(out, errorWhy(r.Err)...)
		return append(out, '\n')
	}
	switch {
	case r.Verdict == engine.Defer:
		out = append(out, "DEFER "...)
		out = strconv.AppendUint(out, uint64(r.Left), 10)
		out = append(out, ' ')
		out = s.replies.appendText(out, r.Left, req.Recipient)
		return append(out, '\n')
	case r.Reason == engine.ReasonPassed:
		mark := len(out)
		out = append(out, "PREPEND "...)
		if out, ok := s.replies.appendHeader(out, r.Delayed, time.Now()); ok {
			return append(out, '\n')
		}
		out = out[:mark]
	}
	return append(out, "PASS\n"...)
}

// parseLine reads "CLIENT_IP SENDER RECIPIENT [CLIENT_NAME]". The strings
// point into line.
func parseLine(line []byte) (engine.Request, string) {
	// Split on spaces and tabs by hand: bytes.Fields allocates its result
	// and was a sixth of the line protocol's CPU; a byte loop was still a
	// tenth, where bytes.IndexByte's vector search is not.
	var f [4][]byte
	n := 0
	for i := 0; i < len(line); {
		if line[i] == ' ' || line[i] == '\t' {
			i++
			continue
		}
		j := i + fieldLen(line[i:])
		if n == len(f) {
			return engine.Request{}, "too many fields: want CLIENT_IP SENDER RECIPIENT [CLIENT_NAME]"
		}
		f[n] = line[i:j]
		n++
		i = j
	}
	if n < 3 {
		return engine.Request{}, "want CLIENT_IP SENDER RECIPIENT [CLIENT_NAME]"
	}
	req := engine.Request{
		ClientAddr: str(f[0]),
		Sender:     str(unbracket(f[1])),
		Recipient:  str(unbracket(f[2])),
		ClientName: "unknown",
	}
	if n == 4 {
		req.ClientName = str(f[3])
	}
	return req, ""
}

// fieldLen is the length of the field b starts with: up to the first space
// or tab.
func fieldLen(b []byte) int {
	n := bytes.IndexByte(b, ' ')
	if n < 0 {
		n = len(b)
	}
	if t := bytes.IndexByte(b[:n], '\t'); t >= 0 {
		n = t
	}
	return n
}

// unbracket drops the angle brackets of <address>; "<>" becomes empty.
func unbracket(b []byte) []byte {
	if len(b) >= 2 && b[0] == '<' && b[len(b)-1] == '>' {
		return b[1 : len(b)-1]
	}
	return b
}

// errorWhy turns a check error into the short reason a caller sees.
func errorWhy(err error) string {
	switch {
	case err == nil:
		return ""
	case isBadRequest(err):
		return err.Error()
	}
	return "internal error, not greylisted"
}
