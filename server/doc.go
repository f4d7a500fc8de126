// Package server answers greylisting questions over three protocols: the
// Postfix policy delegation protocol (TCP and a unix socket), a compact
// line protocol for Exim and scripts, and an HTTP API. Each request goes
// to a Checker (a *store.Store in greyhold), which decides it and logs
// what changed before the answer leaves. Whatever goes wrong inside
// greyhold, the answer fails open: DUNNO on the policy protocol, ERROR on
// the line protocol (which the README's Exim snippet accepts), an error
// object over HTTP; greylisting must never lose mail.
//
// # The policy protocol
//
// Postfix's SMTPD access policy delegation (postfix.org
// SMTPD_POLICY_README). A request is lines of name=value ended by an empty
// line; greyhold reads request, protocol_state, client_address,
// client_name, sender, recipient, queue_id and instance, and ignores the
// rest. Only request=smtpd_access_policy in protocol_state=RCPT is
// greylisted; anything else is answered DUNNO. The reply is one line and
// an empty line:
//
//	action=DEFER_IF_PERMIT 4.7.1 Greylisted, please retry in 4m59s
//	action=PREPEND X-Greylist: delayed 300 seconds by greyhold-1.0 at mx.example; ...
//	action=DUNNO
//
// the first for a defer (action and text set by ReplyOptions), the second
// on a triplet's first pass (when a header is configured), the third for
// every other pass, for requests not greylisted and for failures.
// Postfix keeps the connection open and sends the next request after the
// reply; load tools and some proxies pipeline, so every complete request
// in the read buffer is decided (one log append for all of them) and the
// replies go back in one write. A request that breaks the protocol or a
// Limit (size, attributes, line length, a NUL byte, no name=value) is
// answered DUNNO and the connection closed. With Config.TestClock a
// request may carry policy_test_time=<Unix seconds>, the time it is
// decided at.
//
// # The line protocol
//
// One request a line, fields split by spaces or tabs:
//
//	CLIENT_IP SENDER RECIPIENT [CLIENT_NAME]
//
// The empty sender is written <>, and an address may come in angle
// brackets; a missing client name is "unknown", and a line may end in
// CRLF. One reply a line, in order:
//
//	DEFER <seconds-left> <text>
//	PASS
//	PREPEND <header>
//	ERROR <why>
//
// PREPEND is a triplet's first pass, when a header is configured. Requests
// may be pipelined; every complete line in a read is answered in one
// write. A bad line is answered ERROR and the connection kept; a line over
// the line limit is answered ERROR and the connection closed. The last
// line may come without its newline when the client closes its side
// (Exim's ${readsocket} does). The line protocol always uses the clock.
//
// # The HTTP API
//
// JSON in and out, on fasthttp (README.md has the reference):
//
//	POST   /v1/check             one check: JSON object in, decision out
//	POST   /v1/check/batch       an array of checks in, an array out
//	GET    /v1/stats             state, log and snapshot figures
//	GET    /v1/stats?top=N       the clients and sender domains deferred most in the last hour
//	GET    /v1/triplet?...       what is held for one triplet and why (triplet.go)
//	POST   /v1/triplet/pass      release it: it passes from now on
//	DELETE /v1/triplet           forget it: its next attempt is new
//	GET    /v1/client?ip=        a client network's auto-whitelist state
//	DELETE /v1/client?ip=        forget it
//	POST   /v1/snapshot          write a snapshot now
//	GET    /v1/whitelist         rules in force
//	POST   /v1/whitelist         add a rule {"kind": ..., "value": ..., "ttl": "1h"}
//	DELETE /v1/whitelist         remove one (same body, or ?kind=&value=)
//	POST   /v1/whitelist/reload  read the whitelist files again
//	GET    /healthz              200 while the process runs
//	GET    /readyz               200 once recovery is done, 503 while draining
//	GET    /metrics              Prometheus exposition format
//
// A check is {"client_address", "client_name", "sender", "recipient"},
// and with Config.TestClock "time" (Unix seconds; a batch's checks must
// share one). The answer is {"verdict", "reason"} with "seconds_left",
// "action" and "text" for a defer and "delayed" and "header" on a first
// pass, or {"error", "field"} for a check that cannot be decided. A batch
// answers one object per check, in order, and a check that does not parse
// takes its place with an error object without failing the others.
// Errors name what was wrong: {"error": "recipient: missing", "field":
// "recipient"}, with status 400 for a bad request, 404, 405 (with Allow)
// and 500. With Config.AdminToken set, every request that is not a GET
// needs "Authorization: Bearer <token>" (checks too: a check changes
// state), GET /v1/triplet and GET /v1/client (their answers tell who
// mails whom), and /debug/pprof/ even to read; without it the API only binds
// loopback. Bodies are read by the handlers and only for requests whose
// headers pass (httpbody.go): 401 for a missing or wrong token and 413
// for a Content-Length over Config.HTTPMaxBody come before the body is
// read, 413 for a chunked body once it passes the limit, 503 with
// Retry-After when the bodies held at once would pass
// Config.HTTPBodyBudget, 408 for a body not complete within the read
// timeout, and 431 for headers too large.
package server
