package cluster

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// catchUpStart makes sure the stream still holds what this node needs
// next; if it does not (trimmed by its limits, or a new node joining a
// fleet whose stream has moved on), the node merges the newest fleet
// snapshot first and goes on from the position that snapshot covers.
func (n *Node) catchUpStart(ctx context.Context) error {
	info, err := n.str.Info(ctx)
	if err != nil {
		return fmt.Errorf("cluster: stream %s: %w", n.opts.Stream, err)
	}
	pos := n.applied.Load()
	st := info.State
	if pos+1 >= st.FirstSeq {
		return nil // it holds what comes next (an empty stream's first is 0)
	}
	reason := fmt.Sprintf("the stream starts at sequence %d and this node had applied up to %d", st.FirstSeq, pos)
	if pos == 0 {
		reason = fmt.Sprintf("a node with nothing applied, and the stream starts at sequence %d", st.FirstSeq)
	}
	return n.bootstrap(ctx, reason, st.FirstSeq)
}

// consume applies the other nodes' messages, from the position after the
// last one applied, for as long as the node runs. An ordered consumer
// (flow-controlled, recreated by nats.go after a reconnect) delivers them
// in stream order.
func (n *Node) consume() {
	retry := time.Second
	for n.ctx.Err() == nil {
		if err := n.waitConnected(n.ctx); err != nil {
			return
		}
		err := n.consumeSession()
		switch {
		case n.ctx.Err() != nil:
			return
		case errors.Is(err, context.Canceled):
			// The connection dropped, which is logged already:
			// waitConnected holds the next session until it is back.
			retry = time.Second
			continue
		case err == nil:
			// The iterator ended while connected: start again after a
			// pause, at the first retry's.
			retry = time.Second
		default:
			n.broken.Store(true)
			n.warn.log("applying the fleet's records failed; retrying", "err", err)
		}
		if !n.pause(retry) {
			return
		}
		if err != nil {
			retry = min(2*retry, 30*time.Second)
		}
	}
}

func (n *Node) consumeSession() error {
	// Requests give up when the connection drops; the ordered consumer,
	// once made, rides out reconnects by itself.
	sess := n.session()
	if err := n.catchUpStart(sess); err != nil {
		return err
	}
	start := n.applied.Load() + 1
	cons, err := n.js.OrderedConsumer(sess, n.opts.Stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subjectPrefix + ">"},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    start,
	})
	if err != nil {
		return fmt.Errorf("consumer from sequence %d: %w", start, err)
	}
	n.broken.Store(false)
	if ci := cons.CachedInfo(); ci != nil && ci.NumPending == 0 {
		n.markCaughtUp()
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("consume: %w", err)
	}
	stop := context.AfterFunc(n.ctx, it.Stop)
	defer stop()
	defer it.Stop()
	for {
		msg, err := it.Next()
		if err != nil {
			if n.ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return nil
			}
			return fmt.Errorf("next message: %w", err)
		}
		meta, err := msg.Metadata()
		if err != nil {
			n.skip("metadata", msg.Subject(), 0, err)
			continue
		}
		seq := meta.Sequence.Stream
		if prev := n.applied.Load(); seq > prev+1 && prev > 0 {
			if err := n.checkTrimmed(sess, prev, seq); err != nil {
				return err
			}
		}
		n.handle(msg, seq)
		n.broken.Store(false)
		n.applied.Store(seq)
		n.progressed()
		if meta.NumPending == 0 {
			n.markCaughtUp()
		}
	}
}

func (n *Node) markCaughtUp() {
	if !n.caughtUp.Swap(true) {
		n.log.Info("caught up with the fleet", "applied", n.applied.Load())
		n.progressed()
	}
}

// checkTrimmed is called when the consumer skips from prev to seq: if the
// stream lost the messages between (its limits trimmed them while the node
// was away), the node merges the newest fleet snapshot for them.
func (n *Node) checkTrimmed(ctx context.Context, prev, seq uint64) error {
	info, err := n.str.Info(ctx)
	if err != nil {
		return fmt.Errorf("stream %s: %w", n.opts.Stream, err)
	}
	if info.State.FirstSeq <= prev+1 {
		return nil // other subjects of an operator's stream, or deleted messages
	}
	return n.bootstrap(ctx, fmt.Sprintf("the stream dropped sequences %d to %d before this node applied them", prev+1, info.State.FirstSeq-1), seq)
}

// handle applies one message, whole or not at all.
func (n *Node) handle(msg jetstream.Msg, seq uint64) {
	h := msg.Headers()
	node := strings.TrimPrefix(msg.Subject(), subjectPrefix)
	if node == n.opts.NodeID {
		return
	}
	if h.Get(hdrNode) != node {
		n.skip("malformed", msg.Subject(), seq, fmt.Errorf("%w: node header %q on subject %s", errMalformed, h.Get(hdrNode), msg.Subject()))
		return
	}
	if f := h.Get(hdrFleet); f != n.fleet {
		n.skip("foreign", node, seq, fmt.Errorf("fleet id %q, this node's %q: another secret or other key options", f, n.fleet))
		return
	}
	switch h.Get(hdrKind) {
	case kindFrames:
	case kindSnapshot:
		ctx, cancel := context.WithTimeout(n.ctx, bootstrapWait)
		err := n.mergeShipped(ctx, node, h)
		cancel()
		if err != nil {
			n.skip("snapshot", node, seq, err)
		}
		return
	default:
		n.skip("malformed", node, seq, fmt.Errorf("%w: kind %q", errMalformed, h.Get(hdrKind)))
		return
	}
	frames, err := decodeFrames(msg.Data(), n.key, nil)
	if err != nil {
		n.skip("malformed", node, seq, err)
		return
	}
	records := 0
	for _, f := range frames {
		if _, err := n.st.ApplyRemote(f.Payload); err != nil {
			// decodeFrames checked every record: only a bug gets here.
			n.skip("malformed", node, seq, err)
			return
		}
		records += f.Records
	}
	lag := time.Since(time.UnixMilli(frames[len(frames)-1].UnixMilli))
	n.m.lag(lag)
	if n.lagHook != nil {
		now := time.Now()
		for _, f := range frames {
			n.lagHook(now.Sub(time.UnixMilli(f.UnixMilli)))
		}
	}
	n.appliedN.messages.Add(1)
	n.appliedN.frames.Add(uint64(len(frames)))
	n.appliedN.records.Add(uint64(records))
	n.appliedN.bytes.Add(uint64(len(msg.Data())))
	n.peerMu.Lock()
	p := n.peers[node]
	if p == nil {
		p = &peer{}
		n.peers[node] = p
		n.log.Info("first records from a peer", "peer", node)
	}
	p.lastSeen, p.lag, p.seq = time.Now(), lag, seq
	p.frames += uint64(len(frames))
	n.peerMu.Unlock()
	n.m.peer(node, lag)
}

// skip counts and logs a message the node will not apply.
func (n *Node) skip(reason, from string, seq uint64, err error) {
	n.m.skipped(reason)
	n.warn.log("skipped a message from the stream: nothing of it applied", "reason", reason, "from", from, "sequence", seq, "err", err)
}
