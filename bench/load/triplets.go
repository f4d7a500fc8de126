package main

import (
	"math/bits"
	"strconv"
	"strings"
)

// The pool's triplets are made up, deterministically from --seed, to look
// like what a big MX sees, within limits that keep the measurement honest:
//
//   - every triplet has its own recipient (index in the local part), so
//     the pool holds exactly --pool distinct triplets whatever the server's
//     normalisation does to senders;
//   - client networks are spread over 86,528 IPv4 /24s in private and
//     benchmark ranges, plus a /64 of 2001:db8::/32 for one client in ten
//     (the fixture's share), so at the default pool size a network carries
//     one or two triplets and auto-whitelisting, which counts one pass per
//     network an hour, never turns a "known" check into a client-awl one;
//   - client names are under .example and senders' domains follow their
//     client's, so no built-in whitelist (greyhold's, postgrey's) matches;
//   - sender local parts are letters only unless the sender is meant to be
//     a BATV or VERP address, since digit runs collapse in greyhold's (and
//     postgrey's) normalisation and would merge senders by accident.

// rng is splitmix64: one add and three multiply-xorshifts per draw, no
// allocation, good enough to pick pool entries.
type rng struct{ s uint64 }

func (r *rng) next() uint64 {
	r.s += 0x9e3779b97f4a7c15
	return mix64(r.s)
}

// below returns a number in [0, n) (Lemire's multiply-shift, no division).
func (r *rng) below(n int) int {
	hi, _ := bits.Mul64(r.next(), uint64(n))
	return int(hi)
}

func mix64(z uint64) uint64 {
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// hashOf gives independent streams per (seed, index, purpose).
func hashOf(seed uint64, i int, purpose uint64) uint64 {
	return mix64(seed ^ mix64(uint64(i)*0x9e3779b97f4a7c15+purpose))
}

// triplet is one made-up request's varying attributes.
type triplet struct {
	addr, name, helo, sender, rcpt string
	// tail picks the policy attributes after instance= (size, TLS,
	// client certificate): see policyTails.
	tail uint8
}

var (
	firstNames = strings.Fields("anna ben carla david elena felix greta hugo ines jonas karin lars mia nils olga paul quinn rosa sven tina ulf vera walter xenia yusuf zoe alice bob carol dan erin frank")
	lastNames  = strings.Fields("berg fischer garcia hansen ito jensen keller lopez meyer novak olsen petrov quist rossi schmidt tanaka ueda vogel weber young zhang brown clark evans hill king lee moore nash owen price reed")
	domWords   = strings.Fields("acme bluefin cobalt delta ember fjord granite harbor indigo juniper kestrel lumen meadow nimbus orchid pioneer quartz riverside summit tundra umber vertex willow xenon yonder zephyr alpine beacon cedar dune")
	domWords2  = strings.Fields("media shop mail news bank travel games labs cloud hosting market press store group net systems")
	hostParts  = strings.Fields("mail mx smtp out mta mail-out relay outbound o mo")
	rcptDoms   = strings.Fields("example.net example.org mail.example.com corp.example students.example.edu")
	// What clients without reverse DNS (often bots) say in HELO.
	botHelos = strings.Fields("localhost User ylmf-pc WIN-3KLQ8R7 DESKTOP-7QH2M1C [127.0.0.1] mail.example.com")
)

// v4Nets is the number of /24s clientNetV4 draws from.
const v4Nets = 65536 + 16384 + 4096 + 512

// clientNetV4 renders /24 number n (n < v4Nets): 10.0.0.0/8, then
// 100.64.0.0/10, 172.16.0.0/12 and 198.18.0.0/15. None is in anyone's
// whitelist and all parse on the fast path of an IPv4 parser.
func clientNetV4(n int) (a, b, c int) {
	switch {
	case n < 65536:
		return 10, n >> 8, n & 255
	case n < 65536+16384:
		n -= 65536
		return 100, 64 + n>>8, n & 255
	case n < 65536+16384+4096:
		n -= 65536 + 16384
		return 172, 16 + n>>8, n & 255
	default:
		n -= 65536 + 16384 + 4096
		return 198, 18 + n>>8, n & 255
	}
}

func choose(list []string, h uint64) string { return list[h%uint64(len(list))] }

// letters renders v in base 26 ("a".."z"), for names that survive sender
// normalisation.
func letters(v uint64, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + v%26)
		v /= 26
	}
	return string(b)
}

// genTriplet makes triplet i of the pool. clientName, when set, replaces
// every generated client name.
func genTriplet(seed uint64, i int, clientName string) triplet {
	var t triplet
	// The client: one in ten over IPv6, each in its own /64; IPv4 clients
	// by /24 in turn so networks fill evenly.
	var netID int
	h := hashOf(seed, i, 1)
	if h%10 == 0 {
		// Both groups non-zero, so the address is in the canonical form
		// Postfix prints (no "::" inside the network part).
		hi := 0x1000 + (uint64(i)/0xffff)%0xefff
		lo := 1 + uint64(i)%0xffff
		t.addr = "2001:db8:" + strconv.FormatUint(hi, 16) + ":" + strconv.FormatUint(lo, 16) + "::" + strconv.FormatUint(1+h>>48%0xfff, 16)
		netID = -1 - i
	} else {
		n := i % v4Nets
		a, b, c := clientNetV4(n)
		t.addr = strconv.Itoa(a) + "." + strconv.Itoa(b) + "." + strconv.Itoa(c) + "." + strconv.Itoa(1+int(h>>40%254))
		netID = n
	}
	// Names belong to the network (an MTA's pool shares a domain); 15% of
	// clients have no reverse DNS, as Postfix reports it.
	nh := hashOf(seed, netID, 2)
	domain := choose(domWords, nh>>8) + "-" + choose(domWords2, nh>>16) + ".example"
	switch {
	case clientName != "":
		t.name, t.helo = clientName, clientName
	case nh%100 < 15:
		t.name, t.helo = "unknown", choose(botHelos, nh>>24)
		domain = choose(domWords, nh>>32) + choose(domWords2, nh>>40) + ".example"
	default:
		t.name = choose(hostParts, nh>>24) + strconv.Itoa(1+int(nh>>32%40)) + "." + domain
		t.helo = t.name
	}
	sh := hashOf(seed, i, 3)
	local := choose(firstNames, sh>>8) + "." + choose(lastNames, sh>>16)
	switch k := sh % 100; {
	case k < 5: // bounces
		t.sender = ""
	case k < 15: // BATV, as big senders sign their envelope
		t.sender = "prvs=" + strconv.FormatUint(0x1000000000+sh>>24%0xefffffffff, 16)[:10] + "=" + local + "@" + domain
	case k < 23: // VERP: a per-message bounce address
		t.sender = "bounce-" + strconv.FormatUint(100000+sh>>24%900000000, 10) + "-" + letters(sh>>40, 4) + "@bounces." + domain
	case k < 40:
		t.sender = choose(strings.Fields("newsletter noreply info news orders billing"), sh>>32) + "@" + domain
	default:
		t.sender = local + "@" + domain
	}
	rh := hashOf(seed, i, 4)
	t.rcpt = choose(firstNames, rh>>8) + "." + choose(lastNames, rh>>16) + strconv.Itoa(i) + "@" + choose(rcptDoms, rh>>24)
	t.tail = tailFor(hashOf(seed, netID, 5))
	return t
}

// Policy attributes after instance=, which depend on the client (TLS, a
// client certificate) and the message (SIZE given in MAIL FROM), in the
// order Postfix 3.7 sends them.
var (
	sizes  = []string{"0", "0", "0", "4821", "18230", "73554", "1293310", "31544"}
	crypts = []string{
		"encryption_protocol=TLSv1.3\nencryption_cipher=TLS_AES_256_GCM_SHA384\nencryption_keysize=256\n",
		"encryption_protocol=TLSv1.3\nencryption_cipher=TLS_AES_128_GCM_SHA256\nencryption_keysize=128\n",
		"encryption_protocol=TLSv1.2\nencryption_cipher=ECDHE-RSA-AES256-GCM-SHA384\nencryption_keysize=256\n",
		"encryption_protocol=\nencryption_cipher=\nencryption_keysize=0\n",
	}
	noCert   = "ccert_subject=\nccert_issuer=\nccert_fingerprint=\nccert_pubkey_fingerprint=\n"
	someCert = "ccert_subject=smtp-client.partner.example\nccert_issuer=R11\n" +
		"ccert_fingerprint=5B:0E:7A:91:C4:3D:22:F8:6A:10:BE:37:91:4C:D5:E2:08:AF:63:1B:9C:70:E4:2D:85:36:F1:4A:C9:0B:7E:D2\n" +
		"ccert_pubkey_fingerprint=A1:6F:03:D8:42:9B:E5:17:C0:3A:8E:51:F6:2C:94:7D:B3:08:6E:1F:D9:45:2A:C7:70:E8:13:9D:4B:F0:26:8C\n"
	policyTails = buildTails()
)

func buildTails() []string {
	var out []string
	for _, size := range sizes {
		for ci, crypt := range crypts {
			for cert := range 2 {
				if cert == 1 && ci == len(crypts)-1 {
					continue // no client certificate without TLS
				}
				c := noCert
				if cert == 1 {
					c = someCert
				}
				out = append(out, "\nsize="+size+"\netrn_domain=\nstress=\nsasl_method=\nsasl_username=\nsasl_sender=\n"+
					c+crypt+"policy_context=\n\n")
			}
		}
	}
	return out
}

// tailFor picks a tail: 65% TLS 1.3 with AES-256, 15% with AES-128, 8% TLS
// 1.2, 12% plain; 2% of TLS clients show a certificate; the size is
// spread over sizes.
func tailFor(h uint64) uint8 {
	ci := 3
	switch k := h % 100; {
	case k < 65:
		ci = 0
	case k < 80:
		ci = 1
	case k < 88:
		ci = 2
	}
	cert := 0
	if ci < 3 && (h>>8)%100 < 2 {
		cert = 1
	}
	size := int(h >> 16 % uint64(len(sizes)))
	// Index in buildTails' order: per size, crypts 0..2 have two entries
	// (cert 0, 1), the last one.
	return uint8(size*(2*len(crypts)-1) + 2*ci + cert)
}
