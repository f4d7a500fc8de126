package engine_test

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	. "github.com/greyhold/greyhold/engine"
	"github.com/greyhold/greyhold/internal/testutil"
)

var updateNetworkGolden = flag.Bool("update-network-golden", false, "rewrite testdata/network-mode.golden from this engine")

// networkGolden holds, for each seed of TestNetworkModeUnchanged, a
// running SHA-256 of every decision and record the engine gave, taken
// every networkEvery steps. It was written by the engine as it was before
// client identities existed (greyhold 3557fb3), so in network mode the
// engine must still decide and log exactly as that one did.
const (
	networkGolden = "testdata/network-mode.golden"
	networkSeeds  = 16
	networkSteps  = 4000
	networkEvery  = 500
)

// clientNames are the names a network-mode engine must ignore for its
// keys: verified pool names, generic and residential ones, unknown, empty
// and odd spellings. Only the whitelist reads a name in network mode.
var clientNames = []string{
	"unknown", "", "mail-wr1-f54.google.com", "mail-ej1-f43.google.com", "MAIL-WR1-F54.Google.COM",
	"a8-30.smtp-out.amazonses.com", "a27-12.smtp-out.us-west-2.amazonses.com",
	"mail-am6eur05on2099.outbound.protection.outlook.com", "c-73-15-22-101.hsd1.ca.comcast.net",
	"p5dcb1234.dip0.t-ipconnect.de", "static.88.198.12.34.clients.your-server.de",
	"ec2-54-12-34-56.compute-1.amazonaws.com", "mx.example.org", "example.org", "localhost", "mail.example.",
}

// networkStep draws one request of the property test's workload: clients
// in three IPv4 /24s of two /16s and two IPv6 /64s, names from
// clientNames, a few senders and recipients, under the moving clock of
// testutil.Workload.
func networkStep(w *testutil.Workload) (Time, Request) {
	now, req := w.Step()
	r := w.R
	switch r.IntN(4) {
	case 0:
		req.ClientAddr = fmt.Sprintf("2001:db8:%d::%x", r.IntN(2), 1+r.IntN(3))
	case 1:
		req.ClientAddr = fmt.Sprintf("198.51.%d.%d", 100+r.IntN(2), 1+r.IntN(200))
	}
	req.ClientName = clientNames[r.IntN(len(clientNames))]
	if r.IntN(8) == 0 {
		req.Sender = ""
	}
	return now, req
}

func networkRun(t *testing.T, seed uint64, mut func(*Options)) []string {
	t.Helper()
	e := newEngine(t, func(o *Options) {
		o.Shards = 8
		if seed%2 == 1 {
			o.AutoWhitelistClients = 2
		}
		if seed%4 == 3 {
			o.MaxEntries = 40
		}
		mut(o)
	})
	w := testutil.NewWorkload(seed, testutil.T0)
	rr := rand.New(rand.NewPCG(seed, 7))
	h := sha256.New()
	var sums []string
	var buf [8]byte
	for i := range networkSteps {
		now, req := networkStep(w)
		if rr.IntN(200) == 0 {
			rule, present := w.RuleChange()
			if rr.IntN(2) == 0 {
				rule = Rule{Kind: RuleClientName, Value: "google.com"}
			}
			rec, _, err := e.SetRule(now, rule, present)
			if err != nil {
				t.Fatal(err)
			}
			h.Write(rec)
		}
		if rr.IntN(100) == 0 {
			e.Expire(now)
		}
		var ch Changes
		d, err := e.Check(now, &req, &ch)
		if err != nil {
			t.Fatal(err)
		}
		h.Write([]byte{byte(d.Verdict), byte(d.Reason)})
		binary.LittleEndian.PutUint32(buf[:4], d.Left)
		h.Write(buf[:4])
		binary.LittleEndian.PutUint32(buf[:4], d.Delayed)
		h.Write(buf[:4])
		binary.LittleEndian.PutUint64(buf[:], d.Key)
		h.Write(buf[:])
		h.Write(ch.Bytes())
		if (i+1)%networkEvery == 0 {
			sums = append(sums, hex.EncodeToString(h.Sum(nil))[:16])
		}
	}
	return sums
}

// TestNetworkModeUnchanged: in network mode every decision, key and record
// equals what the engine gave before client identities were added, over
// random histories whose requests carry every kind of client name.
func TestNetworkModeUnchanged(t *testing.T) {
	network := func(o *Options) { o.Keys.Identity = IdentityNetwork }
	if *updateNetworkGolden {
		var out strings.Builder
		for seed := range uint64(networkSeeds) {
			fmt.Fprintf(&out, "%d %s\n", seed, strings.Join(networkRun(t, seed, network), " "))
		}
		if err := os.WriteFile(networkGolden, []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	f, err := os.Open(networkGolden)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		var seed uint64
		if _, err := fmt.Sscan(fields[0], &seed); err != nil {
			t.Fatalf("%s: %v", networkGolden, err)
		}
		got := networkRun(t, seed, network)
		for i, want := range fields[1:] {
			if got[i] != want {
				t.Fatalf("seed %d: the decisions differ from the engine's before client identities between steps %d and %d",
					seed, i*networkEvery, (i+1)*networkEvery)
			}
		}
		n++
	}
	if n != networkSeeds {
		t.Fatalf("%s: %d seeds, want %d", networkGolden, n, networkSeeds)
	}
}
