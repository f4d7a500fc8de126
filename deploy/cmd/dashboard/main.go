// Command dashboard writes greyhold's Grafana dashboard (package
// dashboard) to the file named by its argument, or to standard output:
// make dashboard runs it to refresh deploy/grafana/greyhold.json.
package main

import (
	"fmt"
	"os"

	"github.com/greyhold/greyhold/deploy/dashboard"
)

func main() {
	b, err := dashboard.JSON()
	if err != nil {
		fmt.Fprintln(os.Stderr, "dashboard:", err)
		os.Exit(1)
	}
	switch len(os.Args) {
	case 1:
		_, err = os.Stdout.Write(b)
	case 2:
		err = os.WriteFile(os.Args[1], b, 0o644)
	default:
		fmt.Fprintln(os.Stderr, "usage: dashboard [FILE]")
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "dashboard:", err)
		os.Exit(1)
	}
}
