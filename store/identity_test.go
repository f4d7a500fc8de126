package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/greyhold/greyhold/engine"
)

func recordedKeys(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, metaName))
	if err != nil {
		t.Fatal(err)
	}
	var m meta
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m.Keys
}

func openIdentity(t *testing.T, dir string, id engine.Identity) (*Store, error) {
	t.Helper()
	o := testOptions(engine.NewManualClock(t0))
	o.Engine.Keys.Identity = id
	return Open(dir, o)
}

// TestIdentityFromDirectory: a client identity not given is the one the
// directory was written with, name for a new directory, network for one
// written before identities existed; one given and different is refused
// with what to do; a snapshot written before identities still loads.
func TestIdentityFromDirectory(t *testing.T) {
	// A new directory, no choice: name.
	dir := t.TempDir()
	s, err := openIdentity(t, dir, engine.IdentityAuto)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Engine().Options().Keys.Identity; got != engine.IdentityName {
		t.Errorf("new directory: identity %v, want name", got)
	}
	s.Close()
	if k := recordedKeys(t, dir); !strings.Contains(k, "identity=name psl="+engine.SuffixList()) {
		t.Errorf("recorded %q", k)
	}
	// Reopened without a choice, or with the same one: kept.
	for _, id := range []engine.Identity{engine.IdentityAuto, engine.IdentityName} {
		s, err := openIdentity(t, dir, id)
		if err != nil {
			t.Fatalf("reopen with %v: %v", id, err)
		}
		s.Close()
	}
	// Another, given: refused, saying what to do.
	_, err = openIdentity(t, dir, engine.IdentityNetwork)
	if !errors.Is(err, ErrIncompatible) || !strings.Contains(err.Error(), "--client-identity=name") ||
		!strings.Contains(err.Error(), "--client-identity=network") || !strings.Contains(err.Error(), "new --data-dir") {
		t.Errorf("network on a name directory: %v", err)
	}

	// A directory written before identities: its greyhold.json and a
	// snapshot header carry the old five fields.
	old := t.TempDir()
	o := testOptions(engine.NewManualClock(t0))
	const before = "keys=1 ipv4=/24 ipv6=/64 sender=normalised recipient-ext=kept"
	s = mustOpen(t, old, o) // network, as DefaultOptions has it
	s.keys = before         // what its snapshot headers said
	expect(t, s, t0, req("192.0.2.10", "a@b.example", "c@d.example"), engine.Defer, engine.ReasonNew)
	if _, err := s.Snapshot(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	rewriteKeys(t, old, before)
	s, err = openIdentity(t, old, engine.IdentityAuto)
	if err != nil {
		t.Fatalf("a directory from before identities: %v", err)
	}
	if got := s.Engine().Options().Keys.Identity; got != engine.IdentityNetwork {
		t.Errorf("a directory from before identities: identity %v, want network", got)
	}
	// Its state came back from the old snapshot.
	expect(t, s, t0+10, req("192.0.2.10", "a@b.example", "c@d.example"), engine.Defer, engine.ReasonEarlyRetry)
	s.Close()
	if _, err := openIdentity(t, old, engine.IdentityName); !errors.Is(err, ErrIncompatible) {
		t.Errorf("name on a directory from before identities: %v", err)
	}
}

// rewriteKeys puts keys into dir's greyhold.json, as a greyhold that
// wrote them so would have.
func rewriteKeys(t *testing.T, dir, keys string) {
	t.Helper()
	path := filepath.Join(dir, metaName)
	b, _ := os.ReadFile(path)
	var m meta
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	m.Keys = keys
	if err := writeMeta(path, m); err != nil {
		t.Fatal(err)
	}
}

// TestSuffixListChange: name keys recorded with another public suffix list
// are taken on with a warning, and the list is recorded anew.
func TestSuffixListChange(t *testing.T) {
	dir := t.TempDir()
	s, err := openIdentity(t, dir, engine.IdentityName)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	other := strings.Replace(recordedKeys(t, dir), "psl="+engine.SuffixList(), "psl=2020-01-01.000000000000", 1)
	rewriteKeys(t, dir, other)
	var logs bytes.Buffer
	o := testOptions(engine.NewManualClock(t0))
	o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	o.Engine.Keys.Identity = engine.IdentityAuto
	s, err = Open(dir, o)
	if err != nil {
		t.Fatalf("open after a list change: %v", err)
	}
	s.Close()
	if !strings.Contains(logs.String(), "another public suffix list") || !strings.Contains(logs.String(), "2020-01-01.000000000000") {
		t.Errorf("no warning naming the old list:\n%s", logs.String())
	}
	if k := recordedKeys(t, dir); !strings.Contains(k, "psl="+engine.SuffixList()) {
		t.Errorf("recorded after the change: %q", k)
	}
}
