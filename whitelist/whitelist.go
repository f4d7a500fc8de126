// Package whitelist reads whitelist files in postgrey's formats, so a
// postgrey user can point greyhold at the files they have, and matches
// requests against them.
//
// Client files (postgrey's --whitelist-clients), one entry a line:
//
//	example.com        the host example.com and every host under it
//	/^mail\d+\.ex\.com$/  a regular expression over the client's host name
//	192.0.2.7          one address
//	192.0.2            a partial address: every address that starts so (/24)
//	192.0.2.0/24       a network, IPv4 or IPv6
//	2001:db8::1        an IPv6 address
//
// Recipient files (--whitelist-recipients):
//
//	postmaster@        that local part at any domain
//	abuse@example.com  that address
//	example.com        every address at that domain or under it
//	/^.*@lists\./      a regular expression over the whole address
//
// Lines are compared without case; '#' starts a comment. Regular
// expressions use Go's RE2 syntax, which covers what postgrey's files use
// (\d, character classes, anchors); an entry RE2 cannot read is skipped with
// a warning naming the file and line, so one bad line does not stop the
// server.
package whitelist

import (
	"bufio"
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"unsafe"
)

// Set is a compiled set of client and recipient entries. It is immutable
// once built; a reload builds a new one.
type Set struct {
	clientDomains map[string]struct{}
	// domainEnds holds the last two labels of every client domain entry,
	// and oneLabel says whether any entry has a single label. Most names
	// match no entry; one lookup of their last two labels says so, where
	// walking every suffix takes three or four (an eighth of a check).
	domainEnds   strSet
	oneLabel     bool
	clientRegexp *reList
	prefixes     map[netip.Prefix]struct{}
	v4Bits       []int
	v6Bits       []int

	rcptLocals  strSet
	rcptAddrs   strSet
	rcptDomains map[string]struct{}
	rcptRegexp  *reList

	names nameCache

	// entries are every entry read, with where it came from, for
	// Explain; checks never read them.
	entries []Match

	Files []File
}

// Match is one whitelist entry, as Explain reports it.
type Match struct {
	File  string // the path, or "builtin"
	Kind  string // "clients" or "recipients"
	Line  int
	Entry string // as written
}

// File says what was read from one file.
type File struct {
	Path    string
	Kind    string // "clients" or "recipients"
	Entries int
	Skipped []string // "line N: why"
}

// maxCachedNames bounds the regular-expression cache; past it the cache is
// cleared and refills with the names in use.
const maxCachedNames = 1 << 16

// Empty returns a Set that matches nothing.
func Empty() *Set { return &Set{} }

// Parse builds a Set from readers, for tests and embedded defaults.
func Parse(clients, recipients io.Reader) *Set {
	b := newBuilder()
	add := func(info File, err error) {
		if err != nil {
			info.Skipped = append(info.Skipped, "the rest of the input: "+err.Error())
		}
		b.set.Files = append(b.set.Files, info)
	}
	if clients != nil {
		add(b.readClients(clients, "clients"))
	}
	if recipients != nil {
		add(b.readRecipients(recipients, "recipients"))
	}
	return b.build()
}

type builder struct {
	set       *Set
	clientRes []string
	rcptRes   []string
	v4, v6    map[int]bool
}

func newBuilder() *builder {
	return &builder{
		set: &Set{
			clientDomains: map[string]struct{}{},
			prefixes:      map[netip.Prefix]struct{}{},
			rcptLocals:    newStrSet(),
			rcptAddrs:     newStrSet(),
			rcptDomains:   map[string]struct{}{},
		},
		v4: map[int]bool{}, v6: map[int]bool{},
	}
}

// lines yields each entry with its line number, comments and blanks gone.
// As in postgrey, a '#' starts a comment anywhere, after a /regex/ too. A
// read error, or a line longer than 1 MiB, ends the file with an error:
// the lines after it must not be dropped without a word.
func lines(r io.Reader, fn func(n int, entry string)) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		line = strings.TrimSpace(line)
		if line != "" {
			fn(n, line)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("after line %d: %w", n, err)
	}
	return nil
}

// isRe reports whether an entry is postgrey's /regex/ form.
func isRe(e string) bool { return len(e) >= 2 && e[0] == '/' && e[len(e)-1] == '/' }

// compileRe checks one /regex/ entry and returns it ready to join the
// others. Like postgrey's /^\/(\S+)\/$/ it wants a body without blanks
// ("//" would match everything); it matches without regard to case, as
// postgrey's /i does, so the pattern itself is left as written (lowercasing
// it would turn \S into \s and \D into \d).
func compileRe(entry string) (string, error) {
	body := entry[1 : len(entry)-1]
	if body == "" {
		return "", errors.New("empty regular expression (it would match everything)")
	}
	if strings.ContainsAny(body, " \t") {
		return "", errors.New("blank inside a regular expression (postgrey does not read it either)")
	}
	re := "(?i:" + body + ")"
	if _, err := regexp.Compile(re); err != nil {
		return "", fmt.Errorf("not a regular expression Go can read: %w", err)
	}
	return re, nil
}

func (b *builder) readClients(r io.Reader, name string) (File, error) {
	info := File{Path: name, Kind: "clients"}
	err := lines(r, func(n int, e string) {
		skip := func(why string) { info.Skipped = append(info.Skipped, fmt.Sprintf("line %d: %q: %s", n, e, why)) }
		switch {
		case isRe(e):
			re, err := compileRe(e)
			if err != nil {
				skip(err.Error())
				return
			}
			b.clientRes = append(b.clientRes, re)
		case strings.Contains(e, "/"):
			p, err := netip.ParsePrefix(e)
			if err != nil {
				skip("not a network")
				return
			}
			b.addPrefix(p.Masked())
		case strings.Contains(e, ":"):
			a, err := netip.ParseAddr(e)
			if err != nil {
				skip("not an IPv6 address")
				return
			}
			b.addPrefix(netip.PrefixFrom(a, 128))
		case isPartialIPv4(e):
			p, ok := partialIPv4(e)
			if !ok {
				skip("not an IPv4 address or prefix of one")
				return
			}
			b.addPrefix(p)
		default:
			d := strings.Trim(strings.ToLower(e), ".")
			if d == "" || strings.ContainsAny(d, " \t@") {
				skip("not a host or domain name")
				return
			}
			b.set.clientDomains[d] = struct{}{}
		}
		info.Entries++
		b.set.entries = append(b.set.entries, Match{File: name, Kind: "clients", Line: n, Entry: e})
	})
	return info, err
}

func (b *builder) addPrefix(p netip.Prefix) {
	if p.Addr().Is4In6() {
		p = netip.PrefixFrom(p.Addr().Unmap(), max(0, p.Bits()-96))
	}
	b.set.prefixes[p] = struct{}{}
	if p.Addr().Is4() {
		b.v4[p.Bits()] = true
	} else {
		b.v6[p.Bits()] = true
	}
}

func isPartialIPv4(s string) bool {
	for i := 0; i < len(s); i++ {
		if (s[i] < '0' || s[i] > '9') && s[i] != '.' {
			return false
		}
	}
	return true
}

// partialIPv4 reads postgrey's "192.0.2" (or "192.0.2.") as 192.0.2.0/24:
// every address that starts with those octets.
func partialIPv4(s string) (netip.Prefix, bool) {
	parts := strings.Split(strings.TrimSuffix(s, "."), ".")
	if len(parts) == 0 || len(parts) > 4 {
		return netip.Prefix{}, false
	}
	var b [4]byte
	for i, p := range parts {
		v, err := strconv.Atoi(p)
		if err != nil || v < 0 || v > 255 || p == "" {
			return netip.Prefix{}, false
		}
		b[i] = byte(v)
	}
	return netip.PrefixFrom(netip.AddrFrom4(b), 8*len(parts)), true
}

func (b *builder) readRecipients(r io.Reader, name string) (File, error) {
	info := File{Path: name, Kind: "recipients"}
	err := lines(r, func(n int, e string) {
		skip := func(why string) { info.Skipped = append(info.Skipped, fmt.Sprintf("line %d: %q: %s", n, e, why)) }
		if isRe(e) {
			re, err := compileRe(e)
			if err != nil {
				skip(err.Error())
				return
			}
			b.rcptRes = append(b.rcptRes, re)
			info.Entries++
			b.set.entries = append(b.set.entries, Match{File: name, Kind: "recipients", Line: n, Entry: e})
			return
		}
		e = strings.ToLower(e)
		switch at := strings.LastIndexByte(e, '@'); {
		case at == len(e)-1:
			if at == 0 {
				skip("empty local part")
				return
			}
			b.set.rcptLocals.add(e[:at])
		case at > 0:
			b.set.rcptAddrs.add(e)
		case at == 0:
			skip("empty local part")
			return
		default:
			b.set.rcptDomains[strings.Trim(e, ".")] = struct{}{}
		}
		info.Entries++
		b.set.entries = append(b.set.entries, Match{File: name, Kind: "recipients", Line: n, Entry: e})
	})
	return info, err
}

// Explain lists the entries that match a client (address and name, as
// MatchClient takes them) and a recipient (as MatchRecipient takes it),
// in the order they were read. It tries each entry alone, so it is slow
// beside the Match functions: it is for an operator asking why.
func (s *Set) Explain(addr netip.Addr, name string, rcpt []byte) []Match {
	var out []Match
	clients, rcpts := s.MatchClient(addr, name), len(rcpt) > 0 && s.MatchRecipient(rcpt)
	for _, m := range s.entries {
		one := newBuilder()
		switch {
		case m.Kind == "clients" && clients:
			one.readClients(strings.NewReader(m.Entry), m.File)
			if one.build().MatchClient(addr, name) {
				out = append(out, m)
			}
		case m.Kind == "recipients" && rcpts:
			one.readRecipients(strings.NewReader(m.Entry), m.File)
			if one.build().MatchRecipient(rcpt) {
				out = append(out, m)
			}
		}
	}
	return out
}

// reList is a list's regular expressions: joined into one RE2 program, so
// a name is read once and not once a pattern, or, when the joined program
// would pass RE2's size limits (thousands of large patterns), each on its
// own.
type reList struct {
	one  *regexp.Regexp
	many []*regexp.Regexp
}

func alternation(res []string) *reList {
	if len(res) == 0 {
		return nil
	}
	if re, err := regexp.Compile(strings.Join(res, "|")); err == nil {
		return &reList{one: re}
	}
	l := &reList{}
	for _, r := range res {
		l.many = append(l.many, regexp.MustCompile(r)) // each compiled alone before
	}
	return l
}

func (l *reList) MatchString(s string) bool {
	if l.one != nil {
		return l.one.MatchString(s)
	}
	for _, re := range l.many {
		if re.MatchString(s) {
			return true
		}
	}
	return false
}

func (b *builder) build() *Set {
	s := b.set
	s.domainEnds = newStrSet()
	for d := range s.clientDomains {
		if !strings.Contains(d, ".") {
			s.oneLabel = true
		}
		s.domainEnds.add(string(lastLabels([]byte(d))))
	}
	s.clientRegexp = alternation(b.clientRes)
	s.rcptRegexp = alternation(b.rcptRes)
	for bits := range b.v4 {
		s.v4Bits = append(s.v4Bits, bits)
	}
	for bits := range b.v6 {
		s.v6Bits = append(s.v6Bits, bits)
	}
	sort.Ints(s.v4Bits)
	sort.Ints(s.v6Bits)
	return s
}

// Len returns the number of entries read, over all files.
func (s *Set) Len() int {
	n := 0
	for _, f := range s.Files {
		n += f.Entries
	}
	return n
}

// MatchClient reports whether a client (address, and host name as Postfix
// reports it, "unknown" when it has none) is whitelisted. It allocates
// nothing unless a regular expression has to run on a name not seen
// before.
func (s *Set) MatchClient(addr netip.Addr, name string) bool {
	if len(s.prefixes) > 0 {
		bitsList := s.v6Bits
		if addr.Is4() {
			bitsList = s.v4Bits
		}
		for _, bits := range bitsList {
			if p, err := addr.Prefix(bits); err == nil {
				if _, ok := s.prefixes[p]; ok {
					return true
				}
			}
		}
	}
	if name == "" || name == "unknown" || (len(s.clientDomains) == 0 && s.clientRegexp == nil) {
		return false
	}
	if s.clientRegexp == nil && !s.oneLabel &&
		!s.domainEnds.f.mayHaveLower(lastLabels(unsafe.Slice(unsafe.StringData(name), len(name)))) {
		// Only the last two labels can rule a name out, and the filter in
		// front of them reads three of their bytes: those lowercased say no
		// to most names before the whole name is lowercased, which would be
		// half of this function's time (lowercasing moves no byte).
		return false
	}
	var scratch [256]byte
	low := appendLower(scratch[:0], name)
	if len(s.clientDomains) > 0 {
		if (s.oneLabel || s.domainEnds.has(lastLabels(low))) && MatchDomain(s.clientDomains, low) {
			return true
		}
	}
	if s.clientRegexp == nil {
		return false
	}
	return s.names.match(s.clientRegexp, low)
}

// MatchRecipient reports whether a recipient, lowercased, is whitelisted.
func (s *Set) MatchRecipient(rcpt []byte) bool {
	at := bytes.LastIndexByte(rcpt, '@')
	if at >= 0 {
		local := rcpt[:at]
		// As in postgrey, "name@" and "name@domain" also cover
		// name+extension@.
		base := local
		if i := bytes.IndexByte(local, '+'); i > 0 && i < len(local)-1 {
			base = local[:i]
		}
		if s.rcptLocals.has(local) || (len(base) < len(local) && s.rcptLocals.has(base)) {
			return true
		}
		if len(s.rcptAddrs.m) > 0 {
			if s.rcptAddrs.has(rcpt) {
				return true
			}
			if len(base) < len(local) {
				var scratch [256]byte
				if s.rcptAddrs.has(append(append(scratch[:0], base...), rcpt[at:]...)) {
					return true
				}
			}
		}
		if len(s.rcptDomains) > 0 && MatchDomain(s.rcptDomains, rcpt[at+1:]) {
			return true
		}
	}
	// A string copy for the regular expression: handing it the caller's
	// bytes would move them to the heap on every call.
	return s.rcptRegexp != nil && s.rcptRegexp.MatchString(string(rcpt))
}

// nameCache remembers regular-expression verdicts for client names: names
// repeat (an MX fleet hears from the same senders all day), while RE2 over
// a postgrey-sized list costs microseconds a name. A lookup allocates
// nothing; a miss stores a copy of the name.
type nameCache struct {
	mu sync.RWMutex
	m  map[string]bool
}

func (c *nameCache) match(re *reList, name []byte) bool {
	c.mu.RLock()
	v, ok := c.m[string(name)]
	c.mu.RUnlock()
	if ok {
		return v
	}
	key := string(name)
	v = re.MatchString(key)
	c.mu.Lock()
	if c.m == nil || len(c.m) >= maxCachedNames {
		c.m = make(map[string]bool)
	}
	c.m[key] = v
	c.mu.Unlock()
	return v
}

// lastLabels returns the last two labels of a name ("outlook.com" of
// "mail.protection.outlook.com"), or the name if it has fewer.
func lastLabels(d []byte) []byte {
	i := bytes.LastIndexByte(d, '.')
	if i < 0 {
		return d
	}
	return d[bytes.LastIndexByte(d[:i], '.')+1:]
}

// MatchDomain reports whether d or a domain above it is in set: the
// subdomain rule of postgrey's lists, which the engine's runtime rules share.
func MatchDomain(set map[string]struct{}, d []byte) bool {
	for len(d) > 0 {
		if _, ok := set[string(d)]; ok {
			return true
		}
		i := bytes.IndexByte(d, '.')
		if i < 0 {
			return false
		}
		d = d[i+1:]
	}
	return false
}

func appendLower(dst []byte, s string) []byte {
	n := len(dst)
	dst = append(dst, s...)
	for i := n; i < len(dst); i++ {
		dst[i] = lowerByte(dst[i])
	}
	return dst
}

// Builtin is the name that stands for the embedded default file in a list
// of whitelist files.
const Builtin = "builtin"

//go:embed default_clients.txt
var defaultClients string

//go:embed default_recipients.txt
var defaultRecipients string

// LoadFiles reads the given client and recipient files; a file named
// Builtin is the embedded default for its kind. A missing or unreadable file
// is an error; a bad line is skipped and reported in Files.
func LoadFiles(clientFiles, recipientFiles []string) (*Set, error) {
	b := newBuilder()
	read := func(paths []string, builtin string, kind func(io.Reader, string) (File, error)) error {
		for _, path := range paths {
			if path == Builtin {
				info, err := kind(strings.NewReader(builtin), Builtin)
				if err != nil {
					return err
				}
				b.set.Files = append(b.set.Files, info)
				continue
			}
			f, err := OpenRegular(path)
			if err != nil {
				return err
			}
			info, err := kind(f, path)
			f.Close()
			if err != nil {
				return fmt.Errorf("read %s: %w", path, err)
			}
			b.set.Files = append(b.set.Files, info)
		}
		return nil
	}
	if err := read(clientFiles, defaultClients, b.readClients); err != nil {
		return nil, fmt.Errorf("client whitelist: %w", err)
	}
	if err := read(recipientFiles, defaultRecipients, b.readRecipients); err != nil {
		return nil, fmt.Errorf("recipient whitelist: %w", err)
	}
	return b.build(), nil
}

// OpenRegular opens path for reading if it is a regular file. It opens
// without blocking (O_NONBLOCK) and then looks at what it opened, so a FIFO
// with no writer, or a device, is refused at once instead of holding the
// caller (a reload, and with it the server's signal handling) forever.
func OpenRegular(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("whitelist %s is not a regular file (%s): give the path of a file", path, describeMode(fi.Mode()))
	}
	return f, nil
}

func describeMode(m os.FileMode) string {
	switch {
	case m&os.ModeNamedPipe != 0:
		return "a FIFO"
	case m&os.ModeDevice != 0:
		return "a device"
	case m.IsDir():
		return "a directory"
	case m&os.ModeSocket != 0:
		return "a socket"
	}
	return m.Type().String()
}
