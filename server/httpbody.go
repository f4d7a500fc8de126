package server

import (
	"bytes"
	"errors"
	"io"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/valyala/fasthttp"
)

// HTTP request bodies are read by the handler, from fasthttp's body stream
// (Server.StreamRequestBody), and only once the request's headers have
// shown that it may have one: fasthttp by itself reads a body whole before
// the handler sees the request, so 200 stalled 8 MiB bodies with a wrong
// token took 1.6 GB before any of them was refused. Here a request that
// changes state without the token is answered 401 from its headers, a body
// over HTTPMaxBody 413 from its Content-Length (or as soon as a chunked one
// passes it), and the bodies being read at once share HTTPBodyBudget,
// beyond which a request is answered 503 to come back later.

// readsBody reports whether an endpoint reads a request body.
func readsBody(method, path []byte) bool {
	if !bytes.Equal(method, []byte("POST")) && !bytes.Equal(method, []byte("DELETE")) {
		return false
	}
	switch string(path) {
	case "/v1/check", "/v1/check/batch", "/v1/whitelist":
		return true
	}
	return false
}

// headerReceived runs once a request's headers are in, before fasthttp
// reads any of its body. A request whose body will not be read (a GET, an
// endpoint without a body, a request the token check will refuse, a
// Content-Length over the limit) has its body limit set to one byte, which
// makes fasthttp read at most one byte of it before the handler answers;
// the handler reads the bodies of the others within HTTPMaxBody and the
// budget. fasthttp then throws away what is left of a small unread body,
// or closes the connection.
func (s *Server) headerReceived(h *fasthttp.RequestHeader) fasthttp.RequestConfig {
	path := h.RequestURI()
	if i := bytes.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	if readsBody(h.Method(), path) && s.tokenOK(h.Peek("Authorization")) && h.ContentLength() <= s.cfg.HTTPMaxBody {
		// fasthttp reads up to 8 KiB ahead into its own buffer, the
		// start of the body the handler then reads.
		return fasthttp.RequestConfig{}
	}
	return fasthttp.RequestConfig{MaxRequestBodySize: 1}
}

// bodyBudget bounds the bytes of request bodies held at once, over every
// connection.
type bodyBudget struct {
	max  int64
	used atomic.Int64
}

func (b *bodyBudget) take(n int64) bool {
	if b.used.Add(n) > b.max {
		b.used.Add(-n)
		return false
	}
	return true
}

func (b *bodyBudget) give(n int64) { b.used.Add(-n) }

// bodyChunk is how much of the budget a chunked body, whose length is not
// known ahead, takes at a time.
const bodyChunk = 64 << 10

// pooledBody caps the buffers kept for reuse: a batch of 1000 checks is
// about 150 KiB, and a larger buffer held in a pool would keep memory the
// budget has already given back.
const pooledBody = 256 << 10

var bodyBufs = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

// requestBody is a body read within the limits, to hand back with release
// once the answer is written.
type requestBody struct {
	s     *Server
	b     *[]byte
	taken int64
}

func (rb *requestBody) release() {
	if rb.taken > 0 {
		rb.s.bodies.give(rb.taken)
		rb.taken = 0
	}
	if rb.b != nil {
		if cap(*rb.b) <= pooledBody {
			*rb.b = (*rb.b)[:0]
			bodyBufs.Put(rb.b)
		}
		rb.b = nil
	}
}

var errBodyTooLarge = errors.New("body too large")

// withBody runs f with the request's body (none for a GET), released
// after; f does not run when the body was refused (answered already). The
// check endpoints read theirs inline, sparing the closure.
func (s *Server) withBody(ctx *fasthttp.RequestCtx, method string, f func(body []byte)) {
	if method == "GET" {
		f(nil)
		return
	}
	var rb requestBody
	defer rb.release()
	if body, ok := s.readBody(ctx, &rb); ok {
		f(body)
	}
}

// readBody returns the request's body, read within HTTPMaxBody and the
// budget. On failure it has answered (413, 503 or 400) and returns false.
// The caller releases rb once it no longer uses the body.
func (s *Server) readBody(ctx *fasthttp.RequestCtx, rb *requestBody) ([]byte, bool) {
	rb.s = s
	stream := ctx.RequestBodyStream()
	if stream == nil {
		// The body is in memory already: a handler run without a
		// network, as tests and benchmarks do.
		return ctx.PostBody(), true
	}
	limit := s.cfg.HTTPMaxBody
	n := ctx.Request.Header.ContentLength()
	if n > limit {
		s.tooLarge(ctx, limit)
		return nil, false
	}
	take := int64(n)
	if n < 0 {
		take = bodyChunk // chunked: the length is learnt as it comes
	}
	if !s.bodies.take(take) {
		s.overBudget(ctx)
		return nil, false
	}
	rb.taken = take
	rb.b = bodyBufs.Get().(*[]byte)
	buf := (*rb.b)[:0]
	var err error
	if n >= 0 {
		if cap(buf) < n {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		_, err = io.ReadFull(stream, buf)
	} else {
		buf, err = s.readChunked(stream, buf, limit, rb)
	}
	*rb.b = buf
	switch {
	case errors.Is(err, errBodyTooLarge):
		s.tooLarge(ctx, limit)
		return nil, false
	case errors.Is(err, errOverBudget):
		s.overBudget(ctx)
		return nil, false
	case err != nil:
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			s.m.limitHits.WithLabelValues("read_timeout").Inc()
			jsonError(ctx, fasthttp.StatusRequestTimeout, "request body not complete within the read timeout", "")
		} else {
			jsonError(ctx, fasthttp.StatusBadRequest, "reading the body: "+err.Error(), "")
		}
		ctx.SetConnectionClose()
		return nil, false
	}
	return buf, true
}

var errOverBudget = errors.New("over the body budget")

// readChunked reads a body of unknown length into buf, taking budget a
// chunk at a time before it reads into it.
func (s *Server) readChunked(r io.Reader, buf []byte, limit int, rb *requestBody) ([]byte, error) {
	for {
		if len(buf) == limit {
			// At the limit, one byte more says whether the body is over.
			var one [1]byte
			for {
				m, err := r.Read(one[:])
				switch {
				case m > 0:
					return buf, errBodyTooLarge
				case err == io.EOF:
					return buf, nil
				case err != nil:
					return buf, err
				}
			}
		}
		if int64(len(buf)) == rb.taken {
			more := min(bodyChunk, int64(limit)-rb.taken)
			if !s.bodies.take(more) {
				return buf, errOverBudget
			}
			rb.taken += more
		}
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, bodyChunk)
		}
		m, err := r.Read(buf[len(buf):min(cap(buf), int(rb.taken))])
		buf = buf[:len(buf)+m]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

func (s *Server) tooLarge(ctx *fasthttp.RequestCtx, limit int) {
	s.m.limitHits.WithLabelValues(limitHTTPBody).Inc()
	jsonError(ctx, fasthttp.StatusRequestEntityTooLarge, "body larger than the limit of "+strconv.Itoa(limit)+" bytes (--http-max-body)", "")
	ctx.SetConnectionClose()
}

func (s *Server) overBudget(ctx *fasthttp.RequestCtx) {
	s.m.limitHits.WithLabelValues(limitHTTPBudget).Inc()
	s.rl.bodyBudget.Log("peer", ctx.RemoteAddr().String(), "budget", s.cfg.HTTPBodyBudget)
	ctx.Response.Header.Set("Retry-After", "1")
	jsonError(ctx, fasthttp.StatusServiceUnavailable, "too many request bodies in flight; retry shortly", "")
	ctx.SetConnectionClose()
}

// httpError answers what fasthttp could not read as a request, in the
// API's JSON.
func httpError(ctx *fasthttp.RequestCtx, err error) {
	var small *fasthttp.ErrSmallBuffer
	var ne net.Error
	switch {
	case errors.As(err, &small):
		jsonError(ctx, fasthttp.StatusRequestHeaderFieldsTooLarge, "request headers too large", "")
	case errors.As(err, &ne) && ne.Timeout():
		jsonError(ctx, fasthttp.StatusRequestTimeout, "request not complete within the read timeout", "")
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		jsonError(ctx, fasthttp.StatusRequestEntityTooLarge, "body too large", "")
	default:
		jsonError(ctx, fasthttp.StatusBadRequest, "not an HTTP request greyhold can read", "")
	}
}
