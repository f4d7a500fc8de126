package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestLoghashCommand: greyhold loghash, given a data directory, prints for
// each value the hash that a server on that directory shows in its
// decision lines under --log-addresses=hash, so a known sender's lines can
// be found; with --secret-file the same; on a directory without a secret
// it fails saying so and makes none.
func TestLoghashCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server process")
	}
	d := startDaemon(t, "--log-addresses", "hash", "--log-decisions", "all")
	if got, _ := d.ask(t); !strings.HasPrefix(got, "action=DEFER_IF_PERMIT") {
		t.Fatalf("request answered %q", got)
	}
	if !d.log.waitFor("msg=decision") {
		t.Fatalf("no decision line:\n%s", d.logText())
	}
	line := regexp.MustCompile(`(?m)^.*msg=decision.*$`).FindString(d.logText())
	bin := greyholdBinary(t)
	out, code := runBin(t, bin, "loghash", "--data-dir", d.dir, "--client-address", "192.0.2.10", "--client-name", "mail.sender.example",
		"--sender", "alice@sender.example", "--recipient", "rcpt1@example.test", "--identity", "name:sender.example")
	hashes := strings.Fields(out)
	if code != 0 || len(hashes) != 5 {
		t.Fatalf("loghash: exit %d, %q", code, out)
	}
	for _, h := range hashes {
		if !regexp.MustCompile(`^[a-z_]+=h:[0-9a-f]{16}$`).MatchString(h) || !strings.Contains(line, " "+h+" ") {
			t.Errorf("loghash printed %s, which the decision line does not show:\n%s", h, line)
		}
	}
	for _, plain := range []string{"192.0.2.10", "alice@", "rcpt1@"} {
		if strings.Contains(line, plain) {
			t.Errorf("the decision line shows %q:\n%s", plain, line)
		}
	}

	// A bare value is printed as every field; the sender's is the one above.
	out, code = runBin(t, bin, "loghash", "--data-dir", d.dir, "alice@sender.example")
	if code != 0 || !strings.Contains(out, hashes[2]+"\n") || strings.Count(out, "\n") != 5 {
		t.Errorf("loghash VALUE: exit %d, %q, want %s among five lines", code, out, hashes[2])
	}

	secret := filepath.Join(t.TempDir(), "fleet-secret")
	b, err := os.ReadFile(filepath.Join(d.dir, "secret"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(secret, b, 0o600); err != nil {
		t.Fatal(err)
	}
	out, code = runBin(t, bin, "loghash", "--data-dir", t.TempDir(), "--secret-file", secret, "--sender", "alice@sender.example")
	if code != 0 || out != hashes[2]+"\n" {
		t.Errorf("loghash --secret-file: exit %d, %q, want %s", code, out, hashes[2])
	}

	empty := t.TempDir()
	out, code = runBin(t, bin, "loghash", "--data-dir", empty, "--sender", "alice@sender.example")
	if code != 1 || !strings.Contains(out, "no secret in "+empty) {
		t.Errorf("loghash on a directory without a secret: exit %d, %q", code, out)
	}
	if _, err := os.Stat(filepath.Join(empty, "secret")); !os.IsNotExist(err) {
		t.Errorf("loghash made a secret (stat: %v)", err)
	}
	if _, code := runBin(t, bin, "loghash", "--data-dir", d.dir); code != 2 {
		t.Errorf("loghash without a value: exit %d, want 2", code)
	}
	d.stop(t, 30*time.Second)
}
