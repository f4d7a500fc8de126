package server

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fastjson"

	"github.com/greyhold/greyhold/engine"
	"github.com/greyhold/greyhold/store"
	"github.com/greyhold/greyhold/whitelist"
)

// The HTTP API; doc.go lists its endpoints and README.md has the full
// reference.

func (s *Server) newHTTPServer() *fasthttp.Server {
	return &fasthttp.Server{
		Handler: s.HTTPHandler(),
		Name:    "greyhold",
		// Body timeouts would cut a large batch on a slow link; 30 s is
		// far more than a batch of 1000 needs and far less than a stuck
		// client should hold a connection.
		ReadTimeout:        30 * time.Second,
		WriteTimeout:       30 * time.Second,
		IdleTimeout:        s.cfg.IdleTimeout,
		MaxRequestBodySize: s.cfg.HTTPMaxBody,
		Concurrency:        s.cfg.HTTPMaxConnections,
		ReduceMemoryUsage:  true,
		Logger:             httpLogger{s},
		CloseOnShutdown:    true,
		// Bodies are read by the handlers, within the limits (httpbody.go).
		StreamRequestBody: true,
		HeaderReceived:    s.headerReceived,
		ErrorHandler:      httpError,
	}
}

type httpLogger struct{ s *Server }

func (l httpLogger) Printf(format string, args ...any) {
	l.s.rl.httpServer.Log("detail", strings.TrimSpace(fmt.Sprintf(format, args...)))
}

var parsers fastjson.ParserPool

func (s *Server) handleHTTP(ctx *fasthttp.RequestCtx, metrics fasthttp.RequestHandler) {
	start := time.Now()
	defer func() {
		if v := recover(); v != nil {
			s.m.errors.WithLabelValues("internal").Inc()
			s.rl.panicked.Log("path", string(ctx.Path()), "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			ctx.ResetBody()
			jsonError(ctx, fasthttp.StatusInternalServerError, "internal error", "")
		}
	}()
	path := string(ctx.Path())
	method := string(ctx.Method())
	switch path {
	case "/v1/check", "/v1/check/batch":
		if !s.allow(ctx, method, "POST") {
			return
		}
		var rb requestBody
		defer rb.release()
		body, ok := s.readBody(ctx, &rb)
		if !ok {
			return
		}
		if path == "/v1/check" {
			s.httpCheck(ctx, body)
		} else {
			s.httpBatch(ctx, body)
		}
		s.m.httpDur.observe(time.Since(start).Seconds(), 1)
	case "/v1/stats":
		if s.allow(ctx, method, "GET") {
			if ctx.QueryArgs().Has("top") {
				s.httpTop(ctx)
				return
			}
			s.httpStats(ctx)
		}
	case "/v1/snapshot":
		if s.allow(ctx, method, "POST") {
			s.httpSnapshot(ctx)
		}
	case "/v1/whitelist":
		if !s.allow(ctx, method, "GET", "POST", "DELETE") {
			return
		}
		s.withBody(ctx, method, func(body []byte) { s.httpWhitelist(ctx, method, body) })
	case "/v1/triplet", "/v1/triplet/pass":
		allowed := []string{"GET", "DELETE"}
		if path == "/v1/triplet/pass" {
			allowed = []string{"POST"}
		}
		// The look-up too: it tells who mails whom.
		if !s.allow(ctx, method, allowed...) || (method == "GET" && !s.authorized(ctx)) {
			return
		}
		s.withBody(ctx, method, func(body []byte) { s.httpTriplet(ctx, path, method, body) })
	case "/v1/client":
		if s.allow(ctx, method, "GET", "DELETE") && (method != "GET" || s.authorized(ctx)) {
			s.httpClient(ctx, method)
		}
	case "/v1/whitelist/reload":
		if s.allow(ctx, method, "POST") {
			s.httpReload(ctx)
		}
	case "/healthz":
		ctx.SetContentType("text/plain; charset=utf-8")
		ctx.SetBodyString("ok\n")
	case "/readyz":
		ctx.SetContentType("text/plain; charset=utf-8")
		if s.isReady() && !s.stopping.Load() {
			ctx.SetBodyString("ready\n")
		} else {
			ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
			ctx.SetBodyString("not ready\n")
		}
	case "/metrics":
		metrics(ctx)
	default:
		jsonError(ctx, fasthttp.StatusNotFound, "no such endpoint: "+path, "")
	}
}

// allow checks the method, and the bearer token for anything that changes
// state when a token is configured.
func (s *Server) allow(ctx *fasthttp.RequestCtx, method string, allowed ...string) bool {
	ok := false
	for _, m := range allowed {
		ok = ok || m == method
	}
	if !ok {
		ctx.Response.Header.Set("Allow", strings.Join(allowed, ", "))
		jsonError(ctx, fasthttp.StatusMethodNotAllowed, "method "+method+" not allowed here; use "+strings.Join(allowed, " or "), "")
		return false
	}
	return method == "GET" || s.authorized(ctx)
}

// authorized checks the bearer token when one is configured, answering
// 401 when it is missing or wrong.
func (s *Server) authorized(ctx *fasthttp.RequestCtx) bool {
	if !s.tokenOK(ctx.Request.Header.Peek("Authorization")) {
		ctx.Response.Header.Set("WWW-Authenticate", `Bearer realm="greyhold"`)
		jsonError(ctx, fasthttp.StatusUnauthorized, "this endpoint needs Authorization: Bearer <admin token>", "")
		return false
	}
	return true
}

// tokenOK checks an Authorization header against the admin token; true
// when there is none.
func (s *Server) tokenOK(auth []byte) bool {
	if s.cfg.AdminToken == "" {
		return true
	}
	token, found := bytes.CutPrefix(auth, []byte("Bearer "))
	return found && subtle.ConstantTimeCompare(token, []byte(s.cfg.AdminToken)) == 1
}

func jsonError(ctx *fasthttp.RequestCtx, code int, msg, field string) {
	ctx.SetStatusCode(code)
	ctx.SetContentType("application/json")
	var o jsonObject
	o.begin(nil)
	o.str("error", msg)
	if field != "" {
		o.str("field", field)
	}
	ctx.SetBody(append(o.end(), '\n'))
}

func writeJSON(ctx *fasthttp.RequestCtx, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		jsonError(ctx, fasthttp.StatusInternalServerError, err.Error(), "")
		return
	}
	ctx.SetContentType("application/json")
	ctx.SetBody(append(b, '\n'))
}

// fieldError names the member a check object got wrong.
type fieldError struct{ field, msg string }

func (e *fieldError) Error() string {
	if e.field == "" {
		return e.msg
	}
	return e.field + ": " + e.msg
}

// checkField is where a check's string member of that name goes; nil for
// "time" and for names a check does not have. Both readers of a check,
// parseCheck and scanCheck, take their members from here.
func checkField(req *engine.Request, name []byte) *string {
	switch string(name) {
	case "client_address":
		return &req.ClientAddr
	case "client_name":
		return &req.ClientName
	case "sender":
		return &req.Sender
	case "recipient":
		return &req.Recipient
	case "helo_name":
		return &req.HELOName
	case "sasl_username":
		return &req.SASLUsername
	}
	return nil
}

// parseCheck reads one check object. The strings point into the parser's
// buffer, valid until it parses again; nothing is allocated unless the
// object is wrong.
func (s *Server) parseCheck(v *fastjson.Value, req *engine.Request) (int64, error) {
	*req = engine.Request{}
	o, err := v.Object()
	if err != nil {
		return 0, &fieldError{"", "want a JSON object with client_address, sender and recipient"}
	}
	var ferr error
	var t int64
	o.Visit(func(k []byte, v *fastjson.Value) {
		if ferr != nil {
			return
		}
		dst := checkField(req, k)
		switch {
		case dst != nil:
		case string(k) == "time":
			if !s.cfg.TestClock {
				ferr = &fieldError{"time", "only accepted with --test-clock"}
				return
			}
			n, err := v.Int64()
			if err != nil || n <= 0 {
				ferr = &fieldError{"time", "want Unix seconds"}
				return
			}
			t = n
			return
		default:
			ferr = &fieldError{string(k), "unknown field (known: client_address, client_name, sender, recipient, helo_name, sasl_username, time)"}
			return
		}
		b, err := v.StringBytes()
		if err != nil {
			ferr = &fieldError{string(k), "want a string"}
			return
		}
		*dst = str(b)
	})
	if ferr != nil {
		return 0, ferr
	}
	switch {
	case req.ClientAddr == "":
		return 0, &fieldError{"client_address", "missing"}
	case req.Recipient == "":
		return 0, &fieldError{"recipient", "missing"}
	}
	if req.ClientName == "" {
		req.ClientName = "unknown"
	}
	return t, nil
}

// decisionHeads holds the opening of each decision's JSON object, verdict
// and reason written out, by verdict and reason: a batch answers a
// thousand decisions with a handful of openings, where writing each
// member by member, escaping names that never need it, costs a quarter of
// the answer (CPU profile of BenchmarkHTTPBatch).
var decisionHeads = func() (h [4][32]string) {
	for _, v := range []engine.Verdict{engine.Defer, engine.Pass} {
		for _, r := range engine.Reasons() {
			var o jsonObject
			o.begin(nil)
			o.str("verdict", v.String())
			o.str("reason", r.String())
			h[v][r] = string(o.b)
		}
	}
	return h
}()

// appendDecision appends the JSON answer to one check.
func (s *Server) appendDecision(dst []byte, req *engine.Request, r *store.Result) []byte {
	var o jsonObject
	o.begin(dst)
	if r.Err != nil {
		o.str("error", errorWhy(r.Err))
		if field := engine.BadRequestField(r.Err); field != "" {
			o.str("field", field)
		}
		return o.end()
	}
	if s.cfg.Shadow {
		// What enforcement would have said, under a pass.
		o.str("verdict", "pass")
		o.key("shadow")
		o.b = append(o.b, "true"...)
		o.str("would", r.Verdict.String())
		o.str("reason", r.Reason.String())
	} else if int(r.Verdict) < len(decisionHeads) && int(r.Reason) < len(decisionHeads[0]) && decisionHeads[r.Verdict][r.Reason] != "" {
		o.b, o.first = append(dst, decisionHeads[r.Verdict][r.Reason]...), false
	} else {
		o.str("verdict", r.Verdict.String())
		o.str("reason", r.Reason.String())
	}
	// An identity is a DNS name's letters, digits, '-', '_' and dots, or
	// a network: nothing JSON escapes.
	o.key("identity")
	o.b = append(s.st.AppendIdentity(append(o.b, '"'), req, &r.Decision), '"')
	if s.ruleNames != nil {
		o.str("rule", s.ruleNames[r.Rule])
	}
	if s.cfg.DNSLists != nil {
		o.key("dnsbl")
		o.b = strconv.AppendInt(o.b, int64(req.DNSScore), 10)
	}
	switch {
	case s.cfg.Shadow:
		if r.Verdict == engine.Defer {
			o.uint("seconds_left", uint64(r.Left))
		}
	case r.Verdict == engine.Defer:
		o.uint("seconds_left", uint64(r.Left))
		o.str("action", s.replies.action)
		o.key("text")
		o.b = appendJSONString(o.b, str(s.replies.appendText(nil, r.Left, req.Recipient)))
	case r.Reason == engine.ReasonPassed:
		o.uint("delayed", uint64(r.Delayed))
		if h, ok := s.replies.appendHeader(nil, r.Delayed, time.Now()); ok {
			o.key("header")
			o.b = appendJSONString(o.b, str(h))
		}
	}
	return o.end()
}

type httpBatch struct {
	reqs    []engine.Request
	good    []engine.Request // reqs without the ones that did not parse, if any
	results []store.Result
	errs    []error
	out     []byte
}

var batches = sync.Pool{New: func() any { return &httpBatch{} }}

// parseBody parses the request body as JSON with a pooled parser, which
// the caller returns once done with the values; on bad JSON it answers 400
// and returns nil.
func parseBody(ctx *fasthttp.RequestCtx, body []byte) (*fastjson.Parser, *fastjson.Value) {
	p := parsers.Get()
	v, err := p.ParseBytes(body)
	if err != nil {
		parsers.Put(p)
		jsonError(ctx, fasthttp.StatusBadRequest, "body is not JSON: "+err.Error(), "")
		return nil, nil
	}
	return p, v
}

func (s *Server) httpCheck(ctx *fasthttp.RequestCtx, body []byte) {
	p, v := parseBody(ctx, body)
	if p == nil {
		return
	}
	defer parsers.Put(p)
	var req engine.Request
	t, err := s.parseCheck(v, &req)
	if err != nil {
		var fe *fieldError
		errors.As(err, &fe)
		jsonError(ctx, fasthttp.StatusBadRequest, err.Error(), fe.field)
		return
	}
	var res store.Result
	req.DNSScore = s.dnsScore(req.ClientAddr)
	res.Decision, res.Err = s.st.CheckAt(s.now(t), &req)
	s.noteOutcome("http", &req, res.Decision, res.Err)
	if res.Err == nil {
		s.logDecision("http", &req, res.Decision, nil)
	} else if isBadRequest(res.Err) {
		ctx.SetStatusCode(fasthttp.StatusBadRequest)
	}
	ctx.SetContentType("application/json")
	ctx.SetBody(append(s.appendDecision(nil, &req, &res), '\n'))
}

// httpBatch decides an array of checks with one log append. Items that do
// not parse get an error object in their place; the rest are decided.
func (s *Server) httpBatch(ctx *fasthttp.RequestCtx, body []byte) {
	b := batches.Get().(*httpBatch)
	defer func() {
		clear(b.reqs)
		clear(b.good)
		b.reqs, b.good, b.results, b.errs = b.reqs[:0], b.good[:0], b.results[:0], b.errs[:0]
		batches.Put(b)
	}()
	var t int64
	var ok bool
	bad := 0
	if b.reqs, t, ok = s.scanBatch(body, b.reqs); ok {
		b.errs = slices.Grow(b.errs[:0], len(b.reqs))[:len(b.reqs)]
		clear(b.errs)
	} else {
		p, v := parseBody(ctx, body)
		if p == nil {
			return
		}
		defer parsers.Put(p)
		items, err := v.Array()
		if err != nil {
			jsonError(ctx, fasthttp.StatusBadRequest, "want a JSON array of check objects", "")
			return
		}
		t, bad = s.parseChecks(items, b)
	}
	// Decide the good ones together; the bad ones hold their place.
	good := b.reqs
	if bad > 0 {
		for i := range b.reqs {
			if b.errs[i] == nil {
				b.good = append(b.good, b.reqs[i])
			}
		}
		good = b.good
	}
	if s.cfg.DNSLists != nil {
		for i := range good {
			good[i].DNSScore = s.dnsScore(good[i].ClientAddr)
		}
	}
	b.results = s.st.CheckBatch(s.now(t), good, b.results[:0])
	out := append(b.out[:0], '[')
	j := 0
	for i := range b.reqs {
		if i > 0 {
			out = append(out, ',')
		}
		if err := b.errs[i]; err != nil {
			var fe *fieldError
			errors.As(err, &fe)
			var o jsonObject
			o.begin(out)
			o.str("error", err.Error())
			if fe.field != "" {
				o.str("field", fe.field)
			}
			out = o.end()
			continue
		}
		r := &b.results[j]
		s.noteOutcome("http", &good[j], r.Decision, r.Err)
		if r.Err == nil {
			s.logDecision("http", &good[j], r.Decision, nil)
		}
		out = s.appendDecision(out, &good[j], r)
		j++
	}
	out = append(out, ']', '\n')
	ctx.SetContentType("application/json")
	ctx.SetBody(out)
	b.out = out
}

// parseChecks reads a batch's items into b.reqs and b.errs, and returns
// the batch's time and how many items are bad. The first check that reads
// well sets the time: a broken one before it must not make the good ones
// look inconsistent.
func (s *Server) parseChecks(items []*fastjson.Value, b *httpBatch) (t int64, bad int) {
	haveT := false
	b.reqs = slices.Grow(b.reqs[:0], len(items))[:len(items)]
	b.errs = b.errs[:0]
	for i, item := range items {
		it, err := s.parseCheck(item, &b.reqs[i])
		switch {
		case err != nil:
		case !haveT:
			t, haveT = it, true
		case it != t:
			err = &fieldError{"time", "every check of a batch must have the same time"}
		}
		if err != nil {
			bad++
		}
		b.errs = append(b.errs, err)
	}
	return t, bad
}

func (s *Server) httpStats(ctx *fasthttp.RequestCtx) {
	st := s.st.Stats()
	e := st.Engine
	decisions := map[string]uint64{}
	for _, r := range engine.Reasons() {
		decisions[r.String()] = e.Decided(r)
	}
	out := map[string]any{
		"triplets":        map[string]int{"pending": e.Pending, "passed": e.Passed, "forgotten": e.Forgotten, "total": e.Triplets},
		"clients":         map[string]int{"counted": e.Clients, "whitelisted": e.Listed, "forgotten": e.ForgottenClients},
		"decisions":       decisions,
		"evicted":         e.Evicted,
		"expired":         e.Expired,
		"whitelist_rules": e.Rules,
		"wal": map[string]any{
			"first_index": st.WAL.FirstIndex, "last_index": st.WAL.LastIndex, "segments": st.WAL.Segments,
			"disk_bytes": st.WAL.DiskBytes, "frames_written": st.WAL.Frames, "records_written": st.WAL.Records,
			"syncs": st.WAL.Syncs, "failed": st.WAL.Failed,
		},
		"not_logged":        st.NotLogged,
		"clock":             map[string]any{"implausible": st.ClockImplausible, "checks_not_greylisted": st.ClockRefused},
		"snapshot_failures": st.SnapshotFailures,
		"recovery": map[string]any{
			"snapshot": st.Recovery.Snapshot, "snapshot_wal_index": st.Recovery.SnapshotIndex,
			"frames_replayed": st.Recovery.Frames, "records_replayed": st.Recovery.Records,
			"snapshot_seconds": st.Recovery.SnapshotTime.Seconds(), "replay_seconds": st.Recovery.ReplayTime.Seconds(),
			"broken_snapshots": st.Recovery.BrokenSnapshots,
		},
	}
	if f := s.cfg.Fleet; f != nil {
		out["fleet"] = f.Status()
	}
	if ls := st.LastSnapshot; ls != nil {
		out["last_snapshot"] = map[string]any{
			"path": ls.Path, "wal_index": ls.WALIndex, "at": ls.At.UTC().Format(time.RFC3339),
			"seconds": ls.Duration.Seconds(), "bytes": ls.Bytes, "triplets": ls.Triplets,
		}
	}
	writeJSON(ctx, out)
}

func (s *Server) httpSnapshot(ctx *fasthttp.RequestCtx) {
	info, err := s.st.Snapshot()
	if err != nil {
		s.rl.snapshot.Log("err", err)
		jsonError(ctx, fasthttp.StatusInternalServerError, "snapshot failed: "+err.Error(), "")
		return
	}
	writeJSON(ctx, map[string]any{"path": info.Path, "wal_index": info.WALIndex, "bytes": info.Bytes,
		"triplets": info.Triplets, "seconds": info.Duration.Seconds()})
}

// decodeErrorField names the member encoding/json stumbled on, where it
// says: a value of the wrong type, or a member that has no place.
func decodeErrorField(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return te.Field
	}
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		if u, err := strconv.Unquote(name); err == nil {
			return u
		}
	}
	return ""
}

type ruleJSON struct {
	Kind  string `json:"kind"`
	Value string `json:"value"`
	Added string `json:"added,omitempty"`
	// TTL, when a rule is added, is its lifetime ("1h", "30m", "2d");
	// a listing gives the end instead, and the seconds left.
	TTL         string  `json:"ttl,omitempty"`
	Expires     string  `json:"expires,omitempty"`
	SecondsLeft *uint64 `json:"seconds_left,omitempty"`
}

func ruleInfoJSON(now engine.Time, r engine.RuleInfo) ruleJSON {
	j := ruleJSON{Kind: r.Kind.String(), Value: r.Value, Added: rfc3339(r.Added)}
	if r.Expires != 0 {
		n := left(now, r.Expires)
		j.Expires, j.SecondsLeft = rfc3339(r.Expires), &n
	}
	return j
}

func (s *Server) httpWhitelist(ctx *fasthttp.RequestCtx, method string, body []byte) {
	if method == "GET" {
		rules := []ruleJSON{}
		now := s.st.Now()
		for _, r := range s.st.Rules() {
			rules = append(rules, ruleInfoJSON(now, r))
		}
		writeJSON(ctx, map[string]any{"rules": rules, "files": fileList(s.wl.Load())})
		return
	}
	var in ruleJSON
	if len(bytes.TrimSpace(body)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&in); err != nil {
			jsonError(ctx, fasthttp.StatusBadRequest, "want {\"kind\": ..., \"value\": ...}: "+err.Error(), decodeErrorField(err))
			return
		}
	} else {
		in.Kind = string(ctx.QueryArgs().Peek("kind"))
		in.Value = string(ctx.QueryArgs().Peek("value"))
		in.TTL = string(ctx.QueryArgs().Peek("ttl"))
	}
	kind, err := engine.ParseRuleKind(in.Kind)
	if err != nil {
		jsonError(ctx, fasthttp.StatusBadRequest, err.Error(), "kind")
		return
	}
	if in.Expires != "" || in.SecondsLeft != nil {
		jsonError(ctx, fasthttp.StatusBadRequest, "a rule's end is set with ttl, its lifetime from now", "expires")
		return
	}
	var ttl time.Duration
	if in.TTL != "" {
		if method != "POST" {
			jsonError(ctx, fasthttp.StatusBadRequest, "ttl goes with adding a rule", "ttl")
			return
		}
		if ttl, err = ParseTTL(in.TTL); err != nil {
			jsonError(ctx, fasthttp.StatusBadRequest, err.Error(), "ttl")
			return
		}
	}
	changed, err := s.st.SetRuleFor(engine.Rule{Kind: kind, Value: in.Value}, method == "POST", ttl)
	switch {
	case errors.Is(err, engine.ErrBadRule):
		jsonError(ctx, fasthttp.StatusBadRequest, err.Error(), "value")
		return
	case err != nil:
		s.rl.ruleChange.Log("err", err)
		jsonError(ctx, fasthttp.StatusInternalServerError, err.Error(), "")
		return
	}
	verb := "added"
	if method == "DELETE" {
		verb = "removed"
	}
	out := map[string]any{"changed": changed, "kind": kind.String(), "value": in.Value}
	if ttl > 0 {
		end := s.st.Now() + engine.Time(ttl/time.Second)
		out["expires"], out["seconds_left"] = rfc3339(end), uint64(ttl/time.Second)
	}
	if changed {
		attrs := []any{"kind", kind.String(), "value", s.shownRule(kind, in.Value), "peer", ctx.RemoteAddr().String()}
		if ttl > 0 {
			attrs = append(attrs, "ttl", ttl.String(), "expires", out["expires"])
		}
		s.log.Info("whitelist rule "+verb, attrs...)
	}
	writeJSON(ctx, out)
}

func (s *Server) httpReload(ctx *fasthttp.RequestCtx) {
	w, err := s.ReloadWhitelist()
	if err != nil {
		code := fasthttp.StatusInternalServerError
		if errors.Is(err, ErrReloadTimeout) {
			code = fasthttp.StatusGatewayTimeout
		}
		jsonError(ctx, code, "reload failed, previous lists kept: "+err.Error(), "")
		return
	}
	writeJSON(ctx, map[string]any{"files": fileList(w)})
}

// fileList describes the whitelist files read, for the API.
func fileList(w *whitelist.Set) []map[string]any {
	files := []map[string]any{}
	if w != nil {
		for _, f := range w.Files {
			files = append(files, map[string]any{"path": f.Path, "kind": f.Kind, "entries": f.Entries, "skipped": f.Skipped})
		}
	}
	return files
}

func isBadRequest(err error) bool { return engine.BadRequestField(err) != "" }

// ParseTTL reads a rule's lifetime: Go's durations ("90m", "1h30m") and
// days ("2d"), whole seconds, above zero and at most
// engine.MaxRuleLifetime.
func ParseTTL(s string) (time.Duration, error) {
	var d time.Duration
	var err error
	if n, ok := strings.CutSuffix(s, "d"); ok {
		var days int64
		days, err = strconv.ParseInt(n, 10, 32)
		d = time.Duration(days) * 24 * time.Hour
	} else {
		d, err = time.ParseDuration(s)
	}
	if err != nil || d <= 0 || d%time.Second != 0 || d > engine.MaxRuleLifetime {
		return 0, fmt.Errorf("ttl %q: want a lifetime in whole seconds such as 30m, 1h or 2d, at most %v", s, engine.MaxRuleLifetime)
	}
	return d, nil
}
