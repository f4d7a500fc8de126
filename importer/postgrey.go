package importer

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/greyhold/greyhold/engine"
)

// postgrey keeps two Berkeley DB B-trees in its --dbdir, in a Berkeley DB
// environment:
//
//	postgrey.db          "NET/SENDER/RECIPIENT" -> "FIRST,LAST"
//	postgrey_clients.db  "CLIENT_ADDRESS"        -> "COUNT,LAST"
//
// NET is the client's network address ("192.0.2.0", "2001:db8:0:0:0:0:0:0"),
// or with --lookup-by-host its address and length ("192.0.2.10/32");
// SENDER is postgrey's normalisation of the sender (BATV taken out,
// +extension cut, digit runs #), and the whole key is lowercased; times
// are Unix seconds. A triplet passed once LAST - FIRST reached the delay.
// With --privacy the keys are SHA-1 hashes, which nothing can map.
//
// The files are read with db_dump, Berkeley DB's own tool (Debian's
// db-util), in its printable format: no Go reader of Berkeley DB files is
// kept up to date, and db_dump reads every version of the format the
// library that wrote them reads.

// DBDump is the db_dump command the postgrey import runs.
var DBDump = "db_dump"

// PostgreyOptions are what the postgrey import must know of postgrey.
type PostgreyOptions struct {
	// Delay is postgrey's --delay in seconds, which tells a passed triplet
	// from a pending one (0: the engine's delay).
	Delay int
}

// Postgrey imports postgrey's state from its --dbdir into sink, keyed by
// e, at now.
func Postgrey(dbdir string, e *engine.Engine, now engine.Time, o PostgreyOptions, sink Sink) (Report, error) {
	r := Report{Source: "postgrey " + dbdir}
	delay := engine.Time(o.Delay)
	if delay == 0 {
		delay = engine.Time(e.Options().Delay.Seconds())
	}
	if _, err := os.Stat(filepath.Join(dbdir, "postgrey.db")); err != nil {
		return r, fmt.Errorf("postgrey database: %w (give postgrey's --dbdir, /var/lib/postgrey by default)", err)
	}
	b := &batch{sink: sink}
	var passes clientPasses
	err := dump(dbdir, "postgrey.db", func(key, val string) {
		t, ok := parsePostgreyTriplet(e, key, val, delay, &r)
		if !ok {
			return
		}
		rec, expired := e.ImportTripletRecord(now, t)
		switch {
		case expired && t.Passed:
			r.skip("passed triplet not seen within --max-age")
		case expired:
			r.skip("pending triplet older than --retry-window")
		default:
			b.add(rec)
			if t.Passed {
				r.Passed++
			} else {
				r.Pending++
			}
		}
	})
	if err != nil {
		return r, err
	}
	// The auto-whitelist: postgrey counts per client address, greyhold per
	// network. An address's count stands for that many passes; the
	// network takes its addresses' passes together, one an interval apart
	// at most, as greyhold counts them.
	clients := filepath.Join(dbdir, "postgrey_clients.db")
	if _, serr := os.Stat(clients); serr == nil {
		err = dump(dbdir, "postgrey_clients.db", func(key, val string) {
			a, err := netip.ParseAddr(key)
			if err != nil {
				r.skip(reasonKey(key))
				return
			}
			count, last, ok := twoInts(val)
			if !ok || count < 1 {
				r.skip("client entry whose value is not COUNT,LAST")
				return
			}
			n, _ := e.ImportNetwork(netip.PrefixFrom(a, a.BitLen()))
			lt := engine.FromUnix(last)
			interval := engine.Time(e.Options().AutoWhitelistInterval.Seconds())
			for i := range count {
				// postgrey keeps only the last count's time: the others
				// are taken an interval apart before it.
				passes.add(n, lt-engine.Time(i)*max(interval, 1), lt)
			}
		})
		if err != nil {
			return r, err
		}
		passes.records(e, now, b, &r)
	}
	nameModeNote(e, &r)
	return r, b.flush()
}

// reasonKey names why a key cannot be mapped.
func reasonKey(key string) string {
	if len(key) == 40 && strings.Trim(key, "0123456789abcdef") == "" {
		return "hashed key (postgrey --privacy): nothing to map it to"
	}
	return "key postgrey would not write"
}

func twoInts(v string) (a, b int64, ok bool) {
	f := strings.Split(v, ",")
	if len(f) < 2 {
		return 0, 0, false
	}
	a, err1 := strconv.ParseInt(f[0], 10, 64)
	b, err2 := strconv.ParseInt(f[1], 10, 64)
	return a, b, err1 == nil && err2 == nil
}

func parsePostgreyTriplet(e *engine.Engine, key, val string, delay engine.Time, r *Report) (engine.Imported, bool) {
	var t engine.Imported
	client, rest, ok := strings.Cut(key, "/")
	if !ok {
		r.skip(reasonKey(key))
		return t, false
	}
	a, err := netip.ParseAddr(client)
	if err != nil {
		r.skip(reasonKey(key))
		return t, false
	}
	bits := e.Options().Keys.IPv4Prefix
	if !a.Is4() {
		bits = e.Options().Keys.IPv6Prefix
	}
	// --lookup-by-host writes the address with its length.
	if l, after, ok := strings.Cut(rest, "/"); ok && l != "" && strings.Trim(l, "0123456789") == "" && strings.Contains(after, "/") {
		bits, _ = strconv.Atoi(l)
		rest = after
	}
	sender, rcpt, ok := strings.Cut(rest, "/")
	if !ok || rcpt == "" {
		r.skip(reasonKey(key))
		return t, false
	}
	p, err := a.Prefix(bits)
	if err != nil {
		r.skip(reasonKey(key))
		return t, false
	}
	n, fits := e.ImportNetwork(p)
	if !fits {
		r.skip("network wider than --ipv4-prefix or --ipv6-prefix")
		return t, false
	}
	first, last, ok := twoInts(val)
	if !ok || first <= 0 || last < first {
		r.skip("triplet whose value is not FIRST,LAST")
		return t, false
	}
	t = engine.Imported{Network: n, Sender: sender, Recipient: rcpt, First: engine.FromUnix(first), Last: engine.FromUnix(last)}
	t.Passed = engine.Time(last-first) >= delay
	return t, true
}

// dump runs db_dump on one database of postgrey's environment in dbdir
// and calls fn for each key and value.
func dump(dbdir, file string, fn func(key, val string)) error {
	path, err := exec.LookPath(DBDump)
	if err != nil {
		return fmt.Errorf("postgrey import needs %s, Berkeley DB's dump tool (Debian: apt-get install db-util): %w", DBDump, err)
	}
	cmd := exec.Command(path, "-p", "-h", dbdir, file)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("run %s: %w", path, err)
	}
	perr := readDump(out, fn)
	io.Copy(io.Discard, out)
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("%s -p -h %s %s: %w: %s (is postgrey stopped? db_dump must be able to join its environment)", path, dbdir, file, err, strings.TrimSpace(stderr.String()))
	}
	if perr != nil {
		return fmt.Errorf("%s %s: %w", path, file, perr)
	}
	return nil
}

// readDump reads db_dump's printable format: a header up to HEADER=END,
// then key and value lines, each with a leading space and bytes outside
// printable ASCII as \xx, up to DATA=END.
func readDump(r io.Reader, fn func(key, val string)) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	inData, haveKey, done := false, false, false
	var key string
	for sc.Scan() {
		l := sc.Text()
		switch {
		case !inData:
			inData = l == "HEADER=END"
		case l == "DATA=END":
			done = true
		case strings.HasPrefix(l, " "):
			v, err := unescapeDump(l[1:])
			if err != nil {
				return err
			}
			if !haveKey {
				key, haveKey = v, true
			} else {
				fn(key, v)
				haveKey = false
			}
		default:
			return fmt.Errorf("db_dump line %q: not a key or value", l)
		}
		if done {
			break
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if !done {
		return errors.New("db_dump output ends before DATA=END")
	}
	return nil
}

func unescapeDump(s string) (string, error) {
	if !strings.Contains(s, `\`) {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			b.WriteByte(s[i])
			continue
		}
		if i+1 < len(s) && s[i+1] == '\\' {
			b.WriteByte('\\')
			i++
			continue
		}
		if i+2 >= len(s) {
			return "", fmt.Errorf("db_dump escape at the end of %q", s)
		}
		v, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
		if err != nil {
			return "", fmt.Errorf("db_dump escape %q: %w", s[i:i+3], err)
		}
		b.WriteByte(byte(v))
		i += 2
	}
	return b.String(), nil
}
