package server

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"strconv"
)

// The Postfix SMTPD access policy delegation protocol (postfix.org
// SMTPD_POLICY_README): a request is lines of name=value ended by an empty
// line; the reply is "action=..." and an empty line. Postfix keeps the
// connection open and sends the next request after the reply; load tools
// and some proxies pipeline, so the parser reads every complete request in
// the buffer and the replies go back in one write.

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
		case "policy_test_time":
			req.testTime = value
		}
		off = end
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
