package engine

import (
	"math/rand/v2"
	"net/netip"
	"testing"
)

func TestNormaliseSender(t *testing.T) {
	k := DefaultKeyOptions()
	f := func(in, want string) {
		t.Helper()
		if got := NormaliseSender(in, k); got != want {
			t.Errorf("NormaliseSender(%q) = %q, want %q", in, got, want)
		}
		// Normalising twice must equal normalising once, or a sender seen
		// through two paths would make two triplets.
		if again := NormaliseSender(want, k); again != want {
			t.Errorf("NormaliseSender(%q) = %q: not idempotent", want, again)
		}
	}

	// Plain addresses only lose their case.
	f("Alice@Example.COM", "alice@example.com")
	f("alice@knddct.sender.example", "alice@knddct.sender.example")
	f("user2@example.com", "user2@example.com")
	f("newsletter@example.com", "newsletter@example.com")
	// Bounces: the empty sender is a sender of its own.
	f("", "")
	// A sender without a domain (local submissions) keeps its one part.
	f("MAILER-DAEMON", "mailer-daemon")

	// BATV, the draft's form and the test data's: prvs=TAG=user.
	f("prvs=0123abcdef=carol@knddct.sender.example", "carol@knddct.sender.example")
	f("PRVS=4263F0AD12=Bob@Example.com", "bob@example.com")
	// The reversed form some MTAs send: prvs=user=TAG.
	f("prvs=carol=0123abcdef@example.com", "carol@example.com")
	// Microsoft's and Barracuda's variants.
	f("msprvs1=19873kAAdsfX2=bounces-12345@mail.example.com", "bounces-#@mail.example.com")
	f("btv1==4f8c1a2b3c4==alice@example.com", "alice@example.com")
	// Not BATV: no tag after prvs=.
	f("prvs=@example.com", "prvs=@example.com")

	// SRS from forwarders, all separators libsrs2 allows, and SRS1 chains.
	f("SRS0=HHH=TT=orig.example=alice@forwarder.example", "alice@orig.example")
	f("SRS0+xyzw=2B=Orig.Example=Alice@fwd.example", "alice@orig.example")
	f("SRS0-abcd=ZZ=orig.example=a=b@fwd.example", "a=b@orig.example")
	f("SRS1=HHH=first.example==HHH=TT=orig.example=alice@second.example", "alice@orig.example")
	f("SRS1=HHH=first.example=+HHH=TT=orig.example=alice@second.example", "alice@orig.example")
	// What follows a +extension does not keep a wrapping from being
	// unwrapped (normalising again must not change the result).
	f("SRS0=0=0=0=0+@@", "#@0")
	// SRS wrapping BATV: unwrapped until nothing matches.
	f("SRS0=h1=t1=orig.example=prvs=0123abcdef=carol@fwd.example", "carol@orig.example")
	// Broken SRS stays as it came (its digits still collapse).
	f("SRS0=HHH=TT=orig.example@fwd.example", "srs0=hhh=tt=orig.example@fwd.example")
	f("srs0=@fwd.example", "srs0=@fwd.example")
	// An '@' inside the SRS fields is no SRS (found by FuzzNormalise).
	f("SRS0+0=0=0@=0@", "srs0@")

	// +extensions are dropped.
	f("alice+lists@example.com", "alice@example.com")
	f("bounce+12345+x@example.com", "bounce@example.com")

	// VERP and ID tokens: digit runs and long mixed tokens collapse.
	f("bounce-12345-678@lists.example.org", "bounce-#-#@lists.example.org")
	f("bounce-md_10612303.5adf1f70.v1-0f66b3a1c2d84e59@mandrillapp.com", "bounce-md_#.#.v1-#@mandrillapp.com")
	f("0100018e5c8a7f1b-2b0e1c3d-4a5b-6c7d-8e9f-0a1b2c3d4e5f-000000@amazonses.com", "#-#-#@amazonses.com")
	f("bounce-0a1b2c3d-4a5b-6c7d-8e9f-0a1b2c3d4e5f@lists.example", "bounce-#@lists.example")
	// A UUID of letters only, and local parts with no digit, which are
	// copied as they are.
	f("abcdefab-abcd-abcd-abcd-abcdefabcdef@example.com", "#@example.com")
	f("john.smith@example.com", "john.smith@example.com")
	f("abcdefab-abcd-abcd-abcd-abcdefabcde@example.com", "abcdefab-abcd-abcd-abcd-abcdefabcde@example.com")
	// Not a UUID: one group too short.
	f("x-0a1b2c3d-4a5b-6c7d-8e9f-0a1b2c3d4e5@example.com", "x-#-4a5b-6c7d-8e9f-#@example.com")
	f("bounces+2191482-7f3e-alice=example.com@sendgrid.net", "bounces@sendgrid.net")
	f("msg-1700000000.4321-abcdefgh@example.com", "msg-#.#-abcdefgh@example.com")
	// Digits inside a short word are part of a name, not an ID.
	f("info24@example.com", "info24@example.com")
	// Eight or more with a digit is an ID, as the rule says, names or not.
	f("abcdefg1@example.com", "#@example.com")
	f("info2024@example.com", "#@example.com")
	// Non-ASCII local parts (SMTPUTF8) keep their bytes.
	f("Jürgen@Example.de", "jürgen@example.de")
}

func TestNormaliseSenderRaw(t *testing.T) {
	k := DefaultKeyOptions()
	k.NoSenderNormalisation = true
	for in, want := range map[string]string{
		"prvs=0123abcdef=Carol@Example.com": "prvs=0123abcdef=carol@example.com",
		"bounce-123@example.com":            "bounce-123@example.com",
		"":                                  "",
	} {
		if got := NormaliseSender(in, k); got != want {
			t.Errorf("raw NormaliseSender(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestNormaliseRecipient(t *testing.T) {
	f := func(strip bool, in, want string) {
		t.Helper()
		k := DefaultKeyOptions()
		k.StripRecipientExtension = strip
		if got := NormaliseRecipient(in, k); got != want {
			t.Errorf("NormaliseRecipient(%q, strip=%v) = %q, want %q", in, strip, got, want)
		}
	}
	f(false, "Rcpt1@Example.TEST", "rcpt1@example.test")
	f(false, "user+tag@example.test", "user+tag@example.test")
	f(true, "User+Tag@Example.test", "user@example.test")
	f(true, "user+a+b@example.test", "user@example.test")
	f(true, "user@example.test", "user@example.test")
	f(true, "postmaster+x", "postmaster")
	// Recipients are not VERP-collapsed: digits in a mailbox name matter.
	f(true, "user123@example.test", "user123@example.test")
}

func TestClientNetwork(t *testing.T) {
	f := func(v4, v6 int, addr, want string) {
		t.Helper()
		k := KeyOptions{IPv4Prefix: v4, IPv6Prefix: v6}
		got, err := ClientNetwork(addr, k)
		if err != nil {
			t.Fatalf("ClientNetwork(%q): %v", addr, err)
		}
		if got != netip.MustParsePrefix(want) {
			t.Errorf("ClientNetwork(%q, /%d, /%d) = %s, want %s", addr, v4, v6, got, want)
		}
	}
	// Defaults: /24 and /64, as postgrey.
	f(24, 64, "192.0.2.10", "192.0.2.0/24")
	f(24, 64, "192.0.2.250", "192.0.2.0/24")
	f(24, 64, "2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64")
	// IPv4-mapped IPv6 counts as IPv4.
	f(24, 64, "::ffff:192.0.2.77", "192.0.2.0/24")
	// A zone is not part of the network.
	f(24, 64, "fe80::1%eth0", "fe80::/64")
	// /32 and /128 mean the exact address.
	f(32, 128, "192.0.2.10", "192.0.2.10/32")
	f(32, 128, "2001:db8::1", "2001:db8::1/128")
	// Any length is configurable.
	f(16, 48, "198.51.100.9", "198.51.0.0/16")
	f(16, 48, "2001:db8:aaaa:bbbb::1", "2001:db8:aaaa::/48")
	f(23, 56, "192.0.3.1", "192.0.2.0/23")

	for _, bad := range []string{"", "unknown", "192.0.2", "[2001:db8::1]", "192.0.2.1/24"} {
		if _, err := ClientNetwork(bad, DefaultKeyOptions()); err == nil {
			t.Errorf("ClientNetwork(%q): no error", bad)
		}
	}
}

func TestKeyOptionsString(t *testing.T) {
	for _, k := range []KeyOptions{
		DefaultKeyOptions(),
		{IPv4Prefix: 32, IPv6Prefix: 128, NoSenderNormalisation: true, StripRecipientExtension: true, Identity: IdentityNetwork},
		{IPv4Prefix: 24, IPv6Prefix: 64, Identity: IdentityName},
	} {
		s := k.String()
		got, err := ParseKeyOptions(s)
		if err != nil || got != k {
			t.Errorf("ParseKeyOptions(%q) = %+v, %v; want %+v", s, got, err, k)
		}
	}
	// What a data directory written before client identities recorded.
	old, err := ParseKeyOptions("keys=1 ipv4=/24 ipv6=/64 sender=normalised recipient-ext=kept")
	if err != nil || old != DefaultKeyOptions() {
		t.Errorf("options without identity = %+v, %v; want network mode %+v", old, err, DefaultKeyOptions())
	}
	name := KeyOptions{IPv4Prefix: 24, IPv6Prefix: 64, Identity: IdentityName}
	if want := "keys=1 ipv4=/24 ipv6=/64 sender=normalised recipient-ext=kept identity=name psl=" + SuffixList(); name.String() != want {
		t.Errorf("name mode: %q, want %q", name.String(), want)
	}
	// Another list is read back, kept apart and told.
	other, err := ParseKeyOptions("keys=1 ipv4=/24 ipv6=/64 sender=normalised recipient-ext=kept identity=name psl=2020-01-01.000000000000")
	if err != nil || !other.ListDiffers() || !other.SameExceptList(name) || other == name || other.Validate() == nil {
		t.Errorf("another list: %+v, %v (differs %v)", other, err, other.ListDiffers())
	}
	for _, bad := range []string{"", "keys=2 ipv4=/24 ipv6=/64 sender=normalised recipient-ext=kept", "keys=1 ipv4=/33 ipv6=/64 sender=normalised recipient-ext=kept", "keys=1 ipv4=/24",
		"keys=1 ipv4=/24 ipv6=/64 sender=normalised recipient-ext=kept identity=auto",
		"keys=1 ipv4=/24 ipv6=/64 sender=normalised recipient-ext=kept identity=name",
		"keys=1 ipv4=/24 ipv6=/64 sender=normalised recipient-ext=kept identity=network psl=" + SuffixList(),
		"keys=1 ipv4=/24 ipv6=/64 sender=normalised recipient-ext=kept identity=host"} {
		if _, err := ParseKeyOptions(bad); err == nil {
			t.Errorf("ParseKeyOptions(%q): no error", bad)
		}
	}
}

// TestLowerInto compares the eight-bytes-at-a-time lowercasing with the
// obvious loop on every byte value at every position.
func TestLowerInto(t *testing.T) {
	for c := range 256 {
		for pos := range 17 {
			in := []byte("AbCdEfGhIjKlMnOpQrStUvWxYz@[`{")[:pos+1]
			in[pos] = byte(c)
			want := make([]byte, len(in))
			for i, b := range in {
				if 'A' <= b && b <= 'Z' {
					b += 32
				}
				want[i] = b
			}
			got := make([]byte, len(in))
			lowerInto(got, string(in))
			if string(got) != string(want) {
				t.Fatalf("lowerInto(%q) = %q, want %q", in, got, want)
			}
		}
	}
}

// TestParseIPv4 holds the fast path to netip's verdict on every input.
func TestParseIPv4(t *testing.T) {
	inputs := []string{"0.0.0.0", "255.255.255.255", "192.0.2.10", "1.2.3", "1.2.3.4.5", "01.2.3.4", "1.2.3.04",
		"256.1.1.1", "1..2.3", ".1.2.3", "1.2.3.", "1.2.3.4 ", "1.2.3.-4", "", "::1", "::ffff:1.2.3.4", "1.2.3.4%x", "1.2.3.255", "999.0.0.0", "0.0.0.00"}
	r := rand.New(rand.NewPCG(1, 1))
	for range 20000 {
		b := make([]byte, 1+r.IntN(16))
		for i := range b {
			b[i] = "0123456789.."[r.IntN(12)]
		}
		inputs = append(inputs, string(b))
	}
	for _, s := range inputs {
		want, werr := netip.ParseAddr(s)
		got, ok := parseIPv4(s)
		if ok && (werr != nil || got != want) {
			t.Errorf("parseIPv4(%q) = %v, netip says %v %v", s, got, want, werr)
		}
		if !ok && werr == nil && want.Is4() {
			t.Errorf("parseIPv4(%q) refused what netip reads as %v", s, want)
		}
	}
}

// BenchmarkAppendSender normalises the kinds of sender the load generator
// sends: plain, role accounts, numbered bounces, BATV-signed, and empty.
func BenchmarkAppendSender(b *testing.B) {
	senders := []string{"Jane.Doe@Example.org", "newsletter@shop.example", "bounce-48213377-qxkz@bounces.example.net",
		"prvs=1234abcdef=orders@shop.example", "info@a.example", ""}
	var dst []byte
	for b.Loop() {
		for _, s := range senders {
			dst = appendSender(dst[:0], s, false)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(senders)), "ns/sender")
}
