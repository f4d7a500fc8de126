package wal

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/greyhold/greyhold/internal/promset"
)

// metrics are the log's Prometheus collectors. A nil *metrics (no
// Registerer) records nothing.
type metrics struct {
	collectors []prometheus.Collector
	set        *promset.Set

	frames       prometheus.Counter
	records      prometheus.Counter
	bytes        prometheus.Counter
	fsync        prometheus.Histogram
	frameRecords prometheus.Histogram
	repairs      prometheus.Counter
	tornBytes    prometheus.Counter
	failed       prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer, l *Log) (*metrics, error) {
	if reg == nil {
		return nil, nil
	}
	m := &metrics{
		frames: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "greyhold_wal_frames_written_total",
			Help: "Frames (group-commit batches) written to the WAL.",
		}),
		records: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "greyhold_wal_records_written_total",
			Help: "Records written to the WAL.",
		}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "greyhold_wal_written_bytes_total",
			Help: "Bytes written to WAL segment files, framing included.",
		}),
		fsync: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "greyhold_wal_fsync_duration_seconds",
			Help: "Duration of WAL segment fsyncs.",
			// 100µs (a fast NVMe write cache) to about 3.3s (a disk in
			// trouble, well past the slow-fsync warning).
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		frameRecords: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "greyhold_wal_frame_records",
			Help: "Records per WAL frame: how well group commit batches.",
			// 1 (no batching) to 262144 (a 4 MiB batch of 16-byte records).
			Buckets: prometheus.ExponentialBuckets(1, 4, 10),
		}),
		repairs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "greyhold_wal_repairs_total",
			Help: "Times the WAL was repaired: a torn tail cut, damage skipped, or the log reopened after a failure.",
		}),
		tornBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "greyhold_wal_torn_bytes_total",
			Help: "Bytes of torn tail (an unfinished last write) cut off the WAL at open.",
		}),
		failed: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "greyhold_wal_failed",
			Help: "1 while the WAL cannot be written and appends fail.",
		}),
	}
	m.collectors = []prometheus.Collector{
		m.frames, m.records, m.bytes, m.fsync, m.frameRecords,
		m.repairs, m.tornBytes, m.failed,
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "greyhold_wal_lost_frames_total",
			Help: "WAL frames known lost: damaged or missing after the snapshot's start at open, or removed from under the running log. Covered damage is not counted.",
		}, func() float64 { return float64(l.lostFrames.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "greyhold_wal_skipped_bytes_total",
			Help: "Bytes of damage skipped when reading the WAL.",
		}, func() float64 { return float64(l.skippedBytes.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "greyhold_wal_generation",
			Help: "Generation stamped on the frames being written; it changes at every open and reopen.",
		}, func() float64 { return float64(l.curGen.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "greyhold_wal_disk_bytes",
			Help: "Bytes in WAL segment files.",
		}, func() float64 { return float64(l.diskBytes.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "greyhold_wal_last_index",
			Help: "Index of the last frame written.",
		}, func() float64 { return float64(l.last.Load()) }),
	}
	set, err := promset.Register(reg, "wal", m.collectors...)
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

func (m *metrics) wrote(records uint64, bytes int) {
	if m == nil {
		return
	}
	m.frames.Inc()
	m.records.Add(float64(records))
	m.bytes.Add(float64(bytes))
	m.frameRecords.Observe(float64(records))
}

func (m *metrics) synced(seconds float64) {
	if m != nil {
		m.fsync.Observe(seconds)
	}
}

func (m *metrics) repaired(r *RepairReport) {
	if m == nil || !r.Changed() {
		return
	}
	m.repairs.Inc()
	if r.Torn != nil {
		m.tornBytes.Add(float64(r.Torn.Bytes))
	}
}

func (m *metrics) setFailed(failed bool) {
	if m == nil {
		return
	}
	if failed {
		m.failed.Set(1)
	} else {
		m.failed.Set(0)
	}
}
