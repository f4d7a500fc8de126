package store

// LogKey returns the engine's keyed hash of a request field, for a
// decision log that writes hashes instead of addresses (engine.LogKey).
func (s *Store) LogKey(field byte, value string) uint64 { return s.eng.LogKey(field, value) }
