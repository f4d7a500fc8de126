package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/greyhold/greyhold/engine"
)

// LogKey returns the engine's keyed hash of a request field, for a
// decision log that writes hashes instead of addresses (engine.LogKey).
func (s *Store) LogKey(field byte, value string) uint64 { return s.eng.LogKey(field, value) }

// LogKeyer reads the hash secret of the data directory dir, or of
// secretFile when it is set (as Options.SecretFile), and returns the keyed
// hash a decision log under --log-addresses=hash shows for a field's value
// (engine.LogKey), so that an operator can find a known address in the
// logs. It neither opens nor locks the directory, so a server may be
// running on it, and it never makes a secret.
func LogKeyer(dir, secretFile string) (func(field byte, value string) uint64, error) {
	path := secretFile
	if path == "" {
		path = filepath.Join(dir, secretName)
	}
	secret, _, err := readSecret(path, "", false)
	switch {
	case errors.Is(err, os.ErrNotExist) && secretFile == "":
		return nil, fmt.Errorf("no secret in %s (%s is missing): give greyhold serve's --data-dir, or its --secret-file if it has one", dir, path)
	case errors.Is(err, os.ErrPermission):
		return nil, fmt.Errorf("%w: run as the user greyhold runs as, or as root", err)
	case err != nil:
		return nil, err
	}
	o := engine.DefaultOptions()
	o.Shards = 1 // the hash needs the secret only
	e, err := engine.New(o, secret)
	if err != nil {
		return nil, fmt.Errorf("secret %s: %w", path, err)
	}
	return e.LogKey, nil
}
