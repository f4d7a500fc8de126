package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// The operator's commands: each asks a running server's HTTP API, as
// stats does, and prints its JSON answer.

// tripletFlags are the flags that name one triplet, as check takes them.
type tripletFlags struct {
	client, name, sender, rcpt, helo, sasl *string
}

func addTripletFlags(fs *flag.FlagSet) tripletFlags {
	return tripletFlags{
		client: fs.String("client", "", "client IP address (required)"),
		name:   fs.String("client-name", "unknown", "client host name, as Postfix's client_name (verified, or unknown)"),
		sender: fs.String("sender", "", "envelope sender (empty for a bounce)"),
		rcpt:   fs.String("recipient", "", "envelope recipient (required)"),
		helo:   fs.String("helo", "", "HELO name, for selection rules that read it"),
		sasl:   fs.String("sasl-username", "", "SASL user name, for selection rules that read it"),
	}
}

func (f tripletFlags) values() url.Values {
	v := url.Values{"client_address": {*f.client}, "client_name": {*f.name}, "sender": {*f.sender}, "recipient": {*f.rcpt}}
	if *f.helo != "" {
		v.Set("helo_name", *f.helo)
	}
	if *f.sasl != "" {
		v.Set("sasl_username", *f.sasl)
	}
	return v
}

// parseCommand parses a command's flags; done with a code when it should
// stop there (help, or a usage error).
func parseCommand(fs *flag.FlagSet, synopsis, about string, args []string) (code int, done bool) {
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: greyhold %s\n\n%s\n\nFlags:\n", synopsis, about)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, true
		}
		return 2, true
	}
	return 0, false
}

// callAPIWith is callAPI with a query string.
func callAPIWith(method, addr, token, path string, query url.Values) int {
	if len(query) > 0 {
		path += "?" + query.Encode()
	}
	return callAPI(method, addr, token, path)
}

func runTripletCommand(name string, args []string) int {
	about := map[string]string{
		"explain": "Tell what a running server holds for one triplet and what it would answer, changing nothing:\nthe key's parts after normalisation, the state (unknown; pending since T with N retries,\npassing from T+delay; passed, last seen, expires), the client network's auto-whitelist,\nthe whitelisting that matches, and the selection rule that decides (GET /v1/triplet).",
		"pass":    "Release one triplet: it passes from now on, as if it had retried after the delay\n(POST /v1/triplet/pass; logged and replicated like any change).",
		"forget":  "Forget one triplet: its next attempt is new, deferred for the whole delay\n(DELETE /v1/triplet; logged and replicated like any change).",
	}[name]
	fs := flag.NewFlagSet("greyhold "+name, flag.ContinueOnError)
	addr, token := apiFlags(fs)
	tf := addTripletFlags(fs)
	if code, done := parseCommand(fs, name+" --client IP [--client-name NAME] --sender ADDR --recipient ADDR [flags]", about, args); done {
		return code
	}
	if *tf.client == "" || *tf.rcpt == "" {
		fs.Usage()
		return 2
	}
	switch name {
	case "pass":
		return callAPIWith("POST", *addr, *token, "/v1/triplet/pass", tf.values())
	case "forget":
		return callAPIWith("DELETE", *addr, *token, "/v1/triplet", tf.values())
	}
	return callAPIWith("GET", *addr, *token, "/v1/triplet", tf.values())
}

func runForgetClient(args []string) int {
	fs := flag.NewFlagSet("greyhold forget-client", flag.ContinueOnError)
	addr, token := apiFlags(fs)
	client := fs.String("client", "", "a client IP address of the network (required)")
	show := fs.Bool("show", false, "only show the network's auto-whitelist state (GET /v1/client)")
	if code, done := parseCommand(fs, "forget-client --client IP [flags]",
		"Forget a client network's auto-whitelist: its passes are counted again from none\n(DELETE /v1/client; logged and replicated like any change). Its triplets stay.", args); done {
		return code
	}
	if *client == "" {
		fs.Usage()
		return 2
	}
	if *show {
		return callAPIWith("GET", *addr, *token, "/v1/client", url.Values{"ip": {*client}})
	}
	return callAPIWith("DELETE", *addr, *token, "/v1/client", url.Values{"ip": {*client}})
}

func runWhitelist(args []string) int {
	fs := flag.NewFlagSet("greyhold whitelist", flag.ContinueOnError)
	addr, token := apiFlags(fs)
	ttl := fs.String("ttl", "", "with add: the rule's lifetime (30m, 1h, 2d); it ends by itself")
	synopsis := "whitelist [flags] list | add KIND VALUE | remove KIND VALUE"
	if code, done := parseCommand(fs, synopsis,
		"List, add or remove runtime whitelist rules (/v1/whitelist). KIND is client, client-name,\nsender or recipient; a rule added with --ttl is listed with the time it has left.", args); done {
		return code
	}
	a := fs.Args()
	// Flags after the words too: whitelist add sender example.com --ttl 1h.
	for i, w := range a {
		if strings.HasPrefix(w, "-") {
			if err := fs.Parse(a[i:]); err != nil {
				return 2
			}
			a = append(a[:i:i], fs.Args()...)
			break
		}
	}
	switch {
	case len(a) == 1 && a[0] == "list":
		return callAPI("GET", *addr, *token, "/v1/whitelist")
	case len(a) == 3 && (a[0] == "add" || a[0] == "remove"):
		q := url.Values{"kind": {a[1]}, "value": {a[2]}}
		method := "DELETE"
		if a[0] == "add" {
			method = "POST"
			if *ttl != "" {
				q.Set("ttl", *ttl)
			}
		} else if *ttl != "" {
			fmt.Fprintln(os.Stderr, "greyhold whitelist: --ttl goes with add")
			return 2
		}
		return callAPIWith(method, *addr, *token, "/v1/whitelist", q)
	}
	fs.Usage()
	return 2
}

func runTop(args []string) int {
	fs := flag.NewFlagSet("greyhold top", flag.ContinueOnError)
	addr, token := apiFlags(fs)
	n := fs.Int("n", 10, "how many of each to show")
	if code, done := parseCommand(fs, "top [flags]",
		"Show the client networks (or identities) and sender domains deferred most in the last hour,\nestimated from a sample of the defers (GET /v1/stats?top=N).", args); done {
		return code
	}
	if *n < 1 {
		fmt.Fprintln(os.Stderr, "greyhold top: -n must be 1 or more")
		return 2
	}
	req, err := http.NewRequest("GET", "http://"+*addr+"/v1/stats?top="+strconv.Itoa(*n), nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "greyhold:", err)
		return 1
	}
	if *token != "" {
		req.Header.Set("Authorization", "Bearer "+*token)
	}
	resp, err := (&http.Client{Timeout: time.Minute}).Do(req)
	if err != nil {
		fmt.Fprintf(os.Stderr, "greyhold: %v (is greyhold serve running with --http-listen %s?)\n", err, *addr)
		return 1
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(os.Stderr, "greyhold: GET /v1/stats?top=%d: %s: %s\n", *n, resp.Status, strings.TrimSpace(string(b)))
		return 1
	}
	return printTop(os.Stdout, b)
}

// printTop prints GET /v1/stats?top=N's answer as two tables.
func printTop(w io.Writer, body []byte) int {
	var v struct {
		Top struct {
			Window     int `json:"window_seconds"`
			SampleRate int `json:"sample_rate"`
			Samples    int `json:"samples"`
			Clients    []struct {
				Key    string `json:"key"`
				Defers uint64 `json:"defers"`
			} `json:"clients"`
			Domains []struct {
				Key    string `json:"key"`
				Defers uint64 `json:"defers"`
			} `json:"sender_domains"`
		} `json:"top"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		fmt.Fprintf(os.Stderr, "greyhold top: the server's answer is not what this greyhold reads: %v\n", err)
		return 1
	}
	t := v.Top
	fmt.Fprintf(w, "Deferred most in the last %v (estimated from %d sampled defers, one in %d):\n\n", time.Duration(t.Window)*time.Second, t.Samples, t.SampleRate)
	fmt.Fprintf(w, "%10s  %s\n", "DEFERS", "CLIENT")
	for _, e := range t.Clients {
		fmt.Fprintf(w, "%10d  %s\n", e.Defers, e.Key)
	}
	fmt.Fprintf(w, "\n%10s  %s\n", "DEFERS", "SENDER DOMAIN")
	for _, e := range t.Domains {
		fmt.Fprintf(w, "%10d  %s\n", e.Defers, e.Key)
	}
	return 0
}
