package main

import (
	"bytes"
	"errors"
	"fmt"
)

// kinds counts replies by kind (the action's first word, the line's first
// word, or verdict/reason). A connection sees a handful of kinds, so a
// linear scan over a fixed array beats a map and never allocates.
type kinds struct {
	names  [maxKinds][kindLen]byte
	lens   [maxKinds]uint8
	counts [maxKinds]uint64
	n      int
	other  uint64
}

const (
	maxKinds = 16
	kindLen  = 40
)

func (k *kinds) add(name []byte) {
	for i := 0; i < k.n; i++ {
		if string(k.names[i][:k.lens[i]]) == string(name) {
			k.counts[i]++
			return
		}
	}
	if k.n == maxKinds || len(name) > kindLen {
		k.other++
		return
	}
	copy(k.names[k.n][:], name)
	k.lens[k.n] = uint8(len(name))
	k.counts[k.n] = 1
	k.n++
}

// into adds the counts to m (at the end of a run: allocation is fine).
func (k *kinds) into(m map[string]uint64) (other uint64) {
	for i := 0; i < k.n; i++ {
		m[string(k.names[i][:k.lens[i]])] += k.counts[i]
	}
	return k.other
}

// replyState is what a parser learns besides the counts.
type replyState struct {
	kinds kinds
	// items is how many checks the last reply answered (HTTP batches).
	items int
	// closing is set when the server announced it closes the connection
	// after this reply (HTTP "Connection: close").
	closing bool
}

// A parse function reads one reply from the front of b. It returns the
// bytes it took, 0 and no error if b holds no whole reply yet, or an
// error. With an error and n > 0 the reply was garbage but its end was
// found, so the stream is still in step; with n == 0 it is not, and the
// connection must go.
type parseFunc func(b []byte, rs *replyState) (n int, err error)

// errGarbage marks a reply that is not what the protocol allows.
var errGarbage = errors.New("garbage reply")

func garbage(what string, b []byte) error {
	return fmt.Errorf("%w: %s: %q", errGarbage, what, snippet(b))
}

func snippet(b []byte) []byte {
	if len(b) > 80 {
		return b[:80]
	}
	return b
}

// maxReply bounds a reply whose end has not been seen: far above any
// real one, so a server that streams junk is caught. maxHTTPBody does the
// same for an HTTP body: the answer to the largest batch (10,000 checks
// of about 200 bytes) is a thirtieth of it.
const (
	maxReply    = 64 << 10
	maxHTTPBody = 64 << 20
)

var (
	emptyLine    = []byte("\n\n")
	actionPrefix = []byte("action=")
)

// parsePolicyReply reads "action=WORD text\n" (other attributes allowed,
// as Postfix ignores them) up to the empty line.
func parsePolicyReply(b []byte, rs *replyState) (int, error) {
	end := bytes.Index(b, emptyLine)
	if end < 0 {
		if len(b) > maxReply {
			return 0, garbage("no empty line ends the reply", b)
		}
		return 0, nil
	}
	n := end + 2
	line := b[:end+1]
	if i := bytes.IndexByte(line, '\n'); i >= 0 {
		line = line[:i]
	}
	if !bytes.HasPrefix(line, actionPrefix) {
		return n, garbage("reply does not start with action=", b[:n])
	}
	word := line[len(actionPrefix):]
	if i := bytes.IndexByte(word, ' '); i >= 0 {
		word = word[:i]
	}
	if !isWord(word) {
		return n, garbage("empty or odd action", b[:n])
	}
	rs.items = 1
	rs.kinds.add(word)
	return n, nil
}

// parseLineReply reads one line: DEFER <n> <text>, PASS, PREPEND <hdr>,
// ERROR <why>, or any other upper-case word.
func parseLineReply(b []byte, rs *replyState) (int, error) {
	end := bytes.IndexByte(b, '\n')
	if end < 0 {
		if len(b) > maxReply {
			return 0, garbage("no newline ends the reply", b)
		}
		return 0, nil
	}
	line := b[:end]
	word := line
	if i := bytes.IndexByte(word, ' '); i >= 0 {
		word = word[:i]
	}
	if !isWord(word) {
		return end + 1, garbage("reply is not an upper-case word", line)
	}
	rs.items = 1
	rs.kinds.add(word)
	return end + 1, nil
}

// isWord accepts what policy actions and line replies start with:
// DEFER_IF_PERMIT, DUNNO, PREPEND, 450, PASS, ERROR...
func isWord(w []byte) bool {
	if len(w) == 0 {
		return false
	}
	for _, c := range w {
		if !('A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-' || 'a' <= c && c <= 'z') {
			return false
		}
	}
	return true
}

// parseHTTPReply reads an HTTP/1.1 response with a Content-Length body
// holding a JSON array of check answers.
func parseHTTPReply(b []byte, rs *replyState) (int, error) {
	hdrEnd := bytes.Index(b, []byte("\r\n\r\n"))
	if hdrEnd < 0 {
		if len(b) > maxReply {
			return 0, garbage("no end of HTTP headers", b)
		}
		return 0, nil
	}
	head := b[:hdrEnd]
	line, rest, _ := bytes.Cut(head, []byte("\r\n"))
	if !bytes.HasPrefix(line, []byte("HTTP/1.")) || len(line) < 12 {
		return 0, garbage("not an HTTP response", line)
	}
	status, ok := atoi(line[9:12])
	if !ok {
		return 0, garbage("bad HTTP status", line)
	}
	length := -1
	rs.closing = false
	for len(rest) > 0 {
		var h []byte
		h, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		name, value, ok := bytes.Cut(h, []byte(":"))
		if !ok {
			return 0, garbage("bad HTTP header", h)
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if length, ok = atoi(value); !ok {
				return 0, garbage("bad Content-Length", h)
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			return 0, garbage("chunked responses are not supported", h)
		case bytes.EqualFold(name, []byte("Connection")):
			rs.closing = bytes.EqualFold(value, []byte("close"))
		}
	}
	if length < 0 {
		return 0, garbage("HTTP response without Content-Length", head)
	}
	if length > maxHTTPBody {
		return 0, garbage("Content-Length beyond any batch's answer", head)
	}
	n := hdrEnd + 4 + length
	if len(b) < n {
		return 0, nil
	}
	body := b[hdrEnd+4 : n]
	if status != 200 {
		return n, fmt.Errorf("%w: HTTP %d: %q", errGarbage, status, snippet(bytes.TrimSpace(body)))
	}
	items, err := scanAnswers(body, &rs.kinds)
	if err != nil {
		return n, err
	}
	rs.items = items
	return n, nil
}

// scanAnswers walks a JSON array of flat objects, counting each by
// "verdict/reason" ("pass/known", "defer/new") or "error", without
// allocating. Values may be strings, numbers, true, false or null.
func scanAnswers(b []byte, k *kinds) (int, error) {
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '[' {
		return 0, garbage("answer is not a JSON array", b)
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == ']' {
		return 0, nil
	}
	items := 0
	for {
		if i >= len(b) || b[i] != '{' {
			return items, garbage("array item is not an object", b[min(i, len(b)):])
		}
		var verdict, reason []byte
		isErr := false
		i = skipWS(b, i+1)
		if i < len(b) && b[i] == '}' {
			i++
		} else {
			for {
				key, j, ok := jsonString(b, i)
				if !ok {
					return items, garbage("bad object key", b[min(i, len(b)):])
				}
				i = skipWS(b, j)
				if i >= len(b) || b[i] != ':' {
					return items, garbage("missing ':'", b[min(i, len(b)):])
				}
				i = skipWS(b, i+1)
				var val []byte
				if i < len(b) && b[i] == '"' {
					val, j, ok = jsonString(b, i)
					if !ok {
						return items, garbage("bad string", b[i:])
					}
					i = j
				} else {
					j = i
					for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ' ' && b[j] != '\n' {
						j++
					}
					if j == i {
						return items, garbage("missing value", b[min(i, len(b)):])
					}
					i = j
				}
				switch string(key) {
				case "verdict":
					verdict = val
				case "reason":
					reason = val
				case "error":
					isErr = true
				}
				i = skipWS(b, i)
				if i < len(b) && b[i] == ',' {
					i = skipWS(b, i+1)
					continue
				}
				if i < len(b) && b[i] == '}' {
					i++
					break
				}
				return items, garbage("object not closed", b[min(i, len(b)):])
			}
		}
		switch {
		case isErr:
			k.add(errorKind)
		case len(verdict) == 0:
			return items, garbage("answer without verdict or error", b)
		default:
			var kb [kindLen]byte
			kn := copy(kb[:], verdict)
			if kn < kindLen {
				kb[kn] = '/'
				kn++
			}
			kn += copy(kb[kn:], reason)
			k.add(kb[:kn])
		}
		items++
		i = skipWS(b, i)
		if i < len(b) && b[i] == ',' {
			i = skipWS(b, i+1)
			continue
		}
		if i < len(b) && b[i] == ']' {
			if j := skipWS(b, i+1); j != len(b) {
				return items, garbage("data after the array", b[j:])
			}
			return items, nil
		}
		return items, garbage("array not closed", b[min(i, len(b)):])
	}
}

var errorKind = []byte("error")

// atoi parses a small decimal number without the string conversion
// strconv would need (which allocates once the string escapes into its
// error value).
func atoi(b []byte) (int, bool) {
	if len(b) == 0 || len(b) > 12 {
		return 0, false
	}
	v := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int(c-'0')
	}
	return v, true
}

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\n' || b[i] == '\r' || b[i] == '\t') {
		i++
	}
	return i
}

// jsonString returns the raw contents of the string starting at b[i] (a
// quote) and the index after its closing quote. Escapes stay escaped:
// verdicts and reasons have none.
func jsonString(b []byte, i int) ([]byte, int, bool) {
	if i >= len(b) || b[i] != '"' {
		return nil, i, false
	}
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return b[i+1 : j], j + 1, true
		}
	}
	return nil, i, false
}
