package main

import (
	"fmt"
	"math/bits"
	"strconv"
)

// Requests are pre-rendered: each pool triplet's bytes sit in one arena, and
// sending one is a copy plus a few fixed-width patches (client_port, the
// instance, a new triplet's counter) into the connection's window buffer.
// Only what varies per triplet is stored (about 310 bytes of a realistic
// policy request's 670, the rest shared), so a pool of a million costs
// 310 MB.

const noPatch = 0xffff

// chunk locates one pre-rendered piece in a chunks arena.
type chunk struct {
	off  uint32
	n    uint16
	port uint16 // offset of the 5-digit client_port placeholder, or noPatch
	ctr  uint16 // offset of the new-triplet counter placeholder, or noPatch
	tail uint8  // index into policyTails (realistic policy only)
}

// chunks is a protocol's rendering of a set of triplets.
type chunks struct {
	arena []byte
	c     []chunk
}

func (cs *chunks) add(b []byte, port, ctr int) {
	if len(b) > 0xfff0 {
		panic("chunk too long") // generated data: cannot happen
	}
	cs.c = append(cs.c, chunk{off: uint32(len(cs.arena)), n: uint16(len(b)), port: uint16(port), ctr: uint16(ctr)})
	cs.arena = append(cs.arena, b...)
}

// The counter that makes a new triplet new: 24 hex digits in the
// recipient's local part (recipients are not normalised, unlike senders,
// whose digit runs collapse): a per-run salt (so a second run against the
// same server does not meet the first run's "new" triplets), the
// connection, and the connection's sequence number.
const ctrLen = 24

// codec renders one protocol's requests (its replies have a parseFunc).
type codec interface {
	// render appends one request (policy, line) or one batch item
	// (http) for triplet c of cs, with patches from g.
	render(dst []byte, cs *chunks, c *chunk, g *gen) []byte
	// build renders triplet t; newTpl marks a new-triplet template, whose
	// recipient carries the counter placeholder.
	build(cs *chunks, t *triplet, newTpl bool)
}

type policyCodec struct {
	realistic bool
	prefix    string
}

func newPolicyCodec(realistic bool) *policyCodec {
	p := &policyCodec{realistic: realistic}
	if realistic {
		p.prefix = "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\nclient_address="
	} else {
		p.prefix = "request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address="
	}
	return p
}

// serverAddress is the MX's own address in realistic requests.
const serverAddress = "198.51.100.25"

func (p *policyCodec) build(cs *chunks, t *triplet, newTpl bool) {
	var b []byte
	port, ctr := noPatch, noPatch
	b = append(b, t.addr...)
	b = append(b, "\nclient_name="...)
	b = append(b, t.name...)
	if p.realistic {
		b = append(b, "\nclient_port="...)
		port = len(b)
		b = append(b, "00000\nreverse_client_name="...)
		b = append(b, t.name...)
		b = append(b, "\nserver_address="+serverAddress+"\nserver_port=25\nhelo_name="...)
		b = append(b, t.helo...)
	}
	b = append(b, "\nsender="...)
	b = append(b, t.sender...)
	b = append(b, "\nrecipient="...)
	b, ctr = appendRcpt(b, t.rcpt, newTpl)
	if p.realistic {
		b = append(b, "\nrecipient_count=0\nqueue_id="...)
	}
	b = append(b, "\ninstance="...)
	cs.add(b, port, ctr)
	cs.c[len(cs.c)-1].tail = t.tail
}

// appendRcpt appends the recipient, or for a template its counter form.
func appendRcpt(b []byte, rcpt string, newTpl bool) ([]byte, int) {
	if !newTpl {
		return append(b, rcpt...), noPatch
	}
	b = append(b, 'n')
	at := len(b)
	for range ctrLen {
		b = append(b, '0')
	}
	for i := 0; i < len(rcpt); i++ {
		if rcpt[i] == '@' {
			return append(b, rcpt[i:]...), at
		}
	}
	return b, at
}

func (p *policyCodec) render(dst []byte, cs *chunks, c *chunk, g *gen) []byte {
	dst = append(dst, p.prefix...)
	base := len(dst)
	dst = append(dst, cs.arena[c.off:c.off+uint32(c.n)]...)
	g.patch(dst[base:], c)
	dst = g.appendInstance(dst)
	if p.realistic {
		dst = append(dst, policyTails[c.tail]...)
	} else {
		dst = append(dst, "\n\n"...)
	}
	if g.testTime != 0 {
		// The request ends in "\n\n": put the attribute before the empty
		// line.
		dst = append(dst[:len(dst)-1], "policy_test_time="...)
		dst = strconv.AppendInt(dst, g.testTime, 10)
		dst = append(dst, "\n\n"...)
	}
	return dst
}

type lineCodec struct{}

func (lineCodec) build(cs *chunks, t *triplet, newTpl bool) {
	var b []byte
	b = append(b, t.addr...)
	b = append(b, ' ')
	if t.sender == "" {
		b = append(b, "<>"...)
	} else {
		b = append(b, t.sender...)
	}
	b = append(b, ' ')
	b, ctr := appendRcpt(b, t.rcpt, newTpl)
	b = append(b, ' ')
	b = append(b, t.name...)
	b = append(b, '\n')
	cs.add(b, noPatch, ctr)
}

func (lineCodec) render(dst []byte, cs *chunks, c *chunk, g *gen) []byte {
	base := len(dst)
	dst = append(dst, cs.arena[c.off:c.off+uint32(c.n)]...)
	g.patch(dst[base:], c)
	return dst
}

// httpCodec renders batch items; the window code wraps them in requests.
type httpCodec struct{}

func (httpCodec) build(cs *chunks, t *triplet, newTpl bool) {
	// Generated values hold no characters JSON would need escaped.
	var b []byte
	b = append(b, `{"client_address":"`...)
	b = append(b, t.addr...)
	b = append(b, `","client_name":"`...)
	b = append(b, t.name...)
	b = append(b, `","sender":"`...)
	b = append(b, t.sender...)
	b = append(b, `","recipient":"`...)
	b, ctr := appendRcpt(b, t.rcpt, newTpl)
	b = append(b, `"}`...)
	cs.add(b, noPatch, ctr)
}

func (httpCodec) render(dst []byte, cs *chunks, c *chunk, g *gen) []byte {
	base := len(dst)
	dst = append(dst, cs.arena[c.off:c.off+uint32(c.n)]...)
	g.patch(dst[base:], c)
	return dst
}

// workload is everything a run sends, shared read-only by all
// connections.
type workload struct {
	proto    string
	codec    codec
	pool     chunks
	newTpl   chunks
	newFrac  float64
	newAll   bool
	newBelow uint64 // a draw below this picks a new triplet
	batch    int
	httpHead string // request line and headers up to "Content-Length: "
	salt     uint64
}

// newTemplates is how many (client, sender) shapes new triplets take;
// their recipients carry the counter. Enough that new triplets spread over
// the server's shards and client networks like the pool's.
const newTemplates = 1024

func buildWorkload(cfg *config, proto string, salt uint64) *workload {
	w := &workload{proto: proto, newFrac: cfg.newFraction, batch: cfg.batch, salt: salt}
	switch proto {
	case "policy":
		w.codec = newPolicyCodec(cfg.realistic)
	case "line":
		w.codec = lineCodec{}
	case "http":
		w.codec = httpCodec{}
		w.httpHead = "POST /v1/check/batch HTTP/1.1\r\nHost: " + cfg.target + "\r\nContent-Type: application/json\r\n"
		if cfg.token != "" {
			w.httpHead += "Authorization: Bearer " + cfg.token + "\r\n"
		}
		w.httpHead += "Content-Length: "
	default:
		panic(fmt.Sprintf("unknown protocol %q", proto))
	}
	switch {
	case cfg.newFraction >= 1:
		w.newAll = true
	case cfg.newFraction > 0:
		w.newBelow = uint64(cfg.newFraction * (1 << 63) * 2)
	}
	if cfg.newFraction < 1 {
		w.pool.arena = make([]byte, 0, cfg.pool*estimateChunk(proto, cfg.realistic))
		w.pool.c = make([]chunk, 0, cfg.pool)
		for i := range cfg.pool {
			t := genTriplet(cfg.seed, i, cfg.clientName)
			w.codec.build(&w.pool, &t, false)
		}
	}
	if cfg.newFraction > 0 {
		for j := range newTemplates {
			// Indices past the pool: clients and senders like the pool's
			// but not the pool's own.
			t := genTriplet(cfg.seed^0x6e6577, cfg.pool+j, cfg.clientName)
			w.codec.build(&w.newTpl, &t, true)
		}
	}
	return w
}

func estimateChunk(proto string, realistic bool) int {
	switch {
	case proto == "policy" && realistic:
		return 320
	case proto == "policy":
		return 150
	case proto == "http":
		return 170
	}
	return 110
}

// gen is one connection's request source: which triplet comes next, and
// the per-request fields real Postfix varies.
type gen struct {
	w    *workload
	rng  rng
	conn uint64
	seq  uint64 // requests rendered, for port, instance and counter

	// instance=PID.SECONDS.MICROSECONDS.0, as Postfix's smtpd writes it:
	// the PID is the connection's (one smtpd process holds one policy
	// connection), the time advances per request so every instance is
	// unique, as postgrey (which skips a repeated instance) needs.
	pid  uint64
	sec0 uint64

	// Warm-up: send pool triplets next..end in order, with a test time.
	seqMode   bool
	next, end int
	testTime  int64

	scratch []byte // an HTTP request body
	picks   []pick
	touched byte
}

func newGen(w *workload, seed uint64, conn int, now int64) *gen {
	g := &gen{w: w, rng: rng{s: mix64(seed ^ uint64(conn)*0x2545f4914f6cdd1d)}, conn: uint64(conn)}
	g.pid = 0x1000 + g.rng.next()%0xefff
	g.sec0 = uint64(now)
	return g
}

// pickChunk chooses the next request's triplet.
func (g *gen) pickChunk() (*chunks, *chunk) {
	w := g.w
	if g.seqMode {
		i := g.next
		g.next++
		return &w.pool, &w.pool.c[i]
	}
	r := g.rng.next()
	if w.newAll || r < w.newBelow {
		return &w.newTpl, &w.newTpl.c[g.rng.below(len(w.newTpl.c))]
	}
	hi, _ := bits.Mul64(r, uint64(len(w.pool.c)))
	return &w.pool, &w.pool.c[hi]
}

// appendOne renders the next request (or HTTP batch item).
func (g *gen) appendOne(dst []byte) []byte {
	cs, c := g.pickChunk()
	dst = g.w.codec.render(dst, cs, c, g)
	g.seq++
	return dst
}

// pick is a drawn triplet waiting to be rendered.
type pick struct {
	cs *chunks
	c  *chunk
}

// draw picks the next n triplets and reads one byte of every cache line
// they occupy. Random picks from a pool of tens of megabytes miss the
// cache; touching them all first lets the CPU wait for the misses
// together instead of stalling on each copy in turn (BenchmarkRender: 270
// ns a realistic policy request copied one by one, 200 drawn first).
func (g *gen) draw(n int) {
	g.picks = g.picks[:0]
	var sum byte
	for range n {
		cs, c := g.pickChunk()
		g.picks = append(g.picks, pick{cs, c})
		b := cs.arena[c.off : c.off+uint32(c.n)]
		for i := 0; i < len(b); i += 64 {
			sum += b[i]
		}
		sum += b[len(b)-1]
	}
	g.touched += sum // keeps the loads from being optimised away
}

// appendPick renders drawn triplet i.
func (g *gen) appendPick(dst []byte, i int) []byte {
	p := g.picks[i]
	dst = g.w.codec.render(dst, p.cs, p.c, g)
	g.seq++
	return dst
}

// patch fills in the client port and the new-triplet counter of a copied
// chunk.
func (g *gen) patch(b []byte, c *chunk) {
	if c.port != noPatch {
		// Ephemeral ports as Linux hands them out (32768-60999): always
		// five digits.
		putDec(b[c.port:c.port+5], 32768+(g.seq*7919)%28232)
	}
	if c.ctr != noPatch {
		d := b[c.ctr : c.ctr+ctrLen]
		putHex(d[0:8], g.w.salt&0xffffffff)
		putHex(d[8:12], g.conn&0xffff)
		putHex(d[12:24], g.seq&0xffffffffffff)
	}
}

// usecSpan keeps the instance's microsecond field at five hex digits:
// 0x10000 + [0, usecSpan) stays below 1,000,000.
const usecSpan = 1000000 - 0x10000

func (g *gen) appendInstance(dst []byte) []byte {
	var b [21]byte
	putHex(b[0:4], g.pid)
	b[4] = '.'
	putHex(b[5:13], g.sec0+g.seq/usecSpan)
	b[13] = '.'
	putHex(b[14:19], 0x10000+g.seq%usecSpan)
	b[19], b[20] = '.', '0'
	return append(dst, b[:]...)
}

func putDec(b []byte, v uint64) {
	for i := len(b) - 1; i >= 0; i-- {
		b[i] = byte('0' + v%10)
		v /= 10
	}
}

func putHex(b []byte, v uint64) {
	const digits = "0123456789abcdef"
	for i := len(b) - 1; i >= 0; i-- {
		b[i] = digits[v&15]
		v >>= 4
	}
}
