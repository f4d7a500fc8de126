package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/greyhold/greyhold/store"
)

// Object metadata keys of an uploaded snapshot.
const (
	metaNode     = "node"
	metaFleet    = "fleet"
	metaSeq      = "seq"
	metaWALIndex = "wal-index"
	metaCreated  = "created"
	metaSecretID = "secret-id"
	metaKeys     = "keys"
)

// uploads puts this node's snapshots in the object store, at most once per
// Options.SnapshotUploadInterval.
func (n *Node) uploads() {
	for {
		select {
		case <-n.ctx.Done():
			return
		case info := <-n.uploadC:
			n.lastUpMu.Lock()
			due := time.Since(n.lastUp) >= n.opts.SnapshotUploadInterval
			n.lastUpMu.Unlock()
			if !due || !n.connected.Load() {
				continue
			}
			if _, err := n.upload(n.ctx, info, n.snapSeq.Load()); err != nil && n.ctx.Err() == nil {
				n.warn.log("could not upload this node's snapshot for new nodes; the next snapshot tries again", "err", err)
			}
		}
	}
}

// checkBacklog lets the log go once what it keeps for the stream passes
// Options.BacklogBytes: the frames it then drops are shipped as a
// snapshot when NATS is back.
func (n *Node) checkBacklog() {
	ws := n.st.Stats().WAL
	if n.snapNeed.Load() || ws.DiskBytes <= n.opts.BacklogBytes || n.acked.Load() >= ws.LastIndex {
		return
	}
	n.snapNeed.Store(true)
	n.pin.Move(ws.LastIndex + 1)
	n.progressed()
	n.log.Warn("the log kept for the fleet passed its bound: it is no longer held, and a snapshot goes to the fleet in place of the frames it drops",
		"log_bytes", ws.DiskBytes, "bound", n.opts.BacklogBytes, "unshipped_frames", ws.LastIndex-n.acked.Load(),
		"hint", "NATS has been away long; raise --nats-backlog to ship frames rather than a snapshot after such an outage")
}

// upload puts the snapshot in the object store under this node's name,
// replacing the one before, with the stream position it covers.
func (n *Node) upload(ctx context.Context, info store.SnapshotInfo, seq uint64) (*jetstream.ObjectInfo, error) {
	// Opened first: the store may prune the file meanwhile.
	f, err := os.Open(info.Path)
	if err != nil {
		n.m.uploadFailed()
		return nil, fmt.Errorf("open snapshot %s: %w", info.Path, err)
	}
	defer f.Close()
	start := time.Now()
	obj, err := n.obs.Put(ctx, jetstream.ObjectMeta{
		Name:        n.opts.NodeID,
		Description: "greyhold snapshot of node " + n.opts.NodeID,
		Metadata: map[string]string{
			metaNode:     n.opts.NodeID,
			metaFleet:    n.fleet,
			metaSeq:      strconv.FormatUint(seq, 10),
			metaWALIndex: strconv.FormatUint(info.WALIndex, 10),
			metaCreated:  info.At.UTC().Format(time.RFC3339),
			metaSecretID: fmt.Sprintf("%016x", n.id.SecretID),
			metaKeys:     n.id.Keys,
		},
	}, f)
	if err != nil {
		n.m.uploadFailed()
		return nil, fmt.Errorf("upload snapshot %s: %w", info.Path, err)
	}
	n.lastUpMu.Lock()
	n.lastUp = time.Now()
	n.lastUpMu.Unlock()
	n.m.uploaded()
	n.uploadsN.Add(1)
	n.progressed()
	n.log.Info("uploaded this node's snapshot for the fleet", "object", obj.Name, "bytes", obj.Size,
		"stream_seq", seq, "wal_index", info.WALIndex, "triplets", info.Triplets, "duration", time.Since(start).Round(time.Millisecond))
	return obj, nil
}

// shipSnapshot writes a snapshot now, uploads it and tells the fleet to
// merge it, in place of frames it can no longer ship. It returns the log
// index the snapshot covers: shipping goes on after it.
func (n *Node) shipSnapshot(ctx context.Context, reason string) (uint64, error) {
	n.log.Warn("shipping a snapshot to the fleet in place of frames", "reason", reason)
	info, err := n.st.Snapshot()
	if err != nil {
		return 0, fmt.Errorf("snapshot to ship: %w", err)
	}
	obj, err := n.upload(ctx, info, n.snapSeq.Load())
	if err != nil {
		return 0, err
	}
	gen := uint32(0)
	if eras := n.st.LogEras(); len(eras) > 0 {
		gen = eras[len(eras)-1].Gen
	}
	m := nats.NewMsg(subjectPrefix + n.opts.NodeID)
	m.Header.Set(hdrKind, kindSnapshot)
	m.Header.Set(hdrNode, n.opts.NodeID)
	m.Header.Set(hdrFleet, n.fleet)
	m.Header.Set(hdrGen, strconv.FormatUint(uint64(gen), 10))
	m.Header.Set(hdrLast, strconv.FormatUint(info.WALIndex, 10))
	m.Header.Set(hdrWALIndex, strconv.FormatUint(info.WALIndex, 10))
	m.Header.Set(hdrObject, obj.Name)
	m.Header.Set(hdrDigest, obj.Digest)
	m.Header.Set(nats.MsgIdHdr, n.opts.NodeID+":snapshot:"+obj.NUID)
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ack, err := n.js.PublishMsg(cctx, m, jetstream.WithExpectStream(n.opts.Stream))
	if err != nil {
		return 0, fmt.Errorf("announce the shipped snapshot: %w", err)
	}
	n.pubSeq.Store(ack.Sequence)
	n.snapNeed.Store(false)
	n.progressed()
	return info.WALIndex, nil
}

// mergeShipped merges the snapshot a node shipped in place of frames.
func (n *Node) mergeShipped(ctx context.Context, node string, h nats.Header) error {
	name := h.Get(hdrObject)
	info, err := n.obs.GetInfo(ctx, name)
	if err != nil {
		return fmt.Errorf("snapshot %q shipped by %s: %w", name, node, err)
	}
	if info.Digest != h.Get(hdrDigest) {
		n.log.Info("a node's shipped snapshot was replaced by a newer one; merging that", "peer", node)
	}
	got, err := n.fetchAndImport(ctx, info)
	if err != nil {
		return err
	}
	n.log.Info("merged a snapshot a node shipped in place of frames", "peer", node, "triplets", got.Triplets)
	return nil
}

// fetchAndImport downloads an object and merges it into the store.
func (n *Node) fetchAndImport(ctx context.Context, info *jetstream.ObjectInfo) (store.ImportInfo, error) {
	if info.Metadata[metaFleet] != n.fleet {
		return store.ImportInfo{}, fmt.Errorf("snapshot %q is another fleet's (fleet id %q, this node's %q)", info.Name, info.Metadata[metaFleet], n.fleet)
	}
	f, err := n.st.TempFile(info.Name)
	if err != nil {
		return store.ImportInfo{}, fmt.Errorf("download snapshot %q: %w", info.Name, err)
	}
	path := f.Name()
	defer os.Remove(path)
	r, err := n.obs.Get(ctx, info.Name)
	if err == nil {
		_, err = io.Copy(f, r) // the object store checks the digest at the end
		r.Close()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return store.ImportInfo{}, fmt.Errorf("download snapshot %q: %w", info.Name, err)
	}
	return n.st.ImportSnapshot(path)
}

// bootstrapWait bounds a bootstrap: long enough to download and merge a
// big fleet snapshot over a slow link (a 10M-triplet fleet's is merged in
// about 1.6 s on loopback), short enough that a stalled download is retried.
const bootstrapWait = 10 * time.Minute

// bootstrap merges the newest snapshot of the fleet, because the stream no
// longer holds what this node needs from sequence need on. Afterwards the
// node applies from the position that snapshot covers (or from need, if
// the snapshot is older; what lies between is lost to this node, and said
// so).
func (n *Node) bootstrap(ctx context.Context, reason string, need uint64) error {
	ctx, cancel := context.WithTimeout(ctx, bootstrapWait)
	defer cancel()
	n.m.bootstrapped()
	n.bootstraps.Add(1)
	objs, err := n.obs.List(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoObjectsFound) {
		return fmt.Errorf("list the fleet's snapshots: %w", err)
	}
	var best *jetstream.ObjectInfo
	var bestSeq uint64
	for _, o := range objs {
		if o.Metadata[metaFleet] != n.fleet {
			continue
		}
		seq, err := strconv.ParseUint(o.Metadata[metaSeq], 10, 64)
		if err != nil {
			continue
		}
		if best == nil || seq > bestSeq {
			best, bestSeq = o, seq
		}
	}
	if best == nil {
		n.log.Error("the stream no longer holds what this node needs, and no fleet snapshot exists: going on without it",
			"reason", reason, "from_seq", need,
			"hint", "state the other nodes learnt before that stays theirs until it comes through their traffic again; snapshots are uploaded after each node's snapshots")
		n.applied.Store(max(n.applied.Load(), need-1))
		return nil
	}
	start := time.Now()
	got, err := n.fetchAndImport(ctx, best)
	if err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	n.log.Info("merged the fleet's newest snapshot", "reason", reason, "from_node", best.Metadata[metaNode],
		"covers_seq", bestSeq, "triplets", got.Triplets, "bytes", best.Size, "duration", time.Since(start).Round(time.Millisecond))
	if bestSeq+1 < need {
		n.log.Error("the newest fleet snapshot is older than the stream: records between are lost to this node",
			"snapshot_seq", bestSeq, "stream_first_seq", need,
			"hint", "upload snapshots more often (--nats-snapshot-interval) or keep the stream longer (--nats-max-age)")
	}
	n.applied.Store(max(n.applied.Load(), bestSeq, need-1))
	n.progressed()
	return nil
}
