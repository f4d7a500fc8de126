package main

import (
	"flag"
	"strings"
	"testing"
	"time"
)

func TestParseDuration(t *testing.T) {
	f := func(in string, unit, want time.Duration) {
		t.Helper()
		got, err := parseDuration(in, unit)
		if err != nil || got != want {
			t.Errorf("parseDuration(%q, %v) = %v, %v; want %v", in, unit, got, err, want)
		}
	}
	// Bare numbers count in the flag's postgrey unit.
	f("300", time.Second, 300*time.Second)
	f("35", 24*time.Hour, 35*24*time.Hour)
	f("0.5", 24*time.Hour, 12*time.Hour)
	// Go syntax and days.
	f("5m", time.Second, 5*time.Minute)
	f("48h", 24*time.Hour, 48*time.Hour)
	f("35d", time.Second, 35*24*time.Hour)
	f("2d12h", time.Second, 60*time.Hour)
	for _, bad := range []string{"", "abc", "-5", "5x", "d"} {
		if _, err := parseDuration(bad, time.Second); err == nil {
			t.Errorf("parseDuration(%q): no error", bad)
		}
	}
	if s := formatDuration(35 * 24 * time.Hour); s != "35d" {
		t.Errorf("formatDuration(35d) = %q", s)
	}
}

// TestSources: the command line beats the environment, which beats the
// config file, which beats the default.
func TestSources(t *testing.T) {
	c := defaultServeConfig()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	c.flags(fs)
	if err := fs.Parse([]string{"--delay", "60"}); err != nil {
		t.Fatal(err)
	}
	t.Setenv("GREYHOLD_MAX_AGE", "7")
	t.Setenv("GREYHOLD_DELAY", "999")
	file, err := readConfigFile(strings.NewReader(`
# comment
max-age = 99
retry-window = 3d
--auto-whitelist-clients 0
strip-recipient-extension
whitelist-clients = builtin, /etc/greyhold/clients
`), "test.conf")
	if err != nil {
		t.Fatal(err)
	}
	if err := applySources(fs, file, "test.conf"); err != nil {
		t.Fatal(err)
	}
	if c.delay != time.Minute {
		t.Errorf("delay %v: the command line should win", c.delay)
	}
	if c.maxAge != 7*24*time.Hour {
		t.Errorf("max-age %v: the environment should win over the file", c.maxAge)
	}
	if c.retryWindow != 72*time.Hour || c.awlClients != 0 || !c.stripRcptExt {
		t.Errorf("file settings not applied: %v %d %v", c.retryWindow, c.awlClients, c.stripRcptExt)
	}
	if strings.Join(c.whitelistClients, ",") != "builtin,/etc/greyhold/clients" {
		t.Errorf("whitelist list %q", c.whitelistClients)
	}

	bad, _ := readConfigFile(strings.NewReader("no-such-setting = 1\n"), "bad.conf")
	fs2 := flag.NewFlagSet("test", flag.ContinueOnError)
	c2 := defaultServeConfig()
	c2.flags(fs2)
	if err := applySources(fs2, bad, "bad.conf"); err == nil || !strings.Contains(err.Error(), "no-such-setting") {
		t.Errorf("unknown setting: %v", err)
	}
}

// TestPostgreyFlags: postgrey's command lines carry over.
func TestPostgreyFlags(t *testing.T) {
	c := defaultServeConfig()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	c.flags(fs)
	err := fs.Parse([]string{"--inet=10023", "--dbdir=/var/lib/g", "--lookup-by-host", "--delay=120", "--max-age=30", "--retry-window=2",
		"--unix=/var/spool/postfix/private/greyhold"})
	if err != nil {
		t.Fatal(err)
	}
	if c.policyListen != "127.0.0.1:10023" || c.dataDir != "/var/lib/g" || c.ipv4Prefix != 32 || c.ipv6Prefix != 128 ||
		c.delay != 2*time.Minute || c.maxAge != 30*24*time.Hour || c.retryWindow != 48*time.Hour || c.policySocket == "" {
		t.Errorf("postgrey flags read as %+v", c)
	}
}
