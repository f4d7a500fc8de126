package server

import (
	"math/bits"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/greyhold/greyhold/engine"
)

type metrics struct {
	policyDur, lineDur, httpDur *latency
	connsOpen                   *prometheus.GaugeVec
	connsTotal                  *prometheus.CounterVec
	limitHits                   *prometheus.CounterVec
	errors                      *prometheus.CounterVec
	retryDelay                  prometheus.Histogram
	// ruleDecided counts, by Decision.Rule and verdict (0 defer, 1 pass),
	// the decisions of the selection rules; ruleNoted the matches of each
	// none rule, by its index.
	ruleDecided [][2]prometheus.Counter
	ruleNoted   []prometheus.Counter
	// operator counts the changes made over the API to one triplet or
	// client network (triplet.go), by kind.
	operator *prometheus.CounterVec
}

func (m *metrics) countRule(d *engine.Decision) {
	v := 0
	if d.Verdict == engine.Pass {
		v = 1
	}
	if int(d.Rule) < len(m.ruleDecided) && m.ruleDecided[d.Rule][v] != nil {
		m.ruleDecided[d.Rule][v].Inc()
	}
	for n := d.Noted; n != 0; n &= n - 1 {
		if i := bits.TrailingZeros64(n); i < len(m.ruleNoted) && m.ruleNoted[i] != nil {
			m.ruleNoted[i].Inc()
		}
	}
}

// latencyBuckets run from 10 µs (a pipelined check) to 1 s (a request
// stuck behind an fsync on a sick disk).
var latencyBuckets = []float64{1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1}

// retryBuckets follow how MTAs retry: Postfix's first retry comes after
// minimal_backoff_time (300 s), then doubles; others try at 15 or 30
// minutes, or hours.
var retryBuckets = []float64{60, 120, 300, 360, 450, 600, 900, 1200, 1800, 3600, 7200, 14400, 28800, 86400, 172800}

func newMetrics(s *Server, reg *prometheus.Registry) *metrics {
	m := &metrics{
		policyDur: newLatency(),
		lineDur:   newLatency(),
		httpDur:   newLatency(),
		connsOpen: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "greyhold_connections_open", Help: "Open client connections, by protocol.",
		}, []string{"protocol"}),
		connsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "greyhold_connections_total", Help: "Client connections accepted, by protocol.",
		}, []string{"protocol"}),
		limitHits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "greyhold_limit_hits_total",
			Help: "Requests or connections cut off by a limit (request_bytes, line_bytes, attributes, connections, read_timeout, http_body_bytes, http_body_budget) or for breaking the protocol (malformed, incomplete).",
		}, []string{"limit"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "greyhold_errors_total",
			Help: "Requests answered without greylisting: bad_request (no client address or recipient), not_logged (the log failed: fail open), clock (the clock is implausible: fail open), internal.",
		}, []string{"kind"}),
		operator: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "greyhold_operator_changes_total",
			Help: "Changes an operator made over the API: pass (a triplet released), forget (a triplet forgotten), forget_client (a client network's auto-whitelist forgotten).",
		}, []string{"change"}),
		retryDelay: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "greyhold_retry_delay_seconds",
			Help:    "How long senders took to come back and pass after their first defer: tune --delay with it.",
			Buckets: retryBuckets,
		}),
	}
	for _, p := range []string{"policy", "line", "http"} {
		m.connsOpen.WithLabelValues(p)
		m.connsTotal.WithLabelValues(p)
	}
	for _, l := range []string{limitRequest, limitLine, limitAttributes, limitMalformed, "incomplete", "connections", "read_timeout", limitHTTPBody, limitHTTPBudget} {
		m.limitHits.WithLabelValues(l)
	}
	for _, k := range []string{"bad_request", "not_logged", "clock", "internal"} {
		m.errors.WithLabelValues(k)
	}
	for _, k := range []string{"pass", "forget", "forget_client"} {
		m.operator.WithLabelValues(k)
	}
	ruleDecisions := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "greyhold_rule_decisions_total",
		Help: "Decisions by the selection rule that made them (default: no rule did) and verdict; in shadow mode, what enforcement would do.",
	}, []string{"rule", "verdict"})
	ruleMatches := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "greyhold_rule_matches_total", Help: "Matches of selection rules whose action is none.",
	}, []string{"rule"})
	shadow := prometheus.NewGauge(prometheus.GaugeOpts{Name: "greyhold_shadow", Help: "1 in shadow mode (--shadow): every answer is DUNNO."})
	if s.cfg.Shadow {
		shadow.Set(1)
	}
	sel := s.st.EngineOptions().Select
	for i, name := range s.ruleNames {
		if i == 0 || sel.Rules[i-1].Action != engine.ActNone {
			m.ruleDecided = append(m.ruleDecided, [2]prometheus.Counter{
				ruleDecisions.WithLabelValues(name, "defer"), ruleDecisions.WithLabelValues(name, "pass")})
		} else {
			m.ruleDecided = append(m.ruleDecided, [2]prometheus.Counter{})
		}
	}
	m.ruleNoted = make([]prometheus.Counter, len(sel.Rules))
	for i, r := range sel.Rules {
		if r.Action == engine.ActNone {
			m.ruleNoted[i] = ruleMatches.WithLabelValues(r.Name)
		}
	}
	dur := &latencies{
		desc: prometheus.NewDesc("greyhold_request_duration_seconds",
			"Time from reading a request to writing its answer, by protocol.", []string{"protocol"}, nil),
		protos: []string{"policy", "line", "http"},
		hs:     []*latency{m.policyDur, m.lineDur, m.httpDur},
	}
	bodies := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "greyhold_http_body_bytes",
		Help: "Bytes of HTTP request bodies being read or held now, against --http-body-budget.",
	}, func() float64 { return float64(s.bodies.used.Load()) })
	if reg != nil {
		reg.MustRegister(dur, m.connsOpen, m.connsTotal, m.limitHits, m.errors, m.retryDelay, m.operator, bodies, ruleDecisions, ruleMatches, shadow, &stateCollector{s: s})
	}
	return m
}

// stateCollector reads the store's counters at scrape time, so checks pay
// nothing for them: the engine counts decisions per shard under the lock it
// holds anyway.
type stateCollector struct{ s *Server }

var (
	descDecisions  = prometheus.NewDesc("greyhold_decisions_total", "Decisions by verdict and reason.", []string{"verdict", "reason"}, nil)
	descEntries    = prometheus.NewDesc("greyhold_entries", "Triplets in memory by state: pending, passed, and forgotten (tombstones of triplets an operator forgot); expired ones count until the wheel drops them.", []string{"state"}, nil)
	descClients    = prometheus.NewDesc("greyhold_clients", "Client networks with passes counted, and those auto-whitelisted.", []string{"state"}, nil)
	descRules      = prometheus.NewDesc("greyhold_whitelist_rules", "Whitelist rules in force, by source.", []string{"source"}, nil)
	descEvicted    = prometheus.NewDesc("greyhold_evictions_total", "Pending triplets evicted to stay within --max-entries.", nil, nil)
	descExpired    = prometheus.NewDesc("greyhold_expired_total", "Entries dropped after their retry window or max age.", nil, nil)
	descSnapAge    = prometheus.NewDesc("greyhold_snapshot_age_seconds", "Seconds since the last snapshot was written (or loaded).", nil, nil)
	descSnapDur    = prometheus.NewDesc("greyhold_snapshot_duration_seconds", "How long the last snapshot took to write.", nil, nil)
	descSnapBytes  = prometheus.NewDesc("greyhold_snapshot_bytes", "Size of the last snapshot.", nil, nil)
	descSnapFail   = prometheus.NewDesc("greyhold_snapshot_failures_total", "Snapshots that failed.", nil, nil)
	descNotLogged  = prometheus.NewDesc("greyhold_not_logged_total", "Checks whose change the log could not take (answered DUNNO).", nil, nil)
	descUnknownRec = prometheus.NewDesc("greyhold_unknown_records_total", "Log records of types this version does not know, skipped.", nil, nil)
	descReady      = prometheus.NewDesc("greyhold_ready", "1 once recovery is done and listeners are up, 0 while draining.", nil, nil)
	descClockBad   = prometheus.NewDesc("greyhold_clock_implausible", "1 while the clock reads a time greyhold cannot be running at (before 2025, or past 2087): checks fail open and nothing is recorded.", nil, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descDecisions, descEntries, descClients, descRules, descEvicted, descExpired,
		descSnapAge, descSnapDur, descSnapBytes, descSnapFail, descNotLogged, descUnknownRec, descReady, descClockBad} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.st.Stats()
	e := &st.Engine
	for _, r := range engine.Reasons() {
		verdict := "pass"
		if r == engine.ReasonNew || r == engine.ReasonEarlyRetry {
			verdict = "defer"
		}
		ch <- prometheus.MustNewConstMetric(descDecisions, prometheus.CounterValue, float64(e.Decided(r)), verdict, r.String())
	}
	ch <- prometheus.MustNewConstMetric(descEntries, prometheus.GaugeValue, float64(e.Pending), "pending")
	ch <- prometheus.MustNewConstMetric(descEntries, prometheus.GaugeValue, float64(e.Passed), "passed")
	ch <- prometheus.MustNewConstMetric(descEntries, prometheus.GaugeValue, float64(e.Forgotten), "forgotten")
	ch <- prometheus.MustNewConstMetric(descClients, prometheus.GaugeValue, float64(e.Clients), "counted")
	ch <- prometheus.MustNewConstMetric(descClients, prometheus.GaugeValue, float64(e.Listed), "whitelisted")
	ch <- prometheus.MustNewConstMetric(descRules, prometheus.GaugeValue, float64(e.Rules), "runtime")
	static := 0
	if w := c.s.wl.Load(); w != nil {
		static = w.Len()
	}
	ch <- prometheus.MustNewConstMetric(descRules, prometheus.GaugeValue, float64(static), "files")
	ch <- prometheus.MustNewConstMetric(descEvicted, prometheus.CounterValue, float64(e.Evicted))
	ch <- prometheus.MustNewConstMetric(descExpired, prometheus.CounterValue, float64(e.Expired))
	ch <- prometheus.MustNewConstMetric(descUnknownRec, prometheus.CounterValue, float64(e.UnknownRecords))
	if ls := st.LastSnapshot; ls != nil {
		ch <- prometheus.MustNewConstMetric(descSnapAge, prometheus.GaugeValue, time.Since(ls.At).Seconds())
		ch <- prometheus.MustNewConstMetric(descSnapDur, prometheus.GaugeValue, ls.Duration.Seconds())
		ch <- prometheus.MustNewConstMetric(descSnapBytes, prometheus.GaugeValue, float64(ls.Bytes))
	}
	ch <- prometheus.MustNewConstMetric(descSnapFail, prometheus.CounterValue, float64(st.SnapshotFailures))
	ch <- prometheus.MustNewConstMetric(descNotLogged, prometheus.CounterValue, float64(st.NotLogged))
	ready := 0.0
	if c.s.isReady() {
		ready = 1
	}
	ch <- prometheus.MustNewConstMetric(descReady, prometheus.GaugeValue, ready)
	clockBad := 0.0
	if st.ClockImplausible {
		clockBad = 1
	}
	ch <- prometheus.MustNewConstMetric(descClockBad, prometheus.GaugeValue, clockBad)
}
