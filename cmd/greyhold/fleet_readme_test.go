package main

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/greyhold/greyhold/cluster"
)

// The README's "Three MX hosts on a NATS cluster", tested as written: its
// nats-server configuration runs three real nats-server processes (only
// the hosts, ports and paths changed to the test's), the secret is made
// with its command, and greyhold runs with its GREYHOLD_ settings, so a
// permission, a setting or a variable that does not work as the README
// gives it fails here.

// readmeSection returns the README's text under the heading, up to the
// next heading of that level or above.
func readmeSection(t *testing.T, heading string) string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i := strings.Index(s, "\n"+heading+"\n")
	if i < 0 {
		t.Fatalf("README.md has no %q", heading)
	}
	s = s[i+len(heading)+2:]
	level := strings.Repeat("#", strings.IndexByte(heading, ' '))
	for _, h := range []string{"\n" + level + " ", "\n" + level[:len(level)-1] + " "} {
		if j := strings.Index(s, h); j >= 0 && len(h) > 2 {
			s = s[:j]
		}
	}
	return s
}

// codeBlocks returns the fenced blocks of a README section, in order.
func codeBlocks(section string) []string {
	var out []string
	for {
		i := strings.Index(section, "```")
		if i < 0 {
			return out
		}
		rest := section[i+3:]
		nl := strings.IndexByte(rest, '\n')
		end := strings.Index(rest[nl+1:], "```")
		if nl < 0 || end < 0 {
			return out
		}
		out = append(out, rest[nl+1:nl+1+end])
		section = rest[nl+1+end+3:]
	}
}

// replaceAll replaces old with new in s and fails unless old was there:
// the README changed in a way this test must follow.
func replaceAll(t *testing.T, s, old, new string) string {
	t.Helper()
	if !strings.Contains(s, old) {
		t.Fatalf("the README's recipe no longer has %q:\n%s", old, s)
	}
	return strings.ReplaceAll(s, old, new)
}

// testPKI makes a CA, a certificate for the NATS servers (127.0.0.1) and a
// client certificate, as PEM files in dir.
func testPKI(t *testing.T, dir string) (ca, cert, key, clientCert, clientKey string) {
	t.Helper()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	write := func(name, kind string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	writeKey := func(name string, k *ecdsa.PrivateKey) string {
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return write(name, "EC PRIVATE KEY", der)
	}
	now := time.Now()
	caKey := newKey()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "greyhold test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	leaf := func(serial int64, cn string, usage x509.ExtKeyUsage, ips []net.IP) ([]byte, *ecdsa.PrivateKey) {
		k := newKey()
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IPAddresses: ips,
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der, k
	}
	srvDER, srvKey := leaf(2, "nats", x509.ExtKeyUsageServerAuth, []net.IP{net.IPv4(127, 0, 0, 1)})
	cliDER, cliKey := leaf(3, "greyhold", x509.ExtKeyUsageClientAuth, nil)
	return write("ca.pem", "CERTIFICATE", caDER),
		write("server.pem", "CERTIFICATE", srvDER), writeKey("server.key", srvKey),
		write("client.pem", "CERTIFICATE", cliDER), writeKey("client.key", cliKey)
}

// startNATSFrom runs a nats-server on the configuration text conf, with
// monitoring on mon for the test, without waiting for it: the servers of
// a cluster become healthy together.
func startNATSFrom(t *testing.T, name, conf, mon string) *natsProc {
	t.Helper()
	n := &natsProc{t: t, dir: t.TempDir(), log: &lockedBuffer{}, monitor: mon}
	n.conf = filepath.Join(n.dir, name+".conf")
	if err := os.WriteFile(n.conf, []byte(conf+"\nhttp: "+mon+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	n.launch()
	return n
}

// stop ends the server with SIGTERM and waits for it.
func (n *natsProc) stop() {
	n.t.Helper()
	n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
	case <-time.After(20 * time.Second):
		n.t.Fatal("nats-server still running 20 s after SIGTERM")
	}
}

// checkBatch asks triplets from..to-1 through POST /v1/check/batch, 1,000
// a request, at Unix time at, and fails unless every verdict is want.
func checkBatch(t *testing.T, d *daemon, from, to int, at int64, want string) {
	t.Helper()
	for lo := from; lo < to; lo += 1000 {
		var b strings.Builder
		b.WriteByte('[')
		for i := lo; i < min(lo+1000, to); i++ {
			if i > lo {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `{"client_address":"10.%d.%d.9","client_name":"mail%d.bulk.example","sender":"list@bulk.example","recipient":"user%d@example.test","time":%d}`,
				i/62500, i/250%250, i, i, at)
		}
		b.WriteByte(']')
		resp, err := http.Post("http://"+d.httpAd+"/v1/check/batch", "application/json", strings.NewReader(b.String()))
		if err != nil {
			t.Fatal(err)
		}
		var out []struct {
			Verdict string `json:"verdict"`
		}
		err = json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("POST /v1/check/batch: %d %v", resp.StatusCode, err)
		}
		for k, o := range out {
			if o.Verdict != want {
				t.Fatalf("batch check %d at %d: %s, want %s", lo+k, at, o.Verdict, want)
			}
		}
	}
}

// TestFleetREADMERecipe: three nats-servers from the README's
// configuration (a cluster, JetStream, TLS with client certificates, the
// account and the user with the permissions given), MX nodes with the
// README's settings and a secret made with its command. What one node
// defers passes on another after the delay; the stream is R3; snapshots
// are uploaded and replaced; a new node merges the fleet snapshot (its
// stream, made small here, holds too little to replay: the one change to
// the recipe); a NATS server stopped mid-run costs nothing; and no server
// logged a permissions violation, so every subject greyhold uses is one
// the README grants.
func TestFleetREADMERecipe(t *testing.T) {
	if testing.Short() {
		t.Skip("starts nats-server and greyhold processes")
	}
	var natsConf, secretCmd, env string
	for _, b := range codeBlocks(readmeSection(t, "### Three MX hosts on a NATS cluster")) {
		switch {
		case strings.Contains(b, "jetstream") && natsConf == "":
			natsConf = b
		case strings.Contains(b, "/dev/urandom"):
			secretCmd = b
		case strings.Contains(b, "GREYHOLD_NATS="):
			env = b
		}
	}
	if natsConf == "" || secretCmd == "" || env == "" {
		t.Fatal("the README's recipe lacks its nats-server configuration, its secret command or its settings")
	}
	dir := t.TempDir()
	ca, cert, key, clientCert, clientKey := testPKI(t, dir)
	const password = "greyhold-test-password"
	hash, err := bcrypt.GenerateFromPassword([]byte(password), 11)
	if err != nil {
		t.Fatal(err)
	}

	// The three servers: the README's file with the test's hosts, ports
	// and paths.
	type addrs struct{ client, route, mon string }
	var as [3]addrs
	for i := range as {
		as[i] = addrs{freePort(t), freePort(t), freePort(t)}
	}
	var servers []*natsProc
	var urls []string
	for i, a := range as {
		c := natsConf
		c = replaceAll(t, c, "server_name: nats-1", fmt.Sprintf("server_name: nats-%d", i+1))
		c = replaceAll(t, c, "listen: 0.0.0.0:4222", "listen: "+a.client)
		c = replaceAll(t, c, "listen: 0.0.0.0:6222", "listen: "+a.route)
		for j, o := range as {
			c = replaceAll(t, c, fmt.Sprintf("nats-route://nats-%d:6222", j+1), "nats-route://"+o.route)
		}
		c = replaceAll(t, c, "/var/lib/nats", filepath.Join(dir, fmt.Sprintf("nats-%d", i+1)))
		c = replaceAll(t, c, "/etc/nats/server.pem", cert)
		c = replaceAll(t, c, "/etc/nats/server.key", key)
		c = replaceAll(t, c, "/etc/nats/ca.pem", ca)
		c = replaceAll(t, c, `"$2a$11$...bcrypt..."`, `"`+string(hash)+`"`)
		servers = append(servers, startNATSFrom(t, fmt.Sprintf("nats-%d", i+1), c, a.mon))
		urls = append(urls, "tls://"+a.client)
	}
	for _, n := range servers {
		n.waitHealthy()
	}

	// The secret, made with the README's command.
	secret := filepath.Join(dir, "fleet-secret")
	cmd := replaceAll(t, strings.TrimSpace(secretCmd), "/etc/greyhold/fleet-secret", secret)
	if out, err := exec.Command("bash", "-ec", cmd).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", cmd, err, out)
	}
	if fi, err := os.Stat(secret); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the README's command made %v (%v), want a file of mode 0600", fi.Mode(), err)
	}

	// Each MX host with the README's settings, as its environment.
	node := func(id string, extra ...string) *daemon {
		t.Helper()
		d := &daemon{dir: t.TempDir(), args: append([]string{"--test-clock"}, extra...)}
		sc := bufio.NewScanner(strings.NewReader(env))
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			name, value, ok := strings.Cut(line, "=")
			if !ok || !strings.HasPrefix(name, "GREYHOLD_") {
				t.Fatalf("the README's settings have a line %q", line)
			}
			switch name {
			case "GREYHOLD_NATS":
				value = strings.Join(urls, ",")
			case "GREYHOLD_NODE_ID":
				value = id
			case "GREYHOLD_SECRET_FILE":
				value = replaceAll(t, value, "/etc/greyhold/fleet-secret", secret)
			case "GREYHOLD_NATS_PASSWORD":
				value = password
			case "GREYHOLD_NATS_TLS_CA":
				value = ca
			case "GREYHOLD_NATS_TLS_CERT":
				value = clientCert
			case "GREYHOLD_NATS_TLS_KEY":
				value = clientKey
			}
			d.env = append(d.env, name+"="+value)
		}
		d.start(t)
		return d
	}
	// The first node makes the stream, small here so that a later node
	// finds its early history gone, and uploads every snapshot.
	mx1 := node("mx1", "--nats-max-bytes", "256KiB", "--nats-snapshot-interval", "1ms")
	mx2 := node("mx2")
	askAll(t, mx1, 0, 100, testT0, deferAnswer)
	shippedTo(t, mx1, mx2)
	askAll(t, mx2, 0, 100, testT0+300, passAnswer)
	if st, ok := servers[0].stream("GREYHOLD"); !ok || st.Replicas != 3 {
		t.Fatalf("stream GREYHOLD: %+v (found: %v); the README's settings make 3 replicas", st, ok)
	}

	// 150,000 more, a snapshot big enough that its download is
	// flow-controlled; uploaded, and replaced by the next.
	const bulk = 150_000
	checkBatch(t, mx1, 0, bulk, testT0, "defer")
	shippedTo(t, mx1, mx2)
	mx1.snapshotNow(t)
	mx1.waitFleet(t, "a snapshot uploaded", func(s cluster.Stats) bool { return s.Uploads >= 1 })
	checkBatch(t, mx1, bulk, bulk+1000, testT0, "defer")
	mx1.snapshotNow(t)
	mx1.waitFleet(t, "the snapshot replaced", func(s cluster.Stats) bool { return s.Uploads >= 2 })
	askAll(t, mx2, 100, 110, testT0, deferAnswer)
	shippedTo(t, mx2, mx1)
	if st, _ := servers[0].stream("GREYHOLD"); st.FirstSeq <= 1 {
		t.Fatalf("stream %+v: its limit was meant to have dropped the early history", st)
	}

	// A new node merges the snapshot, then the stream after it.
	mx3 := node("mx3")
	mx3.waitFleet(t, "mx3 caught up", func(s cluster.Stats) bool { return s.CaughtUp })
	if s := mx3.fleetStats(t); s.Bootstraps != 1 {
		t.Fatalf("mx3: %+v, want one bootstrap", s)
	}
	checkBatch(t, mx3, 0, bulk+1000, testT0+300, "pass")
	askAll(t, mx3, 0, 110, testT0+300, passAnswer[:len("action=")])

	// One NATS server stopped: the nodes on it move to the others.
	servers[1].stop()
	askAll(t, mx2, 200, 300, testT0, deferAnswer)
	shippedTo(t, mx2, mx1, mx3)
	askAll(t, mx1, 200, 300, testT0+300, passAnswer)

	for i, n := range servers {
		if v := regexp.MustCompile(`(?i).*violation.*`).FindAllString(n.log.String(), 5); v != nil {
			t.Errorf("nats-%d refused greyhold a subject the README was meant to grant:\n%s", i+1, strings.Join(v, "\n"))
		}
	}
}
