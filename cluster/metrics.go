package cluster

import (
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/greyhold/greyhold/internal/promset"
)

// metrics are the node's Prometheus collectors; a nil *metrics records
// nothing.
type metrics struct {
	collectors []prometheus.Collector
	set        *promset.Set
	lagHist    prometheus.Histogram
	skips      *prometheus.CounterVec
	boots      prometheus.Counter
	ups        prometheus.Counter
	upFails    prometheus.Counter
	peerLag    *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer, n *Node) (*metrics, error) {
	if reg == nil {
		return nil, nil
	}
	m := &metrics{
		lagHist: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "greyhold_fleet_lag_seconds",
			Help: "Replication lag: from a frame's commit on its node to its apply here.",
			// 1 ms to about 36 minutes: seconds of lag are normal, minutes
			// mean an outage's backlog coming through.
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 22),
		}),
		skips: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "greyhold_fleet_skipped_messages_total",
			Help: "Messages from the stream not applied, by reason: foreign (another fleet), malformed, snapshot (a shipped snapshot that could not be merged), metadata.",
		}, []string{"reason"}),
		boots: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "greyhold_fleet_bootstraps_total",
			Help: "Times this node merged the fleet's newest snapshot because the stream no longer held what it needed.",
		}),
		ups: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "greyhold_fleet_snapshot_uploads_total",
			Help: "Snapshots of this node uploaded to the fleet's object store.",
		}),
		upFails: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "greyhold_fleet_snapshot_upload_failures_total",
			Help: "Snapshot uploads that failed.",
		}),
		peerLag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "greyhold_fleet_peer_lag_seconds",
			Help: "Replication lag of the last message applied from each peer.",
		}, []string{"peer"}),
	}
	for _, r := range []string{"foreign", "malformed", "snapshot", "metadata"} {
		m.skips.WithLabelValues(r)
	}
	b2f := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	counter := func(name, help string, f func() uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(f()) })
	}
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	m.collectors = []prometheus.Collector{
		m.lagHist, m.skips, m.boots, m.ups, m.upFails, m.peerLag,
		gauge("greyhold_fleet_connected", "1 while connected to NATS.", func() float64 { return b2f(n.connected.Load()) }),
		gauge("greyhold_fleet_refused", "1 if the fleet refused this node (another secret or other key options): replication is off.", func() float64 { return b2f(n.refused.Load() != nil) }),
		gauge("greyhold_fleet_caught_up", "1 once this node has applied what the stream held when it started consuming.", func() float64 { return b2f(n.caughtUp.Load()) }),
		gauge("greyhold_fleet_applied_sequence", "Stream sequence of the last message this node handled.", func() float64 { return float64(n.applied.Load()) }),
		gauge("greyhold_fleet_backlog_frames", "Log frames written here and not yet acknowledged by the stream.", func() float64 { return float64(n.backlog().Frames) }),
		gauge("greyhold_fleet_backlog_bytes", "Bytes of those frames (estimated from the average frame).", func() float64 { return float64(n.backlog().Bytes) }),
		gauge("greyhold_fleet_backlog_records", "Records in those frames (estimated from the average frame).", func() float64 { return float64(n.backlog().Records) }),
		counter("greyhold_fleet_published_messages_total", "Messages this node published.", n.published.messages.Load),
		counter("greyhold_fleet_published_frames_total", "Log frames this node published.", n.published.frames.Load),
		counter("greyhold_fleet_published_records_total", "Records this node published.", n.published.records.Load),
		counter("greyhold_fleet_published_bytes_total", "Message body bytes this node published.", n.published.bytes.Load),
		counter("greyhold_fleet_applied_messages_total", "Messages of other nodes applied here.", n.appliedN.messages.Load),
		counter("greyhold_fleet_applied_frames_total", "Log frames of other nodes applied here.", n.appliedN.frames.Load),
		counter("greyhold_fleet_applied_records_total", "Records of other nodes applied here.", n.appliedN.records.Load),
		counter("greyhold_fleet_applied_bytes_total", "Message body bytes of other nodes applied here.", n.appliedN.bytes.Load),
	}
	set, err := promset.Register(reg, "fleet node", m.collectors...)
	if err != nil {
		return nil, err
	}
	m.set = set
	return m, nil
}

func (m *metrics) unregister() {
	if m != nil {
		m.set.Unregister()
	}
}

func (m *metrics) lag(d time.Duration) {
	if m != nil {
		m.lagHist.Observe(max(d, 0).Seconds())
	}
}

func (m *metrics) peer(name string, d time.Duration) {
	if m != nil {
		m.peerLag.WithLabelValues(name).Set(max(d, 0).Seconds())
	}
}

func (m *metrics) skipped(reason string) {
	if m != nil {
		m.skips.WithLabelValues(reason).Inc()
	}
}

func (m *metrics) bootstrapped() {
	if m != nil {
		m.boots.Inc()
	}
}

func (m *metrics) uploaded() {
	if m != nil {
		m.ups.Inc()
	}
}

func (m *metrics) uploadFailed() {
	if m != nil {
		m.upFails.Inc()
	}
}

// Backlog is what this node has written and the stream not acknowledged.
type Backlog struct {
	Frames  uint64 `json:"frames"`
	Records uint64 `json:"records"` // estimated from the average frame
	Bytes   uint64 `json:"bytes"`   // estimated from the average frame
}

func (n *Node) backlog() Backlog {
	ws := n.st.Stats().WAL
	acked := n.acked.Load()
	if ws.LastIndex <= acked {
		return Backlog{}
	}
	b := Backlog{Frames: ws.LastIndex - acked}
	if ws.Frames > 0 {
		b.Records = b.Frames * ws.Records / ws.Frames
		b.Bytes = b.Frames * ws.WrittenBytes / ws.Frames
	}
	return b
}

// Peer is what this node knows of another.
type Peer struct {
	Node       string    `json:"node"`
	LastSeen   time.Time `json:"last_seen"`
	LagSeconds float64   `json:"lag_seconds"`
	Sequence   uint64    `json:"sequence"`
	Frames     uint64    `json:"frames_applied"`
}

// Stats is the node's state, for /v1/stats and greyhold stats.
type Stats struct {
	Node       string  `json:"node"`
	Stream     string  `json:"stream"`
	Connected  bool    `json:"connected"`
	Refused    string  `json:"refused,omitempty"`
	CaughtUp   bool    `json:"caught_up"`
	Applied    uint64  `json:"applied_sequence"`
	PubSeq     uint64  `json:"published_sequence"`
	Acked      uint64  `json:"acked_wal_index"`
	Backlog    Backlog `json:"backlog"`
	Published  uint64  `json:"published_records"`
	AppliedRec uint64  `json:"applied_records"`
	Bootstraps uint64  `json:"bootstraps"`
	Uploads    uint64  `json:"snapshot_uploads"`
	// ShipSnapshot says frames were dropped from the log before they
	// were shipped: a snapshot goes to the fleet in their place.
	ShipSnapshot bool   `json:"ship_snapshot"`
	Peers        []Peer `json:"peers"`
}

// Stats returns a fresh Stats.
func (n *Node) Stats() Stats {
	s := Stats{
		Node:         n.opts.NodeID,
		Stream:       n.opts.Stream,
		Connected:    n.connected.Load(),
		CaughtUp:     n.caughtUp.Load(),
		Applied:      n.applied.Load(),
		PubSeq:       n.pubSeq.Load(),
		Acked:        n.acked.Load(),
		Backlog:      n.backlog(),
		Published:    n.published.records.Load(),
		AppliedRec:   n.appliedN.records.Load(),
		Bootstraps:   n.bootstraps.Load(),
		Uploads:      n.uploadsN.Load(),
		ShipSnapshot: n.snapNeed.Load(),
	}
	if r := n.refused.Load(); r != nil {
		s.Refused = *r
	}
	n.peerMu.Lock()
	for name, p := range n.peers {
		s.Peers = append(s.Peers, Peer{Node: name, LastSeen: p.lastSeen, LagSeconds: p.lag.Seconds(), Sequence: p.seq, Frames: p.frames})
	}
	n.peerMu.Unlock()
	sort.Slice(s.Peers, func(i, j int) bool { return s.Peers[i].Node < s.Peers[j].Node })
	return s
}

// Status is Stats for the HTTP API's fleet section.
func (n *Node) Status() any { return n.Stats() }
