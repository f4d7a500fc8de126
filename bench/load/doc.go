// Command load is greyhold's load generator: it drives a greylisting
// policy server over loopback and reports throughput, latency percentiles
// and the replies by kind, so that greyhold's figures and its comparisons
// with a null server, postgrey and gross all come from one tool.
//
//	go run ./bench/load --proto policy --target 127.0.0.1:10023 --conns 64 --pipeline 1 --warmup --new-fraction 0.1
//	go run ./bench/load --compare-null --target 127.0.0.1:10023 --pipeline 32
//	go run ./bench/load --null-server 127.0.0.1:10099 --proto line
//
// Protocols (--proto): policy, the Postfix policy delegation protocol;
// line, greyhold's one-line protocol; http, greyhold's POST
// /v1/check/batch with --batch checks a request. Only loopback targets are
// accepted: the tool is built to saturate what it points at.
//
// Each of --conns connections is a closed loop: it writes a window of
// --pipeline requests in one write, reads that many replies, and repeats
// until --duration (or --requests) is reached. Requests are rendered from
// a pool of --pool pre-rendered triplets (a fraction --new-fraction of
// them made never-seen instead); with --realistic, the default, policy
// requests carry every attribute Postfix 3.7 sends, in its order, with
// client_port and instance changing per request as Postfix's do.
//
// --warmup first makes the pool known: every triplet is sent twice over
// the policy protocol, dated --warmup-age ago and then now
// (policy_test_time, honoured by greyhold serve --test-clock), or, with
// --warmup-delay for servers that have no test clock (postgrey, gross),
// sent, waited for, and sent again. Start greyhold for benchmarks with
// --test-clock --log-decisions=off, unless the log is what is measured:
// writing a line per decision takes a quarter of the one-at-a-time
// throughput (bench/RESULTS.md).
//
// --null-server runs a server that answers DUNNO (policy), PASS (line) or
// pass/known (http) without deciding anything, one write per read as
// greyhold answers: the ceiling of this machine. --compare-null starts one
// as a child process, runs the same workload against it and then against
// --target, and prints both lines and their ratio.
//
// The output is one line (or, with --json, a JSON object on stdout):
//
//	proto=policy target=127.0.0.1:10023 conns=64 pipeline=1 new=0.10 requests=523456 elapsed=10.00s req/s=52345
//	p50=1.13ms p99=5.70ms p999=10.3ms max=15.0ms errors=0 client_cpu=0.81 client_us/req=15.60
//	replies: DEFER_IF_PERMIT=52311 DUNNO=471145 other=0
//
// client_cpu is the cores the generator itself kept busy and
// client_us/req its CPU time per request: on a machine it shares with the
// server, every microsecond of it is one the server did not get. The exit
// status is 0 for a clean run, 1 when the target refused connections,
// answered garbage or stalled (the first error is printed), 2 for bad
// flags and 130 when interrupted.
package main
