package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"time"
)

// duration is a flag.Value for durations in Go's syntax plus days ("35d",
// "2d12h"). A bare number counts in unit, so postgrey's numbers carry over:
// seconds for --delay, days for --max-age and --retry-window.
type duration struct {
	d    *time.Duration
	unit time.Duration
}

func (v duration) String() string {
	if v.d == nil {
		return ""
	}
	return formatDuration(*v.d)
}

func (v duration) Set(s string) error {
	d, err := parseDuration(s, v.unit)
	if err != nil {
		return err
	}
	*v.d = d
	return nil
}

// maxDuration bounds every duration option: far beyond any sensible
// setting, and far from time.Duration's overflow.
const maxDuration = 100 * 365 * 24 * time.Hour

func parseDuration(s string, unit time.Duration) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, fmt.Errorf("empty duration: want one such as 300s, 5m, 48h or 35d")
	}
	if n, err := strconv.ParseFloat(s, 64); err == nil {
		if n < 0 {
			return 0, fmt.Errorf("%q: must not be negative", s)
		}
		if math.IsNaN(n) || n*float64(unit) > float64(maxDuration) {
			return 0, fmt.Errorf("%q: want a duration under 100 years", s)
		}
		return time.Duration(n * float64(unit)), nil
	}
	var total time.Duration
	rest := s
	if i := strings.IndexByte(rest, 'd'); i >= 0 {
		days, err := strconv.ParseFloat(rest[:i], 64)
		if err != nil {
			return 0, fmt.Errorf("%q: want a duration such as 300s, 5m, 48h or 35d", s)
		}
		if math.IsNaN(days) || days < 0 || days*float64(24*time.Hour) > float64(maxDuration) {
			return 0, fmt.Errorf("%q: want a duration under 100 years", s)
		}
		total = time.Duration(days * float64(24*time.Hour))
		rest = rest[i+1:]
	}
	if rest != "" {
		d, err := time.ParseDuration(rest)
		if err != nil {
			return 0, fmt.Errorf("%q: want a duration such as 300s, 5m, 48h or 35d", s)
		}
		total += d
	}
	if total < 0 || total > maxDuration {
		return 0, fmt.Errorf("%q: must not be negative", s)
	}
	return total, nil
}

func formatDuration(d time.Duration) string {
	day := 24 * time.Hour
	if d >= day && d%day == 0 {
		return strconv.FormatInt(int64(d/day), 10) + "d"
	}
	return d.String()
}

// list is a flag.Value for comma-separated lists that may also be repeated;
// the first use on the command line replaces the default.
type list struct {
	v   *[]string
	set bool
}

func (l *list) String() string {
	if l.v == nil {
		return ""
	}
	return strings.Join(*l.v, ",")
}

func (l *list) Set(s string) error {
	if !l.set {
		*l.v = nil
		l.set = true
	}
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" && p != "none" {
			*l.v = append(*l.v, p)
		}
	}
	return nil
}

// lines is a flag.Value for settings given once per item (a rule): each
// use adds one, a value of several lines adds each line (how a --config
// file's repeated lines and a GREYHOLD_ variable of several lines arrive),
// and the first use in a source replaces what an earlier one gave.
type lines struct {
	v   *[]string
	set bool
}

func (l *lines) String() string {
	if l.v == nil {
		return ""
	}
	return strings.Join(*l.v, "; ")
}

func (l *lines) Set(s string) error {
	if !l.set {
		*l.v = nil
		l.set = true
	}
	for _, p := range strings.Split(s, "\n") {
		if p = strings.TrimSpace(p); p != "" {
			*l.v = append(*l.v, p)
		}
	}
	return nil
}

// repeatable names the settings a --config file may give on several
// lines, each adding one.
var repeatable = map[string]bool{"rule": true, "dnsbl": true, "dnswl": true}

// size is a flag.Value for byte sizes: 1048576, 512KiB, 256MiB, 1GiB.
type size struct{ v *int64 }

func (s size) String() string {
	if s.v == nil {
		return ""
	}
	n := *s.v
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.mult && n%u.mult == 0 {
			return strconv.FormatInt(n/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}

func (s size) Set(v string) error {
	v = strings.TrimSpace(v)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}} {
		if strings.HasSuffix(v, u.suffix) {
			v, mult = strings.TrimSuffix(v, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil || n < 0 {
		return fmt.Errorf("%q: want a size such as 1048576, 512KiB or 256MiB", v)
	}
	if n > math.MaxInt64/mult {
		return fmt.Errorf("%q: too large", v)
	}
	*s.v = n * mult
	return nil
}

// envName is the environment variable that sets a flag: GREYHOLD_ and the
// flag's name in capitals with dashes as underscores.
func envName(flagName string) string {
	return "GREYHOLD_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// readConfigFile reads "name = value" (or "name value") lines; '#' starts a
// comment. Names are flag names without dashes in front.
func readConfigFile(r io.Reader, path string) (map[string]string, error) {
	out := map[string]string{}
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		name, value, ok := strings.Cut(line, "=")
		if !ok {
			name, value, ok = strings.Cut(line, " ")
		}
		name = strings.TrimLeft(strings.TrimSpace(name), "-")
		if !ok && name != "" {
			value, ok = "true", true // a bare boolean flag
		}
		if name == "" {
			return nil, fmt.Errorf("%s:%d: want name = value", path, n)
		}
		value = strings.Trim(strings.TrimSpace(value), `"`)
		if prev, ok := out[name]; ok && repeatable[name] {
			value = prev + "\n" + value
		}
		out[name] = value
	}
	return out, sc.Err()
}

// applyConfig reads the config file (configFile, or GREYHOLD_CONFIG when it
// is empty; none if both are) and applies it and the environment to fs, as
// applySources does.
func applyConfig(fs *flag.FlagSet, configFile string) error {
	path := configFile
	if path == "" {
		path = os.Getenv(envName("config"))
	}
	var file map[string]string
	if path != "" {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		file, err = readConfigFile(f, path)
		f.Close()
		if err != nil {
			return err
		}
		delete(file, "config")
	}
	return applySources(fs, file, path)
}

// applySources fills in every flag not given on the command line from the
// environment, then from the config file: the command line beats the
// environment, which beats the file, which beats the default. A postgrey
// alias (aliasTargets) takes the rank of where it was written: --inet on
// the command line beats GREYHOLD_POLICY_LISTEN, and GREYHOLD_IPV4_PREFIX
// beats ipv4cidr in the file.
func applySources(fs *flag.FlagSet, file map[string]string, filePath string) error {
	set := map[string]bool{} // flags with a value from a higher rank
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	taken := func(name string) bool {
		if set[name] {
			return true
		}
		for _, t := range aliasTargets[name] {
			if set[t] {
				return true
			}
		}
		return false
	}
	var errs []error
	apply := func(lookup func(name string) (string, bool), describe func(name, v string) string) {
		var got []string
		fs.VisitAll(func(f *flag.Flag) {
			if taken(f.Name) {
				return
			}
			if v, ok := lookup(f.Name); ok {
				if err := fs.Set(f.Name, v); err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", describe(f.Name, v), err))
				}
				got = append(got, f.Name)
			}
		})
		// Only now: within one source, an alias and its flag are of the
		// same rank, and neither shuts the other out.
		for _, name := range got {
			set[name] = true
			for _, t := range aliasTargets[name] {
				set[t] = true
			}
		}
	}
	apply(func(name string) (string, bool) { return os.LookupEnv(envName(name)) },
		func(name, v string) string { return fmt.Sprintf("%s=%q", envName(name), v) })
	apply(func(name string) (string, bool) { v, ok := file[name]; return v, ok },
		func(name, v string) string { return fmt.Sprintf("%s: %s = %q", filePath, name, v) })
	for name := range file {
		if fs.Lookup(name) == nil {
			errs = append(errs, fmt.Errorf("%s: unknown setting %q (see greyhold serve --help)", filePath, name))
		}
	}
	return errors.Join(errs...)
}
