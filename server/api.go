package server

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"

	"github.com/greyhold/greyhold/engine"
)

// PolicyRequest is what the policy parser reads of one request: the
// attributes greyhold uses, copied out of the read buffer.
type PolicyRequest struct {
	Request, ProtocolState, ClientAddress, ClientName string
	Sender, Recipient, QueueID, Instance, TestTime    string
	HELOName, SASLUsername                            string
	HasSender                                         bool
	Attributes                                        int
}

// ErrProtocol is wrapped by every error ParsePolicyRequest returns: the
// request breaks the protocol or a limit, and a server closes the
// connection after answering DUNNO.
var ErrProtocol = errProtocol

// ParsePolicyRequest parses one policy request at the front of buf, as the
// server does, and returns it with the number of bytes it took; 0 bytes and
// no error mean buf holds no complete request yet.
func ParsePolicyRequest(buf []byte, lim Limits) (PolicyRequest, int, error) {
	var r policyRequest
	n, err := parsePolicy(buf, &lim, &r)
	if err != nil || n == 0 {
		return PolicyRequest{}, n, err
	}
	return PolicyRequest{
		Request: string(r.request), ProtocolState: string(r.protocolState),
		ClientAddress: string(r.clientAddress), ClientName: string(r.clientName),
		Sender: string(r.sender), Recipient: string(r.recipient), QueueID: string(r.queueID),
		Instance: string(r.instance), TestTime: string(r.testTime), HELOName: string(r.heloName), SASLUsername: string(r.saslUsername),
		HasSender: r.hasSender, Attributes: r.attrs,
	}, n, nil
}

// ParseLineRequest parses one line of the compact protocol (without its
// newline). The strings are copies.
func ParseLineRequest(line []byte) (engine.Request, error) {
	req, why := parseLine(line)
	if why != "" {
		return engine.Request{}, errors.New(why)
	}
	return engine.Request{
		ClientAddr: string([]byte(req.ClientAddr)), ClientName: string([]byte(req.ClientName)),
		Sender: string([]byte(req.Sender)), Recipient: string([]byte(req.Recipient)),
	}, nil
}

// ServeConn serves one connection accepted elsewhere (inetd-style socket
// activation, tests) with the given protocol, "policy" or "line", until it
// closes. It applies the server's limits and timeouts.
// Shutdown waits for it like for any other; once Shutdown has begun it is
// refused with an error and left to the caller to close.
func (s *Server) ServeConn(c net.Conn, proto string) error {
	if proto != "policy" && proto != "line" {
		return fmt.Errorf("protocol %q: want policy or line", proto)
	}
	// Under connMu, which Shutdown takes after setting stopping: either
	// Shutdown sees this connection and waits for it, or this sees
	// stopping and declines.
	s.connMu.Lock()
	if s.stopping.Load() {
		s.connMu.Unlock()
		return errors.New("serve connection: the server is shutting down")
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.connMu.Unlock()
	defer s.wg.Done()
	defer s.track(c, false)
	if proto == "policy" {
		s.servePolicy(c)
	} else {
		s.serveLine(c)
	}
	return nil
}

// HTTPHandler returns the API's handler, for serving it from a listener of
// the caller's and for tests that run it without a network.
func (s *Server) HTTPHandler() fasthttp.RequestHandler {
	metrics := fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(s.cfg.Registry, promhttp.HandlerOpts{}))
	var profiler fasthttp.RequestHandler
	if s.cfg.Pprof {
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		profiler = fasthttpadaptor.NewFastHTTPHandler(mux)
	}
	return func(ctx *fasthttp.RequestCtx) {
		if profiler != nil && bytes.HasPrefix(ctx.Path(), []byte("/debug/pprof/")) {
			// Profiles show the server's insides: the token, when there
			// is one, even to read them.
			if s.authorized(ctx) {
				profiler(ctx)
			}
			return
		}
		s.handleHTTP(ctx, metrics)
	}
}
