package server

import (
	"bufio"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/greyhold/greyhold/store"
)

// countLines counts the log lines with msg in them.
func countLines(logs, msg string) int {
	n := 0
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, msg) {
			n++
		}
	}
	return n
}

// pipeline sends reqs on one policy connection and reads their answers.
func (ts *testServer) pipeline(reqs []string) []string {
	ts.t.Helper()
	c := ts.dial("policy")
	go io.WriteString(c, strings.Join(reqs, ""))
	return readReplies(ts.t, bufio.NewReader(c), len(reqs))
}

// An error that every request repeats is logged once and then counted
// (issue 9, defect 6): 500 requests the log cannot take, 500 without a
// usable client address and 100 that break the protocol make one line
// each, while the metrics count every one. The count lines come at the
// end of the interval or at shutdown, which the test does.
func TestRepeatedErrorsAreRateLimited(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.HTTPListen = "" })

	bad := make([]string, 500)
	for i := range bad {
		bad[i] = policy("not-an-address", "a@x.example", fmt.Sprintf("r%d@example.test", i))
	}
	for _, got := range ts.pipeline(bad) {
		if got != "action=DUNNO" {
			t.Fatalf("bad address answered %q", got)
		}
	}
	for range 100 {
		c := ts.dial("policy")
		io.WriteString(c, "no equals sign\n\n")
		if got := readReplies(t, bufio.NewReader(c), 1)[0]; got != "action=DUNNO" {
			t.Fatalf("broken request answered %q", got)
		}
	}

	// A closed store's log takes nothing: every change is not logged.
	if err := ts.st.Close(); err != nil {
		t.Fatal(err)
	}
	fresh := make([]string, 500)
	for i := range fresh {
		fresh[i] = policy("192.0.2.10", "a@x.example", fmt.Sprintf("r%d@example.test", i))
	}
	for i := 0; i < len(fresh); i += 50 { // in batches, so there are many log appends
		for _, got := range ts.pipeline(fresh[i : i+50]) {
			if got != "action=DUNNO" {
				t.Fatalf("unlogged change answered %q", got)
			}
		}
	}

	logs := ts.logs.String()
	for msg, want := range map[string]int{
		"change could not be logged":         1,
		"request not greylisted: incomplete": 1,
		"policy request broke the protocol":  1,
	} {
		if n := countLines(logs, msg); n != want {
			t.Errorf("%d lines of %q before the interval ended, want %d", n, msg, want)
		}
	}
	if n := counterValue(t, ts.srv.m.errors.WithLabelValues("not_logged")); n != 500 {
		t.Errorf("not_logged counted %v, want 500", n)
	}
	if n := counterValue(t, ts.srv.m.errors.WithLabelValues("bad_request")); n != 500 {
		t.Errorf("bad_request counted %v, want 500", n)
	}

	// Shutdown says how many were held back.
	ts.srv.rl.flush()
	logs = ts.logs.String()
	for msg, want := range map[string]string{
		"change could not be logged":         "repeated=",
		"request not greylisted: incomplete": "repeated=499",
		"policy request broke the protocol":  "repeated=99",
	} {
		found := false
		for _, l := range strings.Split(logs, "\n") {
			found = found || strings.Contains(l, msg) && strings.Contains(l, want)
		}
		if !found {
			t.Errorf("no count line %q for %q:\n%s", want, msg, logs)
		}
	}
}

// The overflow state, where the memory bound leaves greylisting off for
// new triplets, is logged (it was not at all), once and then counted.
func TestOverflowIsLogged(t *testing.T) {
	ts := startServerWith(t, func(o *store.Options) {
		o.Engine.Shards = 1
		o.Engine.MaxEntries = 1
	}, func(c *Config) { c.HTTPListen = "" })
	// One passed triplet fills the bound; it is never evicted.
	c := ts.dial("policy")
	r := bufio.NewReader(c)
	req := policy("192.0.2.10", "a@x.example", "r@example.test")
	ts.ask(c, r, req)
	ts.clock.Advance(300e9)
	if got := ts.ask(c, r, req); !strings.HasPrefix(got, "action=PREPEND") {
		t.Fatalf("retry after the delay: %q", got)
	}
	reqs := make([]string, 200)
	for i := range reqs {
		reqs[i] = policy("192.0.2.20", "b@x.example", fmt.Sprintf("new%d@example.test", i))
	}
	for _, got := range ts.pipeline(reqs) {
		if got != "action=DUNNO" {
			t.Fatalf("overflow answered %q", got)
		}
	}
	msg := "memory bound reached with nothing left to evict"
	if n := countLines(ts.logs.String(), msg); n != 1 {
		t.Errorf("%d overflow lines, want 1:\n%s", n, ts.logs.String())
	}
	ts.srv.rl.flush()
	if !strings.Contains(ts.logs.String(), "repeated=199") {
		t.Errorf("no count of the overflow decisions:\n%s", ts.logs.String())
	}
}

// counterValue reads a counter's value.
func counterValue(t testing.TB, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
