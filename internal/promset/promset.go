// Package promset registers a component's Prometheus collectors as one
// set: all of them or none, and all of them removed again when the
// component closes, so that a log or a fleet node reopened in the same
// process registers afresh.
package promset

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Set is collectors registered together on one registerer.
type Set struct {
	reg        prometheus.Registerer
	collectors []prometheus.Collector
}

// Register registers every collector on reg, or, if one fails, none:
// those already registered are removed again. what names the component
// in the error; a collector already registered means another instance of
// it uses reg.
func Register(reg prometheus.Registerer, what string, cs ...prometheus.Collector) (*Set, error) {
	for i, c := range cs {
		if err := reg.Register(c); err != nil {
			for _, done := range cs[:i] {
				reg.Unregister(done)
			}
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, fmt.Errorf("register %s metrics: another %s uses this registry: %w", what, what, err)
			}
			return nil, fmt.Errorf("register %s metrics: %w", what, err)
		}
	}
	return &Set{reg: reg, collectors: cs}, nil
}

// Unregister removes the set's collectors; a nil Set does nothing.
func (s *Set) Unregister() {
	if s == nil {
		return
	}
	for _, c := range s.collectors {
		s.reg.Unregister(c)
	}
}
