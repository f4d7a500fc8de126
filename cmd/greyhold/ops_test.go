package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/greyhold/greyhold/store"
)

// TestOperatorCommands: explain, pass, forget, forget-client, whitelist
// and top against a running server, as a postmaster types them.
func TestOperatorCommands(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server process")
	}
	d := startDaemon(t, "--test-clock", "--admin-token", "tok")
	bin := d.cmd.Path
	now := time.Now().Unix()
	triplet := []string{"--client", "192.0.2.10", "--sender", "Alice@Sender.Example", "--recipient", "bob@example.test"}
	api := []string{"--http", d.httpAd, "--admin-token", "tok"}
	check := func(at int64) (string, int) {
		return runBin(t, bin, append([]string{"check", "--server", d.policy, "--time", fmt.Sprint(at)}, triplet...)...)
	}
	if out, code := check(now); code != exitDefer {
		t.Fatalf("first check: %d %s", code, out)
	}
	out, code := runBin(t, bin, append(append([]string{"explain"}, api...), triplet...)...)
	if code != 0 || !strings.Contains(out, `"state": "pending"`) || !strings.Contains(out, `"sender": "alice@sender.example"`) ||
		!strings.Contains(out, `"identity": "net:192.0.2.0/24"`) || !strings.Contains(out, `"reason": "early-retry"`) {
		t.Errorf("explain: %d\n%s", code, out)
	}
	if out, code := runBin(t, bin, append([]string{"explain", "--http", d.httpAd}, triplet...)...); code != 1 || !strings.Contains(out, "401") {
		t.Errorf("explain without the token: %d %s", code, out)
	}
	if out, code := runBin(t, bin, append(append([]string{"pass"}, api...), triplet...)...); code != 0 || !strings.Contains(out, `"state": "passed"`) {
		t.Errorf("pass: %d %s", code, out)
	}
	if out, code := check(now + 1); code != 0 || !strings.HasPrefix(out, "DUNNO") {
		t.Errorf("check after pass: %d %s", code, out)
	}
	if out, code := runBin(t, bin, append(append([]string{"forget"}, api...), triplet...)...); code != 0 || !strings.Contains(out, `"forgotten"`) {
		t.Errorf("forget: %d %s", code, out)
	}
	if out, code := check(now + 2); code != exitDefer {
		t.Errorf("check after forget: %d %s", code, out)
	}
	if out, code := runBin(t, bin, append([]string{"forget-client", "--client", "192.0.2.77"}, api...)...); code != 0 || !strings.Contains(out, `"state": "forgotten"`) {
		t.Errorf("forget-client: %d %s", code, out)
	}
	if out, code := runBin(t, bin, append(append([]string{"whitelist"}, api...), "--ttl", "1h", "add", "recipient", "waiting@example.test")...); code != 0 || !strings.Contains(out, `"seconds_left": 3600`) {
		t.Errorf("whitelist add --ttl: %d %s", code, out)
	}
	if out, code := runBin(t, bin, append(append([]string{"whitelist"}, api...), "add", "recipient", "later@example.test", "--ttl", "2d")...); code != 0 || !strings.Contains(out, `"seconds_left": 172800`) {
		t.Errorf("whitelist add ... --ttl: %d %s", code, out)
	}
	if out, code := runBin(t, bin, append(append([]string{"whitelist"}, api...), "list")...); code != 0 || !strings.Contains(out, `"expires"`) {
		t.Errorf("whitelist list: %d %s", code, out)
	}
	if out, code := runBin(t, bin, append(append([]string{"whitelist"}, api...), "remove", "recipient", "waiting@example.test")...); code != 0 || !strings.Contains(out, `"changed": true`) {
		t.Errorf("whitelist remove: %d %s", code, out)
	}
	// Enough defers from one network for the sample to see it.
	for i := range 64 {
		runBin(t, bin, "check", "--server", d.policy, "--time", fmt.Sprint(now), "--client", "203.0.113.5", "--sender", "x@spam.example", "--recipient", fmt.Sprintf("u%d@example.test", i))
	}
	if out, code := runBin(t, bin, append([]string{"top", "-n", "3"}, api...)...); code != 0 || !strings.Contains(out, "net:203.0.113.0/24") || !strings.Contains(out, "spam.example") {
		t.Errorf("top: %d\n%s", code, out)
	}
	if _, code := runBin(t, bin, "explain", "--client", "192.0.2.1"); code != 2 {
		t.Errorf("explain without a recipient: exit %d, want 2", code)
	}
}

// TestImportCommand: greyhold import refuses a data directory a server
// holds, and a source that is not there, before it makes anything.
func TestImportCommand(t *testing.T) {
	bin := greyholdBinary(t)
	dir := t.TempDir()
	st, err := store.Open(dir, store.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	pg := t.TempDir()
	os.WriteFile(filepath.Join(pg, "postgrey.db"), nil, 0o600)
	out, code := runBin(t, bin, "import", "postgrey", pg, "--data-dir", dir)
	if code != 1 || !strings.Contains(out, "data directory in use") || !strings.Contains(out, "stop it, import, then start it again") {
		t.Errorf("import into a directory in use: exit %d\n%s", code, out)
	}
	st.Close()
	fresh := filepath.Join(t.TempDir(), "new")
	out, code = runBin(t, bin, "import", "postgrey", filepath.Join(pg, "nowhere"), "--data-dir", fresh)
	if _, err := os.Stat(fresh); code != 1 || !strings.Contains(out, "postgrey's --dbdir") || err == nil {
		t.Errorf("import of nothing: exit %d, %v\n%s", code, err, out)
	}
	if out, code := runBin(t, bin, "import", "bogofilter", pg); code != 2 || !strings.Contains(out, "want postgrey or sqlgrey") {
		t.Errorf("unknown tool: exit %d\n%s", code, out)
	}
}
