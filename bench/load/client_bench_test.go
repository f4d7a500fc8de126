package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// BenchmarkHTTPClient measures what each way of sending batches costs the
// generator in CPU, against a null HTTP server in a child process (so the
// process's CPU time is the client's alone): the raw keep-alive client the
// tool uses, net/http, and fasthttp's HostClient. Sixteen connections,
// one request at a time on each: with a single connection the figures
// swing twofold from run to run with where the scheduler puts client and
// server, with sixteen the CPUs are busy and they settle. cpu-us/req is
// the figure that matters, since the generator shares the machine's cores
// with the server it measures.
//
//	go test -run '^$' -bench HTTPClient -benchtime 20000x ./bench/load
func BenchmarkHTTPClient(b *testing.B) {
	nc, err := startNullChild("http", os.Stderr)
	if err != nil {
		b.Fatal(err)
	}
	defer nc.stop()
	const conns = 16
	for _, batch := range []int{1, 100} {
		cfg := &config{proto: "http", pool: 10000, seed: 1, batch: batch, target: nc.addr}
		w := buildWorkload(cfg, "http", 1)
		g := newGen(w, 1, 0, time.Now().Unix())
		body := []byte{'['}
		for j := range batch {
			if j > 0 {
				body = append(body, ',')
			}
			body = g.appendOne(body)
		}
		body = append(body, ']')
		url := "http://" + nc.addr + "/v1/check/batch"
		report := func(b *testing.B, cpu time.Duration) {
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-us/req")
		}
		name := map[int]string{1: "batch=1", 100: "batch=100"}[batch]

		b.Run(name+"/raw", func(b *testing.B) {
			b.ReportAllocs()
			p := plan{target: nc.addr, proto: "http", conns: conns, pipeline: 1, duration: maxDuration,
				limit: int64(b.N * batch), maxErrs: 1, stall: 10 * time.Second}
			// run renders a fresh body per request, which the others
			// do not have to: the comparison leans against raw.
			res, err := newRunner(p, w, 1).run(context.Background())
			if err != nil || res.errors > 0 {
				b.Fatal(err, res.firstErr)
			}
			report(b, res.cpu)
		})

		b.Run(name+"/net-http", func(b *testing.B) {
			b.ReportAllocs()
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conns, DisableCompression: true}}
			defer client.CloseIdleConnections()
			cpu0 := cpuTime()
			parallel(b, conns, func() func() {
				buf := make([]byte, 1<<20)
				var k kinds
				return func() {
					req, err := http.NewRequest("POST", url, bytes.NewReader(body))
					if err != nil {
						panic(err)
					}
					req.Header.Set("Content-Type", "application/json")
					resp, err := client.Do(req)
					if err != nil {
						panic(err)
					}
					n, err := io.ReadFull(resp.Body, buf[:resp.ContentLength])
					resp.Body.Close()
					if err != nil {
						panic(err)
					}
					if items, err := scanAnswers(buf[:n], &k); err != nil || items != batch {
						panic(fmt.Sprint(items, err))
					}
				}
			})
			report(b, cpuTime()-cpu0)
		})

		b.Run(name+"/fasthttp", func(b *testing.B) {
			b.ReportAllocs()
			hc := &fasthttp.HostClient{Addr: nc.addr, MaxConns: conns}
			defer hc.CloseIdleConnections()
			cpu0 := cpuTime()
			parallel(b, conns, func() func() {
				req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
				req.SetRequestURI(url)
				req.Header.SetMethod("POST")
				req.Header.SetContentType("application/json")
				req.SetBody(body)
				var k kinds
				return func() {
					if err := hc.Do(req, resp); err != nil {
						panic(err)
					}
					if items, err := scanAnswers(resp.Body(), &k); err != nil || items != batch {
						panic(fmt.Sprint(items, err))
					}
				}
			})
			report(b, cpuTime()-cpu0)
		})
	}
}

// parallel runs b.N calls spread over n goroutines, each with its own
// state from setup (its own connection, in effect).
func parallel(b *testing.B, n int, setup func() func()) {
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	for range n {
		do := setup()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				do()
			}
		}()
	}
	wg.Wait()
}

// BenchmarkRender measures rendering a window of 32 realistic policy
// requests from a pool of 100,000, drawn and touched first (as the
// generator does) or picked and copied one at a time.
func BenchmarkRender(b *testing.B) {
	cfg := &config{proto: "policy", pool: 100000, seed: 1, realistic: true, newFraction: 0.1, batch: 1}
	w := buildWorkload(cfg, "policy", 1)
	for _, drawn := range []bool{true, false} {
		b.Run(map[bool]string{true: "drawn", false: "one-by-one"}[drawn], func(b *testing.B) {
			g := newGen(w, 1, 0, 1_800_000_000)
			var buf []byte
			for b.Loop() {
				buf = buf[:0]
				if drawn {
					g.draw(32)
					for k := range 32 {
						buf = g.appendPick(buf, k)
					}
				} else {
					for range 32 {
						buf = g.appendOne(buf)
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(32*b.N), "ns/req")
			b.ReportMetric(0, "ns/op")
		})
	}
}
