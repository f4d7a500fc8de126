// Package promcheck holds greyhold's Grafana dashboard and Prometheus rules
// to the metrics greyhold really exports: every series selector in them,
// read with Prometheus's own PromQL parser, must match a series of a live
// greyhold's /metrics, labels included, as Prometheus would store it under
// the README's scrape configuration (job="greyhold", instance=host:port).
//
// A selector that matches nothing is a panel that stays empty or an alert
// that can never fire, which no syntax check notices: a misspelt metric, a
// label value greyhold never uses, or a series that only some other build
// exports. The package's live test starts the real binary and drives the
// traffic that makes lazily created series appear before it scrapes.
package promcheck

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v3"
)

// Query is one PromQL expression and where it was written.
type Query struct {
	Origin string // "dashboard panel \"Defers/s\" query A", "rule GreyholdDown"
	Expr   string
	// Labels, for a Grafana label_values() variable: the label it lists,
	// which the matching series must carry.
	Label string
}

// Selector is one series selector of a query.
type Selector struct {
	Query    *Query
	Text     string // as written, variables substituted
	Matchers []*labels.Matcher
}

// Name is the selector's metric name, or "" when it has no equality on
// __name__.
func (s Selector) Name() string {
	for _, m := range s.Matchers {
		if m.Name == model.MetricNameLabel && m.Type == labels.MatchEqual {
			return m.Value
		}
	}
	return ""
}

// allValues, followed by a variable's name, stands for a Grafana variable
// whose "All" matches every value (the dashboard's variables have allValue
// ".+"): a matcher with it as its value matches any value that is not
// empty.
const allValues = "__grafana_all_"

// grafanaVars are the variables the dashboard's queries may use, with what
// they are replaced by before parsing. Any other $name fails the check, so a
// misspelt variable is caught too.
var grafanaVars = []struct{ name, value string }{
	{"$__rate_interval", "5m"},
	{"$__interval", "1m"},
	{"$__range", "6h"},
	{"$job", allValues + "job"},
	{"$instance", allValues + "instance"},
}

var leftover = regexp.MustCompile(`\$\{?[A-Za-z_][A-Za-z0-9_]*`)

func substitute(expr string) (string, error) {
	for _, v := range grafanaVars {
		expr = strings.ReplaceAll(expr, v.name, v.value)
	}
	if m := leftover.FindString(expr); m != "" {
		return "", fmt.Errorf("unknown Grafana variable %s", m)
	}
	return expr, nil
}

// restore puts the variables standing for "All" back in a selector's text,
// for messages.
func restore(s string) string {
	for _, v := range grafanaVars {
		if strings.HasPrefix(v.value, allValues) {
			s = strings.ReplaceAll(s, v.value, v.name)
		}
	}
	return s
}

var labelValues = regexp.MustCompile(`^\s*label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*$`)

var pql = parser.NewParser(parser.Options{})

// Selectors parses q and returns its series selectors.
func Selectors(q *Query) ([]Selector, error) {
	expr, err := substitute(q.Expr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", q.Origin, err)
	}
	if m := labelValues.FindStringSubmatch(expr); m != nil {
		ms, err := pql.ParseMetricSelector(m[1])
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", q.Origin, m[1], err)
		}
		return []Selector{{Query: q, Text: restore(m[1]), Matchers: ms}}, nil
	}
	e, err := pql.ParseExpr(expr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", q.Origin, err)
	}
	var out []Selector
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			out = append(out, Selector{Query: q, Text: restore(vs.String()), Matchers: vs.LabelMatchers})
		}
		return nil
	})
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: %q selects no series", q.Origin, q.Expr)
	}
	return out, nil
}

// DashboardQueries returns the PromQL of a Grafana dashboard's panels
// (rows' collapsed panels included) and of its query variables.
func DashboardQueries(path string) ([]Query, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var d struct {
		Panels     []dashPanel `json:"panels"`
		Templating struct {
			List []struct {
				Type, Name string
				Query      json.RawMessage
			}
		}
	}
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var out []Query
	var walk func(ps []dashPanel)
	walk = func(ps []dashPanel) {
		for _, p := range ps {
			for _, t := range p.Targets {
				out = append(out, Query{Origin: fmt.Sprintf("dashboard panel %q query %s", p.Title, t.RefID), Expr: t.Expr})
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q string
		var qm struct{ Query string }
		if json.Unmarshal(v.Query, &q) != nil {
			if err := json.Unmarshal(v.Query, &qm); err != nil {
				return nil, fmt.Errorf("%s: variable %s: query: %w", path, v.Name, err)
			}
			q = qm.Query
		}
		query := Query{Origin: fmt.Sprintf("dashboard variable %s", v.Name), Expr: q}
		if m := labelValues.FindStringSubmatch(q); m != nil {
			query.Label = m[2]
		}
		out = append(out, query)
	}
	for _, q := range out {
		if strings.TrimSpace(q.Expr) == "" {
			return nil, fmt.Errorf("%s: %s has no expression", path, q.Origin)
		}
	}
	return out, nil
}

type dashPanel struct {
	Title   string
	Targets []struct {
		Expr  string
		RefID string `json:"refId"`
	}
	Panels []dashPanel
}

// Rule is one rule of a Prometheus rules file.
type Rule struct {
	Alert, Record string
	Expr          string
	For           string
	Labels        map[string]string
	Annotations   map[string]string
}

// RuleQueries returns the rules of a Prometheus rules file and their
// expressions.
func RuleQueries(path string) ([]Rule, []Query, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	var f struct {
		Groups []struct {
			Name  string
			Rules []Rule
		}
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	var rules []Rule
	var qs []Query
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			rules = append(rules, r)
			name := "alert " + r.Alert
			if r.Record != "" {
				name = "recording rule " + r.Record
			}
			qs = append(qs, Query{Origin: fmt.Sprintf("%s (group %s)", name, g.Name), Expr: r.Expr})
		}
	}
	if len(rules) == 0 {
		return nil, nil, fmt.Errorf("%s: no rules", path)
	}
	return rules, qs, nil
}

// Target is the labels Prometheus adds to every series of a scrape.
type Target struct{ Job, Instance string }

// Scrape reads a /metrics body in the text exposition format and returns
// its series as Prometheus stores them: histogram and summary families
// split into their _bucket, _sum and _count series, the target's job and
// instance labels added, and the series Prometheus makes for every scrape
// (up and scrape_*).
func Scrape(r io.Reader, t Target) ([]labels.Labels, error) {
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("parse /metrics: %w", err)
	}
	names := make([]string, 0, len(fams))
	for n := range fams {
		names = append(names, n)
	}
	sort.Strings(names)
	var out []labels.Labels
	for _, n := range names {
		vec, err := expfmt.ExtractSamples(&expfmt.DecodeOptions{Timestamp: model.Now()}, fams[n])
		if err != nil {
			return nil, fmt.Errorf("/metrics: %s: %w", n, err)
		}
		for _, s := range vec {
			b := labels.NewBuilder(labels.EmptyLabels())
			for k, v := range s.Metric {
				b.Set(string(k), string(v))
			}
			b.Set("job", t.Job)
			b.Set("instance", t.Instance)
			out = append(out, b.Labels())
		}
	}
	for _, n := range []string{"up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_samples_post_metric_relabeling", "scrape_series_added"} {
		out = append(out, labels.FromStrings(model.MetricNameLabel, n, "job", t.Job, "instance", t.Instance))
	}
	return out, nil
}

func matches(m *labels.Matcher, v string) bool {
	if strings.HasPrefix(m.Value, allValues) && m.Type == labels.MatchRegexp {
		return v != ""
	}
	return m.Matches(v)
}

// Check returns one error for each selector that matches none of the
// series, and for each label_values() variable whose label the matching
// series lack. Names in recorded (made by recording rules) count as
// existing.
func Check(series []labels.Labels, sels []Selector, recorded map[string]bool) error {
	var errs []error
	for _, s := range sels {
		if recorded[s.Name()] {
			continue
		}
		found, labelled := false, false
		for _, ls := range series {
			ok := true
			for _, m := range s.Matchers {
				if !matches(m, ls.Get(m.Name)) {
					ok = false
					break
				}
			}
			if ok {
				found = true
				if s.Query.Label == "" || ls.Get(s.Query.Label) != "" {
					labelled = true
					break
				}
			}
		}
		switch {
		case !found:
			errs = append(errs, fmt.Errorf("%s: %s matches no series greyhold exports%s", s.Query.Origin, s.Text, hint(series, s)))
		case !labelled:
			errs = append(errs, fmt.Errorf("%s: the series of %s have no label %q", s.Query.Origin, s.Text, s.Query.Label))
		}
	}
	return errors.Join(errs...)
}

// hint tells what exists under the selector's name: nothing, or the label
// values on offer.
func hint(series []labels.Labels, s Selector) string {
	name := s.Name()
	if name == "" {
		return ""
	}
	vals := map[string]map[string]bool{}
	for _, ls := range series {
		if ls.Get(model.MetricNameLabel) != name {
			continue
		}
		ls.Range(func(l labels.Label) {
			if l.Name == model.MetricNameLabel || l.Name == "job" || l.Name == "instance" {
				return
			}
			if vals[l.Name] == nil {
				vals[l.Name] = map[string]bool{}
			}
			vals[l.Name][l.Value] = true
		})
		if vals[""] == nil {
			vals[""] = map[string]bool{} // marks that the name exists
		}
	}
	if len(vals) == 0 {
		return fmt.Sprintf(" (no metric %s at all)", name)
	}
	var parts []string
	for k, vs := range vals {
		if k == "" {
			continue
		}
		var l []string
		for v := range vs {
			l = append(l, v)
		}
		sort.Strings(l)
		parts = append(parts, fmt.Sprintf("%s in %s", k, strings.Join(l, ", ")))
	}
	sort.Strings(parts)
	if len(parts) == 0 {
		return fmt.Sprintf(" (%s exists, without labels)", name)
	}
	return fmt.Sprintf(" (%s exists with %s)", name, strings.Join(parts, "; "))
}
