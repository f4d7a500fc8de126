package main

import (
	"flag"
	"log/slog"
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
		"--unix=/var/spool/postfix/private/greyhold", "--privacy"})
	if err != nil {
		t.Fatal(err)
	}
	if c.policyListen != "127.0.0.1:10023" || c.dataDir != "/var/lib/g" || c.ipv4Prefix != 32 || c.ipv6Prefix != 128 ||
		c.delay != 2*time.Minute || c.maxAge != 30*24*time.Hour || c.retryWindow != 48*time.Hour || c.policySocket == "" {
		t.Errorf("postgrey flags read as %+v", c)
	}
}

// sources parses args, then the environment and a config file, as serve
// does.
func sources(t *testing.T, args []string, env map[string]string, conf string) serveConfig {
	t.Helper()
	c := defaultServeConfig()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	c.flags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	file, err := readConfigFile(strings.NewReader(conf), "test.conf")
	if err != nil {
		t.Fatal(err)
	}
	if err := applySources(fs, file, "test.conf"); err != nil {
		t.Fatal(err)
	}
	return c
}

// A postgrey alias ranks where it is written: on the command line it
// beats the environment and the file; in the environment it beats the
// file; false means false.
func TestPostgreyAliasPrecedence(t *testing.T) {
	// Subtests, so that each one's environment ends with it.
	t.Run("command line", func(t *testing.T) {
		c := sources(t, []string{"--inet=10023", "--dbdir=/var/lib/cli", "--unix=/run/cli.sock", "--lookup-by-host"},
			map[string]string{"GREYHOLD_DATA_DIR": "/var/lib/env"},
			"policy-listen = 127.0.0.1:9999\npolicy-socket = /run/file.sock\nipv4-prefix = 24\n")
		if c.policyListen != "127.0.0.1:10023" || c.dataDir != "/var/lib/cli" || c.policySocket != "/run/cli.sock" || c.ipv4Prefix != 32 {
			t.Errorf("command-line aliases lost: listen %q, data %q, socket %q, ipv4 /%d", c.policyListen, c.dataDir, c.policySocket, c.ipv4Prefix)
		}
	})
	t.Run("environment over file", func(t *testing.T) {
		c := sources(t, nil, map[string]string{"GREYHOLD_IPV4_PREFIX": "32", "GREYHOLD_DATA_DIR": "/env"}, "ipv4cidr = 24\ndbdir = /file\n")
		if c.ipv4Prefix != 32 || c.dataDir != "/env" {
			t.Errorf("file aliases beat the environment: ipv4 /%d, data %q", c.ipv4Prefix, c.dataDir)
		}
	})
	t.Run("alias in the environment", func(t *testing.T) {
		c := sources(t, nil, map[string]string{"GREYHOLD_DBDIR": "/env"}, "data-dir = /file\n")
		if c.dataDir != "/env" {
			t.Errorf("an alias in the environment lost to the file: %q", c.dataDir)
		}
	})
	for name, args := range map[string]struct {
		args []string
		env  map[string]string
		conf string
	}{
		"flag": {args: []string{"--lookup-by-host=false"}},
		"env":  {env: map[string]string{"GREYHOLD_LOOKUP_BY_HOST": "false"}},
		"file": {conf: "lookup-by-host = false\n"},
	} {
		t.Run("lookup-by-host=false in the "+name, func(t *testing.T) {
			c := sources(t, args.args, args.env, args.conf)
			if c.ipv4Prefix != 24 || c.ipv6Prefix != 64 {
				t.Errorf("gave /%d and /%d", c.ipv4Prefix, c.ipv6Prefix)
			}
		})
	}
}

// Numbers out of range are refused, not wrapped into nonsense.
func TestOutOfRangeValues(t *testing.T) {
	for _, in := range []string{"NaN", "Inf", "1e300", "200000000000", "1e300d", "NaNd"} {
		if d, err := parseDuration(in, 24*time.Hour); err == nil {
			t.Errorf("parseDuration(%q, days) = %v, no error", in, d)
		}
	}
	var n int64
	if err := (size{&n}).Set("9999999999GiB"); err == nil {
		t.Errorf("9999999999GiB read as %d", n)
	}
}

// --wal-segment-size reaches the store, within its bounds.
func TestWALSegmentSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
	}{{"64KiB", 64 << 10}, {"16MiB", 16 << 20}, {"1GiB", 1 << 30}, {"63KiB", 0}, {"2GiB", 0}, {"0", 0}} {
		c := defaultServeConfig()
		if err := (size{&c.walSegmentSize}).Set(tc.in); err != nil {
			t.Fatal(err)
		}
		o, err := c.options(slog.New(slog.DiscardHandler), nil)
		switch {
		case tc.want == 0 && (err == nil || !strings.Contains(err.Error(), "--wal-segment-size")):
			t.Errorf("%s: %v, want refused", tc.in, err)
		case tc.want != 0 && (err != nil || o.WALSegmentSize != tc.want):
			t.Errorf("%s: %d, %v; want %d", tc.in, o.WALSegmentSize, err, tc.want)
		}
	}
	if c := defaultServeConfig(); c.walSegmentSize != 16<<20 {
		t.Errorf("default %d", c.walSegmentSize)
	}
}
