package server

import (
	"bufio"
	"encoding/json"
	"io"
	"strings"
	"testing"

	"github.com/greyhold/greyhold/engine"
)

// With the clock at 1970 (a dead RTC before NTP, issue 9, defect 7) every
// protocol fails open and says why where it can, the metrics show it, and
// once the clock is right greylisting goes on.
func TestImplausibleClockFailsOpen(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.TestClock = false })
	ts.clock.Set(engine.FromUnix(0))

	c := ts.dial("policy")
	pr := bufio.NewReader(c)
	req := policy("192.0.2.10", "a@x.example", "r@example.test")
	for range 3 {
		if got := ts.ask(c, pr, req); got != "action=DUNNO" {
			t.Errorf("policy: %q, want DUNNO", got)
		}
	}

	l := ts.dial("line")
	io.WriteString(l, "192.0.2.10 a@x.example r@example.test\n")
	lr := bufio.NewReader(l)
	if got, _ := lr.ReadString('\n'); !strings.HasPrefix(got, "ERROR the clock reads before 2020-01-01") {
		t.Errorf("line: %q", got)
	}

	code, body := ts.http("POST", "/v1/check", `{"client_address":"192.0.2.10","sender":"a@x.example","recipient":"r@example.test"}`, "")
	var one struct{ Error, Verdict string }
	if code != 200 || json.Unmarshal([]byte(body), &one) != nil || one.Verdict != "" || !strings.Contains(one.Error, "the clock reads before 2020-01-01") {
		t.Errorf("http check: %d %s", code, body)
	}
	code, body = ts.http("POST", "/v1/check/batch", `[{"client_address":"192.0.2.10","recipient":"r@example.test"}]`, "")
	if code != 200 || !strings.Contains(body, `"error":"the clock reads`) {
		t.Errorf("http batch: %d %s", code, body)
	}

	_, metrics := ts.http("GET", "/metrics", "", "")
	for _, want := range []string{`greyhold_errors_total{kind="clock"} 6`, "greyhold_clock_implausible 1"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	_, stats := ts.http("GET", "/v1/stats", "", "")
	if !strings.Contains(stats, `"implausible": true`) {
		t.Errorf("stats: %s", stats)
	}
	if st := ts.st.Stats(); st.Engine.Triplets != 0 || st.WAL.Frames != 0 {
		t.Errorf("state written at 1970: %d triplets, %d frames", st.Engine.Triplets, st.WAL.Frames)
	}
	if n := countLines(ts.logs.String(), "the clock is implausible"); n != 1 {
		t.Errorf("%d log lines for the clock, want 1", n)
	}

	ts.clock.Set(t0)
	if got := ts.ask(c, pr, req); !strings.HasPrefix(got, "action=DEFER_IF_PERMIT") {
		t.Errorf("policy with the clock set right: %q", got)
	}
	if _, metrics := ts.http("GET", "/metrics", "", ""); !strings.Contains(metrics, "greyhold_clock_implausible 0") {
		t.Error("greyhold_clock_implausible still set")
	}
}
