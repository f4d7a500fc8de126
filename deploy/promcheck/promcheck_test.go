package promcheck

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"go.yaml.in/yaml/v3"
)

// root is the repository's top directory (the main module's).
func root(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && bytes.HasPrefix(b, []byte("module github.com/greyhold/greyhold\n")) {
			return dir
		}
		up := filepath.Dir(dir)
		if up == dir {
			t.Fatal("no greyhold go.mod above the working directory")
		}
		dir = up
	}
}

func paths(t *testing.T) (dash, rules, rulesTest string) {
	r := root(t)
	return filepath.Join(r, "deploy/grafana/greyhold.json"),
		filepath.Join(r, "deploy/prometheus/greyhold-alerts.yml"),
		filepath.Join(r, "deploy/prometheus/greyhold-alerts_test.yml")
}

// allSelectors returns the selectors of the dashboard and the rules, and
// the names the rules record.
func allSelectors(t *testing.T) ([]Selector, map[string]bool) {
	t.Helper()
	dash, rulesPath, _ := paths(t)
	qs, err := DashboardQueries(dash)
	if err != nil {
		t.Fatal(err)
	}
	rules, rqs, err := RuleQueries(rulesPath)
	if err != nil {
		t.Fatal(err)
	}
	recorded := map[string]bool{}
	for _, r := range rules {
		if r.Record != "" {
			recorded[r.Record] = true
		}
	}
	qs = append(qs, rqs...)
	var sels []Selector
	for i := range qs {
		s, err := Selectors(&qs[i])
		if err != nil {
			t.Fatal(err)
		}
		sels = append(sels, s...)
	}
	return sels, recorded
}

const fixture = `# TYPE greyhold_decisions_total counter
greyhold_decisions_total{verdict="defer",reason="new"} 3
greyhold_decisions_total{verdict="pass",reason="overflow"} 0
# TYPE greyhold_retry_delay_seconds histogram
greyhold_retry_delay_seconds_bucket{le="300"} 1
greyhold_retry_delay_seconds_bucket{le="+Inf"} 1
greyhold_retry_delay_seconds_sum 301
greyhold_retry_delay_seconds_count 1
# TYPE greyhold_build_info gauge
greyhold_build_info{version="v1"} 1
# TYPE greyhold_wal_failed gauge
greyhold_wal_failed 0
`

// TestCheckFindsWhatDoesNotExist: the checker itself, on a fixed scrape:
// what exists passes; a misspelt name, a label value greyhold never uses,
// a job other than the scrape's, a variable's missing label and an unknown
// Grafana variable are each reported.
func TestCheckFindsWhatDoesNotExist(t *testing.T) {
	series, err := Scrape(strings.NewReader(fixture), Target{Job: "greyhold", Instance: "127.0.0.1:10024"})
	if err != nil {
		t.Fatal(err)
	}
	check := func(expr, label, wantErr string) {
		t.Helper()
		q := &Query{Origin: "test", Expr: expr, Label: label}
		sels, err := Selectors(q)
		if err == nil {
			err = Check(series, sels, map[string]bool{"greyhold:recorded": true})
		}
		switch {
		case wantErr == "" && err != nil:
			t.Errorf("%s: %v", expr, err)
		case wantErr != "" && err == nil:
			t.Errorf("%s: no error, want one with %q", expr, wantErr)
		case wantErr != "" && !strings.Contains(err.Error(), wantErr):
			t.Errorf("%s: %v, want %q in it", expr, err, wantErr)
		}
	}
	// Exists.
	check(`sum by (reason) (rate(greyhold_decisions_total{job=~"$job", instance=~"$instance"}[$__rate_interval]))`, "", "")
	check(`sum(increase(greyhold_decisions_total{reason="overflow"}[$__range]))`, "", "")
	check(`histogram_quantile(0.99, sum by (le) (rate(greyhold_retry_delay_seconds_bucket[5m])))`, "", "")
	check(`greyhold_retry_delay_seconds_count / greyhold_retry_delay_seconds_sum`, "", "")
	check(`up{job="greyhold"} == 0`, "", "")
	check(`max by (job, instance) (greyhold_wal_failed) > 0`, "", "")
	check(`rate(greyhold:recorded[5m])`, "", "")
	check(`label_values(greyhold_build_info{job=~"$job"}, instance)`, "instance", "")
	check(`label_values(greyhold_build_info, version)`, "version", "")
	// Does not.
	check(`rate(greyhold_decision_total[5m])`, "", "no metric greyhold_decision_total at all")
	check(`rate(greyhold_decisions_total{reason="not_logged"}[5m])`, "", "reason in new, overflow")
	check(`greyhold_retry_delay_seconds_bucket{le="299"}`, "", "le in +Inf, 300")
	check(`up{job="node"} == 0`, "", "matches no series")
	check(`greyhold_wal_failed{kind="x"}`, "", "greyhold_wal_failed exists, without labels")
	check(`greyhold_wal_failed + on() greyhold_evictions_total`, "", "no metric greyhold_evictions_total")
	check(`label_values(greyhold_build_info, shard)`, "shard", `no label "shard"`)
	check(`rate(greyhold_decisions_total{instance=~"$host"}[5m])`, "", "unknown Grafana variable $host")
	check(`rate(greyhold_decisions_total[5m]`, "", "unclosed left parenthesis")
}

// TestDashboardQueriesCarryTheVariables: every series a panel selects is
// narrowed by the job and instance variables, so that choosing an
// instance narrows every panel.
func TestDashboardQueriesCarryTheVariables(t *testing.T) {
	dash, _, _ := paths(t)
	qs, err := DashboardQueries(dash)
	if err != nil {
		t.Fatal(err)
	}
	panels := 0
	for i := range qs {
		if strings.HasPrefix(qs[i].Origin, "dashboard variable") {
			continue
		}
		panels++
		sels, err := Selectors(&qs[i])
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range sels {
			var job, inst bool
			for _, m := range s.Matchers {
				job = job || (m.Name == "job" && m.Type == labels.MatchRegexp && m.Value == allValues+"job")
				inst = inst || (m.Name == "instance" && m.Type == labels.MatchRegexp && m.Value == allValues+"instance")
			}
			if !job || !inst {
				t.Errorf("%s: %s lacks job=~\"$job\" or instance=~\"$instance\" (dashboard.S)", s.Query.Origin, s.Text)
			}
		}
	}
	if panels < 10 {
		t.Fatalf("%d panel queries in %s: the dashboard is not what it should be", panels, dash)
	}
}

// TestEveryAlertIsTestedAndExplained: each alert has a severity the
// README's routing knows, a summary and a description, and promtool unit
// tests that see it fire and see it quiet.
func TestEveryAlertIsTestedAndExplained(t *testing.T) {
	_, rulesPath, testPath := paths(t)
	rules, _, err := RuleQueries(rulesPath)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(testPath)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		RuleFiles []string `yaml:"rule_files"`
		Tests     []struct {
			AlertRuleTest []struct {
				Alertname string `yaml:"alertname"`
				ExpAlerts []any  `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		}
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	if len(f.RuleFiles) != 1 || f.RuleFiles[0] != filepath.Base(rulesPath) {
		t.Errorf("%s tests %v, want [%s]", testPath, f.RuleFiles, filepath.Base(rulesPath))
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range f.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	for _, r := range rules {
		if r.Alert == "" {
			continue
		}
		if s := r.Labels["severity"]; s != "critical" && s != "warning" {
			t.Errorf("%s: severity %q, want critical or warning", r.Alert, s)
		}
		if len(r.Annotations["summary"]) < 20 || len(r.Annotations["description"]) < 100 {
			t.Errorf("%s: a summary and a description that say what to do are wanted", r.Alert)
		}
		if !fires[r.Alert] || !quiet[r.Alert] {
			t.Errorf("%s: %s has no test that sees it fire and one that sees it quiet", r.Alert, testPath)
		}
	}
}

// greyhold is a running server.
type greyhold struct {
	cmd                     *exec.Cmd
	policy, line, http, dir string
	log                     *bytes.Buffer
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// binary is the greyhold to run: $GREYHOLD_BIN (make test passes
// bin/greyhold), or one built now from the repository.
func binary(t *testing.T) string {
	if b := os.Getenv("GREYHOLD_BIN"); b != "" {
		abs, err := filepath.Abs(b)
		if err != nil {
			t.Fatal(err)
		}
		return abs
	}
	bin := filepath.Join(t.TempDir(), "greyhold")
	build := exec.Command("go", "build", "-o", bin, "./cmd/greyhold")
	build.Dir = root(t)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func start(t *testing.T, bin string, flags ...string) *greyhold {
	t.Helper()
	g := &greyhold{policy: freePort(t), line: freePort(t), http: freePort(t), dir: t.TempDir(), log: &bytes.Buffer{}}
	args := append([]string{"serve", "--data-dir", g.dir,
		"--policy-listen", g.policy, "--line-listen", g.line, "--http-listen", g.http}, flags...)
	g.cmd = exec.Command(bin, args...)
	g.cmd.Stdout, g.cmd.Stderr = g.log, g.log
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		g.cmd.Process.Signal(os.Interrupt)
		done := make(chan error, 1)
		go func() { done <- g.cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			g.cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("greyhold's log:\n%s", g.log)
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + g.http + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return g
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("greyhold not ready after 30 s:\n%s", g.log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (g *greyhold) post(t *testing.T, path, body string) string {
	t.Helper()
	resp, err := http.Post("http://"+g.http+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST %s: %s %s", path, resp.Status, b)
	}
	return string(b)
}

// policy asks over the Postfix policy protocol, at Unix time at (the
// server runs with --test-clock), and returns the action line.
func (g *greyhold) policy1(t *testing.T, client string, at int64) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", g.policy, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=%s\nclient_name=mail.example.org\nsender=alice@example.org\nrecipient=bob@example.net\npolicy_test_time=%d\n\n", client, at)
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(line)
}

func (g *greyhold) scrape(t *testing.T) []labels.Labels {
	t.Helper()
	resp, err := http.Get("http://" + g.http + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	series, err := Scrape(resp.Body, Target{Job: "greyhold", Instance: g.http})
	if err != nil {
		t.Fatal(err)
	}
	return series
}

// A scenario is one way of running greyhold, with the traffic that makes
// its lazily created series appear (a retry delay observed, a snapshot
// written). The union of the scenarios' scrapes is what the dashboard and
// the rules may name. flags starts what the scenario runs beside greyhold
// and returns greyhold's flags.
type scenario struct {
	name  string
	flags func(t *testing.T, bin string) []string
	drive func(t *testing.T, g *greyhold)
}

func static(flags ...string) func(*testing.T, string) []string {
	return func(*testing.T, string) []string { return flags }
}

var scenarios = []scenario{
	{"single server", static("--test-clock", "--delay", "300s", "--fsync", "always"), func(t *testing.T, g *greyhold) {
		now := time.Now().Unix()
		if a := g.policy1(t, "192.0.2.10", now); !strings.HasPrefix(a, "action=DEFER_IF_PERMIT") {
			t.Fatalf("first policy request: %s", a)
		}
		if a := g.policy1(t, "192.0.2.10", now+301); !strings.HasPrefix(a, "action=PREPEND X-Greylist") {
			t.Fatalf("retry after the delay: %s", a)
		}
		c, err := net.DialTimeout("tcp", g.line, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "198.51.100.7 <carol@example.org> <dave@example.net>\n")
		if l, err := bufio.NewReader(c).ReadString('\n'); err != nil || !strings.HasPrefix(l, "DEFER ") {
			t.Fatalf("line protocol: %q, %v", l, err)
		}
		c.Close()
		g.post(t, "/v1/check", `{"client_address":"203.0.113.5","sender":"erin@example.org","recipient":"frank@example.net"}`)
		g.post(t, "/v1/snapshot", "")
	}},
	fleetScenario(),
}

// fleetScenario runs greyhold joined to a fleet: a real nats-server with
// JetStream (the one e2e/nats-server.sh builds, as the fleet's process
// tests run it) and a peer node, whose change the scraped node applies so
// that the per-peer series exist; the scraped node ships a change of its
// own and uploads a snapshot.
func fleetScenario() scenario {
	var peer *greyhold
	return scenario{"fleet", func(t *testing.T, bin string) []string {
		url := startNATS(t)
		secret := filepath.Join(t.TempDir(), "fleet-secret")
		if err := os.WriteFile(secret, []byte(strings.Repeat("5e", 32)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		peer = start(t, bin, "--test-clock", "--nats", url, "--node-id", "mx2", "--secret-file", secret)
		return []string{"--test-clock", "--nats", url, "--node-id", "mx1", "--secret-file", secret}
	}, func(t *testing.T, g *greyhold) {
		now := time.Now().Unix()
		if a := g.policy1(t, "192.0.2.10", now); !strings.HasPrefix(a, "action=DEFER_IF_PERMIT") {
			t.Fatalf("first policy request: %s", a)
		}
		if a := peer.policy1(t, "198.51.100.7", now); !strings.HasPrefix(a, "action=DEFER_IF_PERMIT") {
			t.Fatalf("the peer's policy request: %s", a)
		}
		g.post(t, "/v1/snapshot", "")
		deadline := time.Now().Add(30 * time.Second)
		for {
			var have bool
			for _, ls := range g.scrape(t) {
				have = have || (ls.Get(model.MetricNameLabel) == "greyhold_fleet_peer_lag_seconds" && ls.Get("peer") == "mx2")
			}
			if have {
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("the node applied nothing of its peer in 30 s")
			}
			time.Sleep(50 * time.Millisecond)
		}
	}}
}

// startNATS runs a nats-server with JetStream on loopback until the test
// ends and returns its URL: $GREYHOLD_NATS_SERVER, or the one
// e2e/nats-server.sh builds (or finds in its cache).
func startNATS(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("GREYHOLD_NATS_SERVER")
	if bin == "" {
		var stderr bytes.Buffer
		cmd := exec.Command("bash", filepath.Join(root(t), "e2e/nats-server.sh"))
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("e2e/nats-server.sh: %v\n%s", err, stderr.String())
		}
		bin = strings.TrimSpace(string(out))
	}
	addr, mon := freePort(t), freePort(t)
	host, port, _ := net.SplitHostPort(addr)
	_, mport, _ := net.SplitHostPort(mon) // monitoring listens on -a's host too
	var log bytes.Buffer
	cmd := exec.Command(bin, "-a", host, "-p", port, "-js", "-sd", t.TempDir(), "-m", mport)
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		if t.Failed() {
			t.Logf("nats-server's log:\n%s", log.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + mon + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return "nats://" + addr
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("nats-server not healthy after 30 s:\n%s", log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestLiveGreyhold: every selector of the dashboard and the rules matches
// a series of a running greyhold's /metrics.
func TestLiveGreyhold(t *testing.T) {
	sels, recorded := allSelectors(t)
	bin := binary(t)
	var series []labels.Labels
	names := map[string]bool{}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			g := start(t, bin, sc.flags(t, bin)...)
			sc.drive(t, g)
			s := g.scrape(t)
			for _, ls := range s {
				names[ls.Get(model.MetricNameLabel)] = true
			}
			series = append(series, s...)
		})
	}
	if t.Failed() {
		return
	}
	if err := Check(series, sels, recorded); err != nil {
		t.Fatalf("the dashboard or the rules name series that greyhold does not export:\n%v", err)
	}
	used := map[string]bool{}
	for _, s := range sels {
		used[s.Name()] = true
	}
	t.Logf("%d selectors over %d metric names, all among the %d series (%d names) greyhold exported", len(sels), len(used), len(series), len(names))
}
