// Package importer brings the state of the greylisting tool greyhold
// replaces into a data directory, so that switching costs no re-learning:
// postgrey's Berkeley DB files (read with Berkeley DB's own db_dump) and
// sqlgrey's tables (SQLite, PostgreSQL or MySQL, through database/sql).
//
// Each of the other tool's entries is mapped to greyhold's keys (its
// client as a network under the data directory's prefixes, sender and
// recipient normalised as greyhold compares them, hashed with the data
// directory's secret) and becomes a record, merged and logged as greyhold's
// own changes are: an import into a directory in use joins what it holds,
// and reaches a fleet like any change. What cannot be mapped is counted by
// reason in the Report.
package importer

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/greyhold/greyhold/engine"
)

// Sink takes the records of an import (store.Store.Import).
type Sink interface {
	Import(payload []byte, n int) error
}

// Report counts what an import did.
type Report struct {
	Source  string
	Pending int // triplets imported pending
	Passed  int // triplets imported passed
	Clients int // client networks imported with a pass count
	Listed  int // of which auto-whitelisted
	// Skipped counts the entries left out, by reason.
	Skipped map[string]int
	// Notes say what the import could not carry over as it was.
	Notes []string
}

func (r *Report) skip(why string) {
	if r.Skipped == nil {
		r.Skipped = map[string]int{}
	}
	r.Skipped[why]++
}

// String renders the report for the command's output.
func (r *Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "imported from %s: %d triplets pending, %d passed, %d client networks (%d auto-whitelisted)\n",
		r.Source, r.Pending, r.Passed, r.Clients, r.Listed)
	total := 0
	var reasons []string
	for why, n := range r.Skipped {
		total += n
		reasons = append(reasons, why)
	}
	sort.Strings(reasons)
	fmt.Fprintf(&b, "skipped: %d\n", total)
	for _, why := range reasons {
		fmt.Fprintf(&b, "  %6d  %s\n", r.Skipped[why], why)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "note: %s\n", n)
	}
	return b.String()
}

// batch gathers records into frames of a few thousand.
type batch struct {
	sink Sink
	buf  []byte
	n    int
	err  error
}

const batchRecords = 4096

func (b *batch) add(rec []byte) {
	if b.err != nil {
		return
	}
	b.buf = append(b.buf, rec...)
	if b.n++; b.n >= batchRecords {
		b.flush()
	}
}

func (b *batch) flush() error {
	if b.err == nil && b.n > 0 {
		b.err = b.sink.Import(b.buf, b.n)
		b.buf, b.n = b.buf[:0], 0
	}
	return b.err
}

// clientPasses gathers, per client network, the times of the passes the
// other tool saw, to count them as greyhold does: at most one in an
// AutoWhitelistInterval.
type clientPasses struct {
	times map[netip.Prefix][]engine.Time
	last  map[netip.Prefix]engine.Time
}

func (c *clientPasses) add(n netip.Prefix, passed, last engine.Time) {
	if c.times == nil {
		c.times, c.last = map[netip.Prefix][]engine.Time{}, map[netip.Prefix]engine.Time{}
	}
	c.times[n] = append(c.times[n], passed)
	c.last[n] = max(c.last[n], last)
}

// records turns the passes into client records at now: each network's
// passes counted one an interval apart at most, as the engine counts.
func (c *clientPasses) records(e *engine.Engine, now engine.Time, b *batch, r *Report) {
	o := e.Options()
	interval := engine.Time(o.AutoWhitelistInterval.Seconds())
	for n, ts := range c.times {
		slices.Sort(ts)
		var count uint32
		var counted engine.Time
		for _, t := range ts {
			if count == 0 || t >= counted+interval {
				count++
				counted = t
			}
		}
		rec, expired := e.ImportClientRecord(now, n, now, c.last[n], counted, count)
		if expired {
			r.skip("client network not seen within --max-age")
			continue
		}
		b.add(rec)
		r.Clients++
		if o.AutoWhitelistClients > 0 && int(count) >= o.AutoWhitelistClients {
			r.Listed++
		}
	}
}

// nameModeNote is what an import into a name-mode directory must say:
// the other tools key clients by network, and so do the imported triplets.
func nameModeNote(e *engine.Engine, r *Report) {
	if e.Options().Keys.Identity == engine.IdentityName {
		r.Notes = append(r.Notes, "this data directory keys clients with a verified, non-generic name by that name "+
			"(--client-identity=name); the imported triplets are keyed by network, as the other tool kept them, "+
			"so they are found for clients without such a name only, and a named client's triplets wait out one more delay "+
			"(import into a directory made with --client-identity=network to keep them all)")
	}
}
