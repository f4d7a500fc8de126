package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"
)

// warmup makes every pool triplet known to the server before the
// measurement: each is sent twice over the policy protocol, first dated
// --warmup-age ago and then now (policy_test_time, which greyhold honours
// with --test-clock), so the second pass finds it past the delay and
// passes it. Servers without test times (postgrey, gross) get the pool,
// a real wait of --warmup-delay, and the pool again.
func warmup(ctx context.Context, cfg *config, w *workload, stderr io.Writer) error {
	pw := w
	if w.proto != "policy" {
		// The same triplets, rendered for the policy protocol; the few
		// attributes a greylister reads are enough here.
		pc := *cfg
		pc.realistic, pc.newFraction = false, 0
		pw = buildWorkload(&pc, "policy", w.salt)
	}
	if len(pw.pool.c) == 0 {
		return nil // --new-fraction 1: nothing is ever known
	}
	p := plan{target: cfg.warmupTarget, proto: "policy", conns: min(cfg.conns, 16), pipeline: cfg.warmupDepth,
		maxErrs: int64(cfg.maxErrors), stall: cfg.replyTimeout, sequential: true}
	pass := func(testTime int64) (*result, error) {
		p.testTime = testTime
		res, err := newRunner(p, pw, cfg.seed).run(ctx)
		switch {
		case err != nil:
			return nil, err
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case res.errors > 0:
			return nil, fmt.Errorf("%d errors; the first: %w", res.errors, res.firstErr)
		}
		return res, nil
	}
	t0 := time.Now()
	var first, second *result
	var err error
	if cfg.warmupDelay > 0 {
		if first, err = pass(0); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "load: warmup: sent %d triplets to %s (%s); waiting %v for the greylisting delay\n",
			first.requests, cfg.warmupTarget, kindList(first), cfg.warmupDelay)
		select {
		case <-time.After(cfg.warmupDelay):
		case <-ctx.Done():
			return ctx.Err()
		}
		if second, err = pass(0); err != nil {
			return err
		}
	} else {
		now := time.Now().Unix()
		if first, err = pass(now - int64(cfg.warmupAge/time.Second)); err != nil {
			return err
		}
		if second, err = pass(now); err != nil {
			return err
		}
	}
	fmt.Fprintf(stderr, "load: warmup: %d triplets via %s in %.2fs; first pass %s; second pass %s\n",
		second.requests, cfg.warmupTarget, time.Since(t0).Seconds(), kindList(first), kindList(second))
	var deferred uint64
	for k, n := range second.replies {
		if isDefer(k) {
			deferred += n
		}
	}
	if deferred > 0 {
		if cfg.warmupDelay > 0 {
			return fmt.Errorf("%d of %d triplets were still deferred on the second pass: make --warmup-delay longer than the server's delay", deferred, second.requests)
		}
		return fmt.Errorf("%d of %d triplets were still deferred on the second pass: the server ignores policy_test_time (start greyhold with --test-clock; for postgrey or gross use --warmup-delay) or its delay is longer than --warmup-age %v",
			deferred, second.requests, cfg.warmupAge)
	}
	return nil
}

// isDefer tells a reply kind that defers: DEFER_IF_PERMIT, DEFER, a 4xx
// code, or greyhold's HTTP "defer/...".
func isDefer(kind string) bool {
	return strings.HasPrefix(kind, "DEFER") || strings.HasPrefix(kind, "defer") ||
		len(kind) == 3 && kind[0] == '4'
}

func kindList(r *result) string {
	var b strings.Builder
	for i, k := range r.kindsSorted() {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%d", k, r.replies[k])
	}
	if r.other > 0 {
		fmt.Fprintf(&b, " other=%d", r.other)
	}
	return b.String()
}
