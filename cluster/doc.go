// Package cluster shares a greyhold node's state changes with the other
// MX hosts of its fleet through NATS JetStream, and applies theirs. It is
// the only package that speaks NATS.
//
// Every node answers from its own memory; nothing on the check path waits
// for the network. The write-ahead log is the outbox: a publisher follows
// it (store.Follow) and ships its frames, several to a message, on the
// node's own subject; a consumer applies every other node's frames through
// the replay path (store.ApplyRemote). Records carry resulting values and
// merge as a semilattice join (engine), so order, repetition and delay do
// not matter: no consensus is needed beyond the stream's own.
//
// # The stream and the buckets
//
//	stream   <Stream> (default GREYHOLD), subjects greyhold.rec.*
//	subject  greyhold.rec.<node-id>: one node's messages, in its log order
//	KV       <Stream>_FLEET: key "identity", the fleet's secret id and key options
//	objects  <Stream>_SNAPSHOTS: one snapshot per node, named after it
//
// A missing stream is made with file storage, a maximum age in hours
// (older history lives in the snapshots), a maximum size, discard-old and
// S2 compression; an existing one is used as the operator made it.
//
// # Messages
//
// A records message's body is the frames as the log stores them: for each,
// a uvarint length and the frame (wal.AppendFrame: index, generation, key
// id, commit time, records, CRC). Headers:
//
//	Greyhold-Kind    frames | snapshot
//	Greyhold-Node    the node id
//	Greyhold-Fleet   secret id and a hash of the key options (fleetID)
//	Greyhold-Gen     generation of the last frame
//	Greyhold-First   index of the first frame
//	Greyhold-Last    index of the last frame
//	Nats-Msg-Id      node, generation and index range: a message sent again
//	                 after a reconnect is deduplicated by the stream
//
// A snapshot message says the node could not ship part of its log (its
// backlog outgrew the bound while NATS was away, or the log lost frames)
// and put a snapshot in the object store instead; it names the object,
// its digest and the log index it covers, and the others merge it.
//
// # Positions
//
// What a node has shipped is read back from the stream: the last message
// on its subject names the generation and last index it carries. The log
// gives a new generation at every open (wal.Log.Eras), so a restart goes on
// after the last frame shipped, or from where the generation after it
// begins when that is earlier (a torn tail cut after it was shipped): a
// reused index is never taken for one already shipped. A pin holds the log
// at the first frame not yet acknowledged.
//
// What a node has applied is the stream sequence of the last message it
// handled, kept in its snapshots (store.SetSnapshotState): a restart
// consumes from there. If the stream no longer holds that position (its age
// or size limits trimmed it), the node merges the newest fleet snapshot
// and goes on from the position that snapshot covers, and says so; records
// between are never skipped silently.
//
// # Trust
//
// The nodes of a fleet share the hash secret and the key options. The
// first node records them in the KV bucket; a node that differs is refused
// at start, naming what differs, and every message carries the fleet id, so
// records from an incompatible node are never applied. Records carry only
// keyed hashes.
package cluster
