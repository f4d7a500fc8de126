# greyhold: make run starts a server on loopback, make test proves the tree.
GO          ?= go
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS     := -X main.version=$(VERSION)
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
DATA_DIR    ?= ./greyhold-data
PREFIX      ?= /usr/local
DESTDIR     ?=
FUZZTIME    ?= 60s
BENCHTIME   ?= 2s

# Fuzz targets as dir:name: those of fuzz/ through the packages' exported
# API, and those inside a package that test its internals.
FUZZ_TARGETS = $(shell grep -o '^func Fuzz[A-Za-z0-9]*' */*_test.go | sed 's|/[^/]*:func |:|')

.PHONY: all build install unit-check run test check fmt-check vet staticcheck unit bench bench-peers bench-day fuzz e2e e2e-postfix e2e-exim clean \
	dashboard deploy-check deb deb-check import-check

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/greyhold ./cmd/greyhold

# run builds and starts the server on loopback with its state in ./greyhold-data.
run: build
	./bin/greyhold serve --data-dir $(DATA_DIR)

# install puts bin/greyhold in $(PREFIX)/bin and the systemd unit, its
# ExecStart made to match, in /etc/systemd/system, both under $(DESTDIR);
# README "Installing" has the rest (the user, the settings file).
install: build
	install -D -m 755 bin/greyhold $(DESTDIR)$(PREFIX)/bin/greyhold
	install -d $(DESTDIR)/etc/systemd/system
	sed 's|^ExecStart=/usr/local/bin/greyhold |ExecStart=$(PREFIX)/bin/greyhold |' cmd/greyhold/systemd/greyhold.service \
		> $(DESTDIR)/etc/systemd/system/greyhold.service
	chmod 644 $(DESTDIR)/etc/systemd/system/greyhold.service

# test is what CI runs: formatting, vet, staticcheck, then every test under
# the race detector, the parsers' tests again without their assembly (purego,
# the code other architectures run), vet for arm64, the systemd unit's
# check, the dashboard's and alerting rules' check, and the Debian
# package's, and the imports against the real postgrey and sqlgrey.
test: check unit unit-check deploy-check deb-check import-check

check: fmt-check vet staticcheck

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

# deploy/ is a module of its own, so that its tools' dependencies (Grafana's
# SDK, Prometheus's PromQL parser) stay out of greyhold's go.mod.
vet:
	$(GO) vet ./...
	cd deploy && $(GO) vet ./...

staticcheck:
	$(GO) run $(STATICCHECK) ./...
	cd deploy && $(GO) run $(STATICCHECK) ./...

unit:
	$(GO) test -race -timeout 15m ./...
	$(GO) test -tags purego -run 'Mask|Pack|Parse|Split' ./server
	GOARCH=arm64 $(GO) vet ./...

# unit-check holds cmd/greyhold/systemd/greyhold.service to systemd-analyze
# (verify, security) and its system call filter to the calls greyhold makes
# under strace; it installs systemd-analyze and strace when missing.
unit-check:
	bash cmd/greyhold/systemd/check.sh

# deploy-check holds deploy/'s Grafana dashboard and Prometheus alerting
# rules to promtool (check rules, and the rules' unit tests) and every
# series they name to a live greyhold's /metrics (deploy/check.sh; it
# installs Debian's prometheus package, for promtool, when it is missing).
deploy-check:
	bash deploy/check.sh

# deb builds dist/greyhold_<version>_<arch>.deb for amd64 and arm64 with
# dpkg-deb (deploy/debian/build.sh; DEB_MAINTAINER sets the Maintainer).
deb:
	GO=$(GO) bash deploy/debian/build.sh amd64 arm64

# deb-check builds both packages, holds them to lintian, installs this
# machine's with dpkg -i, runs the packaged greyhold as its unit would and
# asks it a policy request, then removes and purges it, checking what each
# step leaves (deploy/debian/check.sh; root; it installs lintian when
# missing).
deb-check:
	GO=$(GO) bash deploy/debian/check.sh

# import-check runs traffic through Debian's postgrey and sqlgrey, imports
# what they stored and holds greyhold's verdicts on a further trace to
# theirs (importer/check.sh; it installs postgrey, db-util, sqlgrey and
# faketime when missing, as root).
import-check:
	bash importer/check.sh

# dashboard writes deploy/grafana/greyhold.json from deploy/dashboard's
# table of panels; deploy-check fails while the committed file differs.
dashboard:
	cd deploy && $(GO) run ./cmd/dashboard grafana/greyhold.json

# e2e runs greyhold behind a real, private Postfix over SMTP, then behind a
# real Exim through the README's ACL snippet (e2e/README.md); it installs
# Postfix and swaks, and unpacks Exim, from Debian's packages when missing.
e2e: e2e-postfix e2e-exim

e2e-postfix:
	bash e2e/run.sh

e2e-exim:
	bash e2e/exim.sh

# bench runs the Go benchmarks of the engine, log, snapshots, store and
# protocol parsers in a form benchstat reads (make bench BENCHTIME=5s >
# new.txt; benchstat old.txt new.txt); bench/RESULTS.md has the latest
# figures and the exact commands behind each.
bench:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) -count 1 -timeout 60m ./engine ./wal ./snapshot ./store ./server

# bench-peers runs the same workloads against greyhold, postgrey, gross and
# bench/load's null server and prints one table (bench/peers.sh; it installs
# postgrey and gross from Debian's packages when they are missing and takes
# under ten minutes). BENCH_PEERS_OUT=bench/peers-latest.md keeps the table
# as Markdown.
bench-peers:
	GO=$(GO) bash bench/peers.sh

# bench-day drives a simulated day of mail through postgrey (under
# libfaketime) and greyhold, and reports the delays by kind of sender.
bench-day:
	bash bench/day.sh

# fuzz runs every fuzz target for FUZZTIME each (make fuzz FUZZTIME=10s).
# What a target finds is kept in <dir>/testdata/fuzz/<target>/ as a seed.
# fuzz/run.sh also tells Go 1.26's spurious end-of-time failure apart.
fuzz:
	@GO=$(GO) bash fuzz/run.sh $(FUZZTIME) $(FUZZ_TARGETS)

clean:
	rm -rf bin dist
