package fuzz

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/greyhold/greyhold/engine"
	"github.com/greyhold/greyhold/server"
	"github.com/greyhold/greyhold/store"
	"github.com/greyhold/greyhold/wal"
)

// maxInput skips inputs far beyond any real request: the limits cut those
// off at their first bytes, and huge inputs only slow the fuzzer down.
const maxInput = 64 << 10

// testLimits are small, so the fuzzer reaches every limit quickly.
var testLimits = server.Limits{RequestBytes: 4096, Attributes: 64, LineBytes: 1024}

// harness is one store and server per fuzz process, reached over real
// loopback sockets, so each input runs the path Postfix's bytes take.
type harness struct {
	st     *store.Store
	srv    *server.Server
	policy string
	line   string
}

var (
	harnessOnce sync.Once
	shared      *harness
	sharedErr   error
)

func getHarness(tb testing.TB) *harness {
	harnessOnce.Do(func() {
		dir, err := os.MkdirTemp("", "greyhold-fuzz-")
		if err != nil {
			sharedErr = err
			return
		}
		o := store.DefaultOptions()
		o.Clock = engine.NewManualClock(200_000_000)
		o.Sync = wal.SyncNever
		o.SnapshotInterval = 0
		o.SnapshotLogBytes = 0
		o.NoFinalSnapshot = true
		st, err := store.Open(dir, o)
		if err != nil {
			sharedErr = err
			return
		}
		srv, err := server.New(server.Config{
			Store:        st,
			PolicyListen: "127.0.0.1:0",
			LineListen:   "127.0.0.1:0",
			Limits:       testLimits,
			ReadTimeout:  2 * time.Second,
			Logger:       slog.New(slog.DiscardHandler),
			Registry:     prometheus.NewRegistry(),
		})
		if err == nil {
			err = srv.Start()
		}
		if err != nil {
			sharedErr = err
			return
		}
		shared = &harness{st: st, srv: srv, policy: srv.Addr("policy").String(), line: srv.Addr("line").String()}
	})
	if sharedErr != nil {
		tb.Fatal(sharedErr)
	}
	return shared
}

// state is what bad input must leave alone.
func (h *harness) state() string {
	s := h.st.Stats()
	return fmt.Sprintf("triplets=%d clients=%d rules=%d records=%d", s.Engine.Triplets, s.Engine.Clients, s.Engine.Rules, s.WAL.Records)
}

// exchange sends data in two writes split at split, half-closes, and reads
// everything the server answers until it closes.
func (h *harness) exchange(tb testing.TB, addr string, data []byte, split int) []byte {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	var out []byte
	done := make(chan struct{})
	go func() {
		out, _ = io.ReadAll(c)
		close(done)
	}()
	c.Write(data[:split])
	c.Write(data[split:])
	c.(*net.TCPConn).CloseWrite()
	<-done
	return out
}

// policyRequest renders a request with Postfix 3.7's attributes.
func policyRequest(client, sender, rcpt string) string {
	return "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\nclient_address=" + client +
		"\nclient_name=mail.sender.example\nclient_port=43496\nreverse_client_name=mail.sender.example\nserver_address=127.0.0.1\n" +
		"server_port=25\nhelo_name=mail.sender.example\nsender=" + sender + "\nrecipient=" + rcpt +
		"\nrecipient_count=0\nqueue_id=\ninstance=5273.6b03e193.c6c42.0\nsize=0\netrn_domain=\nstress=\nsasl_method=\n" +
		"sasl_username=\nsasl_sender=\nccert_subject=\nccert_issuer=\nccert_fingerprint=\nccert_pubkey_fingerprint=\n" +
		"encryption_protocol=\nencryption_cipher=\nencryption_keysize=0\npolicy_context=\n\n"
}

// fixtureRequests are the requests a real Postfix 3.7.11 sent, if the
// shared test data sits beside the repository.
func fixtureRequests() []string {
	raw, err := os.ReadFile("../../shared/testdata/postfix-3.7.11-policy-requests.txt")
	if err != nil {
		return nil
	}
	reqs := strings.SplitAfter(string(raw), "\n\n")
	return reqs[:len(reqs)-1]
}

// TestMain stops the shared server and removes its data directory once the
// targets are done.
func TestMain(m *testing.M) {
	code := m.Run()
	if shared != nil {
		shared.srv.Shutdown(context.Background())
		shared.st.Close()
		os.RemoveAll(shared.st.Dir())
	}
	os.Exit(code)
}
