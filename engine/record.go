package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Records are the engine's state changes as bytes: what the WAL logs, what
// replication ships and what a snapshot's rule blob holds. Each carries the
// resulting values of a change, never a delta, so applying one twice, or two
// in either order, ends in the same state (see mergeEntry).
//
// A record is a type byte, a uvarint body length and the body; all integers
// in bodies are little-endian:
//
//	type 1 triplet  key u64, first u32, word u32                  (16 bytes)
//	type 2 client   key u64, since u32, last u32, count u32,
//	                counted u32                                   (24 bytes)
//	type 3 rule     kind u8, form u8, present u8, stamp u64,
//	                value (the rest; an address rule holds a keyed hash)
//	type 4 triplet of a reset generation: type 1's body, first with its
//	                top bit set (entry.go: a release, a forget's
//	                tombstone, a state born after one)
//	type 5 client of a reset generation: type 2's body, since with its
//	                top bit set
//	type 6 rule with a lifetime: kind u8, form u8, present u8, stamp u64,
//	                expires u32, value
//
// Types 4 to 6 carry what an older version cannot read right: it skips
// them (a forget or an expiring rule then does not reach it) rather than
// read a marked time as one in 2088.
//
// Times are Time values (seconds since 2020-01-01). Keys are keyed xxhash64
// values: no address is ever written. A record of an unknown type is skipped
// and counted, so a newer version can add types that an older one ignores;
// a body shorter than its type needs is an error (ErrBadRecord).
const (
	recTriplet      byte = 1
	recClient       byte = 2
	recRule         byte = 3
	recTripletReset byte = 4
	recClientReset  byte = 5
	recRuleTTL      byte = 6
)

const (
	tripletBodyLen = 16
	clientBodyLen  = 24
	ruleBodyMin    = 11
	ruleTTLBodyMin = 15
	tripletRecLen  = 2 + tripletBodyLen
	clientRecLen   = 2 + clientBodyLen
)

// ErrBadRecord is returned by Apply for a record that cannot be decoded.
var ErrBadRecord = errors.New("engine: malformed record")

func appendTripletRecord(dst []byte, k uint64, e entry) []byte {
	typ := recTriplet
	if e.reset() {
		typ = recTripletReset
	}
	dst = append(dst, typ, tripletBodyLen)
	dst = binary.LittleEndian.AppendUint64(dst, k)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(e.first))
	return binary.LittleEndian.AppendUint32(dst, e.word)
}

func appendClientRecord(dst []byte, k uint64, c client) []byte {
	typ := recClient
	if c.reset() {
		typ = recClientReset
	}
	dst = append(dst, typ, clientBodyLen)
	dst = binary.LittleEndian.AppendUint64(dst, k)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(c.since))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(c.last))
	dst = binary.LittleEndian.AppendUint32(dst, c.count)
	return binary.LittleEndian.AppendUint32(dst, uint32(c.counted))
}

func appendRuleRecord(dst []byte, id ruleID, st ruleState) []byte {
	typ, body := recRule, ruleBodyMin+len(id.value)
	if st.expires != 0 {
		typ, body = recRuleTTL, ruleTTLBodyMin+len(id.value)
	}
	dst = append(dst, typ)
	dst = binary.AppendUvarint(dst, uint64(body))
	p := byte(0)
	if st.present {
		p = 1
	}
	dst = append(dst, byte(id.kind), byte(id.form), p)
	dst = binary.LittleEndian.AppendUint64(dst, st.stamp)
	if st.expires != 0 {
		dst = binary.LittleEndian.AppendUint32(dst, uint32(st.expires))
	}
	return append(dst, id.value...)
}

// maxChangeBytes holds the most one check writes: a triplet and its client.
const maxChangeBytes = tripletRecLen + clientRecLen

// Changes collects the records one check produced, in a fixed array so a
// check allocates nothing: the caller keeps it on its stack and hands the
// bytes to the log.
type Changes struct {
	buf [maxChangeBytes]byte
	len uint8
	n   uint8
}

// Bytes returns the records, valid until the next Reset.
func (c *Changes) Bytes() []byte { return c.buf[:c.len] }

// Count returns the number of records.
func (c *Changes) Count() int { return int(c.n) }

// Reset empties c.
func (c *Changes) Reset() { c.len, c.n = 0, 0 }

func (c *Changes) addTriplet(k uint64, e entry) {
	c.len = uint8(len(appendTripletRecord(c.buf[c.len:c.len], k, e))) + c.len
	c.n++
}

func (c *Changes) addClient(k uint64, cl client) {
	c.len = uint8(len(appendClientRecord(c.buf[c.len:c.len], k, cl))) + c.len
	c.n++
}

// RecordSummary counts the records in a payload by type, for `greyhold
// inspect`; it checks framing but not bodies.
func RecordSummary(payload []byte) (triplets, clients, rules, unknown int, err error) {
	err = forEachRecord(payload, func(typ byte, body []byte) error {
		switch typ {
		case recTriplet, recTripletReset:
			triplets++
		case recClient, recClientReset:
			clients++
		case recRule, recRuleTTL:
			rules++
		default:
			unknown++
		}
		return nil
	})
	return
}

// record is one decoded record; which fields are set depends on typ.
type record struct {
	typ  byte
	key  uint64
	e    entry
	c    client
	rule ruleID
	rst  ruleState
}

// decodeRecord decodes one record body. A type this version does not know
// decodes to a record with only typ set.
func decodeRecord(typ byte, body []byte) (record, error) {
	r := record{typ: typ}
	switch typ {
	case recTriplet, recTripletReset:
		if len(body) < tripletBodyLen {
			return r, fmt.Errorf("%w: triplet body of %d bytes", ErrBadRecord, len(body))
		}
		r.key = binary.LittleEndian.Uint64(body)
		r.e = entry{first: Time(binary.LittleEndian.Uint32(body[8:])), word: binary.LittleEndian.Uint32(body[12:])}
		if r.e.reset() != (typ == recTripletReset) {
			return r, fmt.Errorf("%w: triplet record of type %d with first-seen %#x", ErrBadRecord, typ, uint32(r.e.first))
		}
	case recClient, recClientReset:
		if len(body) < clientBodyLen {
			return r, fmt.Errorf("%w: client body of %d bytes", ErrBadRecord, len(body))
		}
		r.key = binary.LittleEndian.Uint64(body)
		r.c = client{
			since:   Time(binary.LittleEndian.Uint32(body[8:])),
			last:    Time(binary.LittleEndian.Uint32(body[12:])),
			count:   binary.LittleEndian.Uint32(body[16:]),
			counted: Time(binary.LittleEndian.Uint32(body[20:])),
		}
		if r.c.reset() != (typ == recClientReset) {
			return r, fmt.Errorf("%w: client record of type %d with since %#x", ErrBadRecord, typ, uint32(r.c.since))
		}
	case recRule, recRuleTTL:
		min := ruleBodyMin
		if typ == recRuleTTL {
			min = ruleTTLBodyMin
		}
		if len(body) < min {
			return r, fmt.Errorf("%w: rule body of %d bytes", ErrBadRecord, len(body))
		}
		r.rule = ruleID{kind: RuleKind(body[0]), form: ruleForm(body[1]), value: string(body[min:])}
		if r.rule.form == formAddrHash && len(r.rule.value) != 8 {
			return r, fmt.Errorf("%w: address rule hash of %d bytes", ErrBadRecord, len(r.rule.value))
		}
		r.rst = ruleState{present: body[2] == 1, stamp: binary.LittleEndian.Uint64(body[3:])}
		if typ == recRuleTTL {
			r.rst.expires = Time(binary.LittleEndian.Uint32(body[11:]))
			if r.rst.expires == 0 {
				return r, fmt.Errorf("%w: rule with a lifetime that never ends", ErrBadRecord)
			}
		}
	}
	return r, nil
}

// forEachRecord splits a payload into records.
func forEachRecord(p []byte, fn func(typ byte, body []byte) error) error {
	for off := 0; off < len(p); {
		typ := p[off]
		n, w := binary.Uvarint(p[off+1:])
		if w <= 0 {
			return fmt.Errorf("%w: length of record at offset %d", ErrBadRecord, off)
		}
		start := off + 1 + w
		if n > uint64(len(p)-start) {
			return fmt.Errorf("%w: record at offset %d claims %d bytes, %d left", ErrBadRecord, off, n, len(p)-start)
		}
		end := start + int(n)
		if err := fn(typ, p[start:end]); err != nil {
			return err
		}
		off = end
	}
	return nil
}

// CheckRecords decodes every record of a payload without applying any and
// returns how many it holds, so that a payload from elsewhere can be
// refused whole rather than applied in part.
func CheckRecords(payload []byte) (int, error) {
	n := 0
	err := forEachRecord(payload, func(typ byte, body []byte) error {
		if _, err := decodeRecord(typ, body); err != nil {
			return err
		}
		n++
		return nil
	})
	return n, err
}

// RecordLen returns the length of the first record of a payload, so a
// payload too big for one message can be cut between records.
func RecordLen(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, fmt.Errorf("%w: empty payload", ErrBadRecord)
	}
	n, w := binary.Uvarint(p[1:])
	if w <= 0 || n > uint64(len(p)-1-w) {
		return 0, fmt.Errorf("%w: length of the first record", ErrBadRecord)
	}
	return 1 + w + int(n), nil
}
