package engine_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	. "github.com/greyhold/greyhold/engine"
	"github.com/greyhold/greyhold/internal/testutil"
)

type logged struct {
	recs [][]byte // one entry per state change (a check or a rule change)
}

func (l *logged) add(b []byte) {
	if len(b) > 0 {
		l.recs = append(l.recs, append([]byte(nil), b...))
	}
}

func (l *logged) applyTo(t *testing.T, e *Engine, from int) {
	t.Helper()
	applyAll(t, e, l.recs[from:])
}

func applyAll(t *testing.T, e *Engine, recs [][]byte) {
	t.Helper()
	for _, r := range recs {
		if _, err := e.Apply(r); err != nil {
			t.Fatal(err)
		}
	}
}

func runWorkload(t *testing.T, e *Engine, w *testutil.Workload, n int, l *logged, during func(i int)) {
	t.Helper()
	for i := range n {
		if during != nil {
			during(i)
		}
		now, req := w.Step()
		switch w.R.IntN(100) {
		case 0:
			r, present := w.RuleChange()
			rec, _, err := e.SetRule(now, r, present)
			if err != nil {
				t.Fatal(err)
			}
			l.add(rec)
		case 1:
			e.Expire(now)
		}
		var ch Changes
		if _, err := e.Check(now, &req, &ch); err != nil {
			t.Fatal(err)
		}
		l.add(ch.Bytes())
	}
}

func newEngine(t testing.TB, mut func(*Options)) *Engine {
	t.Helper()
	o := DefaultOptions()
	mut(&o)
	e, err := New(o, []byte("0123456789abcdef-test-secret"))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestReplayProperty: the records of a random history rebuild an engine
// that decides every later request as the original does, whether (a) the
// records are replayed alone, (b) a fuzzy export taken shard by shard while
// checks went on is loaded and the records from its start applied over it,
// (c) the records are applied twice, the second time backwards, or (d) they
// are applied in a random order: records carry results, so order and
// repetition do not matter.
func TestReplayProperty(t *testing.T) {
	for seed := range uint64(25) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 1))
			mut := func(o *Options) {
				o.Shards = 8
				if seed%2 == 1 {
					o.AutoWhitelistClients = 2
				}
			}
			orig := newEngine(t, mut)
			w := testutil.NewWorkload(seed, testutil.T0)
			var log logged

			// The fuzzy export starts at a random step and takes one shard
			// every few steps.
			snapAt := 200 + r.IntN(2500)
			var snapFrom int
			var keys []uint64
			var first, word []uint32
			var ckeys []uint64
			var ccols [4][]uint32
			var rules []byte
			next := 0
			runWorkload(t, orig, w, 3000, &log, func(i int) {
				if i == snapAt {
					snapFrom = len(log.recs)
				}
				if i >= snapAt && next < orig.Shards() && (i-snapAt)%7 == 0 {
					keys, first, word = orig.ExportShard(next, keys, first, word)
					ckeys, ccols = orig.ExportClients(next, ckeys, ccols)
					next++
					if next == orig.Shards() {
						rules = orig.ExportRules()
					}
				}
			})
			if next != orig.Shards() {
				t.Fatalf("export incomplete: %d shards", next)
			}

			replayed := newEngine(t, mut)
			log.applyTo(t, replayed, 0)

			twice := newEngine(t, mut)
			log.applyTo(t, twice, 0)
			backwards := slices.Clone(log.recs)
			slices.Reverse(backwards)
			applyAll(t, twice, backwards)

			shuffled := newEngine(t, mut)
			perm := slices.Clone(log.recs)
			r.Shuffle(len(perm), func(i, j int) { perm[i], perm[j] = perm[j], perm[i] })
			applyAll(t, shuffled, perm)

			snap := newEngine(t, mut)
			if err := snap.ImportTriplets(keys, first, word); err != nil {
				t.Fatal(err)
			}
			if err := snap.ImportClients(ckeys, ccols[:]); err != nil {
				t.Fatal(err)
			}
			if _, err := snap.Apply(rules); err != nil {
				t.Fatal(err)
			}
			log.applyTo(t, snap, snapFrom)

			diff, err := testutil.Same(seed, w.Now, 3000, map[string]testutil.Checker{
				"original": testutil.EngineChecker(orig), "replayed": testutil.EngineChecker(replayed),
				"twice": testutil.EngineChecker(twice), "shuffled": testutil.EngineChecker(shuffled),
				"snapshot+log": testutil.EngineChecker(snap),
			})
			if err != nil {
				t.Fatal(err)
			}
			if diff != "" {
				t.Fatal(diff)
			}
		})
	}
}

// TestCheckBatchIsSequential: a batch decides as Check does one request
// after another (the next request is prepared before the one before it is
// decided), with the same records in the same order, through batches that
// repeat a triplet back to back, hold bad requests, and keys too long for
// the stack buffer.
func TestCheckBatchIsSequential(t *testing.T) {
	t.Run("plain", func(t *testing.T) {
		testBatchIsSequential(t, func(o *Options) { o.AutoWhitelistClients = 2; o.MaxEntries = 64 })
	})
	// Selection rules that pass, greylist with a delay of their own and
	// note, and recipients of one transaction: every field of a Decision
	// is set on some path, through results reused from batch to batch.
	t.Run("rules and transactions", func(t *testing.T) {
		var sel Selection
		for _, l := range []string{
			"partner: client in 192.0.1.0/24 and sender-domain in sender.example => pass",
			"watch: recipient-domain in example.test => none",
			"slow: client in 192.0.2.0/24 => greylist delay=60s",
		} {
			r, err := ParseSelectRule(l)
			if err != nil {
				t.Fatal(err)
			}
			sel.Rules = append(sel.Rules, r)
		}
		sel.Default = ActGreylist
		seen := testBatchIsSequential(t, func(o *Options) {
			o.AutoWhitelistClients = 2
			o.MaxEntries = 64
			o.Select = sel
			o.PassTransactionRecipients = true
		})
		if seen.rulePass == 0 || seen.ruleDelay == 0 || seen.noted == 0 || seen.transaction == 0 {
			t.Fatalf("the workload met %+v: every kind at least once was meant", seen)
		}
	})
}

// batchSeen counts the decisions of a run that only rules and
// transactions make.
type batchSeen struct{ rulePass, ruleDelay, noted, transaction int }

func testBatchIsSequential(t *testing.T, mut func(*Options)) batchSeen {
	var seen batchSeen
	one, batch := newEngine(t, mut), newEngine(t, mut)
	w := testutil.NewWorkload(11, testutil.T0)
	long := strings.Repeat("x", 300)
	var reqs []Request
	var res []Result
	var recs []byte
	for round := range 3000 {
		now := w.Now
		reqs = reqs[:0]
		for range 1 + w.R.IntN(40) {
			_, req := w.Step()
			w.Now = now // one time for the whole batch
			switch w.R.IntN(30) {
			case 0:
				req.ClientAddr = "not-an-address"
			case 1:
				req.Recipient = ""
			case 2:
				req.Sender = long + req.Sender
			case 3:
				if len(reqs) > 0 {
					req = reqs[len(reqs)-1]
				}
			}
			// Transactions of a few recipients each.
			req.Instance = fmt.Sprintf("t%d", w.R.IntN(4))
			reqs = append(reqs, req)
		}
		var want []byte
		wantN := 0
		wantRes := make([]Result, len(reqs))
		for i := range reqs {
			var ch Changes
			wantRes[i].Decision, wantRes[i].Err = one.Check(now, &reqs[i], &ch)
			switch d := wantRes[i].Decision; {
			case d.Reason == ReasonRule:
				seen.rulePass++
			case d.Reason == ReasonTransaction:
				seen.transaction++
			case d.Rule != 0:
				seen.ruleDelay++
			}
			if wantRes[i].Noted != 0 {
				seen.noted++
			}
			want = append(want, ch.Bytes()...)
			wantN += ch.Count()
		}
		res = slices.Grow(res[:0], len(reqs))[:len(reqs)]
		for i := range res { // the last batch's results, or junk: all overwritten
			res[i].Decision = Decision{Verdict: Pass, Reason: ReasonRule, Left: 9, Delayed: 9, Key: 9, Ident: IdentName, NameAt: 9, Rule: 9, Noted: 9}
		}
		var n int
		recs, n = batch.CheckBatch(now, reqs, res, recs[:0])
		for i := range reqs {
			if res[i].Decision != wantRes[i].Decision || fmt.Sprint(res[i].Err) != fmt.Sprint(wantRes[i].Err) {
				t.Fatalf("round %d, request %d (%+v): batch %+v, one by one %+v", round, i, reqs[i], res[i], wantRes[i])
			}
		}
		if n != wantN || !bytes.Equal(recs, want) {
			t.Fatalf("round %d: batch logged %d records (%x), one by one %d (%x)", round, n, recs, wantN, want)
		}
		w.Now += Time(w.R.IntN(600))
	}
	return seen
}
