package importer

import (
	"strings"
	"testing"
	"time"

	"github.com/greyhold/greyhold/engine"
)

func testEngine(t *testing.T) *engine.Engine {
	t.Helper()
	e, err := engine.New(engine.DefaultOptions(), []byte("0123456789abcdef-import-test"))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestReadDump: db_dump's printable format, escapes included; a dump cut
// short is an error, not a silent partial import.
func TestReadDump(t *testing.T) {
	in := "VERSION=3\nformat=print\ntype=btree\nHEADER=END\n 192.0.2.0/a\\5cb@x/c@y\n 1,2\n k\\09ey\n v\nDATA=END\n"
	var got []string
	if err := readDump(strings.NewReader(in), func(k, v string) { got = append(got, k+"="+v) }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != `192.0.2.0/a\b@x/c@y=1,2` || got[1] != "k\tey=v" {
		t.Errorf("%q", got)
	}
	if err := readDump(strings.NewReader("HEADER=END\n a\n b\n"), func(string, string) {}); err == nil {
		t.Error("a dump without DATA=END was read")
	}
}

// TestPostgreyKeys: network and --lookup-by-host keys, the bounce, hashed
// (--privacy) and broken keys.
func TestPostgreyKeys(t *testing.T) {
	e := testEngine(t)
	var r Report
	for _, c := range []struct {
		key, val, net, sender string
		passed                bool
	}{
		{"192.0.2.0/alice@x.example/bob@y.example", "1700000000,1700000400", "192.0.2.0/24", "alice@x.example", true},
		{"192.0.2.10/32/alice@x.example/bob@y.example", "1700000000,1700000100", "192.0.2.0/24", "alice@x.example", false},
		{"2001:db8:0:0:0:0:0:0//bob@y.example", "1700000000,1700000000", "2001:db8::/64", "", false},
	} {
		it, ok := parsePostgreyTriplet(e, c.key, c.val, 300, &r)
		if !ok || it.Network.String() != c.net || it.Sender != c.sender || it.Passed != c.passed || it.Recipient != "bob@y.example" {
			t.Errorf("%s: %+v %v", c.key, it, ok)
		}
	}
	for _, bad := range []string{strings.Repeat("ab", 20), "nowhere/a@b/c@d", "192.0.2.0/only-two"} {
		if _, ok := parsePostgreyTriplet(e, bad, "1,2", 300, &r); ok {
			t.Errorf("%s was read", bad)
		}
	}
	if r.Skipped["hashed key (postgrey --privacy): nothing to map it to"] != 1 || r.Skipped["key postgrey would not write"] != 2 {
		t.Errorf("skipped: %v", r.Skipped)
	}
}

// TestSqlgreySources: sqlgrey's src forms, and the bounce.
func TestSqlgreySources(t *testing.T) {
	e := testEngine(t)
	for src, want := range map[string]string{"192.0.2.10": "192.0.2.0/24", "192.0.2": "192.0.2.0/24",
		"2001:0db8:0001:0002": "2001:db8:1:2::/64", "2001:db8::5": "2001:db8::/64"} {
		if n, why := sqlgreyNetwork(e, src); why != "" || n.String() != want {
			t.Errorf("%s: %v %q", src, n, why)
		}
	}
	if _, why := sqlgreyNetwork(e, "mail.example"); why == "" {
		t.Error("a name was taken for a src")
	}
	o := engine.DefaultOptions()
	o.Keys.IPv4Prefix = 32
	e32, _ := engine.New(o, []byte("0123456789abcdef-import-test"))
	if _, why := sqlgreyNetwork(e32, "192.0.2"); why == "" {
		t.Error("a class C under --ipv4-prefix 32 was taken")
	}
	if sqlgreySender("-undef-", "-undef-") != "" || sqlgreySender("a", "b.example") != "a@b.example" {
		t.Error("senders")
	}
	for in, want := range map[string]string{
		"postgres://sqlgrey:secret@db/sqlgrey": "postgres://sqlgrey:****@db/sqlgrey",
		"postgres://sqlgrey@db/sqlgrey":        "postgres://sqlgrey@db/sqlgrey",
		"mysql:sqlgrey:secret@tcp(db)/sqlgrey": "mysql:sqlgrey:****@tcp(db)/sqlgrey",
		"sqlite:/var/lib/sqlgrey/sqlgrey.db":   "sqlite:/var/lib/sqlgrey/sqlgrey.db",
	} {
		if got := redactDSN(in); got != want {
			t.Errorf("redactDSN(%s) = %s", in, got)
		}
	}
	if ts, ok := parseStamp("2026-12-01 10:00:05"); !ok || !ts.Equal(time.Date(2026, 12, 1, 10, 0, 5, 0, time.UTC)) {
		t.Errorf("stamp: %v %v", ts, ok)
	}
}
