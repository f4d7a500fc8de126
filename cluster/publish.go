package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

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
			n.warn.log("shipping the log to the stream failed; retrying", "err", err,
				"hint", "the log keeps every change until the stream acknowledges it")
			if !sleep(n.ctx, retry) {
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
	ctx := n.ctx
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

// shipFrom reads frames from cur and publishes them until an error.
func (n *Node) shipFrom(ctx context.Context, cur *wal.Cursor) error {
	done, cancel := context.WithCancel(ctx)
	cancel() // Next with a done context returns what is written, without waiting
	var frames []wal.Frame
	var body []byte
	for {
		frames, body = frames[:0], body[:0]
	gather:
		for len(body) < n.opts.MaxMsgBytes {
			wait := done
			if len(frames) == 0 {
				wait = ctx
			}
			f, err := cur.Next(wait)
			var gapErr *wal.GapError
			switch {
			case errors.As(err, &gapErr):
				// Lost from this node's log (damage, or a file removed
				// under it): the store has written a snapshot, which
				// goes out in their place.
				n.log.Warn("frames this node has not shipped are gone from its log: shipping a snapshot instead",
					"first", gapErr.First, "last", gapErr.Last)
				n.snapNeed.Store(true)
				if len(frames) > 0 {
					if err := n.send(ctx, frames, body); err != nil {
						return err
					}
				}
				return errors.New("frames missing from the log")
			case err == nil:
			case ctx.Err() != nil:
				return nil
			case errors.Is(err, context.Canceled):
				break gather // all that is written is in hand
			default:
				return fmt.Errorf("read the log: %w", err)
			}
			var eerr error
			if body, eerr = appendFrames(body, []wal.Frame{f}); eerr != nil {
				return eerr
			}
			// The payload is only valid until the next read: keep the
			// header fields, which is all send needs beyond the body.
			f.Payload = nil
			frames = append(frames, f)
		}
		if err := n.send(ctx, frames, body); err != nil {
			return err
		}
	}
}

// send publishes one message of frames and waits for the stream's
// acknowledgement.
func (n *Node) send(ctx context.Context, frames []wal.Frame, body []byte) error {
	m := framesMsg(n.opts.NodeID, n.fleet, frames, body)
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ack, err := n.js.PublishMsg(cctx, m, jetstream.WithExpectStream(n.opts.Stream))
	if err != nil {
		return fmt.Errorf("publish frames %d to %d: %w", frames[0].Index, frames[len(frames)-1].Index, err)
	}
	n.pubSeq.Store(ack.Sequence)
	last := frames[len(frames)-1].Index
	n.acked.Store(last)
	n.pin.Move(last + 1)
	records := 0
	for _, f := range frames {
		records += f.Records
	}
	n.published.messages.Add(1)
	n.published.frames.Add(uint64(len(frames)))
	n.published.records.Add(uint64(records))
	n.published.bytes.Add(uint64(len(body)))
	n.progressed()
	return nil
}
