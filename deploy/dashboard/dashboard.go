// Package dashboard builds greyhold's Grafana dashboard
// (deploy/grafana/greyhold.json) from the table of rows and panels below,
// through Grafana's Foundation SDK, so that every panel gets the same data
// source variable, the same job and instance filters and a grid position
// without hand-kept JSON.
//
// A panel is a few lines of the table: a kind, a title, what the on-call
// should read in it, a unit and its queries. The fleet's replication has a
// row of its own, whose series only a node joined to NATS exports:
// promcheck's live test has a scenario that makes them appear.
//
// After changing the table, run `make dashboard` (go run ./cmd/dashboard
// in deploy/); the package's test fails while the committed JSON differs.
package dashboard

//lint:file-ignore SA1019 the classic dashboard JSON model is what Grafana's "Import dashboard" and file provisioning take everywhere; the SDK's dashboardv2 needs Grafana 12 with its new layouts turned on

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/variants"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/heatmap"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/stat"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"
)

// UID is the dashboard's identity in Grafana: importing a newer version
// replaces the older one instead of adding a copy.
const UID = "greyhold"

// S is the selector every query carries, so the job and instance variables
// narrow every panel (the package's test holds each query to it).
const S = `job=~"$job", instance=~"$instance"`

// Variables are the dashboard's template variables besides the data
// source: each query's metric exists in every greyhold.
const (
	JobQuery      = `label_values(greyhold_build_info, job)`
	InstanceQuery = `label_values(greyhold_build_info{job=~"$job"}, instance)`
)

type kind int

const (
	series  kind = iota // a time series graph
	stacked             // a time series graph, series stacked
	heat                // a heatmap of histogram buckets
	single              // one value (or a few) for the dashboard's range
)

type query struct {
	expr, legend string
}

type panel struct {
	kind        kind
	title, help string
	unit        string
	queries     []query
	// thresholds colour a single value: the value from which a colour
	// holds, in order (green below the first).
	thresholds []step
}

type step struct {
	from  float64
	color string
}

type row struct {
	title  string
	panels []panel
}

func rate(metric, labels string) string {
	if labels != "" {
		labels += ", "
	}
	return "rate(" + metric + "{" + labels + S + "}[$__rate_interval])"
}

// rows is the dashboard, top to bottom; panels fill a row two or three
// across.
var rows = []row{
	{"Decisions", []panel{
		{kind: stacked, title: "Decisions by reason", unit: "ops",
			help:    "Checks answered per second, by why: new and early-retry are defers; passed is a triplet's first pass after the delay; known, client-awl and whitelist pass at once; overflow passed without greylisting because the memory bound was reached (see Evictions).",
			queries: []query{{"sum by (reason) (" + rate("greyhold_decisions_total", "") + ")", "{{reason}}"}}},
		{kind: series, title: "Defers/s", unit: "ops",
			help:    "Checks deferred per second, by instance. A sudden drop with steady traffic means mail is being let through (whitelists, overflow, not-logged); a sudden rise, a new sender pool or a lost state directory.",
			queries: []query{{`sum by (instance) (` + rate("greyhold_decisions_total", `verdict="defer"`) + `)`, "{{instance}}"}}},
		{kind: heat, title: "Retry delay", unit: "s",
			help:    "How long senders took to come back and pass after their first defer. Most of it should sit just above --delay; mass at hours means senders that retry slowly (a shorter --delay or whitelisting them helps their mail).",
			queries: []query{{"sum by (le) (increase(greyhold_retry_delay_seconds_bucket{" + S + "}[$__rate_interval]))", "{{le}}"}}},
	}},
	{"State", []panel{
		{kind: stacked, title: "Triplets by state", unit: "short",
			help:    "Triplets held in memory: pending (deferred, waiting for a retry) and passed. Compare with --max-entries: pending triplets are evicted once it is reached.",
			queries: []query{{"sum by (state) (greyhold_entries{" + S + "})", "{{state}}"}}},
		{kind: series, title: "Client networks", unit: "short",
			help:    "Client networks with passes counted, and those auto-whitelisted (--auto-whitelist-clients).",
			queries: []query{{"sum by (state) (greyhold_clients{" + S + "})", "{{state}}"}}},
		{kind: series, title: "Evictions and expiry", unit: "ops",
			help: "Evicted: pending triplets dropped to stay within --max-entries; their senders are deferred again on retry. Any eviction means the bound is too low for the traffic. Expired: entries past their retry window or max age, the normal way out.",
			queries: []query{
				{"sum(" + rate("greyhold_evictions_total", "") + ")", "evicted"},
				{"sum(" + rate("greyhold_expired_total", "") + ")", "expired"},
			}},
	}},
	{"Durability", []panel{
		{kind: series, title: "WAL fsync latency", unit: "s",
			help: "How long the log's fsyncs take (p50 and p99). With --fsync=always every answer waits for one; above tens of milliseconds the disk is the bottleneck.",
			queries: []query{
				{"histogram_quantile(0.99, sum by (le, instance) (" + rate("greyhold_wal_fsync_duration_seconds_bucket", "") + "))", "p99 {{instance}}"},
				{"histogram_quantile(0.5, sum by (le, instance) (" + rate("greyhold_wal_fsync_duration_seconds_bucket", "") + "))", "p50 {{instance}}"},
			}},
		{kind: series, title: "Snapshot age", unit: "s",
			help:    "Time since each instance last wrote (or loaded) a snapshot. It should saw-tooth below --snapshot-interval (15m by default); a line that keeps rising means snapshots fail: recovery then replays an ever longer log.",
			queries: []query{{"max by (instance) (greyhold_snapshot_age_seconds{" + S + "})", "{{instance}}"}}},
		{kind: single, title: "Log and snapshot failures", unit: "short",
			help: "Instances whose log cannot be written now (every check is answered DUNNO, unlogged), and snapshots that failed in the dashboard's range. Both should be 0.",
			queries: []query{
				{"sum(greyhold_wal_failed{" + S + "})", "log failing"},
				{"sum(increase(greyhold_snapshot_failures_total{" + S + "}[$__range]))", "snapshot failures"},
			},
			thresholds: []step{{1, "red"}}},
	}},
	{"Connections and errors", []panel{
		{kind: stacked, title: "Open connections", unit: "short",
			help:    "Open client connections by protocol. Postfix keeps one per smtpd process; --max-connections caps each listener.",
			queries: []query{{"sum by (protocol) (greyhold_connections_open{" + S + "})", "{{protocol}}"}}},
		{kind: series, title: "Limit hits", unit: "ops",
			help:    "Requests or connections cut off, by limit: connections (--max-connections reached: the MTA got no answer), sizes, timeouts, and malformed or incomplete requests.",
			queries: []query{{"sum by (limit) (" + rate("greyhold_limit_hits_total", "") + ")", "{{limit}}"}}},
		{kind: series, title: "Not logged and fail-open", unit: "ops",
			help: "Checks answered without greylisting: not logged (the log write failed, answered DUNNO so no mail waits on state that may be lost), internal errors, and passes on overflow (memory bound reached, nothing to evict).",
			queries: []query{
				{"sum(" + rate("greyhold_not_logged_total", "") + ")", "not logged"},
				{"sum by (kind) (" + rate("greyhold_errors_total", `kind=~"not_logged|internal"`) + ")", "answered DUNNO: {{kind}}"},
				{"sum(" + rate("greyhold_decisions_total", `reason="overflow"`) + ")", "passed on overflow"},
			}},
		{kind: single, title: "Not logged and fail-open in range", unit: "short",
			help: "Counts over the dashboard's range of the checks in the panel beside: each should be 0.",
			queries: []query{
				{"sum(increase(greyhold_not_logged_total{" + S + "}[$__range]))", "not logged"},
				{`sum(increase(greyhold_errors_total{kind=~"not_logged|internal", ` + S + `}[$__range]))`, "answered DUNNO"},
				{`sum(increase(greyhold_decisions_total{reason="overflow", ` + S + `}[$__range]))`, "passed on overflow"},
			},
			thresholds: []step{{1, "red"}}},
	}},
	{"Fleet", []panel{
		{kind: series, title: "Replication lag", unit: "s",
			help: "From a change's commit on the node that made it to its apply here (p50 and p99, by instance): milliseconds normally. Seconds mean NATS or this node is slow; minutes that a peer is shipping the backlog of an outage, which clears by itself. Greylisting tolerates seconds: a retry on this host after --delay is deferred again only if the first attempt's record has not arrived.",
			queries: []query{
				{"histogram_quantile(0.99, sum by (le, instance) (" + rate("greyhold_fleet_lag_seconds_bucket", "") + "))", "p99 {{instance}}"},
				{"histogram_quantile(0.5, sum by (le, instance) (" + rate("greyhold_fleet_lag_seconds_bucket", "") + "))", "p50 {{instance}}"},
			}},
		{kind: series, title: "Lag by peer", unit: "s",
			help:    "The lag of the last message each instance applied from each peer (instance from peer). A peer that stops sending keeps its last value: compare with Published and applied.",
			queries: []query{{"max by (instance, peer) (greyhold_fleet_peer_lag_seconds{" + S + "})", "{{instance}} from {{peer}}"}}},
		{kind: series, title: "Publish backlog", unit: "bytes",
			help:    "Log written here and not yet acknowledged by the stream, by instance (estimated from the average frame). Near zero while NATS answers; it grows while NATS is away or refuses to store (lost quorum, permissions), and past --nats-backlog (1 GiB) the node ships a snapshot in its place.",
			queries: []query{{"sum by (instance) (greyhold_fleet_backlog_bytes{" + S + "})", "{{instance}}"}}},
		{kind: series, title: "Publish backlog (frames)", unit: "short",
			help:    "The same backlog in log frames (a frame is one group commit: one change or a batch of them). The frames are exact, the bytes beside estimated.",
			queries: []query{{"sum by (instance) (greyhold_fleet_backlog_frames{" + S + "})", "{{instance}}"}}},
		{kind: series, title: "Published and applied", unit: "ops",
			help: "State changes (records) per second each instance shipped to the stream, and applied of the others'. Every instance applies what the others publish: applied should follow the sum of the others' published.",
			queries: []query{
				{"sum by (instance) (" + rate("greyhold_fleet_published_records_total", "") + ")", "published {{instance}}"},
				{"sum by (instance) (" + rate("greyhold_fleet_applied_records_total", "") + ")", "applied {{instance}}"},
			}},
		{kind: series, title: "Skipped messages", unit: "ops",
			help:    "Messages from the stream not applied, by reason: foreign (a node of another fleet, another secret or key options, publishes on this stream), malformed (not greyhold's, or damaged), snapshot (a snapshot shipped in place of frames could not be merged), metadata. Should be 0; greyhold's log names the sender and the sequence.",
			queries: []query{{"sum by (reason) (" + rate("greyhold_fleet_skipped_messages_total", "") + ")", "{{reason}}"}}},
		{kind: single, title: "Nodes not connected, not caught up, refused", unit: "short",
			help: "Instances not connected to NATS now (they greylist alone), connected but not caught up with the stream (a bootstrap or catch-up under way, /readyz answers 503; or replication failing to set up), and refused by the fleet (another secret or other key options; replication stays off). Each should be 0.",
			queries: []query{
				{"count(greyhold_fleet_connected{" + S + "} == 0)", "not connected"},
				{"count(greyhold_fleet_caught_up{" + S + "} == 0)", "not caught up"},
				{"sum(greyhold_fleet_refused{" + S + "})", "refused"},
			},
			thresholds: []step{{1, "red"}}},
		{kind: single, title: "Bootstraps and snapshot uploads in range", unit: "short",
			help: "Over the dashboard's range: fleet snapshots merged because the stream no longer held what an instance needed (a new node, or one away longer than the stream keeps), snapshots uploaded for new nodes, and uploads that failed (new nodes then start from an older snapshot).",
			queries: []query{
				{"sum(increase(greyhold_fleet_bootstraps_total{" + S + "}[$__range]))", "bootstraps"},
				{"sum(increase(greyhold_fleet_snapshot_uploads_total{" + S + "}[$__range]))", "uploads"},
				{"sum(increase(greyhold_fleet_snapshot_upload_failures_total{" + S + "}[$__range]))", "upload failures"},
			}},
	}},
	{"Requests", []panel{
		{kind: series, title: "Request latency (p99)", unit: "s",
			help:    "From reading a request to writing its answer, by protocol. Postfix waits for it on every RCPT TO; with --fsync=always it includes the log's fsync.",
			queries: []query{{"histogram_quantile(0.99, sum by (le, protocol) (" + rate("greyhold_request_duration_seconds_bucket", "") + "))", "{{protocol}}"}}},
		{kind: series, title: "Connections accepted", unit: "ops",
			help:    "New client connections per second, by protocol. Postfix reuses its connections: a high rate here means clients that connect for each request.",
			queries: []query{{"sum by (protocol) (" + rate("greyhold_connections_total", "") + ")", "{{protocol}}"}}},
	}},
}

var promDS = common.DataSourceRef{Type: cog.ToPtr("prometheus"), Uid: cog.ToPtr("${datasource}")}

// Build returns the dashboard.
func Build() (dashboard.Dashboard, error) {
	b := dashboard.NewDashboardBuilder("greyhold").
		Uid(UID).
		Description("greyhold greylisting policy servers: decisions, state, durability, the fleet's replication, connections and what was let through without greylisting (README: Dashboard and alerts).").
		Tags([]string{"greyhold", "mail"}).
		Refresh("1m").
		Time("now-6h", "now").
		Timezone(common.TimeZoneBrowser).
		Tooltip(dashboard.DashboardCursorSyncCrosshair).
		// Grafana's own annotations (alerts, manual notes), as a new
		// dashboard has them.
		Annotation(dashboard.NewAnnotationQueryBuilder().Name("Annotations & Alerts").BuiltIn(1).Enable(true).Hide(true).
			Type("dashboard").IconColor("rgba(0, 211, 255, 1)").
			Datasource(common.DataSourceRef{Type: cog.ToPtr("grafana"), Uid: cog.ToPtr("-- Grafana --")})).
		WithVariable(dashboard.NewDatasourceVariableBuilder("datasource").Label("Data source").Type("prometheus")).
		WithVariable(queryVariable("job", "Job", JobQuery)).
		WithVariable(queryVariable("instance", "Instance", InstanceQuery))
	id := uint32(1)
	for _, r := range rows {
		b.WithRow(dashboard.NewRowBuilder(r.title).Id(id))
		id++
		w := uint32(24 / len(r.panels))
		if len(r.panels) > 3 {
			w = 6
		}
		for _, p := range r.panels {
			b.WithPanel(p.builder(id, w))
			id++
		}
	}
	return b.Build()
}

// JSON is the dashboard as Grafana imports it, indented, with a newline at
// the end.
func JSON() ([]byte, error) {
	d, err := Build()
	if err != nil {
		return nil, fmt.Errorf("build the dashboard: %w", err)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // PromQL's <, > and & stay readable
	enc.SetIndent("", "  ")
	if err := enc.Encode(d); err != nil {
		return nil, fmt.Errorf("encode the dashboard: %w", err)
	}
	return buf.Bytes(), nil
}

func queryVariable(name, label, q string) *dashboard.QueryVariableBuilder {
	return dashboard.NewQueryVariableBuilder(name).
		Label(label).
		Datasource(promDS).
		Query(dashboard.StringOrMap{Map: map[string]any{"query": q, "refId": "PrometheusVariableQueryEditor-VariableQuery"}}).
		Definition(q).
		Refresh(dashboard.VariableRefreshOnTimeRangeChanged).
		Sort(dashboard.VariableSortAlphabeticalAsc).
		Multi(true).
		IncludeAll(true).
		// New instances are in "All" without a reload of the variable.
		AllValue(".+").
		Current(dashboard.VariableOption{Text: dashboard.StringOrArrayOfString{String: cog.ToPtr("All")},
			Value: dashboard.StringOrArrayOfString{String: cog.ToPtr("$__all")}})
}

func (p panel) targets() []cog.Builder[variants.Dataquery] {
	var ts []cog.Builder[variants.Dataquery]
	for i, q := range p.queries {
		t := prometheus.NewDataqueryBuilder().
			Datasource(promDS).
			RefId(string(rune('A' + i))).
			Expr(q.expr).
			LegendFormat(q.legend)
		switch p.kind {
		case heat:
			t.Format(prometheus.PromQueryFormatHeatmap)
		case single:
			t.Instant()
		default:
			t.Range()
		}
		ts = append(ts, t)
	}
	return ts
}

func (p panel) builder(id, w uint32) cog.Builder[dashboard.Panel] {
	const h = 8
	switch p.kind {
	case heat:
		return heatmap.NewPanelBuilder().Id(id).Title(p.title).Description(p.help).Datasource(promDS).
			Span(w).Height(h).Targets(p.targets()).
			Calculate(false).
			YAxis(heatmap.NewYAxisConfigBuilder().Unit(p.unit)).
			Color(heatmap.NewHeatmapColorOptionsBuilder().Mode(heatmap.HeatmapColorModeScheme).
				Scheme("Oranges").Scale(heatmap.HeatmapColorScaleExponential).Exponent(0.5).Fill("dark-orange").Steps(64)).
			CellValues(heatmap.NewCellValuesBuilder().Unit("short")).
			Tooltip(heatmap.NewHeatmapTooltipBuilder().Mode(common.TooltipDisplayModeSingle).YHistogram(true).ShowColorScale(true)).
			ShowLegend()
	case single:
		steps := []dashboard.Threshold{{Value: nil, Color: "green"}}
		for _, s := range p.thresholds {
			steps = append(steps, dashboard.Threshold{Value: cog.ToPtr(s.from), Color: s.color})
		}
		return stat.NewPanelBuilder().Id(id).Title(p.title).Description(p.help).Datasource(promDS).
			Span(w).Height(h).Targets(p.targets()).Unit(p.unit).
			Thresholds(dashboard.NewThresholdsConfigBuilder().Mode(dashboard.ThresholdsModeAbsolute).Steps(steps)).
			ColorMode(common.BigValueColorModeBackground).
			GraphMode(common.BigValueGraphModeNone).
			TextMode(common.BigValueTextModeValueAndName).
			ReduceOptions(common.NewReduceDataOptionsBuilder().Calcs([]string{"lastNotNull"})).
			Orientation(common.VizOrientationAuto).
			NoValue("0")
	}
	tb := timeseries.NewPanelBuilder().Id(id).Title(p.title).Description(p.help).Datasource(promDS).
		Span(w).Height(h).Targets(p.targets()).Unit(p.unit).Min(0).
		FillOpacity(10).
		ShowPoints(common.VisibilityModeNever).
		Legend(common.NewVizLegendOptionsBuilder().DisplayMode(common.LegendDisplayModeList).
			Placement(common.LegendPlacementBottom).ShowLegend(true)).
		Tooltip(common.NewVizTooltipOptionsBuilder().Mode(common.TooltipDisplayModeMulti).Sort(common.SortOrderDescending))
	if p.kind == stacked {
		tb.FillOpacity(40).Stacking(common.NewStackingConfigBuilder().Mode(common.StackingModeNormal))
	}
	return tb
}
