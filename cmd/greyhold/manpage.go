package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"time"
)

// runManpage writes greyhold(8), in roff, to standard output (greyhold
// manpage > greyhold.8; not listed in the usage, as only packaging wants
// it). The page is made from the flag definitions themselves so that it
// cannot drift from them: serve's FlagSet, and each other command's --help
// as this binary prints it. SOURCE_DATE_EPOCH, when set, dates the page, so
// that a package build is reproducible.
func runManpage(args []string) int {
	if len(args) > 0 {
		fmt.Fprintln(os.Stderr, "usage: greyhold manpage > greyhold.8")
		return 2
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "greyhold manpage: %v\n", err)
		return 1
	}
	date := time.Now().UTC()
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			fmt.Fprintf(os.Stderr, "greyhold manpage: SOURCE_DATE_EPOCH=%q: want seconds since 1970\n", s)
			return 2
		}
		date = time.Unix(n, 0).UTC()
	}
	help := func(cmd string) (string, error) { return commandHelp(self, cmd) }
	w := bufio.NewWriter(os.Stdout)
	err = writeManPage(w, version, date, help)
	if err == nil {
		err = w.Flush()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "greyhold manpage: %v\n", err)
		return 1
	}
	return 0
}

// commandHelp runs bin CMD --help with no GREYHOLD_* variables (some
// defaults follow them) and returns what it printed.
func commandHelp(bin, cmd string) (string, error) {
	c := exec.Command(bin, cmd, "--help")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GREYHOLD_") {
			c.Env = append(c.Env, kv)
		}
	}
	out, err := c.CombinedOutput()
	if _, exited := err.(*exec.ExitError); err != nil && !exited {
		return "", fmt.Errorf("%s %s --help: %w", bin, cmd, err)
	}
	return string(out), nil
}

// manDefaults replaces the defaults that depend on the machine the page
// is made on.
var manDefaults = map[string]string{
	"hostname": "the host's name",
}

// command is one line of usage's command list.
type command struct{ name, text string }

func commands() []command {
	var out []command
	in := false
	for _, l := range strings.Split(usage, "\n") {
		if strings.HasPrefix(l, "Commands:") {
			in = true
			continue
		}
		if !in || !strings.HasPrefix(l, "  ") {
			continue
		}
		f := strings.Fields(l)
		if len(f) >= 2 {
			out = append(out, command{f[0], strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(l), f[0]))})
		}
	}
	return out
}

// helpFlag is a flag as flag.PrintDefaults prints it.
type helpFlag struct{ name, arg, usage string }

// parseHelp splits a command's --help into its synopsis, its description
// and its flags.
func parseHelp(s string) (synopsis string, desc []string, flags []helpFlag) {
	seen := map[string]bool{}
	inDesc := true
	for _, l := range strings.Split(s, "\n") {
		switch {
		case strings.HasPrefix(l, "  -"):
			inDesc = false
			f := strings.TrimPrefix(l, "  -")
			head, text, _ := strings.Cut(f, "\t")
			name, arg, _ := strings.Cut(strings.TrimSpace(head), " ")
			flags = append(flags, helpFlag{name: name, arg: arg, usage: strings.TrimSpace(text)})
		case strings.HasPrefix(l, "    \t") && len(flags) > 0:
			f := &flags[len(flags)-1]
			f.usage = strings.TrimSpace(f.usage + " " + strings.TrimSpace(l))
		case strings.HasPrefix(l, "Usage: "):
			if synopsis != "" {
				inDesc = false // a usage printed twice
			}
			synopsis = strings.TrimPrefix(l, "Usage: ")
		case strings.HasPrefix(l, "Usage of "), strings.TrimSpace(l) == "Flags:":
		default:
			if t := strings.TrimSpace(l); inDesc && t != "" && !seen[t] {
				seen[t] = true
				desc = append(desc, t)
			}
		}
	}
	return synopsis, desc, flags
}

// roff escapes text for a roff line: backslashes, dashes (as minus signs,
// which is what a reader types), and a leading dot or quote.
func roff(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "-", `\-`)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}

// argName is what a flag takes, as the page shows it.
func argName(f *flag.Flag) string {
	if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
		return ""
	}
	switch f.Value.(type) {
	case duration:
		return "DURATION"
	case size:
		return "SIZE"
	case *list:
		return "LIST"
	}
	name, _ := flag.UnquoteUsage(f)
	return strings.ToUpper(name)
}

// defaultText is a flag's default as the page shows it: durations without
// their zero units (5m, not 5m0s), strings quoted; "" for none.
func defaultText(f *flag.Flag) string {
	if d, ok := manDefaults[f.Name]; ok {
		return roff(d)
	}
	v := f.DefValue
	if zeroDefault(v) {
		return ""
	}
	switch f.Value.(type) {
	case duration:
		if strings.HasSuffix(v, "m0s") || strings.HasSuffix(v, "h0s") {
			v = strings.TrimSuffix(v, "0s")
		}
		if strings.HasSuffix(v, "h0m") {
			v = strings.TrimSuffix(v, "0m")
		}
	case *list, size:
	default:
		if name, _ := flag.UnquoteUsage(f); name == "string" {
			v = strconv.Quote(v)
		}
	}
	return `\fB` + roff(v) + `\fR`
}

func zeroDefault(v string) bool {
	switch v {
	case "", "0", "false", "0s", "[]":
		return true
	}
	return false
}

// writeManPage writes the page; help returns a command's --help.
func writeManPage(w io.Writer, ver string, date time.Time, help func(cmd string) (string, error)) error {
	p := func(format string, a ...any) { fmt.Fprintf(w, format+"\n", a...) }
	p(`.\" greyhold(8), made by greyhold manpage from the flag definitions; do not edit.`)
	p(`.TH GREYHOLD 8 "%s" "greyhold %s" "System Administration"`, date.Format("2006-01-02"), roff(ver))
	p(".SH NAME")
	p(`greyhold \- greylisting policy server for Postfix and Exim`)
	p(".SH SYNOPSIS")
	p(`.B greyhold serve`)
	p(`.RI [ flags ]`)
	p(".br")
	p(`.B greyhold`)
	p(`.I command`)
	p(`.RI [ flags ]`)
	p(".SH DESCRIPTION")
	p(".B greyhold")
	p(`answers an MTA's policy requests: the first time a triplet of client network, sender and recipient shows up it tells the MTA to defer the mail with a temporary 4xx; real mail servers retry and get through after the delay, most spam engines never do.`)
	p(`It speaks the Postfix policy protocol (TCP or a unix socket), a one-line protocol for Exim and scripts, and an HTTP API with Prometheus metrics.`)
	p(`Its state is kept in memory, in a write-ahead log and in snapshots in its data directory; only keyed hashes of addresses are ever written.`)
	p(".SH COMMANDS")
	cmds := commands()
	for _, c := range cmds {
		p(".TP")
		p(`.B %s`, roff(c.name))
		p("%s", roff(c.text))
	}
	for _, c := range cmds {
		if c.name == "serve" {
			continue
		}
		out, err := help(c.name)
		if err != nil {
			return err
		}
		syn, desc, flags := parseHelp(out)
		if syn == "" && len(flags) == 0 {
			continue // version: no flags
		}
		p(`.SS "greyhold %s"`, roff(c.name))
		if syn != "" {
			p(".B %s", roff(syn))
			p(".PP")
		}
		for _, d := range desc {
			p("%s", roff(d))
		}
		for _, f := range flags {
			p(".TP")
			if f.arg != "" {
				p(`.BI \-\-%s " %s"`, roff(f.name), roff(strings.ToUpper(f.arg)))
			} else {
				p(`.B \-\-%s`, roff(f.name))
			}
			p("%s", roff(f.usage))
		}
	}

	fs := flag.NewFlagSet("greyhold serve", flag.ContinueOnError)
	c := defaultServeConfig()
	c.flags(fs)
	var own, aliases []*flag.Flag
	fs.VisitAll(func(f *flag.Flag) {
		if _, ok := aliasTargets[f.Name]; ok {
			aliases = append(aliases, f)
		} else {
			own = append(own, f)
		}
	})
	p(".SH OPTIONS")
	p(`The flags of`)
	p(`.BR "greyhold serve" .`)
	p(`Each can also be set in the environment as GREYHOLD_ and its name in capitals with underscores (GREYHOLD_DELAY=5m), or in the file named by \fB\-\-config\fR (one "name = value" a line).`)
	p(`The command line wins over the environment, which wins over the file.`)
	p(`Durations take Go's units and days (300s, 5m, 35d); sizes take KiB, MiB and GiB; lists are comma-separated.`)
	for _, f := range own {
		_, text := flag.UnquoteUsage(f)
		p(".TP")
		if a := argName(f); a != "" {
			p(`.BI \-\-%s " %s"`, roff(f.Name), a)
		} else {
			p(`.B \-\-%s`, roff(f.Name))
		}
		p("%s", roff(text))
		p(".br")
		if d := defaultText(f); d != "" {
			p(`Default: %s.`, d)
		}
		p(`Environment: \fB%s\fR.`, roff(envName(f.Name)))
	}
	p(`.SS "postgrey's names"`)
	p(`postgrey's command-line flags are accepted, so that its command lines carry over:`)
	sort.Slice(aliases, func(i, j int) bool { return aliases[i].Name < aliases[j].Name })
	for _, f := range aliases {
		p(".TP")
		if a := argName(f); a != "" {
			p(`.BI \-\-%s " %s"`, roff(f.Name), a)
		} else {
			p(`.B \-\-%s`, roff(f.Name))
		}
		p("%s", roff(f.Usage))
	}
	p(".SH FILES")
	p(".TP")
	p(`.I /etc/greyhold/greyhold.env`)
	p(`Settings for the systemd unit, one GREYHOLD_* variable a line.`)
	p(".TP")
	p(`.I /var/lib/greyhold`)
	p(`The data directory under the systemd unit: the 32\-byte`)
	p(`.I secret`)
	p(`that keys every hash (back it up with the rest; MX hosts that share state must share it), the write\-ahead log and the snapshots.`)
	p(`.B greyhold inspect`)
	p(`verifies it without changing anything.`)
	p(".SH SIGNALS")
	p(".TP")
	p(".B SIGHUP")
	p(`Read the whitelist files again.`)
	p(".TP")
	p(`.BR SIGTERM ", " SIGINT`)
	p(`Stop accepting, answer the requests in flight, write a final snapshot and exit 0.`)
	p(".SH EXIT STATUS")
	p(`.B greyhold serve`)
	p(`exits 0 after a clean stop, 1 on an error (logged with what to check) and 2 on a usage error.`)
	p(`.B greyhold check`)
	p(`exits 0 for a pass, 75 (EX_TEMPFAIL) for a defer and 1 on an error.`)
	p(".SH SEE ALSO")
	p(`.BR postconf (5),`)
	p(`.BR exim (8),`)
	p(`.BR systemctl (1);`)
	p(`the README, in`)
	p(`.I /usr/share/doc/greyhold`)
	p(`in the Debian package, for wiring greyhold into Postfix and Exim, its HTTP API, metrics, dashboard and alerts.`)
	return nil
}
