package fuzz

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/greyhold/greyhold/engine"
	"github.com/greyhold/greyhold/server"
	"github.com/greyhold/greyhold/snapshot"
	"github.com/greyhold/greyhold/wal"
	"github.com/greyhold/greyhold/whitelist"
)

// FuzzPolicyParser: the parser reads a request the same whether it comes
// whole or cut at any byte (limits hold for what has arrived, a request
// complete in a prefix is the same request in the whole), it only fails
// with ErrProtocol, and what it reads formats back to a request that reads
// the same.
func FuzzPolicyParser(f *testing.F) {
	for _, r := range fixtureRequests() {
		f.Add([]byte(r), uint16(len(r)/2))
	}
	f.Add([]byte(policyRequest("192.0.2.10", "prvs=0123abcdef=a@b.example", "c@d.example")), uint16(300))
	f.Fuzz(func(t *testing.T, data []byte, split uint16) {
		if len(data) > maxInput {
			t.Skip()
		}
		req, n, err := server.ParsePolicyRequest(data, testLimits)
		k := int(split) % (len(data) + 1)
		preq, pn, perr := server.ParsePolicyRequest(data[:k], testLimits)
		switch {
		case perr != nil && err == nil:
			t.Fatalf("the first %d bytes break a limit (%v) the whole does not", k, perr)
		case perr == nil && pn > 0 && (pn != n || preq != req):
			t.Fatalf("a request complete in the first %d bytes reads differently in the whole: %+v / %+v", k, preq, req)
		}
		if err != nil {
			if !errors.Is(err, server.ErrProtocol) {
				t.Fatalf("error %v does not wrap ErrProtocol", err)
			}
			return
		}
		if n == 0 {
			return
		}
		// Formatting back: a value ending in CR cannot round-trip, since a
		// trailing CR is taken as part of a CRLF line end.
		var b strings.Builder
		for _, a := range [][2]string{{"request", req.Request}, {"protocol_state", req.ProtocolState},
			{"client_address", req.ClientAddress}, {"client_name", req.ClientName}, {"recipient", req.Recipient},
			{"queue_id", req.QueueID}, {"instance", req.Instance}, {"helo_name", req.HELOName}, {"sasl_username", req.SASLUsername},
			{"policy_test_time", req.TestTime}} {
			if strings.HasSuffix(a[1], "\r") {
				return
			}
			b.WriteString(a[0] + "=" + a[1] + "\n")
		}
		if req.HasSender {
			if strings.HasSuffix(req.Sender, "\r") {
				return
			}
			b.WriteString("sender=" + req.Sender + "\n")
		}
		b.WriteString("\n")
		again, n2, err := server.ParsePolicyRequest([]byte(b.String()), testLimits)
		if err != nil || n2 != b.Len() {
			t.Fatalf("formatted request does not parse: %v (%d of %d bytes)\n%q", err, n2, b.Len(), b.String())
		}
		again.Attributes = req.Attributes
		if again != req {
			t.Fatalf("round trip: %+v\nbecame %+v", req, again)
		}
	})
}

// FuzzPolicyConn sends bytes to a real policy listener in two writes. When
// nothing before the first error is a complete request, the answer is at
// most one DUNNO and no state changes.
func FuzzPolicyConn(f *testing.F) {
	for _, r := range fixtureRequests() {
		f.Add([]byte(r[:len(r)-30]), uint16(7))
	}
	f.Add([]byte("\x00\x01\x02garbage\n\n"), uint16(3))
	f.Add([]byte(strings.Repeat("a=b\n", 100)+"\n"), uint16(50))
	f.Add([]byte("sender="+strings.Repeat("x", 2000)+"\n\n"), uint16(1000))
	f.Fuzz(func(t *testing.T, data []byte, split uint16) {
		if len(data) > maxInput {
			t.Skip()
		}
		_, n, err := server.ParsePolicyRequest(data, testLimits)
		if n > 0 && err == nil {
			return // a good request first: it may change state, rightly
		}
		h := getHarness(t)
		before := h.state()
		out := h.exchange(t, h.policy, data, int(split)%(len(data)+1))
		if after := h.state(); after != before {
			t.Fatalf("rejected input changed state: %s -> %s", before, after)
		}
		if len(out) > 0 && string(out) != "action=DUNNO\n\n" {
			t.Fatalf("answer to rejected input: %q", out)
		}
	})
}

// FuzzLineProtocol: a line that parses formats back to a line that parses
// the same; over a real line listener, lines that are no request change no
// state and each gets exactly one answer line.
func FuzzLineProtocol(f *testing.F) {
	f.Add([]byte("192.0.2.10 <alice@sender.example> <rcpt@example.test> mail.sender.example"))
	f.Add([]byte("2001:db8::1 <> postmaster@example.test"))
	f.Add([]byte("192.0.2.10 SRS0=HHH=TT=orig.example=alice@fwd.example bob@example.test"))
	f.Add([]byte("bogus"))
	f.Add([]byte("1.2.3.4 a b c d e f"))
	f.Fuzz(func(t *testing.T, line []byte) {
		if len(line) > 4096 || bytes.ContainsAny(line, "\r\n") {
			t.Skip()
		}
		req, err := server.ParseLineRequest(line)
		if err == nil {
			formatted := fmt.Sprintf("%s <%s> <%s> %s", req.ClientAddr, req.Sender, req.Recipient, req.ClientName)
			again, err := server.ParseLineRequest([]byte(formatted))
			if err != nil || again != req {
				t.Fatalf("%q parsed to %+v; formatted %q parses to %+v (%v)", line, req, formatted, again, err)
			}
			if _, perr := netip.ParseAddr(req.ClientAddr); perr == nil && req.Recipient != "" {
				return // a real request: it may change state
			}
		}
		h := getHarness(t)
		before := h.state()
		out := h.exchange(t, h.line, append(line, '\n'), 0)
		if after := h.state(); after != before {
			t.Fatalf("line %q changed state: %s -> %s", line, before, after)
		}
		if len(bytes.TrimSpace(line)) > 0 && (bytes.Count(out, []byte("\n")) != 1 || !bytes.HasPrefix(out, []byte("ERROR "))) {
			t.Fatalf("line %q answered %q, want one ERROR line", line, out)
		}
	})
}

// FuzzHTTPCheck runs the API handler on fuzzed bodies for /v1/check and
// /v1/check/batch: every answer is valid JSON; a 400 changes no state; a
// batch that is a JSON array gets an array of the same length back.
func FuzzHTTPCheck(f *testing.F) {
	f.Add([]byte(`{"client_address":"192.0.2.10","client_name":"mx.example","sender":"a@b.example","recipient":"c@d.example"}`), false)
	f.Add([]byte(`[{"client_address":"192.0.2.10","sender":"a@b.example","recipient":"c@d.example"},{"client_address":"x"}]`), true)
	f.Add([]byte(`{"client_address":"192.0.2.10","recipient":"c@d.example","time":1}`), false)
	f.Add([]byte(`[]`), true)
	f.Add([]byte(`{"sender":"\u0000\ud800"}`), false)
	f.Fuzz(func(t *testing.T, body []byte, batch bool) {
		if len(body) > maxInput {
			t.Skip()
		}
		h := getHarness(t)
		handler := h.srv.HTTPHandler()
		var req fasthttp.Request
		req.Header.SetMethod("POST")
		path := "/v1/check"
		if batch {
			path = "/v1/check/batch"
		}
		req.SetRequestURI(path)
		req.SetBody(body)
		var ctx fasthttp.RequestCtx
		ctx.Init(&req, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9}, nil)
		before := h.state()
		handler(&ctx)
		code := ctx.Response.StatusCode()
		out := ctx.Response.Body()
		if !json.Valid(out) {
			t.Fatalf("%s answered invalid JSON: %q", path, out)
		}
		if code != 200 && code != 400 {
			t.Fatalf("%s answered %d: %s", path, code, out)
		}
		if code == 400 {
			if after := h.state(); after != before {
				t.Fatalf("400 for %q but state changed: %s -> %s", body, before, after)
			}
		}
		var in []json.RawMessage
		if batch && json.Unmarshal(body, &in) == nil {
			var answers []json.RawMessage
			if err := json.Unmarshal(out, &answers); err != nil || len(answers) != len(in) {
				t.Fatalf("batch of %d answered %q", len(in), out)
			}
		}
	})
}

// FuzzWALFrame: a frame that decodes re-encodes to the same bytes (a
// version 1 frame, which is read but never written, to a version 2
// frame of the same records), decoding allocates nothing beyond an error
// value, and its records apply to an engine or fail cleanly, counted the
// same way by the summary.
func FuzzWALFrame(f *testing.F) {
	e, _ := engine.New(engine.DefaultOptions(), []byte("0123456789abcdef"))
	var ch engine.Changes
	e.Check(200_000_000, &engine.Request{ClientAddr: "192.0.2.10", Sender: "a@b.example", Recipient: "c@d.example"}, &ch)
	frame, _ := wal.AppendFrame(nil, wal.Frame{Index: 1, Gen: 7, KeyID: 9, UnixMilli: 1_764_000_000_000, Payload: ch.Bytes(), Records: ch.Count()})
	f.Add(frame)
	f.Add(frame[:len(frame)-3]) // torn
	f.Add(make([]byte, 16))     // zero-filled
	rule, _, _ := e.SetRule(200_000_000, engine.Rule{Kind: engine.RuleSender, Value: "x@y.example"}, true)
	frame2, _ := wal.AppendFrame(nil, wal.Frame{Index: 2, Gen: 7, Payload: rule, Records: 1})
	f.Add(frame2)
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > maxInput {
			t.Skip()
		}
		var fr wal.Frame
		var err error
		// A frame that decodes is a view of the input: no allocation. One
		// that does not costs its error value and nothing that grows with
		// the input.
		allocs := testing.AllocsPerRun(1, func() { fr, err = wal.DecodeFrame(data) })
		errAllocs := 8.0
		if raceEnabled {
			errAllocs = 24
		}
		if (err == nil && allocs > 0) || allocs > errAllocs {
			t.Fatalf("DecodeFrame of %d bytes allocated %v times (err %v)", len(data), allocs, err)
		}
		if err != nil {
			if !errors.Is(err, wal.ErrCorrupt) {
				t.Fatalf("DecodeFrame error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		again, err := wal.AppendFrame(nil, fr)
		if err != nil {
			t.Fatalf("frame %x does not re-encode: %v", data, err)
		}
		if fr.Version == 2 && !bytes.Equal(again, data) {
			t.Fatalf("frame %x re-encodes to %x", data, again)
		}
		if back, err := wal.DecodeFrame(again); err != nil || !bytes.Equal(back.Payload, fr.Payload) || back.Records != fr.Records {
			t.Fatalf("re-encoded frame decodes to %+v, %v", back, err)
		}
		payload := fr.Payload
		fresh, _ := engine.New(engine.DefaultOptions(), []byte("0123456789abcdef"))
		applied, aerr := fresh.Apply(payload)
		tr, cl, ru, un, serr := engine.RecordSummary(payload)
		if (aerr == nil) != (serr == nil) && serr != nil {
			t.Fatalf("summary failed (%v) where apply did not", serr)
		}
		if aerr == nil && tr+cl+ru+un != applied {
			t.Fatalf("applied %d records, summary counts %d", applied, tr+cl+ru+un)
		}
		if aerr != nil && !errors.Is(aerr, engine.ErrBadRecord) {
			t.Fatalf("apply error %v does not wrap ErrBadRecord", aerr)
		}
	})
}

// walEntry is frame i of the seeds below as a segment entry.
func walEntry(i uint64, payload string) []byte {
	frame, _ := wal.AppendFrame(nil, wal.Frame{Index: i, Gen: 1, Payload: []byte(payload), Records: 1})
	return append(binary.AppendUvarint(nil, uint64(len(frame))), frame...)
}

// FuzzWALSegment hands Open a segment file of arbitrary bytes: it must not
// fail or panic, must leave a log whose frames read back in strictly
// rising index order, each verified, with what Inspect predicted, and that
// log must take appends numbered after them.
func FuzzWALSegment(f *testing.F) {
	one, two, three := walEntry(1, "seed"), walEntry(2, "more"), walEntry(3, "last")
	whole := slices.Concat(one, two, three)
	f.Add([]byte{})
	f.Add(one)
	f.Add(slices.Concat(one, two[:7]))                 // torn tail
	f.Add(slices.Concat(one, make([]byte, 64)))        // zero-filled tail
	f.Add(slices.Concat(one, []byte{0xff, 0x13}, two)) // damage between frames
	flipped := bytes.Clone(whole)
	flipped[len(one)+10] ^= 0x40 // inside frame 2
	f.Add(flipped)
	f.Add(slices.Concat(one, three)) // a missing index
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > maxInput {
			t.Skip()
		}
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%020d", 1)), data, 0o640); err != nil {
			t.Fatal(err)
		}
		var predicted []uint64
		if _, err := wal.Inspect(dir, 0, func(fr wal.Frame) error { predicted = append(predicted, fr.Index); return nil }); err != nil {
			t.Fatalf("Inspect: %v", err)
		}
		l, err := wal.Open(dir, wal.Options{Sync: wal.SyncNever})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		defer l.Close()
		var got []uint64
		if err := l.Replay(l.FirstIndex(), func(fr wal.Frame) error {
			if len(got) > 0 && fr.Index <= got[len(got)-1] {
				return fmt.Errorf("frame %d after frame %d", fr.Index, got[len(got)-1])
			}
			got = append(got, fr.Index)
			return nil
		}); err != nil {
			t.Fatalf("Replay after repair: %v", err)
		}
		if !slices.Equal(got, predicted) {
			t.Fatalf("replayed %v, Inspect saw %v", got, predicted)
		}
		before := l.LastIndex()
		if len(got) > 0 && before != got[len(got)-1] {
			t.Fatalf("LastIndex %d, last frame %d", before, got[len(got)-1])
		}
		if err := l.Append([]byte("after"), 1); err != nil {
			t.Fatal(err)
		}
		if l.LastIndex() != before+1 {
			t.Fatalf("LastIndex %d after appending to %d", l.LastIndex(), before)
		}
	})
}

// FuzzSnapshot reads arbitrary bytes as a snapshot file: it fails with
// ErrCorrupt or ErrVersion, never panics, calls the visitor only for a file
// that verifies, and allocates within a bound of the file's size.
func FuzzSnapshot(f *testing.F) {
	if golden, err := os.ReadFile("../snapshot/testdata/golden-v1.snap"); err == nil {
		f.Add(golden)
		f.Add(golden[:len(golden)/2])
		flipped := bytes.Clone(golden)
		flipped[len(flipped)/3] ^= 1
		f.Add(flipped)
	}
	f.Add([]byte("\x89GHSNAP\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > maxInput {
			t.Skip()
		}
		path := filepath.Join(t.TempDir(), snapshot.FileName(1))
		if err := os.WriteFile(path, data, 0o640); err != nil {
			t.Fatal(err)
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		rows := 0
		_, err := snapshot.Read(path, snapshot.Visitor{
			Rows: func(_ uint8, keys []uint64, _ [][]uint32) error { rows += len(keys); return nil },
			Blob: func(uint8, []byte) error { return nil },
		})
		runtime.ReadMemStats(&after)
		if err != nil && !errors.Is(err, snapshot.ErrCorrupt) && !errors.Is(err, snapshot.ErrVersion) {
			t.Fatalf("error %v is neither ErrCorrupt nor ErrVersion", err)
		}
		// The format bounds expansion at 33 times the file; the decoder
		// has a few MiB of its own.
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > uint64(40*len(data))+16<<20 {
			t.Fatalf("reading %d bytes allocated %d", len(data), alloc)
		}
	})
}

// FuzzWhitelistFile: any file parses without panic, every line is either
// an entry or a skipped note, and a plain domain entry matches itself and
// its subdomains.
func FuzzWhitelistFile(f *testing.F) {
	f.Add([]byte("# postgrey-style\nexample.com\n/^mail\\d+\\.example\\.net$/\n192.0.2.7\n198.51.100\n203.0.113.0/25\n2001:db8::/32\n"), []byte("postmaster@\nabuse@example.com\nexample.org\n/^noc-/\n"))
	f.Fuzz(func(t *testing.T, clients, recipients []byte) {
		if len(clients)+len(recipients) > maxInput {
			t.Skip()
		}
		s := whitelist.Parse(bytes.NewReader(clients), bytes.NewReader(recipients))
		for i, file := range s.Files {
			var src []byte
			if i == 0 {
				src = clients
			} else {
				src = recipients
			}
			lines := 0
			for _, l := range strings.Split(string(src), "\n") {
				if t := strings.TrimSpace(l); t != "" && !strings.HasPrefix(t, "#") {
					lines++
				}
			}
			if file.Entries+len(file.Skipped) > lines {
				t.Fatalf("%s: %d entries and %d skipped from %d lines", file.Kind, file.Entries, len(file.Skipped), lines)
			}
		}
		addr := netip.MustParseAddr("192.0.2.1")
		for _, l := range strings.Split(string(clients), "\n") {
			d := strings.ToLower(strings.TrimSpace(l))
			if d == "" || strings.ContainsAny(d, "#/:@ \t\r.") && !isPlainDomain(d) {
				continue
			}
			if !isPlainDomain(d) {
				continue
			}
			if !s.MatchClient(addr, d) || !s.MatchClient(addr, "mx."+d) {
				t.Fatalf("domain entry %q does not match itself and its subdomains", d)
			}
		}
		s.MatchRecipient(bytes.ToLower(recipients))
	})
}

func isPlainDomain(d string) bool {
	if d == "" || strings.Trim(d, ".") != d || strings.Contains(d, "..") {
		return false
	}
	letter := false
	for _, c := range d {
		switch {
		case c >= 'a' && c <= 'z', c == '-':
			letter = true
		case c >= '0' && c <= '9', c == '.':
		default:
			return false
		}
	}
	return letter
}

// FuzzNormalise: normalising twice equals once, for senders (both modes)
// and recipients (both modes); a request's key equals that of its
// normalised form; a client network contains the client.
func FuzzNormalise(f *testing.F) {
	for _, s := range []string{"prvs=0123abcdef=carol@knddct.sender.example", "SRS0=HHH=TT=orig.example=alice@fwd.example",
		"SRS1=HHH=first.example==HHH=TT=orig.example=alice@second.example", "bounce-md_10612303.5adf1f70.v1-0f66@mandrillapp.com",
		"0100018e5c8a7f1b-2b0e1c3d-4a5b-6c7d-8e9f-0a1b2c3d4e5f-000000@amazonses.com", "user+ext@Example.COM", "btv1==4f8c1a2b3c4==a@b", ""} {
		f.Add(s, "User+Tag@Example.test", "192.0.2.10")
	}
	f.Add("a@b", "c@d", "::ffff:192.0.2.1")
	f.Add("a@b", "c@d", "2001:db8::1%eth0")
	f.Add("a@b", "c@d", "fe80::1")
	e, _ := engine.New(engine.DefaultOptions(), []byte("0123456789abcdef"))
	f.Fuzz(func(t *testing.T, sender, rcpt, client string) {
		for _, k := range []engine.KeyOptions{engine.DefaultKeyOptions(), {IPv4Prefix: 32, IPv6Prefix: 128, NoSenderNormalisation: true, StripRecipientExtension: true}} {
			s1 := engine.NormaliseSender(sender, k)
			if s2 := engine.NormaliseSender(s1, k); s2 != s1 {
				t.Fatalf("sender %q -> %q -> %q", sender, s1, s2)
			}
			r1 := engine.NormaliseRecipient(rcpt, k)
			if r2 := engine.NormaliseRecipient(r1, k); r2 != r1 {
				t.Fatalf("recipient %q -> %q -> %q", rcpt, r1, r2)
			}
			p, err := engine.ClientNetwork(client, k)
			if err != nil {
				continue
			}
			a := netip.MustParseAddr(client).Unmap().WithZone("")
			if !p.Contains(a) {
				t.Fatalf("network %s of %q does not contain it", p, client)
			}
			if q, err := engine.ClientNetwork(p.Addr().String(), k); err != nil || q != p {
				t.Fatalf("network of %s is %s (%v), not itself", p.Addr(), q, err)
			}
		}
		a, err := netip.ParseAddr(client)
		if err != nil {
			return
		}
		k := engine.DefaultKeyOptions()
		if e.TripletKey(a, sender, rcpt) != e.TripletKey(a, engine.NormaliseSender(sender, k), engine.NormaliseRecipient(rcpt, k)) {
			t.Fatalf("key of (%q, %q) differs from that of its normalised form", sender, rcpt)
		}
	})
}
