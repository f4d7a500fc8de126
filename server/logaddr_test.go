package server

import (
	"bufio"
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

// With --log-addresses=hash no log line shows a request's addresses: the
// decision line carries keyed hashes of them and the triplet's key, and
// lines for errors and whitelist changes hash what they name (issue 9,
// defect 12).
func TestLogAddressesHash(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.LogAddresses = LogHashes })
	c := ts.dial("policy")
	r := bufio.NewReader(c)
	ts.ask(c, r, policy("192.0.2.10", "alice@sender.example", "bob@rcpt.example"))
	ts.ask(c, r, policy("bogus-address", "carol@sender.example", "dave@rcpt.example"))
	ts.http("POST", "/v1/whitelist", `{"kind":"sender","value":"erin@sender.example"}`, "")

	logs := ts.logs.String()
	for _, secret := range []string{"192.0.2.10", "alice", "bob", "mail.sender.example", "bogus-address", "dave", "erin"} {
		if strings.Contains(logs, secret) {
			t.Errorf("the log shows %q:\n%s", secret, logs)
		}
	}
	key := ts.st.Engine().TripletKey(netip.MustParseAddr("192.0.2.10"), "alice@sender.example", "bob@rcpt.example")
	for _, want := range []string{
		fmt.Sprintf("sender=h:%016x", ts.st.LogKey('s', "alice@sender.example")),
		fmt.Sprintf("client_address=h:%016x", ts.st.LogKey('a', "192.0.2.10")),
		fmt.Sprintf("triplet=%016x", key),
		fmt.Sprintf("client_address=h:%016x", ts.st.LogKey('a', "bogus-address")),
		fmt.Sprintf("value=h:%016x", ts.st.LogKey('s', "erin@sender.example")),
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("the log lacks %s:\n%s", want, logs)
		}
	}
}

// Plain, the default, logs addresses as postgrey does.
func TestLogAddressesPlain(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.dial("policy")
	ts.ask(c, bufio.NewReader(c), policy("192.0.2.10", "alice@sender.example", "bob@rcpt.example"))
	if logs := ts.logs.String(); !strings.Contains(logs, "sender=alice@sender.example") || strings.Contains(logs, "triplet=") {
		t.Errorf("plain decision line:\n%s", logs)
	}
}
