package cluster

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Options configure a Node. Zero values take the documented defaults.
type Options struct {
	// URLs are the NATS servers, as nats.go takes them ("nats://h:4222,...").
	URLs string
	// NodeID names this node on the stream: unique in the fleet and the same
	// across restarts. Default: the host name's first label. Letters,
	// digits, '-' and '_'.
	NodeID string
	// Stream is the JetStream stream's name. Default GREYHOLD.
	Stream string
	// Replicas for the stream and buckets this node makes (1, or 3 for a
	// NATS cluster). An existing stream keeps its own.
	Replicas int
	// MaxAge and MaxBytes limit a stream this node makes. Default 24h and
	// 8 GiB: older history lives in the snapshots.
	MaxAge   time.Duration
	MaxBytes int64
	// BacklogBytes bounds the log kept for shipping while NATS is away: past
	// it the log may be truncated as usual, and the node ships a snapshot
	// instead of the frames it dropped. Default 1 GiB.
	BacklogBytes int64
	// SnapshotUploadInterval is the least time between two uploads of this
	// node's snapshot to the object store (each after a local snapshot).
	// Default 1h.
	SnapshotUploadInterval time.Duration
	// ConnectWait is how long Start waits for NATS before serving without
	// it (the node connects later, by itself). Default 5s.
	ConnectWait time.Duration

	// Credentials: a .creds file (JWT and seed), an nkey seed file, a user
	// and password, or a token; at most one kind.
	CredsFile   string
	NKeyFile    string
	User        string
	Password    string
	Token       string
	TLSCA       string
	TLSCert     string
	TLSKey      string
	MaxMsgBytes int // largest message published; default 512 KiB
	// Linger is how long a message waits after its first frame for more
	// before it is published; default 5 ms. It adds at most that to the
	// replication lag, and at low rates saves most of the bytes.
	Linger time.Duration

	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

func (o *Options) setDefaults() error {
	if o.URLs == "" {
		return errors.New("cluster: no NATS URL")
	}
	if o.NodeID == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("cluster: node id: no host name (%w); set --node-id", err)
		}
		o.NodeID, _, _ = strings.Cut(h, ".")
	}
	if err := validNodeID(o.NodeID); err != nil {
		return err
	}
	if o.Stream == "" {
		o.Stream = "GREYHOLD"
	}
	if strings.ContainsAny(o.Stream, " .*>\t/\\") {
		return fmt.Errorf("cluster: stream name %q: no dots, spaces, slashes, '*' or '>'", o.Stream)
	}
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	if o.Replicas < 1 || o.Replicas > 5 {
		return fmt.Errorf("cluster: %d replicas: want 1 to 5 (3 for a NATS cluster)", o.Replicas)
	}
	if o.MaxAge == 0 {
		o.MaxAge = 24 * time.Hour
	}
	if o.MaxBytes == 0 {
		o.MaxBytes = 8 << 30
	}
	if o.BacklogBytes == 0 {
		o.BacklogBytes = 1 << 30
	}
	if o.SnapshotUploadInterval == 0 {
		o.SnapshotUploadInterval = time.Hour
	}
	if o.ConnectWait == 0 {
		o.ConnectWait = 5 * time.Second
	}
	if o.MaxMsgBytes == 0 {
		o.MaxMsgBytes = 512 << 10
	}
	if o.Linger == 0 {
		o.Linger = 5 * time.Millisecond
	}
	kinds := 0
	for _, set := range []bool{o.CredsFile != "", o.NKeyFile != "", o.User != "", o.Token != ""} {
		if set {
			kinds++
		}
	}
	if kinds > 1 {
		return errors.New("cluster: credentials: give one of a creds file, an nkey file, a user and password, or a token")
	}
	if (o.TLSCert == "") != (o.TLSKey == "") {
		return errors.New("cluster: TLS: a client certificate needs its key, and a key its certificate")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// validNodeID checks that id can be one token of a subject and of an
// object name.
func validNodeID(id string) error {
	if id == "" || len(id) > 128 {
		return fmt.Errorf("cluster: node id %q: want 1 to 128 characters", id)
	}
	for _, c := range id {
		ok := c == '-' || c == '_' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
		if !ok {
			return fmt.Errorf("cluster: node id %q: only letters, digits, '-' and '_' (a host name's first label does)", id)
		}
	}
	return nil
}
