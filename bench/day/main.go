// Command day drives a simulated day of mail through the Postfix policy
// protocol against greylisting servers, one after the other, and reports
// for each kind of sender how long its mail waited to be accepted.
//
//	go run ./bench/day --server greyhold-name=test-clock:127.0.0.1:10023 \
//	    --server postgrey=faketime:/tmp/stamp:127.0.0.1:10030
//
// The day (traffic.go) is classic MTAs, the pools of large senders that
// retry from other hosts and /24s, ESPs with a bounce address per message,
// dual-stack hosts, spam bots that never retry and a botnet that retries
// from other hosts of its ISP; the same seed gives every server the same
// attempts. Each message is tried at its time; a deferred one is tried
// again on its sender's schedule until accepted or given up.
//
// No server waits a real day. greyhold runs with --test-clock and each
// request carries its time (policy_test_time=). A server without a test
// clock (postgrey) runs under libfaketime with FAKETIME_TIMESTAMP_FILE
// and FAKETIME_NO_CACHE=1, and day writes the request's time into that
// file before each request ("faketime:" servers): the server reads the
// file at each time() call. How faithfully the server kept the simulated
// clock is measured from its answers: postgrey is started with a defer
// text that gives the seconds left (%s), which day compares with what the
// simulated clock says they should be.
//
// Servers are loopback addresses only.
package main

import (
	"bufio"
	"container/heap"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// dayStart is the simulated day's midnight, 2026-06-01 UTC.
var dayStart = time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)

type server struct {
	name  string
	mode  string // test-clock or faketime
	stamp string // the faketime file
	addr  string
}

type serverList []server

func (l *serverList) String() string { return fmt.Sprint(*l) }

func (l *serverList) Set(v string) error {
	name, rest, ok := strings.Cut(v, "=")
	if !ok {
		return fmt.Errorf("%q: want NAME=test-clock:HOST:PORT or NAME=faketime:FILE:HOST:PORT", v)
	}
	s := server{name: name}
	switch {
	case strings.HasPrefix(rest, "test-clock:"):
		s.mode, s.addr = "test-clock", strings.TrimPrefix(rest, "test-clock:")
	case strings.HasPrefix(rest, "faketime:"):
		rest = strings.TrimPrefix(rest, "faketime:")
		i := strings.Index(rest, ":")
		if i < 0 {
			return fmt.Errorf("%q: want NAME=faketime:FILE:HOST:PORT", v)
		}
		s.mode, s.stamp, s.addr = "faketime", rest[:i], rest[i+1:]
	default:
		return fmt.Errorf("%q: want NAME=test-clock:HOST:PORT or NAME=faketime:FILE:HOST:PORT", v)
	}
	host, _, err := net.SplitHostPort(s.addr)
	if err != nil {
		return fmt.Errorf("%q: %w", v, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%q: only loopback servers", v)
	}
	*l = append(*l, s)
	return nil
}

func main() {
	var servers serverList
	flag.Var(&servers, "server", "a server to drive, NAME=test-clock:HOST:PORT or NAME=faketime:FILE:HOST:PORT; repeat it")
	seed := flag.Uint64("seed", 1, "the day's seed")
	n := flag.Int("messages", 4000, "messages in the day")
	delay := flag.Int("delay", 300, "the servers' delay in seconds, for the faithfulness check")
	out := flag.String("out", "", "also write the report as Markdown here")
	flag.Parse()
	if len(servers) == 0 {
		fmt.Fprintln(os.Stderr, "day: no --server")
		os.Exit(2)
	}
	msgs := day(*seed, *n)
	var b strings.Builder
	fmt.Fprintf(&b, "Seed %d, %d messages over 20 hours (retries until the day is over, at most 30 hours), delay %d s.\n\n", *seed, len(msgs), *delay)
	for _, s := range servers {
		res, err := run(s, msgs, *delay)
		if err != nil {
			fmt.Fprintf(os.Stderr, "day: %s: %v\n", s.name, err)
			os.Exit(1)
		}
		res.report(&b, s)
	}
	fmt.Print(b.String())
	if *out != "" {
		if err := os.WriteFile(*out, []byte(b.String()), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "day:", err)
			os.Exit(1)
		}
	}
}

// event is a message's next attempt.
type event struct {
	at  time.Duration
	m   *Message
	try int // 1 for the first attempt
	// probe marks a clock probe of a faketime server: a triplet of its own
	// asked at the top of each simulated hour and again 100 s later, whose
	// second answer must say delay-100 seconds left.
	probe bool
}

// probeGap is how long after its first request a clock probe asks again.
const probeGap = 100 * time.Second

type queue []event

func (q queue) Len() int { return len(q) }
func (q queue) Less(i, j int) bool {
	if q[i].at != q[j].at {
		return q[i].at < q[j].at
	}
	return q[i].m.ID < q[j].m.ID
}
func (q queue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *queue) Push(x any)   { *q = append(*q, x.(event)) }
func (q *queue) Pop() any {
	old := *q
	e := old[len(old)-1]
	*q = old[:len(old)-1]
	return e
}

type outcome struct {
	accepted bool
	delay    time.Duration
	attempts int
}

type result struct {
	by       [numKinds][]outcome
	requests int
	// clockErr holds, for each clock probe of a faketime server, the
	// seconds left it answered less those the simulated clock gives.
	clockErr []int
	took     time.Duration
}

var secondsLeft = regexp.MustCompile(`retry in (\d+)s`)

// horizon is when the simulation stops: retries after it are not tried.
const horizon = 30 * time.Hour

func run(s server, msgs []*Message, delay int) (*result, error) {
	c, err := net.Dial("tcp", s.addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	rd := bufio.NewReader(c)
	res := &result{}
	q := make(queue, 0, len(msgs))
	for _, m := range msgs {
		q = append(q, event{at: m.At, m: m, try: 1})
	}
	if s.mode == "faketime" {
		for h := range 30 {
			pm := &Message{ID: -1 - h, At: time.Duration(h) * time.Hour, Sender: fmt.Sprintf("probe%d@clock.example", h), Recipient: "probe@example.test",
				attempt: func(int) Attempt {
					return Attempt{Addr: "192.0.2.200", Name: "probe.example.org", HELO: "probe.example.org"}
				}}
			q = append(q, event{at: pm.At, m: pm, try: 1, probe: true}, event{at: pm.At + probeGap, m: pm, try: 2, probe: true})
		}
	}
	heap.Init(&q)
	start := time.Now()
	var req []byte
	for q.Len() > 0 {
		e := heap.Pop(&q).(event)
		a := e.m.attempt(e.try)
		now := dayStart.Add(e.at)
		if s.mode == "faketime" {
			if err := os.WriteFile(s.stamp, []byte(now.Format("@2006-01-02 15:04:05")+"\n"), 0o644); err != nil {
				return nil, err
			}
		}
		req = req[:0]
		req = fmt.Appendf(req, "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\nclient_address=%s\nclient_name=%s\nreverse_client_name=%s\nhelo_name=%s\nsender=%s\nrecipient=%s\ninstance=%x.%d\n",
			a.Addr, a.Name, a.Name, a.HELO, e.m.Sender, e.m.Recipient, e.m.ID, e.try)
		if s.mode == "test-clock" {
			req = fmt.Appendf(req, "policy_test_time=%d\n", now.Unix())
		}
		req = append(req, '\n')
		if _, err := c.Write(req); err != nil {
			return nil, err
		}
		reply, err := readReply(rd)
		if err != nil {
			return nil, fmt.Errorf("message %d attempt %d: %w", e.m.ID, e.try, err)
		}
		action := strings.TrimPrefix(reply, "action=")
		if e.probe {
			if e.try == 2 {
				if sm := secondsLeft.FindStringSubmatch(action); sm != nil {
					got, _ := strconv.Atoi(sm[1])
					res.clockErr = append(res.clockErr, got-(delay-int(probeGap/time.Second)))
				} else {
					return nil, fmt.Errorf("clock probe at %v: %q, want a defer with the seconds left", e.at, action)
				}
			}
			continue
		}
		res.requests++
		deferred := strings.HasPrefix(action, "DEFER") || strings.HasPrefix(action, "450") || strings.HasPrefix(action, "451")
		if !deferred {
			res.by[e.m.Kind] = append(res.by[e.m.Kind], outcome{accepted: true, delay: e.at - e.m.At, attempts: e.try})
			continue
		}
		wait := e.m.retry(e.try)
		if wait == 0 || e.at+wait > horizon {
			res.by[e.m.Kind] = append(res.by[e.m.Kind], outcome{attempts: e.try})
			continue
		}
		heap.Push(&q, event{at: e.at + wait, m: e.m, try: e.try + 1})
	}
	res.took = time.Since(start)
	return res, nil
}

// readReply reads "action=..." and the empty line after it.
func readReply(r *bufio.Reader) (string, error) {
	var action string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			if err == io.EOF {
				return "", fmt.Errorf("the server closed the connection")
			}
			return "", err
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			if action == "" {
				return "", fmt.Errorf("an empty reply")
			}
			return action, nil
		}
		if strings.HasPrefix(line, "action=") {
			action = line
		}
	}
}

func quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return d[min(len(d)-1, int(q*float64(len(d))))]
}

func fmtDur(d time.Duration) string {
	switch {
	case d == 0:
		return "0"
	case d < time.Hour:
		return fmt.Sprintf("%.1f min", d.Minutes())
	}
	return fmt.Sprintf("%.1f h", d.Hours())
}

func (r *result) report(b *strings.Builder, s server) {
	fmt.Fprintf(b, "### %s\n\n%d requests in %.1f s (%s).\n\n", s.name, r.requests, r.took.Seconds(), s.mode)
	fmt.Fprintln(b, "| sender | messages | accepted | median delay | p90 delay | over 15 min | over 1 h |")
	fmt.Fprintln(b, "|---|---:|---:|---:|---:|---:|---:|")
	for k := range numKinds {
		o := r.by[k]
		var delays []time.Duration
		over15, over1h := 0, 0
		for _, x := range o {
			if !x.accepted {
				continue
			}
			delays = append(delays, x.delay)
			if x.delay > 15*time.Minute {
				over15++
			}
			if x.delay > time.Hour {
				over1h++
			}
		}
		slices.Sort(delays)
		if k.spam() {
			stopped := len(o) - len(delays)
			fmt.Fprintf(b, "| %s | %d | %d (stopped %.1f%%) | %s | %s | | |\n", k, len(o), len(delays),
				100*float64(stopped)/float64(max(1, len(o))), fmtDur(quantile(delays, 0.5)), fmtDur(quantile(delays, 0.9)))
			continue
		}
		// Waits are counted over all of a kind's messages: one never
		// accepted waited more than an hour.
		lost := len(o) - len(delays)
		fmt.Fprintf(b, "| %s | %d | %d | %s | %s | %.1f%% | %.1f%% |\n", k, len(o), len(delays),
			fmtDur(quantile(append(delays, repeatDur(30*time.Hour, lost)...), 0.5)),
			fmtDur(quantile(append(delays, repeatDur(30*time.Hour, lost)...), 0.9)),
			100*float64(over15+lost)/float64(max(1, len(o))), 100*float64(over1h+lost)/float64(max(1, len(o))))
	}
	if len(r.clockErr) > 0 {
		slices.Sort(r.clockErr)
		fmt.Fprintf(b, "\nClock faithfulness: %d probes (a triplet asked again 100 s after its first request, every simulated hour); seconds left as answered less as the simulated clock gives: min %d, median %d, max %d.\n",
			len(r.clockErr), r.clockErr[0], r.clockErr[len(r.clockErr)/2], r.clockErr[len(r.clockErr)-1])
	}
	fmt.Fprintln(b)
}

func repeatDur(d time.Duration, n int) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = d
	}
	return out
}
