package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/greyhold/greyhold/engine"
	"github.com/greyhold/greyhold/store"
)

// One triplet, for an operator answering a support ticket:
//
//	GET    /v1/triplet?client_address=&client_name=&sender=&recipient=
//	                         what greyhold holds and would answer
//	POST   /v1/triplet/pass  the triplet passes from now on
//	DELETE /v1/triplet       forget it: its next attempt is new
//	GET    /v1/client?ip=    a client network's auto-whitelist state
//	DELETE /v1/client?ip=    forget it
//
// Each takes the admin token when there is one, GET /v1/triplet too: its
// answer tells who mails whom, which the state on disk keeps as hashes.
// The changes are logged (a record in the write-ahead log, replicated like
// any other; engine/entry.go says how a forget wins) and get a log line.

// tripletQuery is a triplet as the endpoints take it: the members of a
// check, as a JSON object or as query arguments.
type tripletQuery struct {
	ClientAddress string `json:"client_address"`
	ClientName    string `json:"client_name"`
	Sender        string `json:"sender"`
	Recipient     string `json:"recipient"`
	HELOName      string `json:"helo_name"`
	SASLUsername  string `json:"sasl_username"`
}

// readTriplet reads a triplet from the body, if there is one, or else
// from the query, answering 400 when it is unusable.
func readTriplet(ctx *fasthttp.RequestCtx, body []byte) (*engine.Request, bool) {
	var q tripletQuery
	if len(bytes.TrimSpace(body)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&q); err != nil {
			jsonError(ctx, fasthttp.StatusBadRequest, "want {\"client_address\": ..., \"client_name\": ..., \"sender\": ..., \"recipient\": ...}: "+err.Error(), decodeErrorField(err))
			return nil, false
		}
	} else {
		a := ctx.QueryArgs()
		for name, dst := range map[string]*string{"client_address": &q.ClientAddress, "client_name": &q.ClientName,
			"sender": &q.Sender, "recipient": &q.Recipient, "helo_name": &q.HELOName, "sasl_username": &q.SASLUsername} {
			*dst = string(a.Peek(name))
		}
	}
	switch {
	case q.ClientAddress == "":
		jsonError(ctx, fasthttp.StatusBadRequest, "client_address: missing", "client_address")
		return nil, false
	case q.Recipient == "":
		jsonError(ctx, fasthttp.StatusBadRequest, "recipient: missing", "recipient")
		return nil, false
	}
	if q.ClientName == "" {
		q.ClientName = "unknown"
	}
	return &engine.Request{ClientAddr: q.ClientAddress, ClientName: q.ClientName, Sender: q.Sender, Recipient: q.Recipient,
		HELOName: q.HELOName, SASLUsername: q.SASLUsername}, true
}

// changeFailed answers an error of a change or a look-up: 400 for a
// request that names no triplet, 503 for a refused clock, 500 otherwise
// (the log failed: the change is in memory, maybe not on disk).
func (s *Server) changeFailed(ctx *fasthttp.RequestCtx, what string, err error) {
	switch {
	case isBadRequest(err):
		jsonError(ctx, fasthttp.StatusBadRequest, s.shownErr(err), engine.BadRequestField(err))
	case errors.Is(err, store.ErrClock):
		jsonError(ctx, fasthttp.StatusServiceUnavailable, err.Error(), "")
	default:
		s.rl.ruleChange.Log("change", what, "err", err)
		jsonError(ctx, fasthttp.StatusInternalServerError, what+" failed: "+err.Error(), "")
	}
}

func rfc3339(t engine.Time) string { return t.Time().Format(time.RFC3339) }

// left is the seconds from now until t, at least 0.
func left(now, t engine.Time) uint64 {
	if t <= now {
		return 0
	}
	return uint64(t - now)
}

func (s *Server) httpTriplet(ctx *fasthttp.RequestCtx, path, method string, body []byte) {
	req, ok := readTriplet(ctx, body)
	if !ok {
		return
	}
	if path == "/v1/triplet" && method == "GET" {
		req.DNSScore = s.dnsScore(req.ClientAddr)
		ex, err := s.st.Explain(req)
		if err != nil {
			s.changeFailed(ctx, "look-up", err)
			return
		}
		writeJSON(ctx, s.explanationJSON(s.st.Now(), &ex))
		return
	}
	var changed bool
	var err error
	change, verb := "pass", "triplet released: it passes from now on"
	if method == "DELETE" {
		change, verb = "forget", "triplet forgotten: its next attempt is new"
		changed, err = s.st.ForgetTriplet(req)
	} else {
		changed, err = s.st.PassTriplet(req)
	}
	if err != nil {
		s.changeFailed(ctx, change, err)
		return
	}
	s.m.operator.WithLabelValues(change).Inc()
	ex, _ := s.st.Explain(req)
	s.log.Info(verb, "changed", changed, "identity", s.shown('i', ex.Identity), "client_address", s.shown('a', req.ClientAddr),
		"sender", s.shown('s', req.Sender), "recipient", s.shown('r', req.Recipient),
		"triplet", fmt.Sprintf("%016x", ex.Key), "peer", ctx.RemoteAddr().String())
	out := s.explanationJSON(s.st.Now(), &ex)
	out["changed"] = changed
	writeJSON(ctx, out)
}

func (s *Server) httpClient(ctx *fasthttp.RequestCtx, method string) {
	ip := string(ctx.QueryArgs().Peek("ip"))
	if ip == "" {
		jsonError(ctx, fasthttp.StatusBadRequest, "ip: missing (a client address of the network)", "ip")
		return
	}
	if method == "DELETE" {
		had, network, err := s.st.ForgetClient(ip)
		if err != nil {
			s.changeFailed(ctx, "forget_client", err)
			return
		}
		s.m.operator.WithLabelValues("forget_client").Inc()
		s.log.Info("client network's auto-whitelist forgotten: it counts its passes again from none",
			"had", had, "network", s.shown('a', network.String()), "peer", ctx.RemoteAddr().String())
	}
	cs, err := s.st.ClientNetworkState(ip)
	if err != nil {
		s.changeFailed(ctx, "look-up", err)
		return
	}
	writeJSON(ctx, map[string]any{"client": clientJSON(s.st.Now(), &cs)})
}

func clientJSON(now engine.Time, cs *engine.ClientState) map[string]any {
	state := "unknown"
	switch {
	case cs.Forgotten != 0:
		state = "forgotten"
	case cs.Listed:
		state = "whitelisted"
	case cs.Known:
		state = "counting"
	}
	c := map[string]any{"network": cs.Network.String(), "state": state, "count": cs.Count, "threshold": cs.Threshold}
	if cs.Known {
		c["since"], c["last_seen"], c["counted"] = rfc3339(cs.Since), rfc3339(cs.Last), rfc3339(cs.Counted)
		c["expires"], c["seconds_left"] = rfc3339(cs.Expires), left(now, cs.Expires+1)
	}
	if cs.Forgotten != 0 {
		c["forgotten"] = rfc3339(cs.Forgotten)
	}
	return c
}

// explanationJSON renders an Explanation for the API.
func (s *Server) explanationJSON(now engine.Time, ex *engine.Explanation) map[string]any {
	out := map[string]any{
		"key": map[string]any{
			"identity":    ex.Identity,
			"client_name": map[string]any{"verified": ex.Name.Verified, "generic": ex.Name.Generic},
			"sender":      ex.Sender,
			"recipient":   ex.Recipient,
			"triplet":     fmt.Sprintf("%016x", ex.Key),
		},
		"state": ex.State.String(),
		"delay": ex.Delay,
	}
	switch ex.State {
	case engine.StatePending:
		out["first_seen"], out["retries"] = rfc3339(ex.First), ex.Retries
		out["passes_from"], out["seconds_to_pass"] = rfc3339(ex.PassesFrom), left(now, ex.PassesFrom)
		out["expires"] = rfc3339(ex.Expires)
	case engine.StatePassed:
		out["first_seen"], out["last_seen"] = rfc3339(ex.First), rfc3339(ex.Last)
		out["expires"], out["seconds_left"] = rfc3339(ex.Expires), left(now, ex.Expires+1)
	}
	if ex.Forgotten != 0 {
		out["forgotten"] = rfc3339(ex.Forgotten)
	}
	out["client"] = clientJSON(now, &ex.Client)
	files := []map[string]any{}
	for _, m := range ex.Static {
		files = append(files, map[string]any{"file": m.File, "kind": m.Kind, "line": m.Line, "entry": m.Entry})
	}
	rules := []ruleJSON{}
	for _, r := range ex.Rules {
		rules = append(rules, ruleInfoJSON(now, r))
	}
	out["whitelist"] = map[string]any{"files": files, "rules": rules}
	if ex.Rule != "" {
		out["rule"] = map[string]any{"name": ex.Rule, "action": ex.RuleAction.String()}
	}
	would := map[string]any{"verdict": ex.Would.Verdict.String(), "reason": ex.Would.Reason.String()}
	if ex.Would.Verdict == engine.Defer {
		would["seconds_left"] = ex.Would.Left
	}
	out["would"] = would
	return out
}

// maxTop bounds GET /v1/stats?top=N: the summaries hold 256 keys a
// minute, so more would not be an estimate of the most deferred.
const maxTop = 100

// httpTop answers GET /v1/stats?top=N: the client networks (or identities)
// and sender domains deferred most in the last hour, estimated from one
// defer in eight.
func (s *Server) httpTop(ctx *fasthttp.RequestCtx) {
	n, err := ctx.QueryArgs().GetUint("top")
	if err != nil || n < 1 || n > maxTop {
		jsonError(ctx, fasthttp.StatusBadRequest, fmt.Sprintf("top: want a number from 1 to %d", maxTop), "top")
		return
	}
	top := s.st.TopDeferred(n)
	list := func(l []engine.TopEntry) []map[string]any {
		out := []map[string]any{}
		for _, e := range l {
			out = append(out, map[string]any{"key": e.Key, "defers": e.Defers})
		}
		return out
	}
	writeJSON(ctx, map[string]any{"top": map[string]any{
		"window_seconds": top.Window, "clients": list(top.Clients), "sender_domains": list(top.Domains),
		"samples": top.Samples, "sample_rate": top.SampleRate, "samples_lost": top.Lost,
	}})
}
