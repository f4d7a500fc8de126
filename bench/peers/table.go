package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
)

// runs.tsv, one line per server and workload, tab-separated:
//
//	server conns pipeline new status rss_kb cpu_s json note
//
// status is "ok" (json is bench/load --json output), "na" (no figure:
// note says why) or "skip" (not run: note says why). rss_kb is the
// server's VmRSS after the run and cpu_s the CPU time (user and system,
// all threads) the server used during it ("" when unknown).

// record is one line of runs.tsv with its result.
type record struct {
	server   string
	conns    int
	pipeline int
	newFrac  string // as given, e.g. "0.1": the workload's key
	status   string
	rssKB    int64   // -1: unknown
	cpuS     float64 // -1: unknown
	note     string
	res      *loadResult
}

// loadResult is the part of bench/load's --json output the table shows.
type loadResult struct {
	Requests  uint64  `json:"requests"`
	ElapsedS  float64 `json:"elapsed_s"`
	ReqPerS   float64 `json:"req_per_s"`
	LatencyMs struct {
		P50 float64 `json:"p50"`
		P99 float64 `json:"p99"`
	} `json:"latency_ms"`
	Replies        map[string]uint64 `json:"replies"`
	Other          uint64            `json:"other"`
	Errors         uint64            `json:"errors"`
	ClientCPUCores float64           `json:"client_cpu_cores"`
}

type workloadKey struct {
	conns, pipeline int
	newFrac         string
}

func (r *record) key() workloadKey { return workloadKey{r.conns, r.pipeline, r.newFrac} }

func runTable(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("table", flag.ContinueOnError)
	fs.SetOutput(stderr)
	runsPath := fs.String("runs", "", "runs.tsv written by bench/peers.sh")
	mdPath := fs.String("md", "", "also write the table as Markdown into this file")
	servers := fs.String("servers", "", "servers in the order to show them (default: as first met)")
	ref := fs.String("reference", "greyhold", "the server whose throughput the ratio column divides")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *runsPath == "" {
		fmt.Fprintln(stderr, "peers table: --runs is required")
		return 2
	}
	recs, err := readRuns(*runsPath)
	if err != nil {
		fmt.Fprintln(stderr, "peers table:", err)
		return 1
	}
	var order []string
	if *servers != "" {
		order = strings.Split(*servers, ",")
	}
	t := buildTable(recs, order, *ref)
	t.writeText(stdout)
	if *mdPath != "" {
		f, err := os.Create(*mdPath)
		if err != nil {
			fmt.Fprintln(stderr, "peers table:", err)
			return 1
		}
		t.writeMarkdown(f)
		if err := f.Close(); err != nil {
			fmt.Fprintln(stderr, "peers table:", err)
			return 1
		}
	}
	return 0
}

func readRuns(path string) ([]*record, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var recs []*record
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		r, err := parseRun(line)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %v", path, n, err)
		}
		recs = append(recs, r)
	}
	return recs, sc.Err()
}

func parseRun(line string) (*record, error) {
	f := strings.Split(line, "\t")
	if len(f) != 9 {
		return nil, fmt.Errorf("want 9 tab-separated fields, have %d", len(f))
	}
	r := &record{server: f[0], newFrac: f[3], status: f[4], rssKB: -1, cpuS: -1, note: f[8]}
	var err error
	if r.conns, err = strconv.Atoi(f[1]); err != nil {
		return nil, fmt.Errorf("conns: %v", err)
	}
	if r.pipeline, err = strconv.Atoi(f[2]); err != nil {
		return nil, fmt.Errorf("pipeline: %v", err)
	}
	if _, err := strconv.ParseFloat(f[3], 64); err != nil {
		return nil, fmt.Errorf("new fraction: %v", err)
	}
	if f[5] != "" {
		if r.rssKB, err = strconv.ParseInt(f[5], 10, 64); err != nil {
			return nil, fmt.Errorf("rss_kb: %v", err)
		}
	}
	if f[6] != "" {
		if r.cpuS, err = strconv.ParseFloat(f[6], 64); err != nil {
			return nil, fmt.Errorf("cpu_s: %v", err)
		}
	}
	switch r.status {
	case "ok":
		b, err := os.ReadFile(f[7])
		if err != nil {
			return nil, err
		}
		r.res = &loadResult{}
		if err := json.Unmarshal(b, r.res); err != nil {
			return nil, fmt.Errorf("%s: %v", f[7], err)
		}
	case "na", "skip":
	default:
		return nil, fmt.Errorf("status %q: want ok, na or skip", r.status)
	}
	return r, nil
}

// table is the laid-out comparison: rows grouped by workload, servers in
// order within each, and the notes the "n/a" cells refer to.
type table struct {
	ref    string
	header []string
	rows   [][]string
	// groupEnd marks the last row of each workload (a rule follows it
	// in the text form).
	groupEnd []bool
	notes    []string
}

func buildTable(recs []*record, order []string, ref string) *table {
	var keys []workloadKey
	byKey := map[workloadKey]map[string]*record{}
	for _, r := range recs {
		k := r.key()
		if byKey[k] == nil {
			byKey[k] = map[string]*record{}
			keys = append(keys, k)
		}
		byKey[k][r.server] = r
		if !slices.Contains(order, r.server) {
			order = append(order, r.server)
		}
	}
	t := &table{ref: ref, header: []string{"conns", "pipeline", "new", "server", "req/s", "p50", "p99", "RSS", "server cores", "load cores", "deferred", ref + "/this"}}
	noteIndex := map[string]int{}
	noteRef := func(s string) string {
		i, ok := noteIndex[s]
		if !ok {
			t.notes = append(t.notes, s)
			i = len(t.notes)
			noteIndex[s] = i
		}
		return "[" + strconv.Itoa(i) + "]"
	}
	for _, k := range keys {
		rs := byKey[k]
		var refRate float64
		if r := rs[ref]; r != nil && r.res != nil {
			refRate = r.res.ReqPerS
		}
		first := len(t.rows)
		for _, s := range order {
			r := rs[s]
			if r == nil {
				continue
			}
			row := []string{strconv.Itoa(k.conns), strconv.Itoa(k.pipeline), k.newFrac, s}
			if r.res == nil {
				what := "n/a"
				if r.status == "skip" {
					what = "skipped"
				}
				row = append(row, what+" "+noteRef(r.note), "", "", rss(r.rssKB), "", "", "", "")
			} else {
				ratio := "—"
				if s != ref && refRate > 0 && r.res.ReqPerS > 0 {
					ratio = fmtRatio(refRate / r.res.ReqPerS)
				}
				row = append(row, fmtRate(r.res.ReqPerS), fmtMs(r.res.LatencyMs.P50), fmtMs(r.res.LatencyMs.P99),
					rss(r.rssKB), serverCores(r), strconv.FormatFloat(r.res.ClientCPUCores, 'f', 2, 64), fmtDeferred(r.res), ratio)
			}
			t.rows = append(t.rows, row)
			t.groupEnd = append(t.groupEnd, false)
		}
		if len(t.rows) > first {
			t.groupEnd[len(t.rows)-1] = true
		}
	}
	return t
}

func (t *table) writeText(w io.Writer) {
	var buf bytes.Buffer
	tw := tabwriter.NewWriter(&buf, 0, 0, 2, ' ', tabwriter.AlignRight)
	line := func(cells []string) {
		fmt.Fprintln(tw, strings.Join(cells, "\t")+"\t")
	}
	line(t.header)
	for i, row := range t.rows {
		line(row)
		if t.groupEnd[i] && i < len(t.rows)-1 {
			// Empty cells, not an empty line: tabwriter would restart
			// its column widths after a line without tabs.
			fmt.Fprintln(tw, strings.Repeat("\t", len(t.header)))
		}
	}
	tw.Flush()
	for _, l := range strings.SplitAfter(buf.String(), "\n") {
		if l != "" {
			fmt.Fprintln(w, strings.TrimRight(l, " \n"))
		}
	}
	if len(t.notes) > 0 {
		fmt.Fprintln(w)
	}
	for i, n := range t.notes {
		fmt.Fprintf(w, "[%d] %s\n", i+1, n)
	}
}

func (t *table) writeMarkdown(w io.Writer) {
	fmt.Fprintln(w, "| "+strings.Join(t.header, " | ")+" |")
	align := make([]string, len(t.header))
	for i := range align {
		align[i] = "---:"
	}
	align[3] = ":---"
	fmt.Fprintln(w, "|"+strings.Join(align, "|")+"|")
	for _, row := range t.rows {
		cells := make([]string, len(row))
		for i, c := range row {
			cells[i] = strings.ReplaceAll(c, "|", `\|`)
		}
		fmt.Fprintln(w, "| "+strings.Join(cells, " | ")+" |")
	}
	if len(t.notes) > 0 {
		fmt.Fprintln(w)
	}
	for i, n := range t.notes {
		fmt.Fprintf(w, "[%d] %s\n", i+1, n)
		if i < len(t.notes)-1 {
			fmt.Fprintln(w)
		}
	}
}

// fmtRate renders requests a second with thousands separators.
func fmtRate(v float64) string {
	s := strconv.FormatInt(int64(v+0.5), 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// fmtMs renders milliseconds with three significant digits.
func fmtMs(v float64) string {
	prec := 3
	switch {
	case v >= 100:
		prec = 0
	case v >= 10:
		prec = 1
	case v >= 1:
		prec = 2
	}
	return strconv.FormatFloat(v, 'f', prec, 64) + " ms"
}

func fmtRatio(v float64) string {
	prec := 2
	switch {
	case v >= 100:
		prec = 0
	case v >= 10:
		prec = 1
	}
	return strconv.FormatFloat(v, 'f', prec, 64) + "×"
}

// serverCores is the server's CPU time over the measured time: how many
// cores it kept busy.
func serverCores(r *record) string {
	if r.cpuS < 0 || r.res.ElapsedS <= 0 {
		return ""
	}
	return strconv.FormatFloat(r.cpuS/r.res.ElapsedS, 'f', 2, 64)
}

func rss(kb int64) string {
	if kb < 0 {
		return ""
	}
	return strconv.FormatFloat(float64(kb)/1024, 'f', 1, 64) + " MiB"
}

// fmtDeferred is the share of replies that deferred: DEFER_IF_PERMIT,
// DEFER, a 4xx code, in any case (gross answers in lower case).
func fmtDeferred(r *loadResult) string {
	if r.Requests == 0 {
		return ""
	}
	var n uint64
	for k, c := range r.Replies {
		if isDefer(k) {
			n += c
		}
	}
	return strconv.FormatFloat(100*float64(n)/float64(r.Requests), 'f', 1, 64) + "%"
}

func isDefer(kind string) bool {
	k := strings.ToUpper(kind)
	return strings.HasPrefix(k, "DEFER") || len(k) == 3 && k[0] == '4'
}
