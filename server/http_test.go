package server

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func (ts *testServer) http(method, path, body, token string) (int, string) {
	ts.t.Helper()
	req, err := http.NewRequest(method, "http://"+ts.srv.Addr("http").String()+path, strings.NewReader(body))
	if err != nil {
		ts.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		ts.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestHTTPCheck(t *testing.T) {
	ts := startServer(t, nil)
	check := `{"client_address":"192.0.2.10","client_name":"mx.sender.example","sender":"alice@sender.example","recipient":"rcpt@example.test"}`
	f := func(method, path, body string, wantCode int, want string) {
		t.Helper()
		code, got := ts.http(method, path, body, "")
		if code != wantCode || strings.TrimSpace(got) != want {
			t.Errorf("%s %s %s:\n got %d %s\nwant %d %s", method, path, body, code, got, wantCode, want)
		}
	}
	f("POST", "/v1/check", check, 200, `{"verdict":"defer","reason":"new","identity":"net:192.0.2.0/24","seconds_left":300,"action":"DEFER_IF_PERMIT","text":"4.7.1 Greylisted, please retry in 5m"}`)
	ts.clock.Advance(100 * time.Second)
	f("POST", "/v1/check", check, 200, `{"verdict":"defer","reason":"early-retry","identity":"net:192.0.2.0/24","seconds_left":200,"action":"DEFER_IF_PERMIT","text":"4.7.1 Greylisted, please retry in 3m20s"}`)
	// The API's own time, with the test clock.
	at := t0.Unix() + 300
	code, got := ts.http("POST", "/v1/check", strings.TrimSuffix(check, "}")+fmt.Sprintf(`,"time":%d}`, at), "")
	if code != 200 || !strings.HasPrefix(got, `{"verdict":"pass","reason":"passed","identity":"net:192.0.2.0/24","delayed":300,"header":"X-Greylist: delayed 300 seconds by greyhold-test at mx.test; `) {
		t.Errorf("first pass: %d %s", code, got)
	}

	// Clear errors naming the field.
	f("POST", "/v1/check", `{"client_address":"192.0.2.10","sender":"a@b","recipent":"x@y"}`, 400,
		`{"error":"recipent: unknown field (known: client_address, client_name, sender, recipient, helo_name, sasl_username, time)","field":"recipent"}`)
	f("POST", "/v1/check", `{"client_address":"192.0.2.10","sender":"a@b"}`, 400, `{"error":"recipient: missing","field":"recipient"}`)
	f("POST", "/v1/check", `{"client_address":"300.1.1.1","sender":"a@b","recipient":"x@y"}`, 400,
		`{"error":"client address is not an IP address: \"300.1.1.1\"","field":"client_address"}`)
	f("POST", "/v1/check", `{"client_address":5,"recipient":"x@y"}`, 400, `{"error":"client_address: want a string","field":"client_address"}`)
	if code, body := ts.http("POST", "/v1/check", `not json`, ""); code != 400 || !strings.HasPrefix(body, `{"error":"body is not JSON: `) {
		t.Errorf("not JSON: %d %s", code, body)
	}
	f("GET", "/v1/check", "", 405, `{"error":"method GET not allowed here; use POST"}`)
	f("GET", "/nope", "", 404, `{"error":"no such endpoint: /nope"}`)
}

func TestHTTPBatch(t *testing.T) {
	ts := startServer(t, nil)
	var items []string
	for i := range 1000 {
		items = append(items, fmt.Sprintf(`{"client_address":"10.0.%d.%d","sender":"s%d@sender.example","recipient":"r@example.test"}`, i/250, i%250, i))
	}
	items[500] = `{"client_address":"bad","sender":"x","recipient":"y"}`
	items[501] = `{"sender":"x"}`
	code, body := ts.http("POST", "/v1/check/batch", "["+strings.Join(items, ",")+"]", "")
	if code != 200 {
		t.Fatalf("batch: %d %s", code, body)
	}
	var out []map[string]any
	if err := json.Unmarshal([]byte(body), &out); err != nil {
		t.Fatalf("batch answer is not JSON: %v", err)
	}
	if len(out) != 1000 {
		t.Fatalf("%d answers for 1000 checks", len(out))
	}
	for i, o := range out {
		switch i {
		case 500:
			if o["field"] != "client_address" {
				t.Errorf("item 500: %v", o)
			}
		case 501:
			if o["field"] != "client_address" || o["error"] != "client_address: missing" {
				t.Errorf("item 501: %v", o)
			}
		default:
			if o["verdict"] != "defer" || o["reason"] != "new" {
				t.Errorf("item %d: %v", i, o)
			}
		}
	}
	if st := ts.st.Stats(); st.Engine.Triplets != 998 || st.WAL.Frames != 1 {
		t.Errorf("after one batch: %d triplets in %d frames, want 998 in one", st.Engine.Triplets, st.WAL.Frames)
	}
	if code, body := ts.http("POST", "/v1/check/batch", `{"not":"an array"}`, ""); code != 400 || !strings.Contains(body, "array") {
		t.Errorf("object for a batch: %d %s", code, body)
	}
}

func TestHTTPAdmin(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.AdminToken = "s3cret" })
	// Everything that changes state needs the token.
	for _, ep := range []struct{ method, path, body string }{
		{"POST", "/v1/check", `{"client_address":"192.0.2.1","recipient":"a@b"}`},
		{"POST", "/v1/whitelist", `{"kind":"client","value":"192.0.2.0/24"}`},
		{"DELETE", "/v1/whitelist", `{"kind":"client","value":"192.0.2.0/24"}`},
		{"POST", "/v1/snapshot", ""},
	} {
		if code, _ := ts.http(ep.method, ep.path, ep.body, ""); code != 401 {
			t.Errorf("%s %s without token: %d", ep.method, ep.path, code)
		}
		if code, _ := ts.http(ep.method, ep.path, ep.body, "wrong"); code != 401 {
			t.Errorf("%s %s with a wrong token: %d", ep.method, ep.path, code)
		}
	}
	if st := ts.st.Stats(); st.Engine.Triplets != 0 || st.Engine.Rules != 0 {
		t.Fatalf("refused requests changed state: %+v", st.Engine)
	}

	code, body := ts.http("POST", "/v1/whitelist", `{"kind":"sender","value":"Newsletter@News.Example"}`, "s3cret")
	if code != 200 || !strings.Contains(body, `"changed": true`) {
		t.Errorf("add: %d %s", code, body)
	}
	ts.http("POST", "/v1/whitelist", `{"kind":"client","value":"203.0.113.0/24"}`, "s3cret")
	code, body = ts.http("GET", "/v1/whitelist", "", "")
	if code != 200 || !strings.Contains(body, `"value": "203.0.113.0/24"`) || !strings.Contains(body, "address-hash:") || strings.Contains(body, "newsletter") {
		t.Errorf("list: %d %s", code, body)
	}
	code, body = ts.http("POST", "/v1/check", `{"client_address":"203.0.113.9","sender":"a@b.example","recipient":"c@d.example"}`, "s3cret")
	if code != 200 || !strings.Contains(body, `"reason":"whitelist"`) {
		t.Errorf("whitelisted check: %d %s", code, body)
	}
	code, body = ts.http("DELETE", "/v1/whitelist?kind=client&value=203.0.113.0/24", "", "s3cret")
	if code != 200 || !strings.Contains(body, `"changed": true`) {
		t.Errorf("delete by query: %d %s", code, body)
	}
	code, body = ts.http("POST", "/v1/whitelist", `{"kind":"planet","value":"mars"}`, "s3cret")
	if code != 400 || !strings.Contains(body, `"field":"kind"`) {
		t.Errorf("bad kind: %d %s", code, body)
	}
	code, body = ts.http("POST", "/v1/whitelist", `{"kind":"client","value":"300.0.0.0/8"}`, "s3cret")
	if code != 400 || !strings.Contains(body, `"field":"value"`) {
		t.Errorf("bad value: %d %s", code, body)
	}
	code, body = ts.http("POST", "/v1/snapshot", "", "s3cret")
	if code != 200 || !strings.Contains(body, `"path"`) {
		t.Errorf("snapshot: %d %s", code, body)
	}
	code, body = ts.http("GET", "/v1/stats", "", "")
	if code != 200 || !strings.Contains(body, `"passed"`) || !strings.Contains(body, `"last_snapshot"`) {
		t.Errorf("stats: %d %s", code, body)
	}
	if code, body := ts.http("POST", "/v1/whitelist/reload", "", "s3cret"); code != 500 || !strings.Contains(body, "no whitelist files") {
		t.Errorf("reload without files: %d %s", code, body)
	}
}

func TestHTTPHealthAndMetrics(t *testing.T) {
	ts := startServer(t, nil)
	if code, body := ts.http("GET", "/healthz", "", ""); code != 200 || body != "ok\n" {
		t.Errorf("healthz: %d %q", code, body)
	}
	if code, _ := ts.http("GET", "/readyz", "", ""); code != 200 {
		t.Errorf("readyz: %d", code)
	}
	ts.http("POST", "/v1/check", `{"client_address":"192.0.2.10","sender":"a@b.example","recipient":"c@d.example"}`, "")
	ts.http("POST", "/v1/check", `{"client_address":"bad","recipient":"c@d.example"}`, "")
	code, body := ts.http("GET", "/metrics", "", "")
	if code != 200 {
		t.Fatalf("metrics: %d", code)
	}
	for _, want := range []string{
		`greyhold_decisions_total{reason="new",verdict="defer"} 1`,
		`greyhold_entries{state="pending"} 1`,
		`greyhold_request_duration_seconds_count{protocol="http"} 2`,
		`greyhold_errors_total{kind="bad_request"} 1`,
		`greyhold_connections_open{protocol="policy"} 0`,
		`greyhold_limit_hits_total{limit="request_bytes"} 0`,
		`greyhold_retry_delay_seconds_bucket`,
		`greyhold_wal_`,
		`greyhold_ready 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func TestHTTPPprof(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.Pprof = true; c.AdminToken = "tok" })
	if code, _ := ts.http("GET", "/debug/pprof/", "", ""); code != 401 {
		t.Errorf("profiler without token: %d", code)
	}
	if code, body := ts.http("GET", "/debug/pprof/", "", "tok"); code != 200 || !strings.Contains(body, "goroutine") {
		t.Errorf("profiler with token: %d", code)
	}
	off := startServer(t, nil)
	if code, _ := off.http("GET", "/debug/pprof/", "", ""); code != 404 {
		t.Errorf("profiler when off: %d", code)
	}
}
