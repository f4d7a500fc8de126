package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"sync"

	"github.com/valyala/fasthttp"
)

// The null server answers without deciding anything: the most a policy
// server can do on this machine, against which a real one is measured. It
// works as greyhold's listeners do (one goroutine per connection, every
// complete request in a read answered with one write), so the ratio
// isolates the cost of deciding.

const (
	nullPolicyReply = "action=DUNNO\n\n"
	nullLineReply   = "PASS\n"
	nullHTTPItem    = `{"verdict":"pass","reason":"known"}`
	// cannedReplies is how many replies one precomputed buffer holds; a
	// read holding more is answered in several slices of it.
	cannedReplies = 4096
)

// serveNull answers connections on ln until ctx ends.
func serveNull(ctx context.Context, ln net.Listener, proto string) error {
	if proto == "http" {
		return serveNullHTTP(ctx, ln)
	}
	reply := nullPolicyReply
	if proto == "line" {
		reply = nullLineReply
	}
	canned := []byte(strings.Repeat(reply, cannedReplies))
	var mu sync.Mutex
	conns := map[net.Conn]struct{}{}
	stop := context.AfterFunc(ctx, func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		mu.Lock()
		conns[c] = struct{}{}
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			nullConn(c, proto, canned, len(reply))
			mu.Lock()
			delete(conns, c)
			mu.Unlock()
			c.Close()
		}()
	}
}

// endCounter counts the requests a stream of reads completes.
type endCounter struct {
	line   bool
	prevNL bool // policy: the last read ended in a newline that ended no request
}

func (e *endCounter) count(b []byte) int {
	if e.line {
		return bytes.Count(b, []byte{'\n'})
	}
	n, i := 0, 0
	if e.prevNL && len(b) > 0 && b[0] == '\n' {
		n, i = 1, 1
	}
	for {
		j := bytes.Index(b[i:], emptyLine)
		if j < 0 {
			break
		}
		n++
		i += j + 2
	}
	e.prevNL = len(b) > i && b[len(b)-1] == '\n'
	return n
}

func nullConn(c net.Conn, proto string, canned []byte, size int) {
	// Large enough that a pipelined window (32 realistic requests are 21 KB)
	// arrives in one read and is answered with one write.
	buf := make([]byte, 64<<10)
	ec := endCounter{line: proto == "line"}
	for {
		n, err := c.Read(buf)
		if n > 0 {
			k := ec.count(buf[:n])
			for k > 0 {
				m := min(k, cannedReplies)
				if _, werr := c.Write(canned[:m*size]); werr != nil {
					return
				}
				k -= m
			}
		}
		if err != nil {
			return
		}
	}
}

// serveNullHTTP answers POST /v1/check/batch with "pass/known" for every
// object in the array, on fasthttp as greyhold's API is, so the ratio
// leaves fasthttp's own cost out.
func serveNullHTTP(ctx context.Context, ln net.Listener) error {
	item := nullHTTPItem + ","
	canned := []byte(strings.Repeat(item, cannedReplies))
	srv := &fasthttp.Server{
		Name: "greyhold-null",
		Handler: func(ctx *fasthttp.RequestCtx) {
			n := countItems(ctx.PostBody())
			ctx.SetContentType("application/json")
			ctx.WriteString("[")
			for n > 0 {
				m := min(n, cannedReplies)
				n -= m
				chunk := canned[:m*len(item)]
				if n == 0 {
					chunk = chunk[:len(chunk)-1] // no comma after the last
				}
				ctx.Write(chunk)
			}
			ctx.WriteString("]\n")
		},
	}
	stop := context.AfterFunc(ctx, func() { srv.Shutdown() })
	defer stop()
	err := srv.Serve(ln)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// countItems counts the objects of a JSON array: the braces at depth one
// outside strings.
func countItems(b []byte) int {
	depth, n, inStr := 0, 0, false
	for i := 0; i < len(b); i++ {
		c := b[i]
		if inStr {
			switch c {
			case '\\':
				i++
			case '"':
				inStr = false
			}
			continue
		}
		switch c {
		case '"':
			inStr = true
		case '[', '{':
			depth++
			if c == '{' && depth == 2 {
				n++
			}
		case ']', '}':
			depth--
		}
	}
	return n
}
