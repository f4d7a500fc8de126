package main

import (
	"bytes"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// manEntry matches a flag's entry in the page: .B \-\-name or
// .BI \-\-name " ARG".
var manEntry = regexp.MustCompile(`(?m)^\.BI? \\-\\-([a-z0-9\\-]+)`)

// section returns the page's text from the line starting with start up to
// the next line starting with one of ends (or the end).
func section(page, start string, ends ...string) string {
	i := strings.Index(page, "\n"+start)
	if i < 0 {
		return ""
	}
	rest := page[i+1+len(start):]
	end := len(rest)
	for _, e := range ends {
		if j := strings.Index(rest, "\n"+e); j >= 0 && j < end {
			end = j
		}
	}
	return rest[:end]
}

func entries(s string) []string {
	var out []string
	for _, m := range manEntry.FindAllStringSubmatch(s, -1) {
		out = append(out, strings.ReplaceAll(m[1], `\-`, "-"))
	}
	return out
}

// TestManPage: greyhold manpage, run from the built binary, documents
// exactly the flags of greyhold serve (each with its text, default and
// variable), postgrey's names apart, every command of the usage, and each
// other command's flags as its --help gives them; the page is the same
// whatever GREYHOLD_* variables are set, and groff reads it without a
// warning.
func TestManPage(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "greyhold")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	gen := func(env ...string) string {
		t.Helper()
		cmd := exec.Command(bin, "manpage")
		cmd.Env = append(os.Environ(), "SOURCE_DATE_EPOCH=1764547200")
		cmd.Env = append(cmd.Env, env...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("greyhold manpage: %v\n%s", err, stderr.String())
		}
		return string(out)
	}
	page := gen()
	if other := gen("GREYHOLD_POLICY_LISTEN=192.0.2.1:25", "GREYHOLD_DELAY=1s"); other != page {
		t.Error("the page changes with GREYHOLD_* variables in the environment")
	}
	if !strings.Contains(page, `.TH GREYHOLD 8 "2025-12-01"`) {
		t.Errorf("the page is not dated by SOURCE_DATE_EPOCH: %.200s", page)
	}

	fs := flag.NewFlagSet("greyhold serve", flag.ContinueOnError)
	c := defaultServeConfig()
	c.flags(fs)
	var want, wantAliases []string
	fs.VisitAll(func(f *flag.Flag) {
		if _, ok := aliasTargets[f.Name]; ok {
			wantAliases = append(wantAliases, f.Name)
		} else {
			want = append(want, f.Name)
		}
	})
	opts := section(page, ".SH OPTIONS", `.SS "postgrey's names"`)
	aliases := section(page, `.SS "postgrey's names"`, ".SH ")
	if got := entries(opts); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("OPTIONS lists\n%v\nwant serve's flags\n%v", got, want)
	}
	if got := entries(aliases); strings.Join(got, " ") != strings.Join(wantAliases, " ") {
		t.Errorf("postgrey's names lists %v, want %v", got, wantAliases)
	}
	for name := range manDefaults {
		if fs.Lookup(name) == nil {
			t.Errorf("manDefaults names %q, which is no flag", name)
		}
	}
	fs.VisitAll(func(f *flag.Flag) {
		if _, ok := aliasTargets[f.Name]; ok {
			if !strings.Contains(aliases, roff(f.Usage)) {
				t.Errorf("--%s: its text is not in the page", f.Name)
			}
			return
		}
		_, text := flag.UnquoteUsage(f)
		for _, s := range []string{roff(text), `Environment: \fB` + roff(envName(f.Name)) + `\fR.`, defaultText(f)} {
			if !strings.Contains(opts, s) {
				t.Errorf("--%s: %q is not in the page", f.Name, s)
			}
		}
	})
	if h, _ := os.Hostname(); !strings.Contains(opts, `Default: the host's name.`) || h != "" && strings.Contains(opts, `\fB"`+roff(h)+`"\fR`) {
		t.Error("the page shows the build host's name as --hostname's default")
	}

	cmds := section(page, ".SH COMMANDS", ".SH OPTIONS")
	for _, cm := range commands() {
		if !strings.Contains(cmds, ".B "+roff(cm.name)+"\n"+roff(cm.text)+"\n") {
			t.Errorf("command %s is not in COMMANDS", cm.name)
		}
		if cm.name == "serve" {
			continue
		}
		out, err := commandHelp(bin, cm.name)
		if err != nil {
			t.Fatal(err)
		}
		_, _, flags := parseHelp(out)
		sub := section(cmds, `.SS "greyhold `+roff(cm.name)+`"`, ".SS ")
		var got, wantSub []string
		for _, f := range flags {
			wantSub = append(wantSub, f.name)
		}
		got = entries(sub)
		if strings.Join(got, " ") != strings.Join(wantSub, " ") {
			t.Errorf("greyhold %s: the page lists %v, its --help %v", cm.name, got, wantSub)
		}
	}
	if len(commands()) < 6 {
		t.Errorf("commands() read %d commands from the usage", len(commands()))
	}

	groff, err := exec.LookPath("groff")
	if err != nil {
		t.Log("no groff: the page's roff is checked by make deb-check's lintian only")
		return
	}
	cmd := exec.Command(groff, "-man", "-Tutf8", "-ww", "-z")
	cmd.Stdin = strings.NewReader(page)
	if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("groff -man -ww: %v\n%s", err, out)
	}
}

// TestParseHelp: flag.PrintDefaults' layout, a usage printed twice, a
// command's own description.
func TestParseHelp(t *testing.T) {
	syn, desc, flags := parseHelp("Usage: greyhold inspect DIR\n\nVerifies it.\nExit status: 0.\nUsage: greyhold inspect DIR\n\nVerifies it.\n")
	if syn != "greyhold inspect DIR" || strings.Join(desc, "|") != "Verifies it.|Exit status: 0." || len(flags) != 0 {
		t.Errorf("inspect: %q %q %v", syn, desc, flags)
	}
	_, _, flags = parseHelp("Usage of greyhold stats:\n  -http string\n    \tHTTP API address (default \"127.0.0.1:10024\")\n  -v\tverbose\n  -n int\n    \tcount\n    \tmore\n")
	want := []helpFlag{{"http", "string", `HTTP API address (default "127.0.0.1:10024")`}, {"v", "", "verbose"}, {"n", "int", "count more"}}
	if len(flags) != len(want) {
		t.Fatalf("flags %v, want %v", flags, want)
	}
	for i := range want {
		if flags[i] != want[i] {
			t.Errorf("flag %d: %+v, want %+v", i, flags[i], want[i])
		}
	}
}
