package promset

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestAllOrNone(t *testing.T) {
	reg := prometheus.NewRegistry()
	a := prometheus.NewCounter(prometheus.CounterOpts{Name: "a_total", Help: "a"})
	b := prometheus.NewCounter(prometheus.CounterOpts{Name: "b_total", Help: "b"})
	s, err := Register(reg, "thing", a, b)
	if err != nil {
		t.Fatal(err)
	}
	// A second set with a clash registers nothing.
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "c_total", Help: "c"})
	b2 := prometheus.NewCounter(prometheus.CounterOpts{Name: "b_total", Help: "b"})
	if _, err := Register(reg, "thing", c, b2); err == nil {
		t.Fatal("a clashing set registered")
	}
	if mfs, _ := reg.Gather(); len(mfs) != 2 {
		t.Fatalf("%d families after the refused set, want 2", len(mfs))
	}
	s.Unregister()
	if _, err := Register(reg, "thing", a, b); err != nil {
		t.Fatalf("registering again after Unregister: %v", err)
	}
	(*Set)(nil).Unregister()
}
