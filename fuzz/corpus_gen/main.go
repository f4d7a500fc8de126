// Command corpus_gen writes the fuzz targets' seed corpora, in Go's
// "go test fuzz v1" format, from real shapes: the requests a real Postfix
// 3.7.11 sent, BATV, SRS and VERP senders, IPv6 forms, WAL frames whole and
// torn, snapshots whole and damaged. Each file is named after its origin.
//
//	go run ./fuzz/corpus_gen   (from the repository root)
package main

import (
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/greyhold/greyhold/engine"
	"github.com/greyhold/greyhold/wal"
)

const out = "fuzz/testdata/fuzz"

// arg renders one value as the fuzz file format wants it.
func arg(v any) string {
	switch v := v.(type) {
	case []byte:
		return "[]byte(" + strconv.Quote(string(v)) + ")"
	case string:
		return "string(" + strconv.Quote(v) + ")"
	case uint16:
		return fmt.Sprintf("uint16(%d)", v)
	case bool:
		return fmt.Sprintf("bool(%v)", v)
	}
	panic(fmt.Sprintf("no encoding for %T", v))
}

func write(target, name string, args ...any) {
	dir := filepath.Join(out, target)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		log.Fatal(err)
	}
	var b strings.Builder
	b.WriteString("go test fuzz v1\n")
	for _, a := range args {
		b.WriteString(arg(a) + "\n")
	}
	if err := os.WriteFile(filepath.Join(dir, name), []byte(b.String()), 0o644); err != nil {
		log.Fatal(err)
	}
}

func main() {
	raw, err := os.ReadFile("../shared/testdata/postfix-3.7.11-policy-requests.txt")
	if err != nil {
		log.Fatalf("the shared test data must sit beside the repository: %v", err)
	}
	reqs := strings.SplitAfter(string(raw), "\n\n")
	reqs = reqs[:len(reqs)-1]
	for i, r := range reqs {
		name := fmt.Sprintf("postfix37_request%d", i+1)
		write("FuzzPolicyParser", name, []byte(r), uint16(len(r)/2))
		write("FuzzPolicyConn", name+"_truncated", []byte(r[:len(r)-40]), uint16(13))
	}
	write("FuzzPolicyParser", "postfix37_pipelined", []byte(strings.Join(reqs, "")), uint16(len(reqs[0])+5))
	write("FuzzPolicyParser", "crlf_telnet", []byte(strings.ReplaceAll(reqs[0], "\n", "\r\n")), uint16(40))
	write("FuzzPolicyConn", "nul_in_sender", []byte(strings.Replace(reqs[0], "sender=alice", "sender=al\x00ice", 1)), uint16(100))
	write("FuzzPolicyConn", "attribute_flood", []byte(strings.Repeat("x=1\n", 200)+"\n"), uint16(64))
	write("FuzzPolicyConn", "long_line", []byte("request=smtpd_access_policy\nsender="+strings.Repeat("a", 3000)+"\n\n"), uint16(500))

	senders := map[string]string{
		"batv_prvs":         "prvs=0123abcdef=carol@knddct.sender.example",
		"batv_reversed":     "prvs=carol=0123abcdef@example.com",
		"batv_msprvs1":      "msprvs1=19873kAAdsfX2=bounces-12345@mail.example.com",
		"batv_btv1":         "btv1==4f8c1a2b3c4==alice@example.com",
		"srs0":              "SRS0=HHH=TT=orig.example=alice@forwarder.example",
		"srs1":              "SRS1=HHH=first.example==HHH=TT=orig.example=alice@second.example",
		"srs0_plus":         "SRS0+xyzw=2B=Orig.Example=Alice@fwd.example",
		"verp_mandrill":     "bounce-md_10612303.5adf1f70.v1-0f66b3a1c2d84e59@mandrillapp.com",
		"verp_ses":          "0100018e5c8a7f1b-2b0e1c3d-4a5b-6c7d-8e9f-0a1b2c3d4e5f-000000@amazonses.com",
		"verp_sendgrid":     "bounces+2191482-7f3e-alice=example.com@sendgrid.net",
		"empty_bounce":      "",
		"smtputf8":          "Jürgen@Example.de",
		"srs_wrapping_batv": "SRS0=h1=t1=orig.example=prvs=0123abcdef=carol@fwd.example",
	}
	for name, s := range senders {
		write("FuzzNormalise", name, s, "User+Tag@Example.test", "192.0.2.10")
		write("FuzzLineProtocol", name, []byte("192.0.2.10 <"+s+"> <rcpt@example.test> mail.sender.example"))
	}
	for name, a := range map[string]string{
		"ipv6": "2001:db8::1", "ipv6_mapped": "::ffff:192.0.2.77", "ipv6_zone": "fe80::1%eth0",
		"ipv6_full": "2001:0db8:0000:0000:0000:ff00:0042:8329", "ipv4_leading_zero": "192.0.2.010",
	} {
		write("FuzzNormalise", name, "alice@example.com", "bob@example.net", a)
		write("FuzzLineProtocol", name, []byte(a+" <alice@example.com> <bob@example.net>"))
	}

	write("FuzzHTTPCheck", "check", []byte(`{"client_address":"192.0.2.10","client_name":"mx.example","sender":"a@b.example","recipient":"c@d.example"}`), false)
	write("FuzzHTTPCheck", "batch_mixed", []byte(`[{"client_address":"192.0.2.10","sender":"a@b.example","recipient":"c@d.example"},{"client_address":"x"},{"foo":1}]`), true)
	write("FuzzHTTPCheck", "batch_ipv6_bounce", []byte(`[{"client_address":"2001:db8::1","sender":"","recipient":"postmaster@example.test"}]`), true)
	write("FuzzHTTPCheck", "escapes", []byte(`{"client_address":"192.0.2.1","sender":"\u00e9\ud83d\ude00","recipient":"a\"b@c"}`), false)

	// WAL frames of real records: a new triplet, a pass with its client,
	// a rule; then torn and zero-filled variants.
	e, err := engine.New(engine.DefaultOptions(), []byte("0123456789abcdef"))
	if err != nil {
		log.Fatal(err)
	}
	req := &engine.Request{ClientAddr: "192.0.2.10", Sender: "alice@sender.example", Recipient: "rcpt@example.test"}
	var batch []byte
	n := 0
	for _, at := range []engine.Time{200_000_000, 200_000_300} {
		var ch engine.Changes
		if _, err := e.Check(at, req, &ch); err != nil {
			log.Fatal(err)
		}
		batch = append(batch, ch.Bytes()...)
		n += ch.Count()
	}
	rule, _, _ := e.SetRule(200_000_000, engine.Rule{Kind: engine.RuleClient, Value: "203.0.113.0/24"}, true)
	batch = append(batch, rule...)
	n++
	frame, err := wal.AppendFrame(nil, wal.Frame{Index: 1, Gen: 1, KeyID: 1, UnixMilli: 1_764_000_000_000, Payload: batch, Records: n})
	if err != nil {
		log.Fatal(err)
	}
	write("FuzzWALFrame", "wal_batch", frame)
	write("FuzzWALFrame", "wal_torn_batch", frame[:len(frame)-5])
	write("FuzzWALFrame", "wal_zero_filled", make([]byte, 32))
	entry := append([]byte(nil), byte(len(frame)))
	entry = append(entry, frame...)
	write("FuzzWALSegment", "wal_one_batch", entry)
	write("FuzzWALSegment", "wal_torn_batch", append(append([]byte(nil), entry...), entry[:len(entry)/2]...))
	write("FuzzWALSegment", "wal_zero_tail", append(append([]byte(nil), entry...), make([]byte, 128)...))

	if golden, err := os.ReadFile("snapshot/testdata/golden-v1.snap"); err == nil {
		write("FuzzSnapshot", "snapshot_golden", golden)
		write("FuzzSnapshot", "snapshot_truncated", golden[:len(golden)*2/3])
		flipped := append([]byte(nil), golden...)
		flipped[len(flipped)/2] ^= 0x10
		write("FuzzSnapshot", "snapshot_bit_flip", flipped)
	}

	if clients, err := os.ReadFile("whitelist/default_clients.txt"); err == nil {
		write("FuzzWhitelistFile", "greyhold_builtin", clients, []byte("postmaster@\nabuse@\n"))
	}
	write("FuzzWhitelistFile", "postgrey_style", []byte("# greylisting.org: Southwest Airlines (unique sender, no retry)\nsouthwest.com\n"+
		"/^ms-smtp.*\\.rr\\.com$/\n66.216.126.174\n195.235.39\n/^smtp[0-9]+-g[0-9]+\\.free\\.fr$/\n2001:db8::/32\n"), []byte("postmaster@\nabuse@example.com\nlists.example.org\n/^noc-.*@/\n"))
	fmt.Println("seed corpora written under", out)
}
