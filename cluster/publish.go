package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/greyhold/greyhold/engine"
	"github.com/greyhold/greyhold/wal"
)

// publish ships the log to the stream for as long as the node runs: from
// where the stream says this node left off, one message at a time, each
// acknowledged before the next is sent (a message carries every frame
// written meanwhile, so the batch grows with the load). The pin follows the
// acknowledgements, so the log keeps what the stream has not.
func (n *Node) publish() {
	retry := time.Second
	for n.ctx.Err() == nil {
		if err := n.waitConnected(n.ctx); err != nil {
			return
		}
		err := n.shipSession()
		if n.ctx.Err() != nil {
			return
		}
		if err != nil {
			if errors.Is(err, context.Canceled) {
				// The connection dropped, which is logged already:
				// waitConnected holds the next session until it is back.
				continue
			}
			n.warn.log("shipping the log to the stream failed; retrying", "err", err,
				"hint", "the log keeps every change until the stream acknowledges it")
			if !n.pause(retry) {
				return
			}
			retry = min(2*retry, 30*time.Second)
			continue
		}
		retry = time.Second
	}
}

// shipSession finds where to go on and ships until an error.
func (n *Node) shipSession() error {
	ctx := n.session()
	last, ok, err := n.lastShipped(ctx)
	if err != nil {
		return err
	}
	wst := n.st.Stats().WAL
	next, gap := resumeIndex(last, ok, n.st.LogEras(), wst.FirstIndex)
	if gap || n.snapNeed.Load() {
		covered, err := n.shipSnapshot(ctx, "frames after the last one shipped are no longer in the log")
		if err != nil {
			return err
		}
		next = covered + 1
	}
	n.pin.Move(next)
	n.acked.Store(next - 1)
	cur := n.st.Follow(next)
	defer cur.Close()
	return n.shipFrom(ctx, cur)
}

// lastShipped reads this node's last message on the stream.
func (n *Node) lastShipped(ctx context.Context) (shipped, bool, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	m, err := n.str.GetLastMsgForSubject(cctx, subjectPrefix+n.opts.NodeID)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return shipped{}, false, nil
	}
	if err != nil {
		return shipped{}, false, fmt.Errorf("read this node's last message: %w", err)
	}
	p, err := parseShipped(m.Header)
	if err != nil {
		return shipped{}, false, fmt.Errorf("this node's last message (sequence %d): %w", m.Sequence, err)
	}
	return p, true, nil
}

// shipFrom reads frames from cur and publishes them until an error. A
// message carries whole frames up to the size limit; a frame bigger than
// that (group commit makes frames of up to the log's batch bound, 4 MiB)
// goes out in pieces cut between records, each a frame of the same index.
func (n *Node) shipFrom(ctx context.Context, cur *wal.Cursor) error {
	limit := n.opts.MaxMsgBytes
	if mp := int(n.nc.MaxPayload()) - 8<<10; mp > 0 && mp < limit {
		limit = mp // headers and framing fit in the rest
	}
	var frames []wal.Frame
	var body []byte
	// A message waits up to linger after its first frame for more: at a few
	// changes a second each would otherwise be a message of its own, its
	// headers weighing ten times its records.
	var linger lingerer
	flush := func() error {
		linger.stop()
		if len(frames) == 0 {
			return nil
		}
		err := n.send(ctx, frames, body, -1, false)
		frames, body = frames[:0], body[:0]
		return err
	}
	defer linger.stop()
	for {
		wait := ctx
		if len(frames) > 0 {
			wait = linger.ctx
		}
		f, err := cur.Next(wait)
		var gapErr *wal.GapError
		switch {
		case errors.As(err, &gapErr):
			// Lost from this node's log (damage, or a file removed under
			// it): the store has written a snapshot, which goes out in
			// their place.
			n.log.Warn("frames this node has not shipped are gone from its log: shipping a snapshot instead",
				"first", gapErr.First, "last", gapErr.Last)
			n.snapNeed.Store(true)
			if err := flush(); err != nil {
				return err
			}
			return errors.New("frames missing from the log")
		case err == nil:
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, context.DeadlineExceeded):
			// The linger is over: what came meanwhile goes out.
			if err := flush(); err != nil {
				return err
			}
			continue
		default:
			return fmt.Errorf("read the log: %w", err)
		}
		size := frameOverhead + len(f.Payload)
		if len(body)+size > limit {
			if err := flush(); err != nil {
				return err
			}
		}
		if size > limit {
			if err := n.sendPieces(ctx, f, limit); err != nil {
				return err
			}
			continue
		}
		if len(frames) == 0 {
			linger.start(ctx, n.opts.Linger)
		}
		if body, err = appendFrames(body, []wal.Frame{f}); err != nil {
			return err
		}
		// The payload is only valid until the next read: keep the header
		// fields, which is all send needs beyond the body.
		f.Payload = nil
		frames = append(frames, f)
	}
}

// frameOverhead bounds what a frame adds to its payload in a message: its
// length prefix, header and CRC.
const frameOverhead = 10 + 30 + 4

// sendPieces ships one frame too big for a message as several, each a
// frame of the same index holding a run of whole records. Every message
// but the last says the frame is not complete, so a restart between them
// ships the whole frame again.
func (n *Node) sendPieces(ctx context.Context, f wal.Frame, limit int) error {
	p, off := f.Payload, 0
	for len(p) > 0 {
		cut, records := 0, 0
		for cut < len(p) {
			k, err := engine.RecordLen(p[cut:])
			if err != nil {
				return fmt.Errorf("cut frame %d for shipping: %w", f.Index, err)
			}
			if cut > 0 && cut+k+frameOverhead > limit {
				break
			}
			cut += k
			records++
		}
		piece := f
		piece.Payload, piece.Records = p[:cut], records
		body, err := appendFrames(nil, []wal.Frame{piece})
		if err != nil {
			return err
		}
		piece.Payload = nil
		if err := n.send(ctx, []wal.Frame{piece}, body, off, cut < len(p)); err != nil {
			return err
		}
		p, off = p[cut:], off+cut
	}
	return nil
}

// send publishes one message of frames and waits for the stream's
// acknowledgement; piece and partial as framesMsg takes them.
func (n *Node) send(ctx context.Context, frames []wal.Frame, body []byte, piece int, partial bool) error {
	m := framesMsg(n.opts.NodeID, n.fleet, frames, body, piece, partial)
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ack, err := n.js.PublishMsg(cctx, m, jetstream.WithExpectStream(n.opts.Stream))
	if err != nil {
		return fmt.Errorf("publish frames %d to %d: %w", frames[0].Index, frames[len(frames)-1].Index, err)
	}
	n.pubSeq.Store(ack.Sequence)
	last := frames[len(frames)-1].Index
	records := 0
	for _, f := range frames {
		records += f.Records
	}
	n.published.messages.Add(1)
	n.published.frames.Add(uint64(len(frames)))
	n.published.records.Add(uint64(records))
	n.published.bytes.Add(uint64(len(body)))
	if !partial {
		n.acked.Store(last)
		n.pin.Move(last + 1)
	}
	n.progressed()
	return nil
}

// lingerer is the wait of one message for more frames.
type lingerer struct {
	ctx    context.Context
	cancel context.CancelFunc
}

func (l *lingerer) start(ctx context.Context, d time.Duration) {
	l.ctx, l.cancel = context.WithTimeout(ctx, d)
}

func (l *lingerer) stop() {
	if l.cancel != nil {
		l.cancel()
		l.cancel = nil
	}
}
