package store

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/greyhold/greyhold/engine"
)

// Explain tells what the state holds and a check would answer for req
// now, changing nothing (engine.Engine.Explain).
func (s *Store) Explain(req *engine.Request) (engine.Explanation, error) {
	return s.eng.Explain(s.clock.Now(), req)
}

// ClientNetworkState tells what the auto-whitelist holds for the network
// of a client address now.
func (s *Store) ClientNetworkState(addr string) (engine.ClientState, error) {
	return s.eng.ClientNetworkState(s.clock.Now(), addr)
}

// TopDeferred returns the n clients and sender domains deferred most in
// the last hour, estimated from a sample (engine.Engine.TopDeferred).
func (s *Store) TopDeferred(n int) engine.Top { return s.eng.TopDeferred(s.clock.Now(), n) }

// logChange logs one change's record before the caller acknowledges it.
func (s *Store) logChange(rec []byte) error {
	if rec == nil {
		return nil
	}
	if err := s.wal.Append(rec, 1); err != nil {
		s.notLogged.Add(1)
		return fmt.Errorf("%w: %w", ErrNotLogged, err)
	}
	return nil
}

// PassTriplet makes req's triplet pass from now on, as if it had retried,
// logged before it returns; changed is false for one that had passed.
func (s *Store) PassTriplet(req *engine.Request) (changed bool, err error) {
	now := s.clock.Now()
	if err := s.checkClock(now, 1); err != nil {
		return false, err
	}
	rec, changed, err := s.eng.PassTriplet(now, req)
	if err != nil {
		return false, err
	}
	return changed, s.logChange(rec)
}

// ForgetTriplet forgets req's triplet, logged before it returns; had
// reports whether a live state was held for it.
func (s *Store) ForgetTriplet(req *engine.Request) (had bool, err error) {
	now := s.clock.Now()
	if err := s.checkClock(now, 1); err != nil {
		return false, err
	}
	rec, had, err := s.eng.ForgetTriplet(now, req)
	if err != nil {
		return false, err
	}
	return had, s.logChange(rec)
}

// ForgetClient forgets the auto-whitelist state of a client address's
// network, logged before it returns.
func (s *Store) ForgetClient(addr string) (had bool, network netip.Prefix, err error) {
	now := s.clock.Now()
	if err := s.checkClock(now, 1); err != nil {
		return false, netip.Prefix{}, err
	}
	rec, had, network, err := s.eng.ForgetClient(now, addr)
	if err != nil {
		return false, network, err
	}
	return had, network, s.logChange(rec)
}

// SetRuleFor adds a whitelist rule that ends by itself ttl from now (0:
// until removed), or removes one, logged before it returns.
func (s *Store) SetRuleFor(r engine.Rule, present bool, ttl time.Duration) (changed bool, err error) {
	now := s.clock.Now()
	if err := s.checkClock(now, 1); err != nil {
		return false, err
	}
	rec, changed, err := s.eng.SetRuleFor(now, r, present, ttl)
	if err != nil || !changed {
		return changed, err
	}
	return true, s.logChange(rec)
}

// Import merges records made elsewhere (an import of another tool's
// state: engine.ImportTripletRecord) into memory and logs them, in one
// frame of n records, before it returns.
func (s *Store) Import(payload []byte, n int) error {
	if _, err := engine.CheckRecords(payload); err != nil {
		return fmt.Errorf("import: %w", err)
	}
	if _, err := s.eng.Apply(payload); err != nil {
		return fmt.Errorf("import: %w", err)
	}
	if err := s.wal.Append(payload, n); err != nil {
		s.notLogged.Add(1)
		return fmt.Errorf("%w: %w", ErrNotLogged, err)
	}
	return nil
}
