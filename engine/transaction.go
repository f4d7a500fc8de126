package engine

import "github.com/cespare/xxhash/v2"

// A message to several recipients is one transaction: Postfix asks about
// each recipient in turn, with the same instance attribute. When the
// first recipients pass (known triplets) and a recipient added in copy is
// new, greylisting would defer that one alone: Postfix then delivers to
// the others and keeps the copy to retry, and a sender that does not
// retry a partial failure loses it (postgrey #93). With
// PassTransactionRecipients, a recipient that would be deferred passes
// when another recipient of the same transaction (instance, client
// identity and sender alike) passed in the last txTTL. Its triplet is
// still recorded as seen, so its next message passes after the delay as
// usual. The memory of transactions is not logged: a restart forgets the
// transactions under way, whose copies are then deferred as without the
// option. A recipient asked about before the ones that pass is deferred
// all the same: Postfix has had its answer.

// txTTL is how long a transaction's pass counts: far longer than one
// SMTP transaction lasts.
const txTTL = 3600

// txPerShard bounds each shard's transactions; past it, the ones older
// than txTTL go, and all of them if that is not enough.
const txPerShard = 4096

// transactionKey hashes instance, the client as the triplet has it and the
// normalised sender.
func (e *Engine) transactionKey(req *Request, st *checkState, buf []byte) uint64 {
	var d xxhash.Digest
	d.Reset()
	d.Write(e.secret[:])
	d.WriteString("x")
	d.WriteString(req.Instance)
	d.Write([]byte{0})
	d.Write(buf[secretLen+1 : st.senderEnd]) // client, sender length, sender
	return d.Sum64()
}

// transaction notes a pass d for the request's transaction, or turns a
// defer d into a pass when another recipient of it passed.
func (e *Engine) transaction(now Time, req *Request, st *checkState, buf []byte, d *Decision) {
	tk := e.transactionKey(req, st, buf)
	s := e.shardOf(tk)
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case d.Verdict == Pass && (d.Reason == ReasonPassed || d.Reason == ReasonKnown || d.Reason == ReasonClientAWL):
		if s.tx == nil {
			s.tx = map[uint64]Time{}
		}
		if len(s.tx) >= txPerShard {
			for k, t := range s.tx {
				if uint64(now) >= uint64(t)+txTTL {
					delete(s.tx, k)
				}
			}
			if len(s.tx) >= txPerShard {
				clear(s.tx)
			}
		}
		s.tx[tk] = now
	case d.Verdict == Defer:
		if t, ok := s.tx[tk]; ok && uint64(now) < uint64(t)+txTTL && now >= t {
			// The defer was counted in the triplet's shard: taken back
			// here, the sum over the shards, which is all Stats shows,
			// stays right (unsigned counters wrap and sum alike).
			s.stats.decisions[d.Reason]--
			s.stats.decisions[ReasonTransaction]++
			*d = Decision{Verdict: Pass, Reason: ReasonTransaction, Key: d.Key}
		}
	}
}
