package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/greyhold/greyhold/engine"
	"github.com/greyhold/greyhold/importer"
	"github.com/greyhold/greyhold/store"
)

const importUsage = `Usage: greyhold import postgrey DBDIR [flags]
       greyhold import sqlgrey DSN [flags]

Brings the state of postgrey (its --dbdir, read with db_dump from Debian's
db-util) or sqlgrey (DSN: sqlite:PATH, postgres://USER:PASS@HOST/DB or
mysql:USER:PASS@tcp(HOST)/DB) into greyhold's data directory: pending and
passed triplets with their times, and the client networks' auto-whitelist.
Keys are mapped to greyhold's (networks under --ipv4-prefix and
--ipv6-prefix, senders and recipients as greyhold compares them, hashed
with the data directory's secret). Run it with the options greyhold serve
runs with (the same flags, GREYHOLD_* variables or --config file), with
greyhold stopped: a data directory in use is refused. Stop postgrey or
sqlgrey first too, so that nothing changes while it reads.

Flags: those of greyhold serve (greyhold serve --help), and
`

// runImport imports another greylisting tool's state (importer/).
func runImport(args []string) int {
	c := defaultServeConfig()
	fs := flag.NewFlagSet("greyhold import", flag.ContinueOnError)
	c.flags(fs)
	pgDelay := fs.Int("postgrey-delay", 0, "postgrey's --delay in seconds, which tells its passed triplets from pending ones (default: --delay)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), importUsage)
		fmt.Fprintln(fs.Output(), "  -postgrey-delay int\n    \tpostgrey's --delay in seconds, which tells its passed triplets from pending ones (default: --delay)")
	}
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help") {
		fs.Usage()
		return 0
	}
	if len(args) < 2 {
		fs.Usage()
		return 2
	}
	kind, source := args[0], args[1]
	if kind != "postgrey" && kind != "sqlgrey" {
		fmt.Fprintf(os.Stderr, "greyhold import: %q: want postgrey or sqlgrey\n", kind)
		return 2
	}
	if err := fs.Parse(args[2:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "greyhold import: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if err := applyConfig(fs, c.configFile); err != nil {
		fmt.Fprintf(os.Stderr, "greyhold import: %v\n", err)
		return 2
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	opts, err := c.options(logger, nil)
	if err != nil {
		fmt.Fprintf(os.Stderr, "greyhold import: %v\n", err)
		return 2
	}
	report, err := importInto(os.Stdout, kind, source, c.dataDir, opts, *pgDelay)
	if err != nil {
		fmt.Fprintf(os.Stderr, "greyhold import: %v\n", err)
		if report.Pending+report.Passed+report.Clients > 0 {
			fmt.Fprint(os.Stderr, "before it stopped: ", report.String())
		}
		return 1
	}
	return 0
}

// importInto opens the data directory, imports, prints the report and
// closes the directory with a snapshot.
func importInto(out io.Writer, kind, source, dir string, opts store.Options, pgDelay int) (importer.Report, error) {
	// The source first: a mistyped one must not leave a new data
	// directory behind.
	if kind == "postgrey" {
		if _, err := os.Stat(filepath.Join(source, "postgrey.db")); err != nil {
			return importer.Report{}, fmt.Errorf("postgrey database: %w (give postgrey's --dbdir, /var/lib/postgrey by default)", err)
		}
	} else {
		db, _, err := importer.OpenSQL(source)
		if err != nil {
			return importer.Report{}, err
		}
		db.Close()
	}
	st, err := store.Open(dir, opts)
	if errors.Is(err, store.ErrLocked) {
		return importer.Report{}, fmt.Errorf("%w: the import writes the data directory, which a running greyhold owns; stop it, import, then start it again", err)
	}
	if err != nil {
		return importer.Report{}, err
	}
	now := engine.FromTime(time.Now())
	var r importer.Report
	if kind == "postgrey" {
		r, err = importer.Postgrey(source, st.Engine(), now, importer.PostgreyOptions{Delay: pgDelay}, st)
	} else {
		r, err = importer.Sqlgrey(source, st.Engine(), now, st)
	}
	if cerr := st.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close the data directory: %w", cerr)
	}
	if err != nil {
		return r, err
	}
	fmt.Fprint(out, r.String())
	return r, nil
}
