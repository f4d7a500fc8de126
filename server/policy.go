package server

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"strconv"
)

// The Postfix SMTPD access policy delegation protocol's parser; doc.go
// describes the protocol as greyhold speaks it.

// Limits bound what one client can make the server hold or do.
type Limits struct {
	// RequestBytes caps one policy request (Postfix 3.7 sends about 600
	// bytes; long TLS subjects and SASL names can reach a few KiB).
	RequestBytes int
	// Attributes caps the name=value lines of one request (Postfix 3.7
	// sends 29).
	Attributes int
	// LineBytes caps one line, the compact protocol's requests included.
	// Postfix's own line_length_limit is 2048.
	LineBytes int
}

// DefaultLimits leave Postfix ample room and a hostile client very little.
func DefaultLimits() Limits {
	return Limits{RequestBytes: 64 << 10, Attributes: 256, LineBytes: 8 << 10}
}

// errProtocol marks a request that breaks the protocol or a limit: it is
// answered (where the protocol allows) and the connection closed.
var errProtocol = errors.New("protocol error")

// protocolError carries what was wrong, where, a quoted snippet, and the
// limit it broke ("malformed" when it broke the protocol itself), which
// names its metric.
type protocolError struct {
	what    string
	limit   string
	offset  int
	snippet string
}

func (e *protocolError) Error() string {
	if e.snippet == "" {
		return fmt.Sprintf("%s at byte %d", e.what, e.offset)
	}
	return fmt.Sprintf("%s at byte %d near %q", e.what, e.offset, e.snippet)
}

func (e *protocolError) Unwrap() error { return errProtocol }

func protoErr(limit, what string, buf []byte, off int) error {
	end := min(len(buf), off+40)
	return &protocolError{what: what, limit: limit, offset: off, snippet: string(buf[off:end])}
}

// Limit names, as the greyhold_limit_hits_total label shows them.
const (
	limitLine       = "line_bytes"
	limitRequest    = "request_bytes"
	limitAttributes = "attributes"
	limitMalformed  = "malformed"
	limitHTTPBody   = "http_body_bytes"
	limitHTTPBudget = "http_body_budget"
)

// policyRequest holds the attributes greyhold reads, as slices of the read
// buffer: valid until the buffer is reused.
type policyRequest struct {
	request       []byte
	protocolState []byte
	clientAddress []byte
	clientName    []byte
	sender        []byte
	recipient     []byte
	queueID       []byte
	instance      []byte
	heloName      []byte
	saslUsername  []byte
	testTime      []byte
	hasSender     bool
	attrs         int
}

func (r *policyRequest) reset() { *r = policyRequest{} }

// parsePolicy reads one request from the front of buf. It returns the bytes
// the request took, 0 and no error if buf does not hold a whole request
// yet, or an error wrapping errProtocol. Limits apply to what has arrived,
// so an endless line fails once it passes LineBytes, not at its end.
func parsePolicy(buf []byte, lim *Limits, req *policyRequest) (int, error) {
	if n := parseWhole(buf, lim, req); n > 0 {
		return n, nil
	}
	return parseLines(buf, lim, req)
}

// parseLines reads a request line by line, checking every rule as it goes.
func parseLines(buf []byte, lim *Limits, req *policyRequest) (int, error) {
	req.reset()
	off := 0
	for {
		rest := buf[off:]
		nl, eq := lineEnd(rest)
		if nl < 0 {
			if len(rest) > lim.LineBytes {
				return 0, protoErr(limitLine, "line longer than the limit", buf, off)
			}
			if len(buf) > lim.RequestBytes {
				return 0, protoErr(limitRequest, "request larger than the limit", buf, 0)
			}
			return 0, nil
		}
		if nl > lim.LineBytes {
			return 0, protoErr(limitLine, "line longer than the limit", buf, off)
		}
		line := rest[:nl]
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1] // telnet users and some proxies send CRLF
		}
		end := off + nl + 1
		if end > lim.RequestBytes {
			return 0, protoErr(limitRequest, "request larger than the limit", buf, 0)
		}
		if len(line) == 0 {
			if req.attrs == 0 {
				return 0, protoErr(limitMalformed, "empty request", buf, off)
			}
			// NUL bytes have no place in the protocol and would cut names
			// short in C code downstream: one scan per request.
			if i := bytes.IndexByte(buf[:end], 0); i >= 0 {
				return 0, protoErr(limitMalformed, "NUL byte in request", buf, i)
			}
			return end, nil
		}
		if eq <= 0 || eq >= len(line) {
			return 0, protoErr(limitMalformed, "attribute without name=value", buf, off)
		}
		if req.attrs++; req.attrs > lim.Attributes {
			return 0, protoErr(limitAttributes, "more attributes than the limit", buf, off)
		}
		name, value := line[:eq], line[eq+1:]
		req.set(name, value)
		off = end
	}
}

// parseWhole is the fast path for a request that has arrived whole and
// breaks no rule. Its newlines and '=' signs come as bitmasks of 64-byte
// blocks (maskBlocks, a vector compare on amd64), so the walk over its 30
// lines takes a few bit operations a line instead of a pass over every
// byte, and no limit is checked per line where the request's size already
// rules it out (BenchmarkParsePolicy: 374 ns against 532 ns line by line).
// It returns 0 for anything else (incomplete, CRLF, a NUL, a limit near, a
// malformed line), which parseLines then reads for its exact error.
func parseWhole(buf []byte, lim *Limits, req *policyRequest) int {
	// Within this bound no line and no request can break a size limit;
	// past it parseLines decides.
	r := buf[:min(len(buf), lim.LineBytes, lim.RequestBytes)]
	req.reset()
	var nl, eq [maskBatch]uint64
	var tail [64]byte
	start := 0   // the current line's first byte
	lineEq := -1 // its first '=', once seen
	for base := 0; base < len(r); {
		chunk := r[base:]
		blocks := min(len(chunk)/64, maskBatch)
		if blocks == 0 {
			// The last bytes, padded with NULs: neither '\n' nor '='.
			n := copy(tail[:], chunk)
			clear(tail[n:])
			chunk, blocks = tail[:], 1
		}
		maskBlocks(chunk, '\n', '=', nl[:blocks], eq[:blocks])
		for k := range blocks {
			at := base + 64*k
			m, e := nl[k], eq[k]
			from := 0 // bit of this block where the current line starts, or 0
			for m != 0 {
				bit := bits.TrailingZeros64(m)
				m &= m - 1
				if lineEq < 0 {
					// The first '=' of the line is below the newline.
					if x := e &^ (1<<from - 1) & (1<<bit - 1); x != 0 {
						lineEq = at + bits.TrailingZeros64(x)
					}
				}
				pos := at + bit
				if pos == start {
					return wholeEnd(r, pos, req)
				}
				if lineEq <= start {
					return 0
				}
				if req.attrs++; req.attrs > lim.Attributes {
					return 0
				}
				if name := r[start:lineEq]; mayReadName(name) {
					req.set(name, r[lineEq+1:pos])
				}
				start, lineEq, from = pos+1, -1, bit+1
			}
			if lineEq < 0 {
				if x := e &^ (1<<from - 1); x != 0 {
					lineEq = at + bits.TrailingZeros64(x)
				}
			}
		}
		base += 64 * blocks
	}
	return 0
}

// wholeEnd checks the request ended by the empty line at pos for what the
// fast path leaves to parseLines: no attribute, CR, NUL.
func wholeEnd(r []byte, pos int, req *policyRequest) int {
	if req.attrs == 0 || bytes.IndexByte(r[:pos], '\r') >= 0 || bytes.IndexByte(r[:pos], 0) >= 0 {
		return 0
	}
	return pos + 1
}

// readAttrs are the attributes set stores; its switch must name the same.
var readAttrs = []string{"request", "protocol_state", "client_address", "client_name",
	"sender", "recipient", "queue_id", "instance", "helo_name", "sasl_username", "policy_test_time"}

// mayRead has bit c-'a' of mayRead[n] set when an attribute in readAttrs
// is n bytes long and begins with c. A request has 31 attributes and
// greyhold reads a few: a look at the name's length and first letter turns
// down the others before the switch compares strings, which alone costs a
// fifth of parsing a request (CPU profile of BenchmarkParsePolicy).
var mayRead = func() (m [32]uint32) {
	for _, a := range readAttrs {
		m[len(a)] |= 1 << (a[0] - 'a')
	}
	return m
}()

// mayReadName is false for most attributes set would not store.
func mayReadName(name []byte) bool {
	return len(name) > 0 && len(name) < len(mayRead) && name[0]-'a' < 26 && mayRead[len(name)]&(1<<(name[0]-'a')) != 0
}

// set stores the attribute name=value if greyhold reads it.
func (req *policyRequest) set(name, value []byte) {
	switch string(name) {
	case "request":
		req.request = value
	case "protocol_state":
		req.protocolState = value
	case "client_address":
		req.clientAddress = value
	case "client_name":
		req.clientName = value
	case "sender":
		req.sender = value
		req.hasSender = true
	case "recipient":
		req.recipient = value
	case "queue_id":
		req.queueID = value
	case "instance":
		req.instance = value
	case "helo_name":
		req.heloName = value
	case "sasl_username":
		req.saslUsername = value
	case "policy_test_time":
		req.testTime = value
	}
}

// testTime parses the policy_test_time attribute (Unix seconds).
func parseTestTime(b []byte) (int64, error) {
	v, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("policy_test_time %q: want Unix seconds", b)
	}
	return v, nil
}

// lineEnd finds the newline that ends the line at the front of b and the
// first '=' before it, in one pass eight bytes at a time with the zero-byte
// trick. A policy line is 10 to 60 bytes, too short for bytes.IndexByte's
// vector setup to pay (BenchmarkParsePolicy, a Postfix 3.7 request: 590 ns
// with IndexByte, 470 ns with a word-at-a-time search for each byte, 430 ns
// with both found in one pass). nl is -1 when b holds no newline; eq is -1
// when the line has no '='.
func lineEnd(b []byte) (nl, eq int) {
	const (
		lo = 0x0101010101010101
		hi = 0x8080808080808080
		pn = lo * '\n'
		pe = lo * '='
	)
	eq = -1
	i := 0
	for ; i+8 <= len(b); i += 8 {
		w := binary.LittleEndian.Uint64(b[i:])
		x := w ^ pn
		// The lowest set bit of t marks the first matching byte; borrows
		// can set bits above it, never below.
		t := (x - lo) &^ x & hi
		if eq < 0 {
			y := w ^ pe
			if u := (y - lo) &^ y & hi; u != 0 && (t == 0 || bits.TrailingZeros64(u) < bits.TrailingZeros64(t)) {
				eq = i + bits.TrailingZeros64(u)/8
			}
		}
		if t != 0 {
			return i + bits.TrailingZeros64(t)/8, eq
		}
	}
	for ; i < len(b); i++ {
		switch b[i] {
		case '\n':
			return i, eq
		case '=':
			if eq < 0 {
				eq = i
			}
		}
	}
	return -1, eq
}
