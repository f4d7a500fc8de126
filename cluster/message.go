package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/cespare/xxhash/v2"
	"github.com/nats-io/nats.go"

	"github.com/greyhold/greyhold/engine"
	"github.com/greyhold/greyhold/store"
	"github.com/greyhold/greyhold/wal"
)

// Header names of greyhold's messages (doc.go).
const (
	hdrKind     = "Greyhold-Kind"
	hdrNode     = "Greyhold-Node"
	hdrFleet    = "Greyhold-Fleet"
	hdrGen      = "Greyhold-Gen"
	hdrFirst    = "Greyhold-First"
	hdrLast     = "Greyhold-Last"
	hdrObject   = "Greyhold-Object"
	hdrDigest   = "Greyhold-Digest"
	hdrWALIndex = "Greyhold-Wal-Index"

	kindFrames   = "frames"
	kindSnapshot = "snapshot"

	subjectPrefix = "greyhold.rec."
)

// errMalformed wraps every reason a message is refused.
var errMalformed = errors.New("malformed greyhold message")

// fleetID names what the nodes of a fleet must share: the secret's id and
// the key options, hashed, so a header carries them in a few bytes.
func fleetID(id store.Identity) string {
	return fmt.Sprintf("%016x-%016x", id.SecretID, xxhash.Sum64String(fleetKeys(id.Keys)))
}

// fleetKeys is the key options as the fleet compares them: without the
// public suffix list's version (psl=), which a package upgrade changes on
// one node at a time. Nodes on two versions of the list key a name that
// the versions classify differently apart; such a sender may be deferred
// once more, where refusing the upgraded node would stop its replication.
func fleetKeys(keys string) string {
	f := strings.Fields(keys)
	out := f[:0]
	for _, w := range f {
		if !strings.HasPrefix(w, "psl=") {
			out = append(out, w)
		}
	}
	return strings.Join(out, " ")
}

// keyID is the short secret id every log frame carries (store keyID).
func keyID(secretID uint64) uint32 {
	if k := uint32(secretID); k != 0 {
		return k
	}
	return 1
}

// appendFrames appends the frames to a message body: each a uvarint
// length and the encoded frame, as in a log segment.
func appendFrames(dst []byte, frames []wal.Frame) ([]byte, error) {
	var scratch []byte
	for _, f := range frames {
		var err error
		scratch, err = wal.AppendFrame(scratch[:0], f)
		if err != nil {
			return dst, fmt.Errorf("encode frame %d: %w", f.Index, err)
		}
		dst = binary.AppendUvarint(dst, uint64(len(scratch)))
		dst = append(dst, scratch...)
	}
	return dst, nil
}

// decodeFrames reads a message body into frames and checks each whole:
// its CRC, the key id it carries, and every record in it. Either all the
// frames are good or an error says which is not: a message is applied
// whole or not at all. The frames' payloads alias body.
func decodeFrames(body []byte, key uint32, out []wal.Frame) ([]wal.Frame, error) {
	out = out[:0]
	for off := 0; off < len(body); {
		n, w := binary.Uvarint(body[off:])
		if w <= 0 || n > uint64(len(body)-off-w) || w != uvarintSize(n) {
			return out, fmt.Errorf("%w: frame length at offset %d", errMalformed, off)
		}
		f, err := wal.DecodeFrame(body[off+w : off+w+int(n)])
		if err != nil {
			return out, fmt.Errorf("%w: frame at offset %d: %w", errMalformed, off, err)
		}
		if f.Version != 2 || f.KeyID != key {
			return out, fmt.Errorf("%w: frame %d carries key id %08x, want %08x", errMalformed, f.Index, f.KeyID, key)
		}
		if len(out) > 0 && f.Index < out[len(out)-1].Index {
			return out, fmt.Errorf("%w: frame %d after frame %d", errMalformed, f.Index, out[len(out)-1].Index)
		}
		if got, err := engine.CheckRecords(f.Payload); err != nil || got != f.Records {
			return out, fmt.Errorf("%w: frame %d: %d of %d records decode (%v)", errMalformed, f.Index, got, f.Records, err)
		}
		out = append(out, f)
		off += w + int(n)
	}
	if len(out) == 0 {
		return out, fmt.Errorf("%w: no frames", errMalformed)
	}
	return out, nil
}

// msgID makes the Nats-Msg-Id of a records message: the same frames sent
// again (a publish whose ack was lost) are dropped by the stream.
func msgID(node string, gen uint32, first, last uint64) string {
	return node + ":" + strconv.FormatUint(uint64(gen), 16) + ":" + strconv.FormatUint(first, 10) + "-" + strconv.FormatUint(last, 10)
}

// framesMsg builds the message that ships frames. piece, when not -1, says
// the message holds one piece of a frame, starting at that offset of its
// payload; partial, that more pieces follow: the message then names the
// frame before as its last whole one.
func framesMsg(node, fleet string, frames []wal.Frame, body []byte, piece int, partial bool) *nats.Msg {
	first, last := frames[0], frames[len(frames)-1]
	whole := last.Index
	if partial {
		whole--
	}
	m := nats.NewMsg(subjectPrefix + node)
	m.Data = body
	m.Header.Set(hdrKind, kindFrames)
	m.Header.Set(hdrNode, node)
	m.Header.Set(hdrFleet, fleet)
	m.Header.Set(hdrGen, strconv.FormatUint(uint64(last.Gen), 10))
	m.Header.Set(hdrFirst, strconv.FormatUint(first.Index, 10))
	m.Header.Set(hdrLast, strconv.FormatUint(whole, 10))
	id := msgID(node, first.Gen, first.Index, last.Index)
	if piece >= 0 {
		// Pieces of one frame share its index: their offsets tell them
		// apart.
		id += "@" + strconv.Itoa(piece)
	}
	m.Header.Set(nats.MsgIdHdr, id)
	return m
}

// shipped is what a message says its node had shipped: the generation and
// index of its last frame.
type shipped struct {
	gen  uint32
	last uint64
}

// parseShipped reads the position from a message's headers.
func parseShipped(h nats.Header) (shipped, error) {
	gen, err := strconv.ParseUint(h.Get(hdrGen), 10, 32)
	if err != nil {
		return shipped{}, fmt.Errorf("%w: %s %q", errMalformed, hdrGen, h.Get(hdrGen))
	}
	last, err := strconv.ParseUint(h.Get(hdrLast), 10, 64)
	if err != nil {
		return shipped{}, fmt.Errorf("%w: %s %q", errMalformed, hdrLast, h.Get(hdrLast))
	}
	return shipped{gen: uint32(gen), last: last}, nil
}

// resumeIndex is where a node goes on shipping its log, given the last
// position it shipped (ok false: none) and its log's eras and first index:
// after the last frame shipped, or from where the generation after it
// begins when that is earlier, since frames from there on were written
// again. gap says frames after the last one shipped are no longer in the
// log (truncated once the backlog outgrew its bound): they must be shipped
// as a snapshot.
func resumeIndex(p shipped, ok bool, eras []wal.Era, first uint64) (next uint64, gap bool) {
	if !ok {
		return first, false
	}
	for i, e := range eras {
		if e.Gen != p.gen {
			continue
		}
		next = p.last + 1
		if i+1 < len(eras) && eras[i+1].First < next {
			next = eras[i+1].First
		}
		return max(next, first), next < first
	}
	// The generation shipped last is gone from the log. Frames after it
	// were never shipped: if the log begins after them, some are lost.
	return first, p.last+1 < first
}

// uvarintSize is the length of n's shortest uvarint, the only one a writer
// makes.
func uvarintSize(n uint64) int {
	size := 1
	for ; n >= 0x80; n >>= 7 {
		size++
	}
	return size
}
