package server

import (
	"bytes"
	"errors"
	"math/bits"
	"net"
	"strconv"
	"time"
	"unsafe"

	"github.com/greyhold/greyhold/engine"
	"github.com/greyhold/greyhold/store"
)

// The compact line protocol, for callers that are not Postfix (Exim's
// ${readsocket}, scripts, a provider's front end); doc.go describes it.

type lineConn struct {
	s       *Server
	c       net.Conn
	cb      connBuf
	out     []byte
	reqs    []engine.Request
	errs    []string // per line: why it is not a request, or ""
	slot    []int
	results []store.Result
	scan    lineScan
}

// lineReadBuf is how far a line connection's read buffer may grow. The
// line limit bounds one request, not the buffer: a pipelining caller's
// window of 256 lines is about 16 KiB, and a buffer capped just over the
// 8 KiB line limit read it in two or three reads and answered it in as many
// writes, which were a fifth of the server's CPU (bench/load, 32 × 256).
// A connection grows its buffer only when a read fills it, and keeps it
// while requests keep coming (conn.go's idleShrink gives it back): a
// pipelining caller's connection holds up to 64 KiB and 16 KiB of masks
// (lineScan), one that sends a line at a time stays at 2 KiB.
const lineReadBuf = 64 << 10

func (s *Server) serveLine(c net.Conn) {
	lc := &lineConn{s: s, c: c, cb: connBuf{b: make([]byte, initialBuf)}}
	s.readLoop(c, "line", &lc.cb, max(s.cfg.Limits.LineBytes+initialBuf, lineReadBuf), lc)
}

func (lc *lineConn) held() int {
	return cap(lc.out) + cap(lc.reqs)*int(unsafe.Sizeof(engine.Request{})) + 16*cap(lc.errs) + 8*cap(lc.slot) +
		cap(lc.results)*int(unsafe.Sizeof(store.Result{})) + 8*(cap(lc.scan.nl)+cap(lc.scan.sp))
}

func (lc *lineConn) shrink() {
	lc.out, lc.reqs, lc.errs, lc.slot, lc.results = nil, nil, nil, nil, nil
	lc.scan.nl, lc.scan.sp = nil, nil
}

func (lc *lineConn) process(start time.Time, atEOF bool) bool {
	s := lc.s
	cb := &lc.cb
	n, tooLong := lc.split(cb.b[cb.start:cb.end], s.cfg.Limits.LineBytes, atEOF, true)
	cb.start += n
	lc.out = lc.out[:0]
	if len(lc.reqs) > 0 {
		if s.cfg.DNSLists != nil {
			for i := range lc.reqs {
				lc.reqs[i].DNSScore = s.dnsScore(lc.reqs[i].ClientAddr)
			}
		}
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
		s.rl.lineTooLong.Log("peer", peer(lc.c), "limit", s.cfg.Limits.LineBytes)
		lc.out = append(lc.out, "ERROR line too long\n"...)
	}
	ok := s.write(lc.c, &lc.cb, lc.out, start)
	s.m.lineDur.observe(time.Since(start).Seconds(), len(lc.errs))
	return ok && !tooLong
}

// split reads the complete lines at the front of buf into lc.reqs,
// lc.errs and lc.slot, and returns how many bytes it took and whether it
// stopped at a line over limit. With fast set, plain lines are read from
// the window's masks (lineScan); any other line, and every line when fast
// is not set, is read by looking for its newline and then its fields.
func (lc *lineConn) split(buf []byte, limit int, atEOF, fast bool) (int, bool) {
	lc.reqs, lc.errs, lc.slot = lc.reqs[:0], lc.errs[:0], lc.slot[:0]
	fast = fast && lc.scan.load(buf)
	at, tooLong := 0, false
	var f [4][]byte
	var nf int
	for at < len(buf) {
		if fast {
			if next, ok := lc.scan.line(at, limit, &f, &nf); ok {
				lc.errs = append(lc.errs, "")
				lc.slot = append(lc.slot, len(lc.reqs))
				lc.reqs = append(lc.reqs, engine.Request{})
				lineRequest(&lc.reqs[len(lc.reqs)-1], &f, nf)
				at = next
				continue
			}
		}
		rest := buf[at:]
		nl := bytes.IndexByte(rest, '\n')
		if nl < 0 {
			if len(rest) > limit {
				tooLong = true
				break
			}
			if !atEOF {
				break
			}
			nl = len(rest) // Exim may send its last line without a newline
		}
		if nl > limit {
			tooLong = true
			break
		}
		line := rest[:nl]
		at += min(nl+1, len(rest))
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
	lc.scan.buf = nil // the read buffer may be replaced before the next call
	return at, tooLong
}

func (lc *lineConn) reply(out []byte, r *store.Result, req *engine.Request) []byte {
	s := lc.s
	if r.Err != nil {
		out = append(out, "ERROR "...)
		out = append(out, errorWhy(r.Err)...)
		return append(out, '\n')
	}
	switch {
	case s.cfg.Shadow:
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
	// Split on spaces and tabs by hand with bytes.IndexByte's vector
	// search: bytes.Fields allocates its result, a sixth of the line
	// protocol's CPU in a profile, and a byte loop costs a tenth of it.
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
	var req engine.Request
	lineRequest(&req, &f, n)
	return req, ""
}

// lineRequest fills req from a line's three or four fields.
func lineRequest(req *engine.Request, f *[4][]byte, n int) {
	req.ClientAddr = str(f[0])
	req.Sender = str(unbracket(f[1]))
	req.Recipient = str(unbracket(f[2]))
	req.ClientName = "unknown"
	if n == 4 {
		req.ClientName = str(f[3])
	}
}

// lineScan finds a window's lines and fields from bitmasks of its '\n' and
// ' ' bytes, made 64 bytes at a time (maskBlocks). Looking for each field's
// end with bytes.IndexByte costs a call for a field of a dozen bytes, twice
// (space, then tab), which makes splitting a tenth of the line protocol's
// CPU in a profile.
type lineScan struct {
	buf    []byte
	nl, sp []uint64
	tail   [64]byte
}

// load makes the masks of buf and reports whether the fast path can read
// it: not if it holds a tab, which also separates fields.
func (ls *lineScan) load(buf []byte) bool {
	ls.buf = nil
	if len(buf) == 0 || bytes.IndexByte(buf, '\t') >= 0 {
		return false
	}
	words := (len(buf) + 63) / 64
	if cap(ls.nl) < words {
		ls.nl, ls.sp = make([]uint64, words), make([]uint64, words)
	}
	ls.nl, ls.sp = ls.nl[:words], ls.sp[:words]
	full := len(buf) / 64
	maskBlocks(buf, '\n', ' ', ls.nl[:full], ls.sp[:full])
	if full < words {
		// The last bytes, padded with NULs, which are neither.
		n := copy(ls.tail[:], buf[64*full:])
		clear(ls.tail[n:])
		maskBlocks(ls.tail[:], '\n', ' ', ls.nl[full:], ls.sp[full:])
	}
	ls.buf = buf
	return true
}

// line reads the line at off if it is a plain request: complete, within
// limit, three or four fields split by spaces, the first beginning with a
// printable ASCII byte (so the line is not blank to bytes.TrimSpace). It
// sets f and n to its fields and returns where the next line starts;
// anything else is left to the line-by-line reading, which answers it as
// it always has.
func (ls *lineScan) line(off, limit int, f *[4][]byte, n *int) (next int, ok bool) {
	b := ls.buf
	nl := nextBit(ls.nl, off, len(b))
	if nl == len(b) || nl-off > limit {
		return 0, false
	}
	end := nl
	if end > off && b[end-1] == '\r' {
		end--
	}
	k := 0
	for i := off; ; {
		for i < end && b[i] == ' ' {
			i++
		}
		if i == end {
			break
		}
		if k == len(f) {
			return 0, false
		}
		j := nextBit(ls.sp, i, end)
		f[k] = b[i:j]
		k++
		i = j
	}
	if k < 3 || f[0][0] <= ' ' || f[0][0] >= 0x7f {
		return 0, false
	}
	*n = k
	return nl + 1, true
}

// nextBit is the position of the first bit set in m at or after from, or
// limit if there is none before it; from < limit <= 64*len(m).
func nextBit(m []uint64, from, limit int) int {
	k := from >> 6
	w := m[k] >> (from & 63) << (from & 63)
	for w == 0 {
		k++
		if k<<6 >= limit {
			return limit
		}
		w = m[k]
	}
	return min(k<<6|bits.TrailingZeros64(w), limit)
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
	case isBadRequest(err), errors.Is(err, store.ErrClock):
		return err.Error()
	}
	return "internal error, not greylisted"
}
