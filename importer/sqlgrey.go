package importer

import (
	"database/sql"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	// The databases sqlgrey runs on.
	_ "github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite"

	"github.com/greyhold/greyhold/engine"
)

// sqlgrey keeps its state in three tables:
//
//	connect     sender_name, sender_domain, src, rcpt, first_seen
//	            a triplet seen and not yet passed
//	from_awl    sender_name, sender_domain, src, first_seen, last_seen
//	            a sender that passed from src: it passes to any recipient
//	domain_awl  sender_domain, src, first_seen, last_seen
//	            a domain that passed group_domain_level senders from src
//
// src is the client's address, or (greymethod classc, or smart for a
// client whose name looks like a mail server's) its class C ("192.0.2")
// or, for IPv6, its /64 as four groups. The bounce sender is -undef-@-undef-.
// Times are Unix seconds on SQLite, timestamps in the database's zone on
// PostgreSQL and MySQL.
//
// connect rows are pending triplets. greyhold has no state keyed by
// sender and client without a recipient, so a from_awl or domain_awl row
// counts as one pass of its client network towards greyhold's
// auto-whitelist (one an AutoWhitelistInterval at most, by their
// first_seen times, as greyhold counts): a network that passed
// --auto-whitelist-clients senders is whitelisted, as postgrey's and
// greyhold's counting would have it; a sender sqlgrey passed from a network
// that passed fewer waits out one more delay for each new recipient.

// OpenSQL opens a sqlgrey database from a DSN: "sqlite:PATH" (or a path),
// "postgres://..." or "postgresql://...", "mysql:USER:PASS@tcp(HOST)/DB".
func OpenSQL(dsn string) (*sql.DB, string, error) {
	driver, src := "sqlite", dsn
	switch {
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		driver = "pgx"
	case strings.HasPrefix(dsn, "mysql:"):
		driver, src = "mysql", strings.TrimPrefix(dsn, "mysql:")
	case strings.HasPrefix(dsn, "sqlite:"):
		src = strings.TrimPrefix(dsn, "sqlite:")
	case strings.Contains(dsn, "://"):
		return nil, "", fmt.Errorf("sqlgrey database %q: want sqlite:PATH, postgres://... or mysql:USER:PASS@tcp(HOST)/DB", dsn)
	}
	if driver == "sqlite" {
		// Read only: the import never writes sqlgrey's database.
		src = "file:" + src + "?mode=ro"
	}
	db, err := sql.Open(driver, src)
	if err != nil {
		return nil, "", fmt.Errorf("open sqlgrey database: %w", err)
	}
	if err := db.Ping(); err != nil {
		db.Close()
		return nil, "", fmt.Errorf("open sqlgrey database: %w", err)
	}
	return db, driver, nil
}

// Sqlgrey imports sqlgrey's state from the database at dsn into sink, keyed
// by e, at now.
func Sqlgrey(dsn string, e *engine.Engine, now engine.Time, sink Sink) (Report, error) {
	r := Report{Source: "sqlgrey " + redactDSN(dsn)}
	db, driver, err := OpenSQL(dsn)
	if err != nil {
		return r, err
	}
	defer db.Close()
	clock, err := dbClock(db, driver, now)
	if err != nil {
		return r, err
	}
	b := &batch{sink: sink}

	rows, err := db.Query("SELECT sender_name, sender_domain, src, rcpt, first_seen FROM connect")
	if err != nil {
		return r, fmt.Errorf("read sqlgrey's connect table: %w", err)
	}
	for rows.Next() {
		var name, domain, src, rcpt string
		var first any
		if err := rows.Scan(&name, &domain, &src, &rcpt, &first); err != nil {
			rows.Close()
			return r, fmt.Errorf("read sqlgrey's connect table: %w", err)
		}
		n, why := sqlgreyNetwork(e, src)
		if why != "" {
			r.skip(why)
			continue
		}
		ft, ok := clock(first)
		if !ok {
			r.skip("first_seen that is not a time")
			continue
		}
		rec, expired := e.ImportTripletRecord(now, engine.Imported{Network: n, Sender: sqlgreySender(name, domain), Recipient: rcpt, First: ft})
		if expired {
			r.skip("pending triplet older than --retry-window")
			continue
		}
		b.add(rec)
		r.Pending++
	}
	if err := rows.Err(); err != nil {
		return r, fmt.Errorf("read sqlgrey's connect table: %w", err)
	}
	rows.Close()

	var passes clientPasses
	for _, table := range []string{"from_awl", "domain_awl"} {
		rows, err := db.Query("SELECT src, first_seen, last_seen FROM " + table)
		if err != nil {
			return r, fmt.Errorf("read sqlgrey's %s table: %w", table, err)
		}
		for rows.Next() {
			var src string
			var first, last any
			if err := rows.Scan(&src, &first, &last); err != nil {
				rows.Close()
				return r, fmt.Errorf("read sqlgrey's %s table: %w", table, err)
			}
			n, why := sqlgreyNetwork(e, src)
			if why != "" {
				r.skip(why)
				continue
			}
			ft, ok1 := clock(first)
			lt, ok2 := clock(last)
			if !ok1 || !ok2 {
				r.skip("first_seen or last_seen that is not a time")
				continue
			}
			passes.add(n, ft, max(lt, ft))
		}
		if err := rows.Err(); err != nil {
			return r, fmt.Errorf("read sqlgrey's %s table: %w", table, err)
		}
		rows.Close()
	}
	passes.records(e, now, b, &r)
	if len(passes.times) > 0 {
		r.Notes = append(r.Notes, "sqlgrey's from_awl and domain_awl pass a sender or domain from a client to any recipient; "+
			"greyhold keys passes by triplet, so each row counted as one pass of its client network towards the auto-whitelist")
	}
	nameModeNote(e, &r)
	return r, b.flush()
}

// sqlgreySender puts sqlgrey's split sender together again; its bounce
// sender is -undef-.
func sqlgreySender(name, domain string) string {
	if name == "-undef-" && domain == "-undef-" {
		return ""
	}
	return name + "@" + domain
}

// sqlgreyNetwork maps a src to greyhold's network, or says why not.
func sqlgreyNetwork(e *engine.Engine, src string) (netip.Prefix, string) {
	var p netip.Prefix
	if a, err := netip.ParseAddr(src); err == nil {
		p = netip.PrefixFrom(a, a.BitLen())
	} else if parts := strings.Split(src, "."); len(parts) == 3 {
		a, err := netip.ParseAddr(src + ".0")
		if err != nil {
			return p, "src that is no address or network"
		}
		p = netip.PrefixFrom(a, 24)
	} else if parts := strings.Split(src, ":"); len(parts) == 4 {
		a, err := netip.ParseAddr(src + "::")
		if err != nil {
			return p, "src that is no address or network"
		}
		p = netip.PrefixFrom(a, 64)
	} else {
		return p, "src that is no address or network"
	}
	n, fits := e.ImportNetwork(p)
	if !fits {
		return n, "class C or /64 wider than --ipv4-prefix or --ipv6-prefix"
	}
	return n, ""
}

// dbClock returns how to read the database's times as the engine's: on
// SQLite sqlgrey writes Unix seconds; elsewhere timestamps in the
// database's own zone and clock, read against its now().
func dbClock(db *sql.DB, driver string, now engine.Time) (func(any) (engine.Time, bool), error) {
	if driver == "sqlite" {
		return func(v any) (engine.Time, bool) {
			switch x := v.(type) {
			case int64:
				return engine.FromUnix(x), x > 0
			case float64:
				return engine.FromUnix(int64(x)), x > 0
			case string, []byte:
				s := fmt.Sprint(x)
				if b, ok := x.([]byte); ok {
					s = string(b)
				}
				n, err := strconv.ParseInt(s, 10, 64)
				if err == nil {
					return engine.FromUnix(n), n > 0
				}
				t, ok := parseStamp(s)
				return engine.FromTime(t), ok
			case time.Time:
				return engine.FromTime(x), true
			}
			return 0, false
		}, nil
	}
	var dbNow any
	if err := db.QueryRow("SELECT now()").Scan(&dbNow); err != nil {
		return nil, fmt.Errorf("read the database's now(): %w", err)
	}
	ref, ok := toTime(dbNow)
	if !ok {
		return nil, fmt.Errorf("the database's now() is %v, not a time", dbNow)
	}
	return func(v any) (engine.Time, bool) {
		t, ok := toTime(v)
		if !ok {
			return 0, false
		}
		age := ref.Sub(t)
		return now - engine.Time(max(0, int64(age/time.Second))), true
	}, nil
}

func toTime(v any) (time.Time, bool) {
	switch x := v.(type) {
	case time.Time:
		// Wall-clock reading as the database wrote it, whatever zone the
		// driver labelled it with: compared with its own now() only.
		return time.Date(x.Year(), x.Month(), x.Day(), x.Hour(), x.Minute(), x.Second(), 0, time.UTC), true
	case []byte:
		return parseStamp(string(x))
	case string:
		return parseStamp(x)
	}
	return time.Time{}, false
}

func parseStamp(s string) (time.Time, bool) {
	for _, layout := range []string{"2006-01-02 15:04:05.999999999", "2006-01-02T15:04:05.999999999", "2006-01-02 15:04:05.999999999-07", time.RFC3339Nano} {
		if t, err := time.Parse(layout, s); err == nil {
			return time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), 0, time.UTC), true
		}
	}
	return time.Time{}, false
}

// redactDSN drops a password from a DSN for the report.
func redactDSN(dsn string) string {
	start := 0
	if i := strings.Index(dsn, "://"); i >= 0 {
		start = i + 3
	} else if strings.HasPrefix(dsn, "mysql:") {
		start = len("mysql:")
	}
	at := strings.LastIndex(dsn, "@")
	if at < start {
		return dsn
	}
	if j := strings.Index(dsn[start:at], ":"); j >= 0 {
		return dsn[:start+j+1] + "****" + dsn[at:]
	}
	return dsn
}
