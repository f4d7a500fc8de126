package whitelist

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestClients(t *testing.T) {
	s := Parse(strings.NewReader(`
# postgrey-style entries
example.com
/^mail\d+\.telekom\.de$/
192.0.2.7
198.51.100
203.0.113.0/25
2001:db8:1::/48
2001:db8::99
10.1.           # trailing dot, comment after
/(?<=lookbehind)x/
not a domain
`), nil)
	f := func(addr, name string, want bool) {
		t.Helper()
		if got := s.MatchClient(netip.MustParseAddr(addr), name); got != want {
			t.Errorf("MatchClient(%s, %q) = %v, want %v", addr, name, got, want)
		}
	}
	f("192.0.2.1", "example.com", true)
	f("192.0.2.1", "MX1.Example.COM", true)
	f("192.0.2.1", "notexample.com", false)
	f("192.0.2.1", "mail12.telekom.de", true)
	f("192.0.2.1", "mail12.telekom.de.evil.example", false)
	f("192.0.2.1", "mailx.telekom.de", false)
	f("192.0.2.7", "unknown", true)
	f("192.0.2.8", "unknown", false)
	f("198.51.100.200", "unknown", true)
	f("203.0.113.127", "unknown", true)
	f("203.0.113.128", "unknown", false)
	f("2001:db8:1:ffff::1", "unknown", true)
	f("2001:db8::99", "unknown", true)
	f("10.1.2.3", "unknown", true)
	f("10.2.2.3", "unknown", false)
	// "unknown" is what Postfix sends without reverse DNS: never a name.
	f("192.0.2.1", "unknown", false)
	info := s.Files[0]
	if info.Entries != 8 || len(info.Skipped) != 2 {
		t.Errorf("entries %d, skipped %v; want 8 and 2", info.Entries, info.Skipped)
	}
	for _, sk := range info.Skipped {
		if !strings.Contains(sk, "line ") {
			t.Errorf("skip note without line: %q", sk)
		}
	}
}

func TestRecipients(t *testing.T) {
	s := Parse(nil, strings.NewReader("postmaster@\nAbuse@Example.COM\nlists.example.org\n/^noc-.*@/\n@\n"))
	f := func(rcpt string, want bool) {
		t.Helper()
		if got := s.MatchRecipient([]byte(strings.ToLower(rcpt))); got != want {
			t.Errorf("MatchRecipient(%q) = %v, want %v", rcpt, got, want)
		}
	}
	f("postmaster@anything.example", true)
	f("abuse@example.com", true)
	f("abuse@other.example", false)
	f("x@lists.example.org", true)
	f("x@sub.lists.example.org", true)
	f("x@notlists.example.org", false)
	f("noc-team@example.net", true)
	f("user@example.com", false)
	if n := len(s.Files[0].Skipped); n != 1 {
		t.Errorf("skipped %v, want the lone '@'", s.Files[0].Skipped)
	}
}

func TestBuiltinAndFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "clients")
	if err := os.WriteFile(path, []byte("local.example\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := LoadFiles([]string{Builtin, path}, []string{Builtin})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range s.Files {
		if len(f.Skipped) != 0 {
			t.Errorf("%s: skipped %v", f.Path, f.Skipped)
		}
	}
	if !s.MatchClient(netip.MustParseAddr("40.107.1.1"), "mail-db5eur01on2045.outbound.protection.outlook.com") {
		t.Error("builtin list does not pass Microsoft's outbound pool")
	}
	if !s.MatchClient(netip.MustParseAddr("192.0.2.1"), "mx.local.example") {
		t.Error("file entry not read")
	}
	// Names are matched without regard to case, also where the last two
	// labels alone rule a name out, and past the short path's 64 bytes.
	long := strings.Repeat("x", 70)
	for name, want := range map[string]bool{
		"MAIL-DB5EUR01ON2045.Outbound.Protection.OUTLOOK.COM": true,
		"mx.LOCAL.Example":         true,
		"mx.local.example." + long: false,
		long + ".local.example":    true,
		"mx." + long + ".example":  false,
		"mx.example":               false,
	} {
		if got := s.MatchClient(netip.MustParseAddr("192.0.2.1"), name); got != want {
			t.Errorf("MatchClient(%q) = %v, want %v", name, got, want)
		}
	}
	if !s.MatchRecipient([]byte("postmaster@example.test")) {
		t.Error("builtin recipients do not pass postmaster@")
	}
	if _, err := LoadFiles([]string{filepath.Join(dir, "missing")}, nil); err == nil {
		t.Error("missing file: no error")
	}
}

func TestRegexpCache(t *testing.T) {
	s := Parse(strings.NewReader(`/^smtp\d+\.example\.net$/`), nil)
	a := netip.MustParseAddr("192.0.2.1")
	for range 3 {
		if !s.MatchClient(a, "smtp7.example.net") || s.MatchClient(a, "smtpx.example.net") {
			t.Fatal("cached verdict differs")
		}
	}
}

func TestDomainEnds(t *testing.T) {
	s := Parse(strings.NewReader("outbound.protection.outlook.com\nexample.com\nlocalhost\n"), nil)
	a := netip.MustParseAddr("192.0.2.1")
	for name, want := range map[string]bool{
		"mail-db5.outbound.protection.outlook.com": true,
		"protection.outlook.com":                   false,
		"x.example.com":                            true,
		"example.com":                              true,
		"com":                                      false,
		"localhost":                                true,
		"mail.localhost":                           true,
		"other.example.org":                        false,
	} {
		if got := s.MatchClient(a, name); got != want {
			t.Errorf("MatchClient(%q) = %v, want %v", name, got, want)
		}
	}
}

// Regular expressions read as postgrey reads them: a body without blanks
// ("//" would match everything and is skipped), the pattern left as
// written (\S is not \s) and matched without regard to case, a trailing
// comment dropped.
func TestRegexEntries(t *testing.T) {
	s := Parse(strings.NewReader(`//
/^mx-\S+\.example\.com$/
/^\D+\.mail\.example\.org$/
/^MTA\d+\.Example\.NET$/   # our MXes, see http://x/
`), strings.NewReader("//\n/^\\W/\n"))
	a := netip.MustParseAddr("198.51.100.9")
	for name, want := range map[string]bool{
		"spam.example":         false, // "//" skipped
		"mx-01.example.com":    true,
		"123.mail.example.org": false,
		"abc.mail.example.org": true,
		"mta7.example.net":     true,
	} {
		if got := s.MatchClient(a, name); got != want {
			t.Errorf("client %s: %v, want %v", name, got, want)
		}
	}
	if s.MatchRecipient([]byte("bob@example.net")) {
		t.Error(`"//" or /^\W/ whitelists bob@example.net`)
	}
	if s.Files[0].Entries != 3 || len(s.Files[0].Skipped) != 1 || s.Files[1].Entries != 1 {
		t.Errorf("files: %+v", s.Files)
	}
}

// postgrey's name@ and name@domain cover name+extension@ too.
func TestRecipientExtension(t *testing.T) {
	s := Parse(nil, strings.NewReader("postmaster@\nabuse@example.com\n"))
	for r, want := range map[string]bool{
		"postmaster+ticket@example.com": true,
		"abuse+x@example.com":           true,
		"abuse+x@example.org":           false,
		"abuse+@example.com":            false,
		"postmasterx@example.com":       false,
	} {
		if got := s.MatchRecipient([]byte(r)); got != want {
			t.Errorf("%s: %v, want %v", r, got, want)
		}
	}
}

// A list too big for one RE2 program still loads and matches, pattern by
// pattern.
func TestManyLargeRegexes(t *testing.T) {
	var b strings.Builder
	for i := range 4000 {
		fmt.Fprintf(&b, "/^m%d[a-z]{1000}$/\n", i)
	}
	s := Parse(strings.NewReader(b.String()), nil)
	if s.Files[0].Entries != 4000 || s.clientRegexp.one != nil {
		t.Fatalf("entries %d, joined %v", s.Files[0].Entries, s.clientRegexp.one != nil)
	}
	if !s.MatchClient(netip.MustParseAddr("198.51.100.9"), "m3999"+strings.Repeat("a", 1000)) {
		t.Error("the last pattern does not match")
	}
}

// A file that cannot be read to its end is an error, not a shorter list.
func TestUnreadableFiles(t *testing.T) {
	dir := t.TempDir()
	long := filepath.Join(dir, "clients")
	os.WriteFile(long, []byte("# "+strings.Repeat("x", 2<<20)+"\nexample.com\n"), 0o644)
	if _, err := LoadFiles([]string{long}, nil); err == nil {
		t.Error("a line over 1 MiB: no error, the lines after it dropped")
	}
	if _, err := LoadFiles([]string{dir}, nil); err == nil {
		t.Error("a directory read as an empty whitelist")
	}
}

// A whitelist path that is not a regular file is refused at once, with an
// error that says what it is: opening a FIFO with no writer would block,
// and with it the reload and the server's signal handling (issue 9,
// defect 10).
func TestLoadFilesRefusesNonRegular(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	for path, want := range map[string]string{fifo: "a FIFO", "/dev/null": "a device", dir: "a directory"} {
		done := make(chan error, 1)
		go func() { _, err := LoadFiles([]string{path}, nil); done <- err }()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), "not a regular file ("+want+")") {
				t.Errorf("%s: %v", path, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("loading %s blocked", path)
		}
	}
}
