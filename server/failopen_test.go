package server

import (
	"bufio"
	"strings"
	"testing"
	"time"

	"github.com/greyhold/greyhold/internal/testutil"
	"github.com/greyhold/greyhold/store"
	"github.com/greyhold/greyhold/wal"
)

// TestFailingLogFailsOpenEverywhere: while the store's log cannot be
// written, every protocol lets a new triplet through (policy DUNNO, line
// ERROR, an HTTP error), the checks are counted as not logged, /v1/stats
// says the log failed, one log line says so however many checks fail, and
// once the log heals greylisting goes on.
func TestFailingLogFailsOpenEverywhere(t *testing.T) {
	var fl *testutil.FailingLog
	ts := startServerWith(t, func(o *store.Options) {
		o.OpenLog = func(dir string, wo wal.Options) (store.Log, error) {
			l, err := wal.Open(dir, wo)
			if err != nil {
				return nil, err
			}
			fl = &testutil.FailingLog{Log: l}
			return fl, nil
		}
	}, nil)
	c := ts.dial("policy")
	r := bufio.NewReader(c)
	if got := ts.ask(c, r, policy("192.0.2.10", "a@sender.example", "one@example.test")); !strings.HasPrefix(got, "action=DEFER_IF_PERMIT") {
		t.Fatalf("before the failure: %s", got)
	}
	fl.Fail.Store(true)
	if got := ts.ask(c, r, policy("192.0.2.10", "a@sender.example", "two@example.test")); got != "action=DUNNO" {
		t.Errorf("policy while the log fails: %s", got)
	}
	lc := ts.dial("line")
	lr := bufio.NewReader(lc)
	if _, err := lc.Write([]byte("192.0.2.10 a@sender.example three@example.test mail.sender.example\n")); err != nil {
		t.Fatal(err)
	}
	if line, _ := lr.ReadString('\n'); line != "ERROR internal error, not greylisted\n" {
		t.Errorf("line while the log fails: %q", line)
	}
	code, got := ts.http("POST", "/v1/check", `{"client_address":"192.0.2.10","sender":"a@sender.example","recipient":"four@example.test"}`, "")
	if code != 200 || !strings.Contains(got, `"error":"internal error, not greylisted"`) {
		t.Errorf("http while the log fails: %d %s", code, got)
	}
	_, body := ts.http("GET", "/metrics", "", "")
	for _, want := range []string{"greyhold_not_logged_total 3", `greyhold_errors_total{kind="not_logged"} 3`} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if _, stats := ts.http("GET", "/v1/stats", "", ""); !strings.Contains(stats, `"failed": true`) || !strings.Contains(stats, `"not_logged": 3`) {
		t.Errorf("/v1/stats while the log fails:\n%s", stats)
	}
	if n := strings.Count(ts.logs.String(), "change could not be logged"); n != 1 {
		t.Errorf("%d log lines for 3 checks not logged, want 1:\n%s", n, ts.logs.String())
	}

	fl.Fail.Store(false)
	ts.clock.Advance(time.Second)
	if got := ts.ask(c, r, policy("192.0.2.10", "a@sender.example", "five@example.test")); !strings.HasPrefix(got, "action=DEFER_IF_PERMIT") {
		t.Errorf("once the log heals: %s", got)
	}
	if _, stats := ts.http("GET", "/v1/stats", "", ""); !strings.Contains(stats, `"failed": false`) || !strings.Contains(stats, `"not_logged": 3`) {
		t.Errorf("/v1/stats once the log heals:\n%s", stats)
	}
}
