package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/greyhold/greyhold/store"
)

// logFields are the request fields --log-addresses=hash hashes, by the
// name log lines give them, with the engine's tag for each.
var logFields = []struct {
	name string
	tag  byte
	help string
}{
	{"client_address", 'a', "a client address, as Postfix sends it (192.0.2.10)"},
	{"client_name", 'n', "a client's host name, as Postfix sends it"},
	{"sender", 's', "a sender, as the MTA sends it"},
	{"recipient", 'r', "a recipient, as the MTA sends it"},
	{"identity", 'i', "a client identity, as decision lines name it (name:example.com, net:192.0.2.0/24)"},
}

// runLoghash prints the hashes that log lines under --log-addresses=hash
// show for given values, read with the data directory's secret, so that
// an operator can find a known sender's or client's lines.
func runLoghash(args []string) int {
	fs := flag.NewFlagSet("greyhold loghash", flag.ContinueOnError)
	dataDir := fs.String("data-dir", "./greyhold-data", "the server's data directory, whose secret keys the hashes")
	secretFile := fs.String("secret-file", "", "the server's --secret-file, if it reads its secret from one")
	values := map[string]*string{}
	for _, f := range logFields {
		values[f.name] = fs.String(flagName(f.name), "", f.help)
	}
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: greyhold loghash [--data-dir DIR] [--sender S] [--recipient R] [--client-address A] [--client-name N] [--identity I] [VALUE...]

Prints the hash that log lines show, with --log-addresses=hash, in place of
each value given, as the log does: client_address=h:0e7d6b1a44c9f2a3. A
field's flag hashes a value as that field; a bare VALUE is printed as every
field. Values are hashed as sent (a sender in other case is another
value), with the secret of the data directory (or --secret-file); the
directory is only read, so a server may be running on it.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	type item struct {
		name  string
		tag   byte
		value string
	}
	var items []item
	for _, f := range logFields {
		if v := *values[f.name]; v != "" {
			items = append(items, item{f.name, f.tag, v})
		}
	}
	for _, v := range fs.Args() {
		for _, f := range logFields {
			items = append(items, item{f.name, f.tag, v})
		}
	}
	if len(items) == 0 {
		fs.Usage()
		return 2
	}
	hash, err := store.LogKeyer(*dataDir, *secretFile)
	if err != nil {
		fmt.Fprintf(os.Stderr, "greyhold loghash: %v\n", err)
		return 1
	}
	for _, it := range items {
		fmt.Printf("%s=h:%016x\n", it.name, hash(it.tag, it.value))
	}
	return 0
}

// flagName is a log field's name as a flag: client_address, --client-address.
func flagName(field string) string {
	b := []byte(field)
	for i, c := range b {
		if c == '_' {
			b[i] = '-'
		}
	}
	return string(b)
}
