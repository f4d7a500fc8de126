package cluster

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/greyhold/greyhold/engine"
)

// startNATSCluster runs n nats-servers routed into one cluster, JetStream
// on each, in this process.
func startNATSCluster(t *testing.T, n int) ([]*natsNode, string) {
	t.Helper()
	var routes, urls []string
	cports := make([]int, n)
	for i := range n {
		cports[i] = freePort(t)
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", cports[i]))
	}
	nodes := make([]*natsNode, n)
	for i := range n {
		o := &natsserver.Options{
			ServerName: fmt.Sprintf("nats-%d", i), Host: "127.0.0.1", Port: freePort(t),
			JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
			Cluster: natsserver.ClusterOpts{Name: "greyhold-test", Host: "127.0.0.1", Port: cports[i]},
			Routes:  natsserver.RoutesFromStr(strings.Join(routes, ",")),
		}
		nodes[i] = &natsNode{t: t, opts: o, url: fmt.Sprintf("nats://127.0.0.1:%d", o.Port)}
		urls = append(urls, nodes[i].url)
	}
	for _, nn := range nodes {
		nn.start()
		t.Cleanup(nn.stop)
	}
	// JetStream is usable once the cluster has elected its meta leader.
	nc, err := nats.Connect(strings.Join(urls, ","))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := js.AccountInfo(ctx)
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the NATS cluster never came up: %v", err)
		}
		time.Sleep(50 * time.Millisecond) // polling the cluster's election, not a delay under test
	}
	return nodes, strings.Join(urls, ",")
}

// TestR3StreamSurvivesAServer: three NATS servers, an R3 stream, two
// greyhold nodes; one NATS server is stopped while checks go on. Every
// change the first node logged reaches the second, and every retry there
// passes.
func TestR3StreamSurvivesAServer(t *testing.T) {
	servers, urls := startNATSCluster(t, 3)
	ctx := guard(t)
	r3 := func(o *Options) { o.Replicas = 3 }
	a := newNode(t, urls, "mx1", "", "", r3)
	b := newNode(t, urls, "mx2", "", a.dir, r3)
	const total = 600
	for i := range total {
		if i == total/3 {
			servers[1].stop()
		}
		a.expect(t0, triplet(i), engine.Defer, engine.ReasonNew)
	}
	a.hears(ctx, b)
	for i := range total {
		b.expect(t0+300, triplet(i), engine.Pass, engine.ReasonPassed)
	}
	info, err := a.n.str.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Replicas != 3 {
		t.Fatalf("stream made with %d replicas, want 3", info.Config.Replicas)
	}
}
