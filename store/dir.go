package store

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/greyhold/greyhold/engine"
	"github.com/greyhold/greyhold/internal/durable"
)

const (
	lockName    = "LOCK"
	secretName  = "secret"
	metaName    = "greyhold.json"
	walDirName  = "wal"
	snapDirName = "snapshots"
	// secretBytes is the length of the hash key made at first start.
	secretBytes = 32
	// formatVersion is the layout of the data directory.
	formatVersion = 1
)

// ErrIncompatible is returned by Open for a data directory written with
// other key options or another secret than the ones given: its keys would
// not match the requests'.
var ErrIncompatible = errors.New("store: data directory is incompatible with these options")

// ErrLocked is returned by Open when another process holds the directory.
var ErrLocked = errors.New("store: data directory in use")

// lockDir takes an exclusive flock on dir/LOCK, so two servers never write
// one log, and writes our pid into it for the operator.
func lockDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, lockName)
	// Never through a link: the file is truncated for our pid below, and a
	// link planted here would have us truncate its target.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o644)
	if errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("lock file %s is a symbolic link, which greyhold never makes: remove it (and check who can write to %s)", path, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		pid, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s is held by process %s; stop it or use another --data-dir",
				ErrLocked, path, strings.TrimSpace(string(pid)))
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}

func unlockDir(f *os.File) error {
	if f == nil {
		return nil
	}
	_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return f.Close()
}

// hasState says whether dir already holds greylisting state, naming what:
// greyhold.json, a log with segments, or snapshots. "" means none.
func hasState(dir string) (string, error) {
	if _, err := os.Lstat(filepath.Join(dir, metaName)); err == nil {
		return metaName, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("look for state in %s: %w", dir, err)
	}
	for _, sub := range []string{walDirName, snapDirName} {
		ents, err := os.ReadDir(filepath.Join(dir, sub))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("look for state in %s: %w", dir, err)
		}
		for _, e := range ents {
			if !e.IsDir() && !strings.HasSuffix(e.Name(), ".tmp") {
				return filepath.Join(sub, e.Name()), nil
			}
		}
	}
	return "", nil
}

// loadSecret reads dir/secret, or makes it: 32 random bytes, hex, mode 0600,
// synced before use so a crash cannot leave state keyed by a lost secret.
// It never makes one beside existing state (existed names it): that state
// is keyed by the secret that was lost, and a new one would silently turn
// every triplet it holds into one no request can match.
func loadSecret(dir, existed string) (secret []byte, created bool, err error) {
	return readSecret(filepath.Join(dir, secretName), existed, true)
}

// readSecret reads the secret at path, or, if create and it is missing and
// existed is "", makes it there.
func readSecret(path, existed string, create bool) (secret []byte, created bool, err error) {
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		s, err := hex.DecodeString(strings.TrimSpace(string(b)))
		if err != nil || len(s) < 16 {
			return nil, false, fmt.Errorf("secret file %s: want at least 32 hex digits; restore it from another MX or a backup", path)
		}
		return s, false, nil
	case !errors.Is(err, os.ErrNotExist):
		return nil, false, fmt.Errorf("read secret: %w", err)
	case !create:
		return nil, false, fmt.Errorf("secret file %s: %w; it is never made: copy the fleet's secret there (README: the fleet)", path, err)
	case existed != "":
		return nil, false, fmt.Errorf("%w: %s is missing, but the data directory holds state keyed by it (%s); restore the secret file from a backup or from another MX host of this fleet, or, to start with no state, move the data directory away",
			ErrIncompatible, path, filepath.Join(filepath.Dir(path), existed))
	}
	s := make([]byte, secretBytes)
	if _, err := rand.Read(s); err != nil {
		return nil, false, fmt.Errorf("make secret: %w", err)
	}
	if err := durable.WriteFile(path, []byte(hex.EncodeToString(s)+"\n"), 0o600); err != nil {
		return nil, false, fmt.Errorf("write secret: %w", err)
	}
	return s, true, nil
}

// secretID names a secret without revealing it, so a snapshot made with
// another secret is recognised.
func secretID(secret []byte) uint64 {
	b := append([]byte("greyhold secret id\x00"), secret...)
	return xxhash.Sum64(b)
}

// keyID is the short form of a secret id that every log frame carries.
// Zero would turn the log's check off, so it is never zero.
func keyID(sid uint64) uint32 {
	if k := uint32(sid); k != 0 {
		return k
	}
	return 1
}

type meta struct {
	Format   int       `json:"format"`
	Keys     string    `json:"keys"`
	SecretID string    `json:"secret_id"`
	Created  time.Time `json:"created"`
}

// checkMeta compares the directory's recorded key options and secret (read
// from secretPath) with ours, or records them on first use, and returns the key options to run
// with; existed says the file was there. A client identity left to
// IdentityAuto takes the one the directory was written with (network for
// one written before identities existed); with no greyhold.json it is
// name for a fresh directory and network beside state whose record was
// lost (the snapshots' key options are checked all the same). One given
// and different is refused, since none of the directory's triplets would
// be found. A directory whose name keys were made with another public
// suffix list (an upgrade brought a newer one) is taken on with a warning
// and the list recorded anew: only the names whose registrable domain
// moved key otherwise, and their senders wait out one more delay.
func checkMeta(dir, secretPath string, want engine.KeyOptions, sid uint64, fresh bool, log *slog.Logger) (engine.KeyOptions, bool, error) {
	path := filepath.Join(dir, metaName)
	rec := meta{Format: formatVersion, SecretID: fmt.Sprintf("%016x", sid)}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		if want.Identity == engine.IdentityAuto {
			want.Identity = engine.IdentityNetwork
			if fresh {
				want.Identity = engine.IdentityName
			}
		}
		rec.Keys = want.String()
		rec.Created = time.Now().UTC().Truncate(time.Second)
		return want, false, writeMeta(path, rec)
	}
	if err != nil {
		return want, true, fmt.Errorf("read %s: %w", path, err)
	}
	var have meta
	if err := json.Unmarshal(b, &have); err != nil {
		return want, true, fmt.Errorf("%s: %w", path, err)
	}
	if have.Format != formatVersion {
		return want, true, fmt.Errorf("%w: %s has format %d, this version reads %d", ErrIncompatible, path, have.Format, formatVersion)
	}
	if have.SecretID != rec.SecretID {
		return want, true, fmt.Errorf("%w: the secret of %s (id %s) is not the one the state in %s was written with (id %s); restore that secret, or, to start anew with this one (a node joining the fleet whose secret it is), give a new, empty --data-dir",
			ErrIncompatible, secretPath, rec.SecretID, dir, have.SecretID)
	}
	recorded, err := engine.ParseKeyOptions(have.Keys)
	if err != nil {
		return want, true, fmt.Errorf("%w: %s: %v", ErrIncompatible, path, err)
	}
	if want.Identity == engine.IdentityAuto {
		want.Identity = recorded.Identity
	}
	if want.Identity != recorded.Identity {
		return want, true, fmt.Errorf("%w: %s was written with --client-identity=%s and this server has --client-identity=%s, which keys clients otherwise, so none of its triplets would be found; start without --client-identity (or with --client-identity=%s) to keep using it, or give a new --data-dir to start over with %s",
			ErrIncompatible, dir, recorded.Identity, want.Identity, recorded.Identity, want.Identity)
	}
	if !recorded.SameExceptList(want) {
		return want, true, fmt.Errorf("%w: %s was written with %q but this server has %q; start with the same key options (prefix lengths, normalisation) or use a new data directory",
			ErrIncompatible, dir, have.Keys, want.String())
	}
	if recorded.ListDiffers() || have.Keys != want.String() {
		if recorded.ListDiffers() {
			log.Warn("the data directory's name keys were made with another public suffix list; taking it on with this one (senders whose registrable domain moved between the lists wait out one more delay)",
				"dir", dir, "recorded", recorded.SuffixList, "now", engine.SuffixList())
		}
		have.Keys = want.String()
		if err := writeMeta(path, have); err != nil {
			return want, true, err
		}
	}
	return want, true, nil
}

// sameKeys reports whether keys recorded in a snapshot header key as ours
// do, under checkMeta's rule: the same options, the public suffix list
// aside.
func sameKeys(recorded []byte, ours engine.KeyOptions) bool {
	k, err := engine.ParseKeyOptions(string(recorded))
	return err == nil && k.SameExceptList(ours)
}

func writeMeta(path string, m meta) error {
	out, _ := json.MarshalIndent(m, "", "  ")
	if err := durable.WriteFile(path, append(out, '\n'), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// CheckEngineOptions checks engine options as Open takes them: with the
// client identity perhaps still to be taken from the data directory.
func CheckEngineOptions(o engine.Options) error {
	if o.Keys.Identity == engine.IdentityAuto {
		o.Keys.Identity = engine.IdentityName
	}
	return o.Validate()
}

// DefaultMaxEntries sizes the triplet bound from the memory this process
// may use: half of the cgroup limit or of the machine's memory, at
// bytesPerEntry each. Half leaves room for the snapshot writer's per-shard
// copies, the Go runtime and the rest of the host. It returns 0 (no bound)
// when the memory cannot be read.
func DefaultMaxEntries() int {
	const bytesPerEntry = 64 // measured ~35 B in the engine; the rest is headroom
	mem := memoryLimit()
	if mem <= 0 {
		return 0
	}
	return int(mem / 2 / bytesPerEntry)
}

func memoryLimit() int64 {
	var total int64
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				total = kb * 1024
			}
		}
	}
	if b, err := os.ReadFile("/sys/fs/cgroup/memory.max"); err == nil {
		if lim, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil && lim > 0 && (total == 0 || lim < total) {
			total = lim
		}
	}
	return total
}
