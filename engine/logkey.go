package engine

import "github.com/cespare/xxhash/v2"

// LogKey returns a keyed hash of one field of a request (field names it:
// 'a' the client address, 'n' the client name, 's' the sender, 'r' the
// recipient), for logs that must not show addresses. It is keyed by the
// secret as the stored keys are, under a tag of its own so that it equals
// no key in the log or snapshots: without the secret a log line cannot be
// matched against a dictionary of addresses. The value is hashed as given,
// so the same value makes the same hash on every line, and on every host
// that shares the secret.
func (e *Engine) LogKey(field byte, value string) uint64 {
	d := xxhash.New()
	d.Write(e.secret[:])
	d.Write([]byte{'l', field})
	d.WriteString(value)
	return d.Sum64()
}
