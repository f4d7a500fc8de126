// Package engine is greyhold's greylisting core: it turns a request
// (client address, sender, recipient) into a key, keeps what it knows about
// each key in memory, and decides defer or pass. It does no I/O.
//
// # Keys
//
// A triplet is (client, normalised sender, normalised recipient);
// normalize.go has the rules and the reasons for them. The client is its
// network, or in name mode (KeyOptions.Identity) the organisation of its
// verified, non-generic name (identity.go), so a sending pool that retries
// from another network, or a host over the other address family, meets
// its triplet again. Its key is xxhash64
// over a 16-byte secret followed by those fields, so the same triplet always
// lands on the same key, and files holding keys cannot be matched against a
// dictionary of addresses. With 64-bit keys the chance that two of n
// triplets share one is about n²/2⁶⁵: one in 370,000 at ten million, one in
// 37 at a billion. A collision makes one triplet inherit the other's state,
// which at worst lets one message through without a delay; it is not worth
// the 4 bytes per entry a second check value would cost.
//
// # State
//
// The state is split over a power-of-two number of shards by the top bits of
// the key; each shard is a mutex, an open-addressing table of keys and
// entries for triplets (table.go), a map for client networks (the
// auto-whitelist) and a timing wheel. Entries are a few packed integers with
// no pointers, so the garbage collector never scans the table or the map.
// Times are whole seconds (type Time).
//
// # Decisions
//
// Check implements the table in DESIGN.md §1: new and early retries are
// deferred with the seconds left; the first retry after the delay passes
// once with the seconds it was held; passed triplets pass at once and have
// their last-seen time refreshed once per TouchInterval (so a stream of
// known triplets is a pure in-memory read); a client network that has passed
// AutoWhitelistClients triplets (at most one counted per hour) passes
// whatever it sends; whitelist rules pass. An entry past its deadline is
// treated as absent whether or not the wheel has dropped it yet.
//
// # Changes and records
//
// Every change Check makes comes back as records in a Changes value; the
// caller writes them to its log before it answers. A record carries the
// resulting state, never a delta, and Apply merges it with what the engine
// holds (mergeEntry): applying a record twice, or overlapping records in any
// order, ends in the same state. Recovery (snapshot, then log), replication
// between MX hosts and fuzzy snapshots all rest on that. record.go gives the
// byte layout.
//
// # Memory bound
//
// With MaxEntries set, a shard at its share of the bound evicts its oldest
// pending triplets (found in wheel order) to make room, never passed ones; a
// shard with nothing to evict lets the request pass (ReasonOverflow) rather
// than defer mail it cannot remember.
package engine
