package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
)

func (r *result) reqPerSec() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.requests) / r.elapsed.Seconds()
}

// clientCPU returns the cores the generator kept busy and its CPU time
// per request in microseconds.
func (r *result) clientCPU() (cores, usPerReq float64) {
	if r.elapsed > 0 {
		cores = r.cpu.Seconds() / r.elapsed.Seconds()
	}
	if r.requests > 0 {
		usPerReq = float64(r.cpu.Microseconds()) / float64(r.requests)
	}
	return cores, usPerReq
}

// ms renders nanoseconds as milliseconds with three significant digits.
func ms(ns uint64) string {
	v := float64(ns) / 1e6
	prec := 3
	switch {
	case v >= 100:
		prec = 0
	case v >= 10:
		prec = 1
	case v >= 1:
		prec = 2
	}
	return strconv.FormatFloat(v, 'f', prec, 64) + "ms"
}

// kindsSorted lists the reply kinds alphabetically.
func (r *result) kindsSorted() []string {
	ks := make([]string, 0, len(r.replies))
	for k := range r.replies {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// line is the one-line summary.
func (r *result) line() string {
	var b strings.Builder
	p := &r.plan
	fmt.Fprintf(&b, "proto=%s target=%s conns=%d pipeline=%d", p.proto, p.target, p.conns, p.pipeline)
	if p.proto == "http" {
		fmt.Fprintf(&b, " batch=%d", r.batch)
	}
	fmt.Fprintf(&b, " new=%.2f requests=%d", r.newFraction, r.requests)
	if p.proto == "http" {
		fmt.Fprintf(&b, " http_requests=%d", r.httpReqs)
	}
	cores, us := r.clientCPU()
	fmt.Fprintf(&b, " elapsed=%.2fs req/s=%.0f p50=%s p99=%s p999=%s max=%s errors=%d client_cpu=%.2f client_us/req=%.2f replies:",
		r.elapsed.Seconds(), r.reqPerSec(), ms(r.h.quantile(0.5)), ms(r.h.quantile(0.99)), ms(r.h.quantile(0.999)), ms(r.h.max),
		r.errors, cores, us)
	for _, k := range r.kindsSorted() {
		fmt.Fprintf(&b, " %s=%d", k, r.replies[k])
	}
	fmt.Fprintf(&b, " other=%d", r.other)
	return b.String()
}

type latencyJSON struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

type resultJSON struct {
	Proto          string            `json:"proto"`
	Target         string            `json:"target"`
	Conns          int               `json:"conns"`
	Pipeline       int               `json:"pipeline"`
	Batch          int               `json:"batch,omitempty"`
	NewFraction    float64           `json:"new_fraction"`
	Pool           int               `json:"pool"`
	Requests       uint64            `json:"requests"`
	HTTPRequests   uint64            `json:"http_requests,omitempty"`
	ElapsedS       float64           `json:"elapsed_s"`
	ReqPerS        float64           `json:"req_per_s"`
	LatencyMs      latencyJSON       `json:"latency_ms"`
	Replies        map[string]uint64 `json:"replies"`
	Other          uint64            `json:"other"`
	Errors         uint64            `json:"errors"`
	FirstError     string            `json:"first_error,omitempty"`
	Reconnects     uint64            `json:"reconnects"`
	ClientCPUCores float64           `json:"client_cpu_cores"`
	ClientUsPerReq float64           `json:"client_cpu_us_per_req"`
	Interrupted    bool              `json:"interrupted,omitempty"`
}

func (r *result) json() *resultJSON {
	p := &r.plan
	q := func(x float64) float64 { return float64(r.h.quantile(x)) / 1e6 }
	cores, us := r.clientCPU()
	j := &resultJSON{
		Proto: p.proto, Target: p.target, Conns: p.conns, Pipeline: p.pipeline,
		NewFraction: r.newFraction, Pool: r.pool, Requests: r.requests,
		ElapsedS: r.elapsed.Seconds(), ReqPerS: r.reqPerSec(),
		LatencyMs: latencyJSON{P50: q(0.5), P90: q(0.9), P99: q(0.99), P999: q(0.999),
			Max: float64(r.h.max) / 1e6, Mean: r.h.mean() / 1e6},
		Replies: r.replies, Other: r.other, Errors: r.errors, Reconnects: r.reconnects,
		ClientCPUCores: cores, ClientUsPerReq: us, Interrupted: r.interrupted,
	}
	if p.proto == "http" {
		j.Batch, j.HTTPRequests = r.batch, r.httpReqs
	}
	if r.firstErr != nil {
		j.FirstError = r.firstErr.Error()
	}
	return j
}

func writeJSON(w io.Writer, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // plain structs and maps of numbers: cannot fail
	}
	w.Write(append(b, '\n'))
}
