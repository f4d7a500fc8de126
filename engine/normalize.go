package engine

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
)

// Normalisation turns a request into the bytes its triplet key is hashed
// from. Every rule here exists because some sender makes each message look
// new: greylisting would then defer every mail of a newsletter run or every
// bounce, and the delay would never end. The rules follow what postgrey does
// and what mail operators have learnt since:
//
//   - client addresses become networks (/24 and /64): a pool of outgoing
//     servers retries from a neighbour as often as from the same host;
//   - addresses are compared without ASCII case;
//   - BATV (prvs=TAG=user), SRS (SRS0=HASH=TT=domain=user) and +extensions
//     wrap one real sender in a per-message address;
//   - digit runs and long hex or ID tokens (VERP, Amazon SES, Mailchimp) make
//     each bounce address unique; they collapse to '#'.
//
// The empty sender (bounces, "<>") stays empty: it is a sender of its own.

// ErrBadClientAddress is returned for a client address that is not an IP.
var ErrBadClientAddress = errors.New("client address is not an IP address")

// ErrNoRecipient is returned for a request without a recipient.
var ErrNoRecipient = errors.New("request has no recipient")

// MaxAddressLen bounds a sender or recipient: Postfix's own line limit,
// eight times what RFC 5321 allows a path. It also keeps the sender's
// length, a 16-bit field in the bytes a key is hashed from, exact.
const MaxAddressLen = 2048

// ErrSenderTooLong and ErrRecipientTooLong are returned for addresses over
// MaxAddressLen bytes.
var (
	ErrSenderTooLong    = errors.New("sender longer than 2048 bytes")
	ErrRecipientTooLong = errors.New("recipient longer than 2048 bytes")
)

// BadRequestField names the request field a Check error is about
// ("client_address", "sender" or "recipient"), or "" when err is not one
// of the errors that mean the request itself was unusable.
func BadRequestField(err error) string {
	switch {
	case errors.Is(err, ErrBadClientAddress):
		return "client_address"
	case errors.Is(err, ErrNoRecipient), errors.Is(err, ErrRecipientTooLong):
		return "recipient"
	case errors.Is(err, ErrSenderTooLong):
		return "sender"
	}
	return ""
}

// ClientNetwork returns the network a client address belongs to under k.
// IPv4-mapped IPv6 addresses count as IPv4, and a zone is ignored.
func ClientNetwork(addr string, k KeyOptions) (netip.Prefix, error) {
	a, err := parseAddr(addr)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%w: %q", ErrBadClientAddress, addr)
	}
	return clientNet(a, &k), nil
}

// parseAddr parses an IP address: dotted-quad IPv4, which nearly every
// client Postfix reports is, by hand in a third of netip's time; anything
// else through netip, which also rejects what the fast path turned down.
func parseAddr(s string) (netip.Addr, error) {
	if a, ok := parseIPv4(s); ok {
		return a, nil
	}
	return netip.ParseAddr(s)
}

// parseIPv4 accepts exactly the dotted quads netip.ParseAddr does: four
// decimal fields of 0–255 without leading zeros.
func parseIPv4(s string) (netip.Addr, bool) {
	var b [4]byte
	field, val, digits := 0, 0, 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case '0' <= c && c <= '9':
			if digits > 0 && val == 0 {
				return netip.Addr{}, false
			}
			val = val*10 + int(c-'0')
			digits++
			if val > 255 {
				return netip.Addr{}, false
			}
		case c == '.':
			if digits == 0 || field == 3 {
				return netip.Addr{}, false
			}
			b[field] = byte(val)
			field++
			val, digits = 0, 0
		default:
			return netip.Addr{}, false
		}
	}
	if field != 3 || digits == 0 {
		return netip.Addr{}, false
	}
	b[3] = byte(val)
	return netip.AddrFrom4(b), true
}

func clientNet(a netip.Addr, k *KeyOptions) netip.Prefix {
	a = a.Unmap().WithZone("")
	bits := k.IPv6Prefix
	if a.Is4() {
		bits = k.IPv4Prefix
	}
	p, _ := a.Prefix(bits) // bits is validated to fit the family
	return p
}

// appendNet appends a fixed-width form of a network: family, prefix length,
// masked address. Fixed width keeps the fields after it unambiguous.
func appendNet(dst []byte, p netip.Prefix) []byte {
	a := p.Addr()
	if a.Is4() {
		b := a.As4()
		return append(dst, 4, byte(p.Bits()), b[0], b[1], b[2], b[3])
	}
	b := a.As16()
	dst = append(dst, 6, byte(p.Bits()))
	return append(dst, b[:]...)
}

// NormaliseSender returns the sender as the engine compares it.
func NormaliseSender(s string, k KeyOptions) string {
	return string(appendSender(nil, s, k.NoSenderNormalisation))
}

// NormaliseRecipient returns the recipient as the engine compares it.
func NormaliseRecipient(s string, k KeyOptions) string {
	return string(appendRecipient(nil, s, k.StripRecipientExtension))
}

// le64 reads eight bytes of a string little-endian; the compiler merges the
// byte loads into one.
func le64(s string) uint64 {
	_ = s[7]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

// appendLower appends s with ASCII letters lowercased. Non-ASCII bytes
// (SMTPUTF8 addresses) are kept: Postfix compares them byte for byte too.
func appendLower(dst []byte, s string) []byte {
	n := len(dst)
	dst = slices.Grow(dst, len(s))[:n+len(s)]
	lowerInto(dst[n:], s)
	return dst
}

// lowerInto writes s lowercased into dst (len(dst) == len(s)), eight bytes
// at a time: addresses are lowercased on every check, and a byte loop cost
// a tenth of a check.
func lowerInto(dst []byte, s string) {
	const (
		ones = 0x0101010101010101
		high = 0x8080808080808080
	)
	lower8 := func(x uint64) uint64 {
		// For each byte below 0x80, the high bit of ge says it is at least
		// 'A', that of gt that it is above 'Z'; the additions cannot carry
		// between bytes because every byte is masked to 7 bits first.
		h := x &^ high
		ge := h + (0x80-'A')*ones
		gt := h + (0x7f-'Z')*ones
		return x | ((ge&^gt)&^x&high)>>2
	}
	if len(s) < 8 {
		for i := 0; i < len(s); i++ {
			c := s[i]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			dst[i] = c
		}
		return
	}
	for i := 0; i+8 <= len(s); i += 8 {
		binary.LittleEndian.PutUint64(dst[i:], lower8(le64(s[i:i+8])))
	}
	// The last eight bytes again, overlapping: lowercasing twice is
	// harmless, and it spares a byte loop for the tail.
	n := len(s) - 8
	binary.LittleEndian.PutUint64(dst[n:], lower8(le64(s[n:])))
}

// splitAddress splits at the last '@'; an address without one is all local
// part.
func splitAddress(b []byte) (local, domain []byte, hasAt bool) {
	if i := bytes.LastIndexByte(b, '@'); i >= 0 {
		return b[:i], b[i+1:], true
	}
	return b, nil, false
}

// appendRecipient appends the lowercased recipient, without its +extension
// when strip is set.
func appendRecipient(dst []byte, s string, strip bool) []byte {
	start := len(dst)
	dst = appendLower(dst, s)
	if !strip {
		return dst
	}
	local, domain, hasAt := splitAddress(dst[start:])
	i := bytes.IndexByte(local, '+')
	if i < 0 {
		return dst
	}
	cut := start + i
	if !hasAt {
		return dst[:cut]
	}
	dst[cut] = '@'
	n := copy(dst[cut+1:], domain) // domain lies further right: copy moves it safely
	return dst[:cut+1+n]
}

// appendSender appends the normalised sender (see the rules above).
func appendSender(dst []byte, s string, raw bool) []byte {
	if raw || s == "" {
		return appendLower(dst, s)
	}
	// The lowercased input goes just past where the output will be written:
	// the output is never longer than the input, so writing it cannot reach
	// what is still to be read, and no scratch buffer needs zeroing.
	out := len(dst)
	dst = slices.Grow(dst, 2*len(s))
	low := dst[out+len(s) : out+2*len(s)]
	lowerInto(low, s)
	local, domain, hasAt := splitAddress(low)

	// Unwrap until nothing matches: each step shortens local, so this ends,
	// and the fixpoint makes normalisation idempotent even for wrappings
	// nested inside each other. The +extension is cut inside the loop:
	// what follows a '+' can keep a wrapping from being recognised (an '@'
	// in an SRS part), and cutting it after the loop would leave one that
	// the next normalisation unwraps (as in "SRS0=0=0=0=0+@@").
	for {
		if l, d, ok := unwrapSRS(local); ok {
			local, domain, hasAt = l, d, true
			continue
		}
		if l, ok := unwrapBATV(local); ok {
			local = l
			continue
		}
		if i := bytes.IndexByte(local, '+'); i >= 0 {
			local = local[:i]
			continue
		}
		break
	}
	dst = appendCollapsed(dst[:out], local)
	if hasAt {
		dst = append(dst, '@')
		dst = append(dst, domain...)
	}
	return dst
}

// appendCollapsed copies a local part, replacing each token (a maximal run
// of ASCII letters and digits) that is all digits, or at least eight long and
// mixes digits with letters, by '#'. "bounce-md_10612303.5adf1f70.v1-0f66"
// becomes "bounce-md_#.#.v1-#"; "user2" and "newsletter" stay.
//
// A UUID (8-4-4-4-12 hex digits, as Amazon SES and many list servers put in
// each bounce address) is one token: its short groups would otherwise stay.
func appendCollapsed(dst, local []byte) []byte {
	if len(local) < uuidLen && !hasDigit(local) {
		// No token can collapse: most local parts ("john.smith",
		// "newsletter") are copied as they are.
		return append(dst, local...)
	}
	for i := 0; i < len(local); {
		if isUUIDAt(local, i) {
			dst = append(dst, '#')
			i += uuidLen
			continue
		}
		if !isAlnum(local[i]) {
			dst = append(dst, local[i])
			i++
			continue
		}
		j, digits := i, 0
		for j < len(local) && isAlnum(local[j]) {
			if local[j] <= '9' {
				digits++
			}
			j++
		}
		if n := j - i; digits == n || (n >= 8 && digits > 0) {
			dst = append(dst, '#')
		} else {
			dst = append(dst, local[i:j]...)
		}
		i = j
	}
	return dst
}

const uuidLen = 36

// isUUIDAt reports whether a UUID starts at b[i] and is a token of its own.
func isUUIDAt(b []byte, i int) bool {
	if len(b)-i < uuidLen || (i > 0 && isAlnum(b[i-1])) || (len(b) > i+uuidLen && isAlnum(b[i+uuidLen])) {
		return false
	}
	for j, c := range b[i : i+uuidLen] {
		switch j {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !isHex(c) {
				return false
			}
		}
	}
	return true
}

// hasDigit reports whether b has an ASCII digit.
func hasDigit(b []byte) bool {
	for _, c := range b {
		if c-'0' < 10 {
			return true
		}
	}
	return false
}

func isAlnum(c byte) bool {
	return ('a' <= c && c <= 'z') || ('0' <= c && c <= '9') || ('A' <= c && c <= 'Z')
}

func isHex(c byte) bool {
	return ('a' <= c && c <= 'f') || ('0' <= c && c <= '9')
}

func hasPrefix(b []byte, p string) bool {
	return len(b) >= len(p) && string(b[:len(p)]) == p
}

// cutByte splits b around the first c.
func cutByte(b []byte, c byte) (before, after []byte, ok bool) {
	if i := bytes.IndexByte(b, c); i >= 0 {
		return b[:i], b[i+1:], true
	}
	return b, nil, false
}

// unwrapSRS undoes the Sender Rewriting Scheme of forwarders:
//
//	SRS0=HASH=TT=orig.domain=orig-local@forwarder
//	SRS1=HASH=first.forwarder==HASH=TT=orig.domain=orig-local@forwarder
//
// The separator after SRS0/SRS1 may be '=', '+' or '-' (libsrs2 allows all
// three). It returns the original local part and domain.
func unwrapSRS(local []byte) (l, d []byte, ok bool) {
	if len(local) < 5 || !hasPrefix(local, "srs") || !isSRSSep(local[4]) {
		return nil, nil, false
	}
	rest := local[5:]
	switch local[3] {
	case '0':
	case '1':
		// Skip HASH and the first forwarder's domain; what follows is the
		// SRS0 part minus its "SRS0", starting with its separator.
		_, after, ok := cutByte(rest, '=')
		if !ok {
			return nil, nil, false
		}
		_, after, ok = cutByte(after, '=')
		if !ok || len(after) == 0 || !isSRSSep(after[0]) {
			return nil, nil, false
		}
		rest = after[1:]
	default:
		return nil, nil, false
	}
	hash, after, ok := cutByte(rest, '=')
	if !ok || len(hash) == 0 {
		return nil, nil, false
	}
	tt, after, ok := cutByte(after, '=')
	if !ok || len(tt) == 0 {
		return nil, nil, false
	}
	dom, user, ok := cutByte(after, '=')
	// An '@' in either part is no SRS: taking it for the domain would move
	// it across the address's last '@' and normalising again would read
	// the address differently (as in "SRS0+0=0=0@=0@").
	if !ok || len(dom) == 0 || len(user) == 0 || bytes.IndexByte(dom, '@') >= 0 || bytes.IndexByte(user, '@') >= 0 {
		return nil, nil, false
	}
	return user, dom, true
}

func isSRSSep(c byte) bool { return c == '=' || c == '+' || c == '-' }

// unwrapBATV undoes Bounce Address Tag Validation wrappings:
//
//	prvs=TAG=user      (the draft's form: TAG is K DDD SSSSSS, ten hex digits)
//	prvs=user=TAG      (an older form some MTAs still send)
//	msprvs1=TAG=user   (Microsoft's variant)
//	btv1==TAG==user    (Barracuda's variant)
func unwrapBATV(local []byte) ([]byte, bool) {
	switch {
	case hasPrefix(local, "prvs="):
		a, b, ok := cutByte(local[5:], '=')
		if !ok || len(a) == 0 || len(b) == 0 {
			return nil, false
		}
		if !looksLikeTag(a) && looksLikeTag(b) {
			return a, true
		}
		return b, true
	case hasPrefix(local, "msprvs1="):
		tag, user, ok := cutByte(local[8:], '=')
		if !ok || len(tag) == 0 || len(user) == 0 {
			return nil, false
		}
		return user, true
	case hasPrefix(local, "btv1=="):
		rest := local[6:]
		for i := 0; i+1 < len(rest); i++ {
			if rest[i] == '=' && rest[i+1] == '=' {
				if i == 0 || i+2 == len(rest) {
					return nil, false
				}
				return rest[i+2:], true
			}
		}
	}
	return nil, false
}

// looksLikeTag tells a BATV tag (hex digits, 8 to 16 of them; the draft's
// is 10) from a local part, to read "prvs=user=TAG" the right way round.
func looksLikeTag(b []byte) bool {
	if len(b) < 8 || len(b) > 16 {
		return false
	}
	for _, c := range b {
		if !isHex(c) {
			return false
		}
	}
	return true
}
