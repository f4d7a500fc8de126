package server

import (
	"encoding/binary"
	"math/bits"

	"github.com/greyhold/greyhold/engine"
)

// scanBatch reads a batch body in the shape callers send it: a JSON array
// of flat objects whose members are client_address, client_name, sender
// and recipient as strings without escapes, and with the test clock time as
// a positive integer, each check complete and all at one time. It fills
// reqs (from its start) and returns them with the batch's time. It reports
// false at anything else (an escape, another type, a missing member, a
// check at another time than the first, bad JSON), and fastjson then reads
// the body, which also gives each bad check its error in its place.
//
// fastjson parses the whole body into a tree before parseCheck walks each
// object's members: the two were half of the batch endpoint's CPU
// (BenchmarkHTTPBatch). FuzzScanBatch holds this reading to theirs.
func (s *Server) scanBatch(body []byte, reqs []engine.Request) ([]engine.Request, int64, bool) {
	reqs = reqs[:0]
	i := skipJSONSpace(body, 0)
	if i == len(body) || body[i] != '[' {
		return reqs, 0, false
	}
	var t int64
	for {
		i = skipJSONSpace(body, i+1)
		if i == len(body) || body[i] != '{' {
			return reqs, 0, false
		}
		reqs = append(reqs, engine.Request{})
		next, it, ok := s.scanCheck(body, i+1, &reqs[len(reqs)-1])
		if !ok || (len(reqs) > 1 && it != t) {
			return reqs, 0, false
		}
		t = it
		i = skipJSONSpace(body, next)
		if i == len(body) {
			return reqs, 0, false
		}
		switch body[i] {
		case ',':
			continue
		case ']':
			return reqs, t, skipJSONSpace(body, i+1) == len(body)
		}
		return reqs, 0, false
	}
}

// scanCheck reads the members of the object whose '{' is just before
// body[i] into req and returns where the object ends and its time (0 for
// none).
func (s *Server) scanCheck(body []byte, i int, req *engine.Request) (int, int64, bool) {
	var t int64
	for {
		i = skipJSONSpace(body, i)
		if i == len(body) || body[i] != '"' {
			return 0, 0, false
		}
		key, next, ok := scanJSONKey(body, i+1)
		if !ok {
			return 0, 0, false
		}
		i = skipJSONSpace(body, next)
		if i == len(body) || body[i] != ':' {
			return 0, 0, false
		}
		i = skipJSONSpace(body, i+1)
		dst := checkField(req, key)
		if dst == nil {
			if string(key) != "time" || !s.cfg.TestClock {
				return 0, 0, false
			}
			if t, i, ok = scanJSONTime(body, i); !ok {
				return 0, 0, false
			}
		} else {
			if i == len(body) || body[i] != '"' {
				return 0, 0, false
			}
			v, next, ok := scanJSONString(body, i+1)
			if !ok {
				return 0, 0, false
			}
			*dst, i = str(v), next
		}
		i = skipJSONSpace(body, i)
		if i == len(body) {
			return 0, 0, false
		}
		if body[i] == ',' {
			i++
			continue
		}
		if body[i] != '}' || req.ClientAddr == "" || req.Recipient == "" {
			return 0, 0, false
		}
		if req.ClientName == "" {
			req.ClientName = "unknown"
		}
		return i + 1, t, true
	}
}

// skipJSONSpace skips JSON's four whitespace bytes from body[i].
func skipJSONSpace(body []byte, i int) int {
	for i < len(body) && (body[i] == ' ' || body[i] == '\n' || body[i] == '\r' || body[i] == '\t') {
		i++
	}
	return i
}

// scanJSONKey is scanJSONString for a member name: the names of a check
// are recognised whole, which costs less than looking for the quote that
// ends them.
func scanJSONKey(body []byte, i int) ([]byte, int, bool) {
	rest := body[i:]
	n := 0
	if len(rest) > 0 {
		switch rest[0] {
		case 'c':
			n = quoted(rest, `client_address"`) + quoted(rest, `client_name"`)
		case 'r':
			n = quoted(rest, `recipient"`)
		case 's':
			n = quoted(rest, `sender"`)
		case 't':
			n = quoted(rest, `time"`)
		}
	}
	if n > 0 {
		return rest[:n-1], i + n, true
	}
	return scanJSONString(body, i)
}

// quoted is len(name) if b starts with name, else 0.
func quoted(b []byte, name string) int {
	if len(b) >= len(name) && string(b[:len(name)]) == name {
		return len(name)
	}
	return 0
}

// scanJSONString reads a string that starts at body[i], just after its
// opening quote, and returns it and where it ends; false if it has an
// escape or no end.
func scanJSONString(body []byte, i int) ([]byte, int, bool) {
	j := i
	// Eight bytes at a time: a byte loop costs a fifth of the fast path.
	for ; j+8 <= len(body); j += 8 {
		w := binary.LittleEndian.Uint64(body[j:])
		if m := zeroBytes(w^(everyByte*'"')) | zeroBytes(w^(everyByte*'\\')); m != 0 {
			j += bits.TrailingZeros64(m) / 8
			return jsonStringEnd(body, i, j)
		}
	}
	for ; j < len(body); j++ {
		if body[j] == '"' || body[j] == '\\' {
			return jsonStringEnd(body, i, j)
		}
	}
	return nil, 0, false
}

// jsonStringEnd ends the string from body[i] at body[j], a quote or the
// backslash of an escape.
func jsonStringEnd(body []byte, i, j int) ([]byte, int, bool) {
	if body[j] != '"' {
		return nil, 0, false
	}
	return body[i:j], j + 1, true
}

// scanJSONTime reads a time at body[i]: a positive integer of at most 15
// digits without a leading zero, followed by what may follow a number in
// an object.
func scanJSONTime(body []byte, i int) (int64, int, bool) {
	var n int64
	j := i
	for ; j < len(body) && j-i < 16 && '0' <= body[j] && body[j] <= '9'; j++ {
		n = n*10 + int64(body[j]-'0')
	}
	if j == i || j-i > 15 || body[i] == '0' || j == len(body) {
		return 0, 0, false
	}
	switch body[j] {
	case ',', '}', ' ', '\n', '\r', '\t':
		return n, j, true
	}
	return 0, 0, false
}
