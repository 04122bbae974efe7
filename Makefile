# Tether: Nomad's client HTTP API as a forwarding proxy plus node agents.

GO      ?= go
BIN     ?= bin/tether
PKGS    ?= ./...
TIMEOUT ?= 30m

.PHONY: all build test run bench bench-peer lint clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/tether

# test runs everything CI runs: formatting, vet, and every test with the
# race detector (integration tests build and run the real binary too).
test: lint
	$(GO) test -race -count=1 -timeout $(TIMEOUT) $(PKGS)

# run starts a dev agent: a server and a node in one process on 127.0.0.1:4646.
run: build
	./$(BIN) agent -dev

# bench prints the forwarding benchmark (p50/p99 and req/s, direct vs via
# server) and the package micro-benchmarks.
bench: build
	$(GO) test -run '^$$' -bench . -benchtime 2000x ./rpc/ ./client/
	$(GO) test -run '^TestBench(Forwarding|Tasks|Streams|Cluster)$$' -count=1 -v -timeout 10m ./integration/ -args -bench-forwarding -bench-tasks -bench-streams -bench-cluster

# bench-peer drives ../shared/bench/clientapi-bench (the harness that
# measured Nomad v1.6.5) against a Tether server and node with the peer
# workload. ARGS passes harness flags, e.g. ARGS="-scenarios small -reps 1".
bench-peer:
	scripts/clientapi-bench.sh $(ARGS)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

clean:
	rm -rf bin
