package server

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/greyhold/greyhold/engine"
	"github.com/valyala/fasthttp"
)

// benchPolicy runs conns connections against a real policy listener, each
// writing windows of depth requests and reading the answers, over a pool of
// known triplets (one in ten new). Client and server share the process, so
// the figure is lower than bench/load's against a separate server; it is
// here for profiles and for benchstat comparisons of server changes.
//
//	go test -run '^$' -bench Policy -benchtime 3s ./server
func benchPolicy(b *testing.B, conns, depth int) {
	ts := startServer(b, func(c *Config) { c.DecisionLog = LogOff })
	const pool = 10000
	reqs := make([][]byte, pool)
	for i := range reqs {
		reqs[i] = []byte(policy(fmt.Sprintf("10.%d.%d.7", i/256, i%256), "newsletter@sender.example", fmt.Sprintf("user%d@example.test", i)))
	}
	// Pass the pool through greylisting first.
	c := ts.dial("policy")
	r := bufio.NewReader(c)
	for _, at := range []engine.Time{t0, t0 + 300} {
		ts.clock.Set(at)
		for _, req := range reqs {
			io.Copy(c, bytes.NewReader(req))
			readReplies(b, r, 1)
		}
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for w := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", ts.srv.Addr("policy").String())
			if err != nil {
				b.Error(err)
				return
			}
			defer c.Close()
			br := bufio.NewReaderSize(c, 64<<10)
			var window []byte
			seq := w * 1000003
			for next.Add(int64(depth)) <= int64(b.N) {
				window = window[:0]
				for range depth {
					seq++
					if seq%10 == 0 {
						window = append(window, policy("192.0.2.1", "x@y.example", fmt.Sprintf("new%d@example.test", seq))...)
					} else {
						window = append(window, reqs[seq%pool]...)
					}
				}
				if _, err := c.Write(window); err != nil {
					b.Error(err)
					return
				}
				for range depth {
					for {
						line, err := br.ReadSlice('\n')
						if err != nil {
							b.Error(err)
							return
						}
						if len(line) == 1 {
							break
						}
					}
				}
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
	b.ReportMetric(0, "ns/op")
}

func BenchmarkPolicyOneAtATime(b *testing.B) { benchPolicy(b, 64, 1) }
func BenchmarkPolicyPipelined(b *testing.B)  { benchPolicy(b, 64, 32) }

// BenchmarkHTTPBatch times the batch endpoint's own work, without the
// network: parsing a body of 1,000 checks of known triplets, deciding them
// and writing the answer.
//
//	go test -run '^$' -bench HTTPBatch -count 6 ./server
func BenchmarkHTTPBatch(b *testing.B) {
	ts := startServer(b, func(c *Config) { c.DecisionLog = LogOff })
	const n = 1000
	body := func(at int64) []byte {
		out := []byte{'['}
		for i := range n {
			if i > 0 {
				out = append(out, ',')
			}
			out = fmt.Appendf(out, `{"client_address":"10.%d.%d.7","client_name":"mail%d.sender.example","sender":"newsletter-%d@sender.example","recipient":"user%d@example.test","time":%d}`,
				i/256, i%256, i, i%50, i, at)
		}
		return append(out, ']')
	}
	var ctx fasthttp.RequestCtx
	run := func(body []byte) {
		ctx.Request.Reset()
		ctx.Response.Reset()
		ctx.Request.Header.SetMethod("POST")
		ctx.Request.SetBody(body)
		ts.srv.httpBatch(&ctx, body)
		if ctx.Response.StatusCode() != fasthttp.StatusOK {
			b.Fatalf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
		}
	}
	run(body(t0.Unix()))
	run(body(t0.Unix() + 300))
	known := body(t0.Unix() + 400)
	run(known)
	if !bytes.Contains(ctx.Response.Body(), []byte(`"known"`)) {
		b.Fatalf("not passed as known: %.200s", ctx.Response.Body())
	}
	for b.Loop() {
		run(known)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/check")
}
