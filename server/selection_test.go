package server

import (
	"bufio"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/greyhold/greyhold/engine"
	"github.com/greyhold/greyhold/store"
)

// suspicious is the README's "greylist only suspicious clients" rules.
func suspicious(t testing.TB) func(*store.Options) {
	return func(o *store.Options) {
		o.Engine.Select.Default = engine.ActPass
		for _, l := range []string{
			"authenticated: sasl => pass",
			"no-rdns: no-name => greylist",
			"dynamic: generic-name => greylist delay=10m",
			"bad-helo: bad-helo => greylist",
			"watch: sender-domain in watch.example => none",
		} {
			r, err := engine.ParseSelectRule(l)
			if err != nil {
				t.Fatal(err)
			}
			o.Engine.Select.Rules = append(o.Engine.Select.Rules, r)
		}
	}
}

// TestPolicySelection: the policy protocol's helo_name and sasl_username
// reach the rules; the log and the metrics name the rule.
func TestPolicySelection(t *testing.T) {
	ts := startServerWith(t, suspicious(t), nil)
	c := ts.dial("policy")
	r := bufio.NewReader(c)
	ask := func(want string, client, sender string, extra ...string) {
		t.Helper()
		if got := ts.ask(c, r, policy(client, sender, "bob@example.test", extra...)); !strings.HasPrefix(got, want) {
			t.Errorf("%s %v: %s, want %s", client, extra, got, want)
		}
	}
	ask("action=DUNNO", "192.0.2.10", "a@example.org")                                           // verified name, good HELO: default pass
	ask("action=DEFER_IF_PERMIT", "192.0.2.11", "b@example.org", "client_name=unknown")          // no-rdns
	ask("action=DUNNO", "192.0.2.12", "c@example.org", "client_name=unknown", "sasl_username=c") // authenticated first
	ask("action=DEFER_IF_PERMIT 4.7.1 Greylisted, please retry in 10m", "73.15.22.101", "d@example.org",
		"client_name=c-73-15-22-101.hsd1.ca.comcast.net") // dynamic, its own delay
	ask("action=DEFER_IF_PERMIT", "192.0.2.13", "e@example.org", "helo_name=localhost") // bad-helo
	ask("action=DUNNO", "192.0.2.14", "f@watch.example")                                // noted, then default
	logs := ts.logs.String()
	for _, want := range []string{
		"action=pass reason=rule rule=default identity=net:192.0.2.0/24",
		"action=greylist reason=new retry_in=300 rule=no-rdns",
		"action=pass reason=rule rule=authenticated",
		"action=greylist reason=new retry_in=600 rule=dynamic",
		"action=greylist reason=new retry_in=300 rule=bad-helo",
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
	_, body := ts.http("GET", "/metrics", "", "")
	for _, want := range []string{
		`greyhold_rule_decisions_total{rule="default",verdict="pass"} 2`,
		`greyhold_rule_decisions_total{rule="no-rdns",verdict="defer"} 1`,
		`greyhold_rule_decisions_total{rule="authenticated",verdict="pass"} 1`,
		`greyhold_rule_decisions_total{rule="dynamic",verdict="defer"} 1`,
		`greyhold_rule_matches_total{rule="watch"} 1`,
		`greyhold_decisions_total{reason="rule",verdict="pass"} 3`,
		`greyhold_shadow 0`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// TestShadow: in shadow mode every protocol answers as if nothing were
// greylisted, while the decisions are made, logged and counted as usual.
func TestShadow(t *testing.T) {
	ts := startServerWith(t, suspicious(t), func(c *Config) { c.Shadow = true })
	c := ts.dial("policy")
	r := bufio.NewReader(c)
	if got := ts.ask(c, r, policy("192.0.2.11", "b@example.org", "bob@example.test", "client_name=unknown")); got != "action=DUNNO" {
		t.Errorf("policy: %s", got)
	}
	lc := ts.dial("line")
	lr := bufio.NewReader(lc)
	if _, err := lc.Write([]byte("192.0.2.20 x@example.org y@example.test unknown\n")); err != nil {
		t.Fatal(err)
	}
	if line, _ := lr.ReadString('\n'); line != "PASS\n" {
		t.Errorf("line: %q", line)
	}
	code, got := ts.http("POST", "/v1/check", `{"client_address":"192.0.2.30","client_name":"unknown","sender":"a@example.org","recipient":"b@example.test"}`, "")
	if code != 200 || !strings.HasPrefix(got, `{"verdict":"pass","shadow":true,"would":"defer","reason":"new","identity":"net:192.0.2.0/24","rule":"no-rdns","seconds_left":300}`) {
		t.Errorf("http: %d %s", code, got)
	}
	if logs := ts.logs.String(); strings.Count(logs, "action=greylist reason=new shadow=true retry_in=300 rule=no-rdns") != 3 {
		t.Errorf("log:\n%s", logs)
	}
	// Recorded as usual: after the delay the first triplet's retry is its
	// first pass, which shadow mode answers DUNNO too.
	ts.clock.Advance(301 * time.Second)
	if got := ts.ask(c, r, policy("192.0.2.11", "b@example.org", "bob@example.test", "client_name=unknown")); got != "action=DUNNO" {
		t.Errorf("policy after the delay: %s", got)
	}
	_, body := ts.http("GET", "/metrics", "", "")
	for _, want := range []string{`greyhold_rule_decisions_total{rule="no-rdns",verdict="defer"} 3`, `greyhold_decisions_total{reason="new",verdict="defer"} 3`,
		`greyhold_decisions_total{reason="passed",verdict="pass"} 1`, `greyhold_shadow 1`} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// TestPolicyTransactionRecipients: the policy protocol's instance groups
// the recipients of one transaction.
func TestPolicyTransactionRecipients(t *testing.T) {
	ts := startServerWith(t, func(o *store.Options) { o.Engine.PassTransactionRecipients = true }, nil)
	c := ts.dial("policy")
	r := bufio.NewReader(c)
	at := func(sec int64) string { return fmt.Sprintf("policy_test_time=%d", t0.Unix()+sec) }
	ts.ask(c, r, policy("192.0.2.10", "a@example.org", "one@example.test", "instance=t1", at(0)))
	if got := ts.ask(c, r, policy("192.0.2.10", "a@example.org", "one@example.test", "instance=t2", at(301))); !strings.HasPrefix(got, "action=PREPEND") {
		t.Fatalf("setup: %s", got)
	}
	if got := ts.ask(c, r, policy("192.0.2.10", "a@example.org", "cc@example.test", "instance=t2", at(302))); got != "action=DUNNO" {
		t.Errorf("a copy in the same transaction: %s", got)
	}
	if got := ts.ask(c, r, policy("192.0.2.10", "a@example.org", "cc2@example.test", "instance=t3", at(303))); !strings.HasPrefix(got, "action=DEFER_IF_PERMIT") {
		t.Errorf("another transaction: %s", got)
	}
	if !strings.Contains(ts.logs.String(), "action=pass reason=transaction") {
		t.Errorf("log:\n%s", ts.logs.String())
	}
}
