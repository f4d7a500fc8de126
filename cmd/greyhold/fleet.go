package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/greyhold/greyhold/cluster"
	"github.com/greyhold/greyhold/store"
)

// fleetConfig holds the flags of the fleet: replication over NATS
// JetStream (cluster/). Off unless --nats is given.
type fleetConfig struct {
	urls, nodeID, stream               string
	replicas                           int
	maxAge, snapshotEvery, connectWait time.Duration
	maxBytes, backlog                  int64
	creds, nkey, user, password, token string
	tlsCA, tlsCert, tlsKey, secretFile string
}

func defaultFleetConfig() fleetConfig {
	return fleetConfig{
		stream:        "GREYHOLD",
		replicas:      1,
		maxAge:        24 * time.Hour,
		maxBytes:      8 << 30,
		backlog:       1 << 30,
		snapshotEvery: time.Hour,
		connectWait:   5 * time.Second,
	}
}

func (c *fleetConfig) flags(fs *flag.FlagSet) {
	fs.StringVar(&c.urls, "nats", "", "share state with the fleet through these NATS servers (nats://host:4222, comma-separated; \"\": this node alone)")
	fs.StringVar(&c.nodeID, "node-id", "", "this node's name in the fleet: unique and stable; letters, digits, - and _ (default: the host name's first label)")
	fs.StringVar(&c.stream, "nats-stream", c.stream, "the JetStream stream the fleet shares (made if missing)")
	fs.IntVar(&c.replicas, "nats-replicas", c.replicas, "replicas of the stream and buckets this node makes: 1, or 3 for a NATS cluster")
	fs.Var(duration{&c.maxAge, time.Hour}, "nats-max-age", "maximum age of the stream this node makes (older history lives in the snapshots); a bare number is hours")
	fs.Var(size{&c.maxBytes}, "nats-max-bytes", "maximum size of the stream this node makes")
	fs.Var(size{&c.backlog}, "nats-backlog", "log kept for the fleet while NATS is away at most; past it a snapshot is shipped in place of the frames")
	fs.Var(duration{&c.snapshotEvery, time.Minute}, "nats-snapshot-interval", "upload this node's snapshot for new nodes at most this often (after a local snapshot); a bare number is minutes")
	fs.Var(duration{&c.connectWait, time.Second}, "nats-connect-wait", "at start, wait this long for NATS before serving alone (the node joins once NATS comes)")
	fs.StringVar(&c.creds, "nats-creds", "", "NATS credentials file (JWT and nkey seed)")
	fs.StringVar(&c.nkey, "nats-nkey", "", "NATS nkey seed file")
	fs.StringVar(&c.user, "nats-user", "", "NATS user (the password from --nats-password, best given as GREYHOLD_NATS_PASSWORD)")
	fs.StringVar(&c.password, "nats-password", "", "NATS password")
	fs.StringVar(&c.token, "nats-token", "", "NATS token (best given as GREYHOLD_NATS_TOKEN)")
	fs.StringVar(&c.tlsCA, "nats-tls-ca", "", "CA certificates to verify the NATS servers with")
	fs.StringVar(&c.tlsCert, "nats-tls-cert", "", "client certificate for NATS")
	fs.StringVar(&c.tlsKey, "nats-tls-key", "", "client certificate's key for NATS")
	fs.StringVar(&c.secretFile, "secret-file", "", "read the hash secret from this file, which is never made (a fleet shares one secret), in place of the data directory's")
}

func (c *fleetConfig) options(logger *slog.Logger, reg prometheus.Registerer) cluster.Options {
	return cluster.Options{
		URLs: c.urls, NodeID: c.nodeID, Stream: c.stream, Replicas: c.replicas,
		MaxAge: c.maxAge, MaxBytes: c.maxBytes, BacklogBytes: c.backlog,
		SnapshotUploadInterval: c.snapshotEvery, ConnectWait: c.connectWait,
		CredsFile: c.creds, NKeyFile: c.nkey, User: c.user, Password: c.password, Token: c.token,
		TLSCA: c.tlsCA, TLSCert: c.tlsCert, TLSKey: c.tlsKey,
		Logger: logger, Registerer: reg,
	}
}

// startFleet joins the node to its fleet, if --nats was given.
func startFleet(c *fleetConfig, st *store.Store, logger *slog.Logger, reg prometheus.Registerer) (*cluster.Node, error) {
	if c.urls == "" {
		return nil, nil
	}
	n, err := cluster.New(st, c.options(logger, reg))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.connectWait+time.Minute)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		return nil, fmt.Errorf("join the fleet: %w", err)
	}
	return n, nil
}
