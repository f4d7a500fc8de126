package cluster

import (
	"testing"

	"github.com/greyhold/greyhold/engine"
)

// TestOperatorChangesReachTheFleet: a release, a forget and a forgotten
// client network on one node reach the others through the stream like any
// change, and the forget wins there over the state they held.
func TestOperatorChangesReachTheFleet(t *testing.T) {
	ns := startNATS(t)
	ctx := guard(t)
	a := newNode(t, ns.url, "mx1", "", "", nil)
	b := newNode(t, ns.url, "mx2", "", a.dir, nil)
	known, released := triplet(0), triplet(1)
	a.expect(t0, known, engine.Defer, engine.ReasonNew)
	a.expect(t0+300, known, engine.Pass, engine.ReasonPassed)
	a.hears(ctx, b)
	b.expect(t0+301, known, engine.Pass, engine.ReasonKnown)

	if had, err := a.st.ForgetTriplet(known); err != nil || !had {
		t.Fatalf("forget: %v %v", had, err)
	}
	if changed, err := a.st.PassTriplet(released); err != nil || !changed {
		t.Fatalf("release: %v %v", changed, err)
	}
	if _, _, err := a.st.ForgetClient(known.ClientAddr); err != nil {
		t.Fatal(err)
	}
	a.hears(ctx, b)
	if cs, _ := b.st.ClientNetworkState(known.ClientAddr); cs.Forgotten == 0 {
		t.Errorf("the client network's forget did not reach mx2: %+v", cs)
	}
	b.expect(t0+400, known, engine.Defer, engine.ReasonNew)
	b.expect(t0+400, released, engine.Pass, engine.ReasonKnown)
	// mx2's new attempt, after the forget, is what mx1 ends with too.
	b.hears(ctx, a)
	a.expect(t0+401, known, engine.Defer, engine.ReasonEarlyRetry)
	a.expect(t0+700, known, engine.Pass, engine.ReasonPassed)
}
