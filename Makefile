# tenantguard: `make demo` runs the stack with synthetic tenants, `make test`
# runs every test against real servers. Both install the servers first.
GO        ?= go
BIN       := bin/tenantguard
PKGS      := ./...
TESTFLAGS ?= -count=1 -timeout 45m

.PHONY: all build deps demo test test-short bench bench-ingest bench-flood fuzz vet lint clean

all: build

build:
	$(GO) build -buildvcs=auto -o $(BIN) ./cmd/tenantguard   # stamps the commit for --version

deps:
	./scripts/install-deps.sh

demo: deps build
	./$(BIN) dev --demo

test: deps vet
	$(GO) test $(TESTFLAGS) $(PKGS)

test-short: deps
	$(GO) test -short $(TESTFLAGS) $(PKGS)

vet:
	$(GO) vet $(PKGS)
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi

# Go benchmarks of every package, then the end-to-end ingest and flood benchmarks.
bench: deps build
	$(GO) test -run '^$$' -bench . -benchtime 1s -count 1 $(PKGS)
	./$(BIN) bench ingest
	./$(BIN) bench flood

bench-ingest: deps build
	./$(BIN) bench ingest

bench-flood: deps build
	./$(BIN) bench flood

# Short runs of every fuzzer; the corpus lives in each package's testdata/fuzz.
FUZZTIME ?= 60s
fuzz:
	$(GO) test ./collector/event -run '^$$' -fuzz FuzzDecode -fuzztime $(FUZZTIME)
	$(GO) test ./anomaly -run '^$$' -fuzz FuzzWarmStartRows -fuzztime $(FUZZTIME)
	$(GO) test ./cmd/tenantguard -run '^$$' -fuzz FuzzConfigLoad -fuzztime $(FUZZTIME)
	$(GO) test ./limiter -run '^$$' -fuzz FuzzDecisionVerify -fuzztime $(FUZZTIME)
	$(GO) test ./collector/backfill -run '^$$' -fuzz FuzzImportParse -fuzztime $(FUZZTIME)
	$(GO) test ./collector/correct -run '^$$' -fuzz FuzzDecodeRequest -fuzztime $(FUZZTIME)

clean:
	rm -rf bin .tenantguard
