package server

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/greyhold/greyhold/engine"
)

func decodeJSON(t *testing.T, body string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	return m
}

// TestHTTPTriplet: the look-up answers a support ticket (the key's parts,
// the state, the client network, the whitelisting, what a check would
// say) and changes nothing; the release and the forgets take the token,
// change what they say and are logged.
func TestHTTPTriplet(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.AdminToken = "s3cret" })
	q := "/v1/triplet?" + url.Values{"client_address": {"192.0.2.10"}, "client_name": {"unknown"},
		"sender": {"prvs=1234abcd=Alice@Sender.Example"}, "recipient": {"Bob@Example.Test"}}.Encode()
	check := `{"client_address":"192.0.2.10","sender":"prvs=1234abcd=Alice@Sender.Example","recipient":"Bob@Example.Test"}`
	for _, ep := range []struct{ method, path, body string }{
		{"GET", q, ""}, {"POST", "/v1/triplet/pass", check}, {"DELETE", "/v1/triplet", check},
		{"GET", "/v1/client?ip=192.0.2.10", ""}, {"DELETE", "/v1/client?ip=192.0.2.10", ""},
	} {
		if code, _ := ts.http(ep.method, ep.path, ep.body, ""); code != 401 {
			t.Errorf("%s %s without the token: %d", ep.method, ep.path, code)
		}
	}

	code, body := ts.http("GET", q, "", "s3cret")
	m := decodeJSON(t, body)
	key := m["key"].(map[string]any)
	if code != 200 || m["state"] != "unknown" || key["identity"] != "net:192.0.2.0/24" || key["sender"] != "alice@sender.example" || key["recipient"] != "bob@example.test" {
		t.Fatalf("unknown: %d %s", code, body)
	}
	if w := m["would"].(map[string]any); w["verdict"] != "defer" || w["reason"] != "new" || w["seconds_left"] != 300.0 {
		t.Errorf("unknown would: %v", w)
	}
	if st := ts.st.Stats(); st.Engine.Triplets != 0 || st.WAL.Records != 0 {
		t.Fatalf("the look-up changed state: %+v", st.Engine)
	}

	// A defer, then a retry too early: the ticket's answer.
	ts.http("POST", "/v1/check", check, "s3cret")
	ts.clock.Set(t0 + 100)
	ts.http("POST", "/v1/check", check, "s3cret")
	_, body = ts.http("GET", q, "", "s3cret")
	m = decodeJSON(t, body)
	if m["state"] != "pending" || m["retries"] != 1.0 || m["seconds_to_pass"] != 200.0 || m["first_seen"] != engine.Time(t0).Time().Format(time.RFC3339) {
		t.Errorf("pending: %s", body)
	}
	if c := m["client"].(map[string]any); c["network"] != "192.0.2.0/24" || c["state"] != "unknown" || c["threshold"] != 5.0 {
		t.Errorf("client: %v", c)
	}

	// Release: passes at once, logged.
	code, body = ts.http("POST", "/v1/triplet/pass", check, "s3cret")
	if m = decodeJSON(t, body); code != 200 || m["changed"] != true || m["state"] != "passed" {
		t.Fatalf("pass: %d %s", code, body)
	}
	if code, body = ts.http("POST", "/v1/check", check, "s3cret"); !strings.Contains(body, `"reason":"known"`) {
		t.Errorf("check after the release: %d %s", code, body)
	}
	if !strings.Contains(ts.logs.String(), "triplet released") {
		t.Errorf("release not logged:\n%s", ts.logs)
	}

	// Forget: the next attempt is new.
	code, body = ts.http("DELETE", "/v1/triplet", check, "s3cret")
	if m = decodeJSON(t, body); code != 200 || m["changed"] != true || m["state"] != "unknown" || m["forgotten"] == nil {
		t.Fatalf("forget: %d %s", code, body)
	}
	if _, body = ts.http("POST", "/v1/check", check, "s3cret"); !strings.Contains(body, `"reason":"new"`) {
		t.Errorf("check after the forget: %s", body)
	}

	// Forget a client network.
	code, body = ts.http("DELETE", "/v1/client?ip=192.0.2.99", "", "s3cret")
	if c := decodeJSON(t, body)["client"].(map[string]any); code != 200 || c["state"] != "forgotten" || c["network"] != "192.0.2.0/24" {
		t.Errorf("forget client: %d %s", code, body)
	}

	// Whitelisting that matches: a rule with a lifetime, listed with the
	// time it has left.
	code, body = ts.http("POST", "/v1/whitelist", `{"kind":"sender","value":"sender.example","ttl":"1h"}`, "s3cret")
	if m = decodeJSON(t, body); code != 200 || m["seconds_left"] != 3600.0 {
		t.Fatalf("rule with a ttl: %d %s", code, body)
	}
	ts.clock.Set(t0 + 100 + 600)
	_, body = ts.http("GET", "/v1/whitelist", "", "")
	if !strings.Contains(body, `"seconds_left": 3000`) || !strings.Contains(body, `"expires"`) {
		t.Errorf("listing: %s", body)
	}
	_, body = ts.http("GET", q, "", "s3cret")
	m = decodeJSON(t, body)
	rules := m["whitelist"].(map[string]any)["rules"].([]any)
	if len(rules) != 1 || m["would"].(map[string]any)["reason"] != "whitelist" {
		t.Errorf("look-up under the rule: %s", body)
	}
	ts.clock.Set(t0 + 100 + 3600)
	if _, body = ts.http("GET", "/v1/whitelist", "", ""); strings.Contains(body, "sender.example") {
		t.Errorf("a rule past its lifetime is listed: %s", body)
	}
	for _, bad := range []string{`"ttl":"soon"`, `"ttl":"0s"`, `"ttl":"1.5s"`, `"expires":"2030-01-01T00:00:00Z"`} {
		if code, body := ts.http("POST", "/v1/whitelist", `{"kind":"sender","value":"x.example",`+bad+`}`, "s3cret"); code != 400 {
			t.Errorf("%s: %d %s", bad, code, body)
		}
	}

	// Bad requests name the field.
	for _, bad := range []struct{ path, field string }{
		{"/v1/triplet?recipient=a@b", "client_address"},
		{"/v1/triplet?client_address=192.0.2.1", "recipient"},
		{"/v1/triplet?client_address=nowhere&recipient=a@b", "client_address"},
	} {
		if code, body := ts.http("GET", bad.path, "", "s3cret"); code != 400 || !strings.Contains(body, `"field":"`+bad.field+`"`) {
			t.Errorf("%s: %d %s", bad.path, code, body)
		}
	}
	if code, body := ts.http("DELETE", "/v1/client", "", "s3cret"); code != 400 || !strings.Contains(body, `"field":"ip"`) {
		t.Errorf("no ip: %d %s", code, body)
	}
	_, body = ts.http("GET", "/metrics", "", "")
	for _, want := range []string{`greyhold_operator_changes_total{change="pass"} 1`, `greyhold_operator_changes_total{change="forget"} 1`,
		`greyhold_operator_changes_total{change="forget_client"} 1`, `greyhold_entries{state="forgotten"} 0`} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}
