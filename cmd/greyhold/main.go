// Command greyhold is a greylisting policy server for Postfix and other
// MTAs. See README.md, or run greyhold serve --help.
//
//	greyhold serve             run the server
//	greyhold check             ask a running server about one triplet
//	greyhold stats             print a running server's figures
//	greyhold snapshot          make a running server write a snapshot
//	greyhold explain           what a running server holds for one triplet, and why
//	greyhold pass, forget      release or forget one triplet
//	greyhold forget-client     forget a client network's auto-whitelist
//	greyhold whitelist         list, add (with a lifetime) or remove runtime whitelist rules
//	greyhold top               the clients and sender domains deferred most in the last hour
//	greyhold import            bring postgrey's or sqlgrey's state into a data directory, offline
//	greyhold inspect DIR       verify and summarise a data directory, offline
//	greyhold loghash VALUE     the hash the log shows for a value, with --log-addresses=hash
//	greyhold version           print the version
package main

import (
	"fmt"
	"os"
)

// version is set at build time: go build -ldflags "-X main.version=v1.2.3".
var version = "dev"

const usage = `Usage: greyhold <command> [flags]

Commands:
  serve      run the greylisting server (greyhold serve --help for its flags)
  check      ask a running server about one triplet; exit 0 = pass, 75 = defer
  stats      print a running server's figures (HTTP API)
  snapshot   make a running server write a snapshot now (HTTP API)
  explain    tell what a running server holds for one triplet and why it defers it (HTTP API)
  pass       release one triplet: it passes from now on (HTTP API)
  forget     forget one triplet: its next attempt is new (HTTP API)
  forget-client  forget a client network's auto-whitelist (HTTP API)
  whitelist  list, add (optionally with --ttl) or remove runtime whitelist rules (HTTP API)
  top        the client networks and sender domains deferred most in the last hour (HTTP API)
  inspect    verify and summarise a data directory, offline
  loghash    print the hash log lines show for a value under --log-addresses=hash
  import     bring postgrey's or sqlgrey's state into a data directory, offline
  version    print the version
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	args := os.Args[2:]
	var code int
	switch os.Args[1] {
	case "serve":
		code = runServe(args)
	case "check":
		code = runCheck(args)
	case "stats":
		code = runStats(args)
	case "snapshot":
		code = runSnapshot(args)
	case "explain", "pass", "forget":
		code = runTripletCommand(os.Args[1], args)
	case "forget-client":
		code = runForgetClient(args)
	case "whitelist":
		code = runWhitelist(args)
	case "top":
		code = runTop(args)
	case "inspect":
		code = runInspect(args)
	case "loghash":
		code = runLoghash(args)
	case "import":
		code = runImport(args)
	case "manpage":
		code = runManpage(args)
	case "version", "--version", "-version":
		fmt.Println("greyhold", version)
	case "help", "-h", "--help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "greyhold: unknown command %q\n\n%s", os.Args[1], usage)
		code = 2
	}
	os.Exit(code)
}
