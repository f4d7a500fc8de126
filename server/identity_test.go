package server

import (
	"bufio"
	"fmt"
	"strings"
	"testing"

	"github.com/greyhold/greyhold/engine"
	"github.com/greyhold/greyhold/store"
)

func nameMode(o *store.Options) { o.Engine.Keys.Identity = engine.IdentityName }

// TestPolicyNameIdentity: behind the policy protocol a pool that retries
// from another /24 under a name of the same identity passes on its first
// retry after the delay, and the decision log names the identity.
func TestPolicyNameIdentity(t *testing.T) {
	ts := startServerWith(t, nameMode, nil)
	c := ts.dial("policy")
	r := bufio.NewReader(c)
	first := policy("209.85.221.54", "noreply@accounts.example.com", "bob@example.test", "client_name=mail-wr1-f54.google.com")
	if got := ts.ask(c, r, first); !strings.HasPrefix(got, "action=DEFER_IF_PERMIT") {
		t.Fatalf("first attempt: %s", got)
	}
	retry := policy("209.85.128.43", "noreply@accounts.example.com", "bob@example.test", "client_name=mail-wm1-f43.google.com",
		fmt.Sprintf("policy_test_time=%d", t0.Unix()+301))
	if got := ts.ask(c, r, retry); !strings.HasPrefix(got, "action=PREPEND X-Greylist: delayed 301 seconds") {
		t.Errorf("retry from another /24: %s", got)
	}
	logs := ts.logs.String()
	if !strings.Contains(logs, "action=greylist reason=new retry_in=300 identity=name:google.com client_name=mail-wr1-f54.google.com") ||
		!strings.Contains(logs, "action=pass reason=passed delay=301 identity=name:google.com") {
		t.Errorf("decision log:\n%s", logs)
	}
	// A generic name is its network.
	dyn := policy("73.15.22.101", "a@example.org", "bob@example.test", "client_name=c-73-15-22-101.hsd1.ca.comcast.net")
	ts.ask(c, r, dyn)
	if !strings.Contains(ts.logs.String(), "identity=net:73.15.22.0/24 client_name=c-73-15-22-101.hsd1.ca.comcast.net") {
		t.Errorf("generic name's identity not logged as its network:\n%s", ts.logs.String())
	}
}

// TestHTTPNameIdentity: the HTTP answer names the identity.
func TestHTTPNameIdentity(t *testing.T) {
	ts := startServerWith(t, nameMode, nil)
	code, got := ts.http("POST", "/v1/check", `{"client_address":"2a00:1450:4864:20::42a","client_name":"mail-wr1-x42a.google.com","sender":"a@example.com","recipient":"b@example.test"}`, "")
	if code != 200 || !strings.HasPrefix(got, `{"verdict":"defer","reason":"new","identity":"name:google.com",`) {
		t.Errorf("check: %d %s", code, got)
	}
	code, got = ts.http("POST", "/v1/check/batch", `[{"client_address":"192.0.2.1","sender":"a@example.com","recipient":"b@example.test"}]`, "")
	if code != 200 || !strings.HasPrefix(got, `[{"verdict":"defer","reason":"new","identity":"net:192.0.2.0/24",`) {
		t.Errorf("batch: %d %s", code, got)
	}
}
