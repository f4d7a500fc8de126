package engine

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"regexp"
	"strings"
	"sync/atomic"
	"unsafe"

	"github.com/cespare/xxhash/v2"
	"github.com/zeebo/xxh3"
	"golang.org/x/net/publicsuffix"
)

// Who the client of a triplet is. A sending pool (Gmail, Outlook, Amazon
// SES, every large ESP) retries from another address, often in another
// /24, and a dual-stack host from the other address family: keyed by its
// network, such a triplet never repeats and the mail waits for hours. So
// in name mode a client with a verified, non-generic name is its name's
// organisation instead: the name minus its first label, never shorter
// than its registrable domain on the public suffix list
// (mail-wr1-f54.google.com is google.com, a8-30.smtp-out.amazonses.com is
// smtp-out.amazonses.com). Postfix's client_name is forward-confirmed (the
// PTR name resolves back to the address) and "unknown" otherwise, so no
// DNS lookup is needed here; reverse_client_name, which anyone can set in
// their PTR, is never used.
//
// A generic name, one an access provider or a cloud gives every address
// it has, would turn a whole provider into one client: a botnet there
// would pass on its first retry from any other infected host. Such names
// fall back to the network (see genericName for what counts).

// Identity is how a client is named in its triplets' keys.
type Identity uint8

// Identities.
const (
	// IdentityAuto is no choice: a store keeps the mode its data directory
	// was written with, and takes IdentityName for a new one. An engine
	// needs one of the two below.
	IdentityAuto Identity = iota
	// IdentityNetwork keys every client by its network (/24, /64), as
	// postgrey does.
	IdentityNetwork
	// IdentityName keys a client with a verified, non-generic name by that
	// name's organisation, any other by its network.
	IdentityName
)

func (i Identity) String() string {
	switch i {
	case IdentityNetwork:
		return "network"
	case IdentityName:
		return "name"
	}
	return "auto"
}

// ParseIdentity reads network or name ("" and auto are IdentityAuto).
func ParseIdentity(s string) (Identity, error) {
	switch s {
	case "network":
		return IdentityNetwork, nil
	case "name":
		return IdentityName, nil
	case "", "auto":
		return IdentityAuto, nil
	}
	return 0, fmt.Errorf("client identity %q: want name or network", s)
}

// SuffixList names the public suffix list compiled in, in the form the key
// options record: the list's date and the first 12 digits of its git
// revision ("2026-02-06.d6c92f1bbb74"), or a hash of the library's
// description of it if that ever changes shape. Two engines key names
// alike only with the same list.
func SuffixList() string { return suffixListID }

var suffixListID = func() string {
	v := publicsuffix.List.String()
	m := regexp.MustCompile(`revision ([0-9a-f]{12})[0-9a-f]* \((\d{4}-\d\d-\d\d)`).FindStringSubmatch(v)
	if m == nil {
		return fmt.Sprintf("h%016x", xxhash.Sum64String(v))
	}
	return m[2] + "." + m[1]
}()

// IdentKind says which identity a decision's triplet was keyed by.
type IdentKind uint8

// Identity kinds of a decision.
const (
	IdentNone    IdentKind = iota // no decision was made
	IdentNetwork                  // the client network
	IdentName                     // the client name's organisation
)

// maxNameLen bounds a DNS name (RFC 1035: 253 characters in text). A
// longer client_name is not a name and counts as none.
const maxNameLen = 253

// nameFacts is what the client name says about the client, beyond the
// lowercased name itself. Flags, in one word: where the identity lies in
// the name comes from its nameHint (identity).
type nameFacts uint8

const (
	nameVerified nameFacts = 1 << iota // a name Postfix confirmed: not "unknown", and a valid DNS name
	nameGeneric                        // verified, but generic: the network stands for the client
	nameLower                          // the identity is lowercase as it came: a key takes it as it is
	nameWhole                          // the identity is the whole name, not the name minus its first label
)

func (f nameFacts) verified() bool { return f&nameVerified != 0 }
func (f nameFacts) generic() bool  { return f&nameGeneric != 0 }

// keyed reports whether the name gives the client an identity.
func (f nameFacts) keyed() bool { return f&(nameVerified|nameGeneric) == nameVerified }

// identity returns where the identity of a keyed name is in the name
// (name[at:end]), given the hint analyseName read it with.
func (f nameFacts) identity(h *nameHint) (at, end int) {
	if f&nameWhole != 0 {
		return 0, int(h.n)
	}
	return int(h.dot) + 1, int(h.n)
}

// suffixCache remembers, for the rest of a name after its first label,
// what the public suffix list says about names under it and what the rest
// holds of the generic-name tests (restFacts), and for a first label what
// it holds of them. A lookup in the list is a few hundred nanoseconds (a
// binary search per label), as long as the rest of a check, and so is
// reading a whole name byte by byte; the rests of the names that send
// mail repeat (google.com, outbound.protection.outlook.com,
// hsd1.ca.comcast.net), and so do first labels (mx1, mail, smtp-out), so
// a small table of them leaves a check two lookups.
//
// The table is a set of eight slots, two cache lines, for each hash. The
// first line holds the whole of nearly every set (a table of 1,000
// entries has one set in 240 with more than four), and eight ways keep
// the entries that land on one set from pushing each other out: with four
// to a line, one seed in four put five of BenchmarkIdentityCost's 1,037
// on some line, and up to 0.5% of the checks then went to the list again.
// A slot is two words: the hash, then the facts with the hash's top 16
// bits above them, so a reader that meets a slot half rewritten by
// another check sees the mismatch and looks the rest up again.
type suffixCache struct {
	sets [suffixSets][2 * suffixWays]atomic.Uint64
	// seed keys the cache's hashes: a slot is found by its 64-bit hash
	// alone, so a name made to collide with another's rest would take
	// that rest's facts. Random, the seed leaves no hash to aim at. Read
	// by every check, it has a line of its own, away from victim, which
	// every fill writes.
	seed   uint64
	_      [56]byte
	victim atomic.Uint32 // which slot of a full set a fill takes, in turn; an empty one first
}

func newSuffixCache() *suffixCache { return &suffixCache{seed: rand.Uint64()} }

// 1,024 sets of eight, 128 KiB: the rests a large MX hears from in a day.
// The cache is allocated alone, as a large object, so the table begins on
// a page and each set is an aligned pair of lines.
const (
	suffixSets = 1 << 10
	suffixWays = 8
)

// restFacts are facts about the names X.rest for any first label X: a
// pure function of rest, so every node keys alike whatever it saw before.
const (
	restLenMask = 0xff   // the registrable domain's length when rest holds it
	restKnown   = 1 << 8 // the slot is filled
	restSuffix  = 1 << 9 // rest is itself a public suffix: the registrable domain is the whole name
	restNone    = 1 << 10
	restPrivate = 1 << 11
	restWords   = 1 << 12 // a dynamic word in front of the registrable domain
	restHex     = 1 << 13 // a run of eight hex digits, maybe the address
	restMany    = 1 << 14 // more than restNums numbers, or eight one-hex-digit labels
	restInvalid = 1 << 46 // not labels of a DNS name
	restLower   = 1 << 47 // rest came with no capital letter
	restV6Shift = 15      // 2 bits: parts that read as 1..4 hex digits, at most 3
	restNShift  = 17      // 2 bits: numbers kept
	restNumBits = 9       // each number, 511 when over 255
	restNumAt   = 19
	restNums    = 3
	restTagAt   = 48
)

// get returns the facts cached under h, if there are any. It is small
// enough to be inlined into the check path: two lookups a check.
func (c *suffixCache) get(h uint64) (uint64, bool) {
	set := &c.sets[h&(suffixSets-1)]
	for w := 0; w < 2*suffixWays; w += 2 {
		if set[w].Load() == h {
			if v := set[w+1].Load(); v>>restTagAt == h>>restTagAt && v&restKnown != 0 {
				return v & (1<<restTagAt - 1), true
			}
		}
	}
	return 0, false
}

// put caches facts f under h, in an empty slot of its set if there is
// one, else in the set's next slot in turn.
func (c *suffixCache) put(h, f uint64) {
	set := &c.sets[h&(suffixSets-1)]
	w := 2 * int(c.victim.Add(1)%suffixWays)
	for e := 0; e < 2*suffixWays; e += 2 {
		if set[e].Load() == 0 {
			w = e
			break
		}
	}
	set[w].Store(h)
	set[w+1].Store(h>>restTagAt<<restTagAt | f)
}

// nameInfo returns restNone when the whole name is a public suffix, from
// the cache (under another hash than the rests') or the list.
func (c *suffixCache) nameInfo(name string) uint64 {
	h := xxh3.HashStringSeed(name, c.seed) ^ 0x9e3779b97f4a7c15
	if f, ok := c.get(h); ok {
		return f
	}
	var b [maxNameLen]byte
	lowerInto(b[:len(name)], name)
	f := uint64(restKnown)
	if ps, _ := publicsuffix.PublicSuffix(string(b[:len(name)])); len(ps) >= len(name) {
		f |= restNone
	}
	c.put(h, f)
	return f
}

// probeLabel stands for any first label when the list is asked about a
// rest: a name no rule of the list spells, so the answer holds for every
// host under rest that is not itself listed by name (as s3.amazonaws.com
// is). Asking about the rest rather than each name keeps the answer one
// per rest, cacheable and the same on every node.
const probeLabel = "0greyhold-probe0"

// lookupRest works out the facts for rest (any case): the public suffix
// list's answer, then what the generic-name tests find in it.
func lookupRest(raw string) uint64 {
	var b [len(probeLabel) + 1 + maxNameLen]byte
	n := copy(b[:], probeLabel)
	b[n] = '.'
	n++
	rest := b[n : n+len(raw)]
	lowerInto(rest, raw)
	n += len(raw)
	var sc nameScan
	if !scanName(rest, &sc) {
		return restKnown | restInvalid
	}
	name := string(b[:n])
	ps, icann := publicsuffix.PublicSuffix(name)
	f := uint64(restKnown)
	if string(rest) == raw {
		f |= restLower
	}
	regAt := 0
	switch {
	case len(ps) >= n:
		// The probe name is a public suffix itself (a wildcard rule such
		// as *.compute-1.amazonaws.com): no host under rest has a
		// registrable domain.
		return restKnown | restNone
	case !icann && strings.IndexByte(ps, '.') >= 0:
		return restKnown | restPrivate
	case len(ps) >= len(rest):
		f |= restSuffix
	default:
		// The registrable domain is the suffix and the label before it.
		i := len(rest) - len(ps) - 1
		regAt = strings.LastIndexByte(string(rest[:i]), '.') + 1
		f |= uint64(len(rest) - regAt)
	}
	if sc.firstWord >= 0 && sc.firstWord < regAt {
		f |= restWords
	}
	if sc.hexRun >= 8 {
		f |= restHex
	}
	if sc.nn > restNums || sc.nibbles >= 8 {
		f |= restMany
	}
	f |= uint64(min(sc.v6Parts, 3)) << restV6Shift
	f |= uint64(min(sc.nn, restNums)) << restNShift
	for k := range min(sc.nn, restNums) {
		v := uint64(min(sc.nums[k], 511))
		f |= v << (restNumAt + restNumBits*k)
	}
	return f
}

// dynamicWords are label parts that access providers, hosting and cloud
// networks put in the names they give each address: the experience of
// sqlgrey's dyn_fqdn.regexp, Haraka's fcrdns and rspamd's hfilter, kept to
// whole parts (between dots, dashes and digits) so that words containing
// them (liverpool, hostinger, ship) are not caught.
var dynamicWords = map[string]bool{}

// mayBeDynamic has bit l-'a' of mayBeDynamic[n][f-'a'] set when a word of
// dynamicWords is n letters long, begins with f and ends with l: nearly
// every part of a mail host's name (mail, wr, smtp, out, shop) is turned
// down without a map lookup.
var mayBeDynamic [16][26]uint32

func init() {
	for _, w := range strings.Fields(`
		dyn dynamic dynip dynamicip dhcp dialup dial dialin dip ppp pppoe pool pools
		dsl adsl vdsl xdsl sdsl hdsl cable cbl kabel catv docsis hsd cpe cpc
		broadband bband ftth fttb fttc fttp fttx fiber fibre wifi wlan wimax wireless
		cust customer customers client clients host hosts ip ips res resi resident residential
		user users abo subscriber subscribers mobile mobil gprs umts lte nat cgn cgnat
		unassigned unused noreverse nxdomain reverse rev ptr members`) {
		dynamicWords[w] = true
		mayBeDynamic[len(w)][w[0]-'a'] |= 1 << (w[len(w)-1] - 'a')
	}
}

func isDynamicWord(w []byte) bool {
	return len(w) < len(mayBeDynamic) && mayBeDynamic[len(w)][w[0]-'a']&(1<<(w[len(w)-1]-'a')) != 0 && dynamicWords[string(w)]
}

// maxNums is how many numbers of a label the address test keeps; a
// first label with more is generic on its own.
const maxNums = 8

// nameScan is what one pass over labels (lowercase) finds: its numbers,
// its first dynamic word and the shapes the address may be spelt in.
type nameScan struct {
	firstWord int // where the first dynamic word starts, or -1
	nums      [maxNums]uint32
	nn        int // numbers seen, maxNums+1 for too many or one too long
	hexRun    int // the longest run of hex digits
	v6Parts   int // parts between separators that read as 1..4 hex digits
	nibbles   int // the longest run of labels of one hex digit
}

// scanName reads labels (lowercase) into sc and checks they make a DNS
// name: letters, digits, '-' and '_' in labels of 1..63 bytes between
// dots. It reports false for anything else, which counts as no name.
func scanName(b []byte, sc *nameScan) bool {
	*sc = nameScan{firstWord: -1}
	labelAt, partAt, runAt, nibbles := 0, 0, 0, 0
	partHex := true
	for i := 0; i <= len(b); {
		if i < len(b) && b[i] >= 'a' && b[i] <= 'z' {
			j := i
			for j < len(b) && b[j] >= 'a' && b[j] <= 'z' {
				if b[j] > 'f' {
					sc.hexRun = max(sc.hexRun, j-runAt)
					runAt, partHex = j+1, false
				}
				j++
			}
			if sc.firstWord < 0 && isDynamicWord(b[i:j]) {
				sc.firstWord = i
			}
			i = j
			continue
		}
		if i < len(b) && b[i] >= '0' && b[i] <= '9' {
			j := i
			v := uint64(0)
			for j < len(b) && b[j] >= '0' && b[j] <= '9' {
				v = min(v*10+uint64(b[j]-'0'), 1<<33)
				j++
			}
			switch {
			case sc.nn < maxNums && v < 1<<32:
				sc.nums[sc.nn] = uint32(v)
				sc.nn++
			default:
				sc.nn = maxNums + 1
			}
			i = j
			continue
		}
		// A separator or the end: a part, and perhaps a label, is over.
		sc.hexRun = max(sc.hexRun, i-runAt)
		runAt = i + 1
		if partHex && i > partAt && i-partAt <= 4 {
			sc.v6Parts++
		}
		partAt, partHex = i+1, true
		if i == len(b) || b[i] == '.' {
			if i == labelAt || i-labelAt > 63 {
				return false
			}
			if i-labelAt == 1 && isHex(b[labelAt]) {
				nibbles++
				sc.nibbles = max(sc.nibbles, nibbles)
			} else {
				nibbles = 0
			}
			labelAt = i + 1
		} else if b[i] != '-' && b[i] != '_' {
			return false
		}
		i++
	}
	return true
}

// Byte classes for scanFirstLabel.
const (
	clsBad    = iota // not in a DNS label
	clsDigit         // 0-9
	clsHex           // a-f, A-F
	clsLetter        // the other letters
	clsSep           // '-', '_'
	clsDot
)

var byteClass = func() (t [256]uint8) {
	for c := '0'; c <= '9'; c++ {
		t[c] = clsDigit
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = clsLetter, clsLetter
	}
	for c := 'a'; c <= 'f'; c++ {
		t[c], t[c-'a'+'A'] = clsHex, clsHex
	}
	t['-'], t['_'], t['.'] = clsSep, clsSep, clsDot
	return t
}()

// scanFirstLabel reads the first label of name (any case) into sc, up to
// its dot, and returns where that dot is (len(name) when there is none);
// false if it is not a label (scanName's rules). The rest of the name
// comes from the cache, so this is all a check reads of most names: one
// pass, a table lookup a byte, work only where a part begins or ends.
func scanFirstLabel(name string, sc *nameScan) (int, bool) {
	sc.firstWord, sc.nn, sc.hexRun, sc.v6Parts = -1, 0, 0, 0
	wordAt, numAt, runAt, partAt := -1, -1, 0, 0
	partHex := true
	var v uint64
	i := 0
	for ; i <= len(name); i++ {
		c := uint8(clsDot)
		if i < len(name) {
			c = byteClass[name[i]]
		}
		if c == clsDigit {
			if numAt < 0 {
				numAt, v = i, 0
			}
			v = min(v*10+uint64(name[i]-'0'), 1<<33)
		} else if numAt >= 0 {
			if sc.nn < maxNums && v < 1<<32 {
				sc.nums[sc.nn] = uint32(v)
				sc.nn++
			} else {
				sc.nn = maxNums + 1
			}
			numAt = -1
		}
		if c == clsHex || c == clsLetter {
			if wordAt < 0 {
				wordAt = i
			}
		} else if wordAt >= 0 {
			if sc.firstWord < 0 && isDynamicWordFold(name[wordAt:i]) {
				sc.firstWord = wordAt
			}
			wordAt = -1
		}
		if c == clsDigit || c == clsHex {
			continue
		}
		// Not a hex digit: a hex run ends, and with a separator or the
		// label's end a part.
		sc.hexRun = max(sc.hexRun, i-runAt)
		runAt = i + 1
		switch c {
		case clsLetter:
			partHex = false
		case clsSep, clsDot:
			if partHex && i > partAt && i-partAt <= 4 {
				sc.v6Parts++
			}
			partAt, partHex = i+1, true
			if c == clsDot {
				return i, i > 0 && i <= 63
			}
		default:
			return i, false
		}
	}
	return i, false // not reached: the end counts as a dot
}

// isDynamicWordFold is isDynamicWord for a word of letters in any case.
func isDynamicWordFold(w string) bool {
	if len(w) >= len(mayBeDynamic) || mayBeDynamic[len(w)][w[0]|0x20-'a']&(1<<(w[len(w)-1]|0x20-'a')) == 0 {
		return false
	}
	var b [16]byte
	lowerInto(b[:len(w)], w)
	return dynamicWords[string(b[:len(w)])]
}

// nameHint is a name's two cache hashes and its shape, made ahead of its
// check.
type nameHint struct {
	label, rest uint64 // 0: a name of one label or none, or too long
	dot         uint8  // where the first label ends
	n           uint8  // the name's length without a final dot
}

// labelSeed sets first labels' hashes apart from rests'.
const labelSeed = 0x5bd1e9955bd1e995

// hashName splits name at its first dot and hashes the two parts as the
// cache keeps them. A name without a dot, with an empty first label, or
// too long, gets no hashes: analyseName reads it whole. The hash is
// seeded XXH3, which reads a short input in a few dozen instructions: it
// is made twice a check.
func (c *suffixCache) hashName(name string) nameHint {
	n := len(name)
	if n > 0 && name[n-1] == '.' {
		n--
	}
	if n > maxNameLen {
		return nameHint{}
	}
	dot := strings.IndexByte(name[:n], '.')
	if dot <= 0 {
		return nameHint{}
	}
	return nameHint{label: xxh3.HashStringSeed(name[:dot], c.seed) ^ labelSeed, rest: xxh3.HashStringSeed(name[dot+1:n], c.seed), dot: uint8(dot), n: uint8(n)}
}

// hint is hashName, starting to load the hashes' cache lines too: a
// batch asks two requests ahead, so the lines, as likely as the triplet
// table's slots to have left the CPU's caches, are there when the name is
// read.
func (c *suffixCache) hint(name string) nameHint {
	h := c.hashName(name)
	if h.label != 0 {
		prefetchLines(uintptr(unsafe.Pointer(&c.sets[h.label&(suffixSets-1)])), uintptr(unsafe.Pointer(&c.sets[h.rest&(suffixSets-1)])))
	}
	return h
}

// First-label facts, as the cache keeps them: what scanFirstLabel finds
// in a label, for labels with at most labelNums numbers, none over 255.
const (
	labelBad   = 1 << 0 // not a DNS label
	labelWord  = 1 << 1 // a dynamic word
	labelHex   = 1 << 2 // a run of eight hex digits
	labelSlow  = 1 << 3 // more numbers, or a bigger one: read the label itself
	labelV6At  = 4      // 2 bits: parts that read as 1..4 hex digits, at most 3
	labelNAt   = 9      // 3 bits: numbers kept
	labelNumAt = 12     // 8 bits each
	labelNums  = 4
)

// lookupLabel works out the facts for a first label.
func lookupLabel(label string) uint64 {
	var sc nameScan
	if _, ok := scanFirstLabel(label, &sc); !ok {
		return restKnown | labelBad
	}
	f := uint64(restKnown) | uint64(min(sc.v6Parts, 3))<<labelV6At
	if sc.firstWord >= 0 {
		f |= labelWord
	}
	if sc.hexRun >= 8 {
		f |= labelHex
	}
	if sc.nn > labelNums {
		return f | labelSlow
	}
	for k, v := range sc.nums[:sc.nn] {
		if v > 255 {
			return f | labelSlow
		}
		f |= uint64(v) << (labelNumAt + 8*k)
	}
	return f | uint64(sc.nn)<<labelNAt
}

// analyseName decides what a client name says (nameFacts). addr is the
// client's address, for the test of whether the name spells it; h holds
// the name's hashes when hint has made them already, and is filled in
// when not. It allocates nothing and, once its first label and rest are
// in the cache, reads the name only to hash it.
func (c *suffixCache) analyseName(name string, addr *netip.Addr, hp *nameHint) nameFacts {
	h := *hp
	if h.label == 0 {
		if h = c.hashName(name); h.label == 0 {
			return oneLabel(name)
		}
		*hp = h
	}
	linfo, ok := c.get(h.label)
	if !ok {
		linfo = lookupLabel(name[:h.dot])
		c.put(h.label, linfo)
	}
	if linfo&labelBad != 0 {
		return 0
	}
	// The rest is hashed as it came; its facts are those of its lowercase
	// form, so a name in capitals only takes a slot of its own.
	info, ok := c.get(h.rest)
	if !ok {
		info = lookupRest(name[h.dot+1 : h.n])
		c.put(h.rest, info)
	}
	var f nameFacts
	switch {
	case info&restInvalid != 0:
		return 0
	case info&(restNone|restPrivate|restMany|restWords) != 0:
		return nameVerified | nameGeneric
	case info&restSuffix != 0:
		// The registrable domain would be the whole name, unless the
		// name is itself on the list (co.uk, blogspot.com): asked about
		// the name itself, and remembered under it.
		if c.nameInfo(name[:h.n])&restNone != 0 {
			return nameVerified | nameGeneric
		}
		f = nameVerified | nameWhole
	case linfo&labelWord != 0:
		return nameVerified | nameGeneric // the first label is in front of the registrable domain
	case info&restLower != 0:
		f = nameVerified | nameLower
	default:
		f = nameVerified
	}
	// Most names of mail hosts have too few numbers to spell an address
	// and no run of hex digits: told from the two facts alone. A label
	// the cache holds has no number over 255, so none is the address as
	// one number either.
	if linfo&(labelSlow|labelHex) == 0 && info&restHex == 0 {
		if addr.Is4() {
			if nn, restN := linfo>>labelNAt&7, info>>restNShift&3; nn+restN < 4 && restN < 2 {
				return f
			}
		} else if linfo>>labelV6At&3+info>>restV6Shift&3 < 3 {
			return f
		}
	}
	if spellsAddressOf(name[:h.n], linfo, info, *addr) {
		return nameVerified | nameGeneric
	}
	return f
}

// spellsAddressOf is spellsAddress for a name whose first label's facts
// are linfo: the label's numbers come from them, or, for a label with
// more numbers than they hold, from reading it again.
func spellsAddressOf(name string, linfo, info uint64, addr netip.Addr) bool {
	var sc nameScan
	if linfo&labelSlow != 0 {
		scanFirstLabel(name, &sc)
	} else {
		sc.firstWord, sc.hexRun = -1, 0
		if linfo&labelHex != 0 {
			sc.hexRun = 8
		}
		sc.v6Parts = int(linfo >> labelV6At & 3)
		sc.nn = int(linfo >> labelNAt & 7)
		for k := range sc.nn {
			sc.nums[k] = uint32(linfo >> (labelNumAt + 8*k) & 0xff)
		}
	}
	return spellsAddress(name, &sc, info, addr)
}

// oneLabel is analyseName for a name hashName does not split: one label,
// a name and a generic one if it is a label at all, since it has no
// registrable domain; nothing, or "unknown", or not a name.
func oneLabel(name string) nameFacts {
	name = strings.TrimSuffix(name, ".")
	if name == "" || len(name) > maxNameLen || strings.IndexByte(name, '.') >= 0 || (len(name) == 7 && strings.EqualFold(name, "unknown")) {
		return 0
	}
	var sc nameScan
	if _, ok := scanFirstLabel(name, &sc); !ok {
		return 0
	}
	return nameVerified | nameGeneric
}

// spellsAddress reports whether a name (lowercase, its first label up to
// dot scanned into sc, its rest's facts in info) spells the client's
// address, as the names an access provider, a cloud or a hosting company
// give each of its addresses do:
//
//   - all four octets as numbers, in any order and with any separators
//     (c-73-15-22-101, 101.22.15.73, static.88.198.12.34; Orange's
//     arouen-651-1-96-179.w90-3 splits them over two labels);
//   - the address as eight hex digits (p5dcb1234) or, in the first label,
//     as one decimal number;
//   - two neighbouring octets in the labels after the first, the ones the
//     identity would keep (w90-3, OVH's ip-51-68-12.eu): such an identity
//     names a range of addresses, not an organisation;
//   - more than three numbers after the first label, or eight labels of
//     one hex digit (the ip6.arpa spelling), whatever their values;
//   - for IPv6, three of its non-zero groups as hex parts.
//
// The last two octets alone in the first label are how pools name their
// hosts (Amazon SES's a8-30 is 54.240.8.30, Mandrill's mail177-17), so
// they do not make a name generic.
func spellsAddress(name string, sc *nameScan, info uint64, addr netip.Addr) bool {
	if sc.nn > maxNums {
		return true // numbers no organisation names its hosts with
	}
	if !addr.Is4() {
		return sc.v6Parts+int(info>>restV6Shift&3) >= 3 && spellsIPv6(name, addr)
	}
	b := addr.As4()
	u := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	restN := int(info >> restNShift & 3)
	if sc.nn+restN < 4 && restN < 2 && sc.hexRun < 8 && info&restHex == 0 {
		// Too few numbers for the octets and no room for hex: only the
		// address as one number is left to look for. Most names of mail
		// hosts end here.
		for _, v := range sc.nums[:sc.nn] {
			if v == u && u > 255 {
				return true
			}
		}
		return false
	}
	// found has bit o set once a number of the name has matched octet o;
	// a number matches one octet only, so 1.1.2.3 needs two 1s.
	found := uint32(0)
	note := func(v uint32) {
		if v > 255 {
			return
		}
		m := uint32(0)
		for o := range b {
			if v == uint32(b[o]) {
				m |= 1 << o
			}
		}
		m &^= found
		found |= m & -m
	}
	for _, v := range sc.nums[:sc.nn] {
		if v == u && u > 255 {
			return true
		}
		note(v)
	}
	prev := uint32(1 << 16)
	for k := range int(info >> restNShift & 3) {
		v := uint32(info >> (restNumAt + restNumBits*k) & (1<<restNumBits - 1))
		note(v)
		if (prev == uint32(b[0]) && v == uint32(b[1])) || (prev == uint32(b[1]) && v == uint32(b[0])) ||
			(prev == uint32(b[2]) && v == uint32(b[3])) || (prev == uint32(b[3]) && v == uint32(b[2])) {
			return true
		}
		prev = v
	}
	if found == 0xf {
		return true
	}
	if sc.hexRun < 8 && info&restHex == 0 {
		return false
	}
	const digits = "0123456789abcdef"
	var hex [8]byte
	for i := range hex {
		hex[i] = digits[u>>(28-4*i)&0xf]
	}
	want := binary.LittleEndian.Uint64(hex[:])
	for i := 0; i+8 <= len(name); i++ {
		if le64(name[i:i+8])|0x2020202020202020 == want {
			return true
		}
	}
	return false
}

// spellsIPv6 is spellsAddress's test of IPv6 groups.
func spellsIPv6(name string, addr netip.Addr) bool {
	b := addr.As16()
	var seen [8]bool
	groups := 0
	for i := 0; i < len(name); {
		j := i
		for j < len(name) && name[j] != '.' && name[j] != '-' && name[j] != '_' {
			j++
		}
		if v, ok := parseHex16(name[i:j]); ok && v != 0 {
			for g := range seen {
				if !seen[g] && uint16(b[2*g])<<8|uint16(b[2*g+1]) == v {
					seen[g] = true
					if groups++; groups >= 3 {
						return true
					}
					break
				}
			}
		}
		i = j + 1
	}
	return false
}

func parseHex16(b string) (uint16, bool) {
	if len(b) == 0 || len(b) > 4 {
		return 0, false
	}
	v := uint16(0)
	for i := 0; i < len(b); i++ {
		switch c := b[i] | 0x20; {
		case '0' <= c && c <= '9':
			v = v<<4 | uint16(c-'0')
		case 'a' <= c && c <= 'f':
			v = v<<4 | uint16(c-'a'+10)
		default:
			return 0, false
		}
	}
	return v, true
}

// NameClass is what a client name says about the client, for rules and
// tests: whether Postfix verified it, whether it is generic, and the
// identity it gives in name mode.
type NameClass struct {
	Verified bool   // a forward-confirmed name (not "unknown")
	Generic  bool   // verified but generic: the network stands for the client
	Identity string // the organisation for a verified, non-generic name, else ""
}

// ClassifyName tells what a client name says about a client at addr, as
// name mode reads it.
func (e *Engine) ClassifyName(addr, name string) (NameClass, error) {
	a, err := parseAddr(addr)
	if err != nil {
		return NameClass{}, fmt.Errorf("%w: %q", ErrBadClientAddress, addr)
	}
	a = a.Unmap().WithZone("")
	var h nameHint
	f := e.names.analyseName(name, &a, &h)
	c := NameClass{Verified: f.verified(), Generic: f.generic()}
	if f.keyed() {
		at, end := f.identity(&h)
		c.Identity = strings.ToLower(name[at:end])
	}
	return c, nil
}

// AppendIdentity appends who the client of decision d on req was taken to
// be: "name:google.com" or "net:192.0.2.0/24". It appends nothing for a
// request that was not decided.
func (e *Engine) AppendIdentity(dst []byte, req *Request, d *Decision) []byte {
	switch d.Ident {
	case IdentName:
		name := strings.TrimSuffix(req.ClientName, ".")
		if int(d.NameAt) > len(name) {
			return dst
		}
		dst = append(dst, "name:"...)
		return appendLower(dst, name[d.NameAt:])
	case IdentNetwork:
		p, err := ClientNetwork(req.ClientAddr, e.opts.Keys)
		if err != nil {
			return dst
		}
		dst = append(dst, "net:"...)
		return p.AppendTo(dst)
	}
	return dst
}
