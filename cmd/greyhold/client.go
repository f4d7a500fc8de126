package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

// exitDefer is EX_TEMPFAIL from sysexits.h: the triplet was deferred.
const exitDefer = 75

// runCheck asks a running server about one triplet over the policy
// protocol, as Postfix would.
func runCheck(args []string) int {
	fs := flag.NewFlagSet("greyhold check", flag.ContinueOnError)
	server := fs.String("server", envOr("policy-listen", "127.0.0.1:10023"), "policy protocol address of the server (host:port, or a unix socket path)")
	client := fs.String("client", "", "client IP address (required)")
	name := fs.String("client-name", "unknown", "client host name")
	sender := fs.String("sender", "", "envelope sender (empty for a bounce)")
	rcpt := fs.String("recipient", "", "envelope recipient (required)")
	at := fs.Int64("time", 0, "Unix time to check at (only honoured by a server run with --test-clock)")
	timeout := fs.Duration("timeout", 10*time.Second, "give up after this long")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: greyhold check --client IP --sender ADDR --recipient ADDR [flags]\n\nExit status: 0 pass, %d defer, 1 error.\n\nFlags:\n", exitDefer)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *client == "" || *rcpt == "" {
		fs.Usage()
		return 2
	}
	network := "tcp"
	if strings.HasPrefix(*server, "/") {
		network = "unix"
	}
	c, err := net.DialTimeout(network, *server, *timeout)
	if err != nil {
		fmt.Fprintf(os.Stderr, "greyhold check: %v (is greyhold serve running?)\n", err)
		return 1
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(*timeout))
	var b strings.Builder
	fmt.Fprintf(&b, "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\nclient_address=%s\nclient_name=%s\nsender=%s\nrecipient=%s\n",
		*client, *name, *sender, *rcpt)
	if *at > 0 {
		fmt.Fprintf(&b, "policy_test_time=%d\n", *at)
	}
	b.WriteString("\n")
	if _, err := io.WriteString(c, b.String()); err != nil {
		fmt.Fprintf(os.Stderr, "greyhold check: %v\n", err)
		return 1
	}
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		fmt.Fprintf(os.Stderr, "greyhold check: reading the reply: %v\n", err)
		return 1
	}
	action := strings.TrimPrefix(strings.TrimSpace(line), "action=")
	fmt.Println(action)
	word, _, _ := strings.Cut(action, " ")
	switch strings.ToUpper(word) {
	case "DUNNO", "PREPEND", "OK":
		return 0
	}
	return exitDefer
}

func envOr(flagName, def string) string {
	if v, ok := os.LookupEnv(envName(flagName)); ok && v != "" {
		return v
	}
	return def
}

// apiFlags are the flags of the commands that use the HTTP API.
func apiFlags(fs *flag.FlagSet) (addr, token *string) {
	addr = fs.String("http", envOr("http-listen", "127.0.0.1:10024"), "HTTP API address of the server")
	token = fs.String("admin-token", os.Getenv(envName("admin-token")), "bearer token, if the server has one")
	return
}

func callAPI(method, addr, token, path string) int {
	req, err := http.NewRequest(method, "http://"+addr+path, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "greyhold:", err)
		return 1
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := (&http.Client{Timeout: 5 * time.Minute}).Do(req)
	if err != nil {
		fmt.Fprintf(os.Stderr, "greyhold: %v (is greyhold serve running with --http-listen %s?)\n", err, addr)
		return 1
	}
	defer resp.Body.Close()
	io.Copy(os.Stdout, resp.Body)
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(os.Stderr, "greyhold: %s %s: %s\n", method, path, resp.Status)
		return 1
	}
	return 0
}

func runStats(args []string) int {
	fs := flag.NewFlagSet("greyhold stats", flag.ContinueOnError)
	addr, token := apiFlags(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	return callAPI("GET", *addr, *token, "/v1/stats")
}

func runSnapshot(args []string) int {
	fs := flag.NewFlagSet("greyhold snapshot", flag.ContinueOnError)
	addr, token := apiFlags(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	return callAPI("POST", *addr, *token, "/v1/snapshot")
}
