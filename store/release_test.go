package store

import (
	"fmt"
	"testing"
	"time"

	"github.com/greyhold/greyhold/engine"
)

// TestReleaseSurvivesRestart: a release, a forget, a forgotten client
// network and a rule with a lifetime are logged: after a restart, from the
// log alone and from a snapshot (which carries reset states apart), each
// is as it was left.
func TestReleaseSurvivesRestart(t *testing.T) {
	for _, snap := range []bool{false, true} {
		t.Run(fmt.Sprintf("snapshot=%v", snap), func(t *testing.T) {
			dir := t.TempDir()
			clock := engine.NewManualClock(t0)
			s := mustOpen(t, dir, testOptions(clock))
			released := req("192.0.2.10", "a@sender.example", "rcpt@example.test")
			forgotten := req("192.0.2.10", "b@sender.example", "rcpt@example.test")
			expect(t, s, t0, released, engine.Defer, engine.ReasonNew)
			expect(t, s, t0, forgotten, engine.Defer, engine.ReasonNew)
			clock.Set(t0 + 301)
			expect(t, s, t0+301, forgotten, engine.Pass, engine.ReasonPassed)
			clock.Set(t0 + 400)
			if changed, err := s.PassTriplet(released); err != nil || !changed {
				t.Fatalf("release: %v %v", changed, err)
			}
			if had, err := s.ForgetTriplet(forgotten); err != nil || !had {
				t.Fatalf("forget: %v %v", had, err)
			}
			if had, network, err := s.ForgetClient("192.0.2.99"); err != nil || !had || network.String() != "192.0.2.0/24" {
				t.Fatalf("forget client: %v %v %v", had, network, err)
			}
			if _, err := s.SetRuleFor(engine.Rule{Kind: engine.RuleRecipient, Value: "waiting@example.test"}, true, time.Hour); err != nil {
				t.Fatal(err)
			}
			if snap {
				if _, err := s.Snapshot(); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = mustOpen(t, dir, testOptions(clock))
			defer s.Close()
			if ex, _ := s.Explain(released); ex.State != engine.StatePassed || ex.First != t0 {
				t.Errorf("released, after a restart: %+v", ex)
			}
			ex, _ := s.Explain(forgotten)
			if ex.State != engine.StateUnknown || ex.Forgotten != t0+400 || ex.Client.Known || ex.Client.Forgotten != t0+400 {
				t.Errorf("forgotten, after a restart: %+v", ex)
			}
			if rules := s.Rules(); len(rules) != 1 || rules[0].Expires != t0+400+3600 {
				t.Errorf("rules after a restart: %+v", rules)
			}
			expect(t, s, t0+401, forgotten, engine.Defer, engine.ReasonNew)
			clock.Set(t0 + 400 + 3600)
			if rules := s.Rules(); len(rules) != 0 {
				t.Errorf("rules at the end of the lifetime: %+v", rules)
			}
		})
	}
}
