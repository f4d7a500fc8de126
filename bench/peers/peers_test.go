package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeRun(t *testing.T, dir, name string, reqPerS, p50, p99 float64, replies string) string {
	t.Helper()
	p := filepath.Join(dir, name+".json")
	js := fmt.Sprintf(`{"requests":1000,"elapsed_s":2,"req_per_s":%g,"latency_ms":{"p50":%g,"p99":%g},"replies":{%s},"client_cpu_cores":0.5}`,
		reqPerS, p50, p99, replies)
	if err := os.WriteFile(p, []byte(js), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestTable(t *testing.T) {
	dir := t.TempDir()
	lines := []string{
		"null\t1\t1\t0\tok\t10240\t0.5\t" + writeRun(t, dir, "n", 40000, 0.02, 0.05, `"DUNNO":1000`) + "\t",
		"greyhold\t1\t1\t0\tok\t20480\t1.5\t" + writeRun(t, dir, "g", 20000, 0.04, 0.1, `"DUNNO":900,"DEFER_IF_PERMIT":100`) + "\t",
		"postgrey\t1\t1\t0\tok\t30000\t1.9\t" + writeRun(t, dir, "p", 1500, 0.6, 2.4, `"DUNNO":950,"PREPEND":50`) + "\t",
		"gross\t1\t1\t0\tok\t\t\t" + writeRun(t, dir, "x", 1600, 0.61, 0.9, `"dunno":800,"defer_if_permit":200`) + "\t",
		"postgrey\t1\t32\t0\tna\t30100\t\t\tno reply in 5s",
		"gross\t1\t32\t0\tskip\t\t\t\ttime budget",
		"postgrey\t8\t32\t0\tna\t30100\t\t\tno reply in 5s",
	}
	runs := filepath.Join(dir, "runs.tsv")
	if err := os.WriteFile(runs, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	md := filepath.Join(dir, "t.md")
	var out, errb bytes.Buffer
	if rc := run([]string{"table", "--runs", runs, "--md", md, "--servers", "null,greyhold,postgrey,gross"}, &out, &errb); rc != 0 {
		t.Fatalf("rc %d: %s", rc, errb.String())
	}
	text := out.String()
	for _, want := range []string{"13.3×", "12.5×", "0.50×", "20,000", "10.0%", "20.0%", "0.600 ms", "29.3 MiB",
		"n/a [1]", "skipped [2]", "[1] no reply in 5s", "[2] time budget"} {
		if !strings.Contains(text, want) {
			t.Errorf("text table lacks %q:\n%s", want, text)
		}
	}
	if strings.Count(text, "[1]") != 3 {
		t.Errorf("the same note should be numbered once and referred to twice:\n%s", text)
	}
	mdText, err := os.ReadFile(md)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(mdText), "| 1 | 1 | 0 | postgrey | 1,500 | 0.600 ms | 2.40 ms | 29.3 MiB | 0.95 | 0.50 | 0.0% | 13.3× |") {
		t.Errorf("markdown row missing:\n%s", mdText)
	}
}

func TestParseRunRejects(t *testing.T) {
	for _, line := range []string{
		"a\tb",
		"s\tx\t1\t0\tok\t\t\t\t",
		"s\t1\t1\tzero\tna\t\t\t\t",
		"s\t1\t1\t0\tmaybe\t\t\t\t",
		"s\t1\t1\t0\tna\t\tlots\t\t",
		"s\t1\t1\t0\tok\t\t\t/nonexistent.json\t",
	} {
		if _, err := parseRun(line); err == nil {
			t.Errorf("parseRun(%q) accepted", line)
		}
	}
}
