// Command peers is the helper of bench/peers.sh (make bench-peers), which
// runs the same workloads against greyhold, postgrey, gross and the null
// server:
//
//	peers table --runs runs.tsv --md table.md --servers null,greyhold,postgrey,gross
//
// reads the runs bench/peers.sh recorded (one line per server and
// workload: the bench/load --json output, the server's RSS after the run,
// or why there is no figure) and prints one table, with greyhold's
// throughput as a multiple of each other server's on the same workload, as
// text on stdout and as Markdown into --md.
package main

import (
	"fmt"
	"io"
	"os"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "table":
		return runTable(args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "peers: unknown subcommand %q\n%s", args[0], usage)
	return 2
}

const usage = `usage:
  peers table --runs FILE [--md FILE] [--servers a,b,c] [--reference greyhold]
      print the comparison table of bench/peers.sh's runs
`
