package engine

import (
	"errors"
	"fmt"
	"math/bits"
	"strconv"
	"strings"
	"time"
)

// KeyOptions decide which requests share a triplet. They shape every key the
// engine stores, so a data directory written with one set cannot be read
// with another: the store records them and refuses a mismatch.
type KeyOptions struct {
	// IPv4Prefix is the prefix length that makes an IPv4 client network
	// (24 by default, as postgrey; 32 means the exact address).
	IPv4Prefix int
	// IPv6Prefix is the same for IPv6 (64 by default; 128 means exact).
	IPv6Prefix int
	// NoSenderNormalisation keeps the sender exactly as sent (lowercased),
	// without dropping BATV and SRS wrappings, +extensions, and the digit
	// runs and ID tokens that make every bounce address unique.
	NoSenderNormalisation bool
	// StripRecipientExtension drops a "+extension" from the recipient's
	// local part, so user+a@ and user+b@ share a triplet.
	StripRecipientExtension bool
	// Identity says who the client is (identity.go): its network, or its
	// verified name's organisation. An engine needs IdentityNetwork or
	// IdentityName; IdentityAuto is for a store to resolve.
	Identity Identity
	// SuffixList names the public suffix list name identities were made
	// with; "" is the one compiled in (SuffixList). It is read back from
	// recorded options, and an engine refuses any other.
	SuffixList string
}

// keyScheme names the normalisation rules of this version. A change to those
// rules changes keys, so it must change this string too.
const keyScheme = 1

// DefaultKeyOptions returns postgrey's defaults: /24 and /64 networks, sender
// normalisation on, recipient extensions kept, clients keyed by network.
func DefaultKeyOptions() KeyOptions {
	return KeyOptions{IPv4Prefix: 24, IPv6Prefix: 64, Identity: IdentityNetwork}
}

// Validate reports the first invalid field.
func (k KeyOptions) Validate() error {
	switch k.Identity {
	case IdentityNetwork, IdentityName:
	case IdentityAuto:
		return errors.New("client identity not chosen: want name or network")
	default:
		return fmt.Errorf("client identity %d: want name or network", k.Identity)
	}
	if k.SuffixList != "" && k.SuffixList != SuffixList() {
		return fmt.Errorf("public suffix list %s: this version has %s", k.SuffixList, SuffixList())
	}
	if k.IPv4Prefix < 1 || k.IPv4Prefix > 32 {
		return fmt.Errorf("ipv4 prefix %d: must be 1..32 (32 = exact address)", k.IPv4Prefix)
	}
	if k.IPv6Prefix < 1 || k.IPv6Prefix > 128 {
		return fmt.Errorf("ipv6 prefix %d: must be 1..128 (128 = exact address)", k.IPv6Prefix)
	}
	return nil
}

// String renders the options in the form stored beside the data, compared
// between the nodes of a fleet and shown in errors: "keys=1 ipv4=/24
// ipv6=/64 sender=normalised recipient-ext=kept identity=network", and in
// name mode "... identity=name psl=2026-02-06.d6c92f1bbb74", the public
// suffix list that shapes name keys. The list shapes no key in network
// mode, so it is not named there.
func (k KeyOptions) String() string {
	sender, rext := "normalised", "kept"
	if k.NoSenderNormalisation {
		sender = "raw"
	}
	if k.StripRecipientExtension {
		rext = "stripped"
	}
	s := fmt.Sprintf("keys=%d ipv4=/%d ipv6=/%d sender=%s recipient-ext=%s identity=%s",
		keyScheme, k.IPv4Prefix, k.IPv6Prefix, sender, rext, k.Identity)
	if k.Identity == IdentityName {
		s += " psl=" + k.suffixList()
	}
	return s
}

func (k KeyOptions) suffixList() string {
	if k.SuffixList == "" {
		return SuffixList()
	}
	return k.SuffixList
}

// SameExceptList reports whether k and o key every request alike but for
// the public suffix list: with another list only the names whose
// registrable domain moved between the two key otherwise.
func (k KeyOptions) SameExceptList(o KeyOptions) bool {
	k.SuffixList, o.SuffixList = "", ""
	return k == o
}

// ListDiffers reports whether k was recorded with a public suffix list
// other than the one compiled in (only name mode records one).
func (k KeyOptions) ListDiffers() bool {
	return k.Identity == IdentityName && k.suffixList() != SuffixList()
}

// ParseKeyOptions reads the String form back. Options recorded before
// client identities existed have no identity field: they are network mode.
// A list other than the one compiled in is kept in SuffixList, which
// Validate refuses: the caller decides what a changed list means
// (ListDiffers).
func ParseKeyOptions(s string) (KeyOptions, error) {
	k := KeyOptions{Identity: IdentityNetwork}
	seen := 0
	psl := false
	for _, f := range strings.Fields(s) {
		name, val, ok := strings.Cut(f, "=")
		if !ok {
			return k, fmt.Errorf("key options %q: field %q has no '='", s, f)
		}
		var err error
		switch name {
		case "keys":
			if val != strconv.Itoa(keyScheme) {
				return k, fmt.Errorf("key options %q: key scheme %s, this version uses %d", s, val, keyScheme)
			}
		case "ipv4":
			k.IPv4Prefix, err = strconv.Atoi(strings.TrimPrefix(val, "/"))
		case "ipv6":
			k.IPv6Prefix, err = strconv.Atoi(strings.TrimPrefix(val, "/"))
		case "sender":
			switch val {
			case "normalised":
			case "raw":
				k.NoSenderNormalisation = true
			default:
				err = errors.New("want normalised or raw")
			}
		case "recipient-ext":
			switch val {
			case "kept":
			case "stripped":
				k.StripRecipientExtension = true
			default:
				err = errors.New("want kept or stripped")
			}
		case "identity":
			k.Identity, err = ParseIdentity(val)
			if err == nil && k.Identity == IdentityAuto {
				err = errors.New("want name or network")
			}
			seen--
		case "psl":
			if val == "" {
				err = errors.New("empty")
			}
			if val != SuffixList() {
				k.SuffixList = val
			}
			psl = true
			seen--
		default:
			return k, fmt.Errorf("key options %q: unknown field %q", s, name)
		}
		if err != nil {
			return k, fmt.Errorf("key options %q: field %s: %w", s, name, err)
		}
		seen++
	}
	if seen != 5 {
		return k, fmt.Errorf("key options %q: want the 5 fields keys, ipv4, ipv6, sender and recipient-ext, have %d", s, seen)
	}
	if psl != (k.Identity == IdentityName) {
		return k, fmt.Errorf("key options %q: psl goes with identity=name, and only with it", s)
	}
	saved := k.SuffixList
	k.SuffixList = ""
	if err := k.Validate(); err != nil {
		return k, fmt.Errorf("key options %q: %w", s, err)
	}
	k.SuffixList = saved
	return k, nil
}

// Options shape the engine's decisions. Start from DefaultOptions: the zero
// value is not usable.
type Options struct {
	Keys KeyOptions

	// Delay is how long a new triplet is deferred (postgrey: 300 s).
	Delay time.Duration
	// RetryWindow is how long after first seen a retry still counts; a
	// pending triplet older than this starts over (postgrey: 2 days).
	RetryWindow time.Duration
	// MaxAge is how long a passed triplet or an auto-whitelisted client is
	// remembered after it was last seen (postgrey: 35 days).
	MaxAge time.Duration
	// TouchInterval is how often a known triplet's last-seen time is
	// refreshed (and so written to the log). An hour is nothing against a
	// 35-day MaxAge, and it turns a steady stream of known triplets into
	// pure in-memory reads.
	TouchInterval time.Duration
	// AutoWhitelistClients is the number of triplets a client network must
	// pass before all its mail passes at once; 0 disables it (postgrey: 5).
	AutoWhitelistClients int
	// AutoWhitelistInterval counts at most one pass per client network in
	// this long, so one burst of mail does not whitelist a client (postgrey
	// counts at most one an hour).
	AutoWhitelistInterval time.Duration

	// Shards is the number of lock shards, a power of two. 256 keeps the
	// chance that two of 64 concurrent checks meet on one lock small, and the
	// per-shard overhead (a wheel of 1024 slices, 24 KiB) at 6 MiB in all.
	Shards int
	// MaxEntries bounds the triplets held in memory; 0 means no bound. Above
	// it the oldest pending triplets are evicted, never passed ones.
	MaxEntries int

	// Select holds the selective greylisting rules (selection.go); none,
	// and every client is greylisted.
	Select Selection

	// PassTransactionRecipients lets a recipient pass that would be
	// deferred when another recipient of the same transaction (Postfix's
	// instance, the same client identity and sender) passed in the last
	// hour (transaction.go). Off by default, as in postgrey.
	PassTransactionRecipients bool
}

// DefaultOptions returns postgrey's decisions with greyhold's sharding.
func DefaultOptions() Options {
	return Options{
		Keys:                  DefaultKeyOptions(),
		Delay:                 300 * time.Second,
		RetryWindow:           48 * time.Hour,
		MaxAge:                35 * 24 * time.Hour,
		TouchInterval:         time.Hour,
		AutoWhitelistClients:  5,
		AutoWhitelistInterval: time.Hour,
		Shards:                256,
	}
}

// maxDuration keeps every deadline inside Time's 31 bits with room to spare.
const maxDuration = 10 * 365 * 24 * time.Hour

// Validate reports the first invalid field.
func (o *Options) Validate() error {
	if err := o.Keys.Validate(); err != nil {
		return err
	}
	check := func(name string, d time.Duration, min time.Duration) error {
		if d < min || d > maxDuration {
			return fmt.Errorf("%s %v: must be between %v and %v", name, d, min, maxDuration)
		}
		if d%time.Second != 0 {
			return fmt.Errorf("%s %v: must be whole seconds", name, d)
		}
		return nil
	}
	if err := check("delay", o.Delay, 0); err != nil {
		return err
	}
	if err := check("retry window", o.RetryWindow, time.Second); err != nil {
		return err
	}
	if o.RetryWindow <= o.Delay {
		return fmt.Errorf("retry window %v must be longer than the delay %v, or no retry could ever pass", o.RetryWindow, o.Delay)
	}
	if err := check("max age", o.MaxAge, time.Second); err != nil {
		return err
	}
	if err := check("touch interval", o.TouchInterval, time.Second); err != nil {
		return err
	}
	if o.TouchInterval >= o.MaxAge {
		return fmt.Errorf("touch interval %v must be shorter than the max age %v, or known triplets would expire while in use", o.TouchInterval, o.MaxAge)
	}
	if o.AutoWhitelistClients < 0 {
		return fmt.Errorf("auto-whitelist clients %d: must be 0 (off) or more", o.AutoWhitelistClients)
	}
	if err := check("auto-whitelist interval", o.AutoWhitelistInterval, 0); err != nil {
		return err
	}
	if o.Shards < 1 || o.Shards > 1<<16 || bits.OnesCount(uint(o.Shards)) != 1 {
		return fmt.Errorf("shards %d: must be a power of two from 1 to 65536", o.Shards)
	}
	if o.MaxEntries < 0 {
		return fmt.Errorf("max entries %d: must be 0 (no bound) or more", o.MaxEntries)
	}
	return o.Select.Validate()
}
