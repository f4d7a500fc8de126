package store

import "github.com/greyhold/greyhold/engine"

// AppendIdentity appends who the client of decision d on req was taken to
// be: "name:google.com" or "net:192.0.2.0/24" (engine.Engine.AppendIdentity).
func (s *Store) AppendIdentity(dst []byte, req *engine.Request, d *engine.Decision) []byte {
	return s.eng.AppendIdentity(dst, req, d)
}

// EngineOptions returns the engine's options, with the client identity as
// the data directory settled it.
func (s *Store) EngineOptions() engine.Options { return s.eng.Options() }
