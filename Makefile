# Tether: Nomad's client HTTP API as a forwarding proxy plus node agents.

GO      ?= go
BIN     ?= bin/tether
PKGS    ?= ./...
TIMEOUT ?= 30m

.PHONY: all build test run fuzz soak bench bench-peer bench-fleet bench-metrics bench-joblogs bench-exec lint clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/tether

# test runs everything CI runs: formatting, vet, and every test with the
# race detector (integration tests build and run the real binary too).
test: lint
	$(GO) test -race -count=1 -timeout $(TIMEOUT) $(PKGS)

# fuzz runs every go test -fuzz target for FUZZTIME each (default 30s),
# one after another, and prints each one's execs; make test runs their
# seeds. FUZZ narrows the targets (a regexp), e.g.
#   make fuzz FUZZTIME=60s FUZZ='FuzzRPCPort|FuzzHTTPAPI'
FUZZTIME ?= 30s
FUZZ     ?= .
fuzz:
	GO=$(GO) FUZZTIME=$(FUZZTIME) FUZZ='$(FUZZ)' scripts/fuzz.sh

# run starts a dev agent: a server and a node in one process on 127.0.0.1:4646.
run: build
	./$(BIN) agent -dev

# bench prints, from one run: the package micro-benchmarks (rpc calls and
# streams, host and task stats sampling, file reads); small calls direct
# and via a server (p50/p99, req/s, ratio, CPU per call); per-task agent
# cost; log streams against disk and RSS of 100 follow streams; cluster
# hops, raft write rate and node failover time; TLS beside plaintext; and,
# when ../shared/bench is beside the checkout, the shared clientapi-bench
# harness with the peer workload (bulk reads and follow latency).
bench: build
	$(GO) test -run '^$$' -bench . -benchtime 1s ./rpc/ ./client/ ./structs/
	$(GO) test -run '^TestBench(Forwarding|Tasks|Streams|Cluster|TLS)$$' -count=1 -v -timeout 20m ./integration/ \
		-args -bench-forwarding -bench-tasks -bench-streams -bench-cluster -bench-tls
	@if [ -d ../shared/bench/clientapi-bench ]; then \
		scripts/clientapi-bench.sh -scenarios all -reps 1 -big-n 2 -readat-n 200 -n 1000; \
	else echo "../shared/bench not found: skipping clientapi-bench"; fi

# bench-metrics prints what telemetry costs a forwarded GET /v1/client/stats:
# one in-process cluster with telemetry off and one with everything on, called
# in turn in one run; on/off is the throughput ratio (target >= 0.98).
bench-metrics:
	$(GO) test -run '^$$' -bench '^BenchmarkMetrics_ForwardedStats$$' -benchtime 20000x -count 3 ./integration/

# bench-joblogs prints the line latency of a job-wide log follow through a
# server: 50 allocations writing 20 timestamped lines a second each, p50,
# p99 (target <= 50 ms) and the worst, three runs of 10 s.
bench-joblogs:
	$(GO) test -run '^$$' -bench '^BenchmarkJobLogs_Follow50$$' -benchtime 1x -count 3 -timeout 10m ./integration/ -args -bench-joblogs

# bench-exec prints exec's round trip (one byte through cat) on the node,
# through a server and through a peer, p50/p99 side by side (target
# through a server <= 2 ms p99), and 100 MB of output through a server
# (target >= 100 MB/s), from one in-process cluster.
bench-exec:
	$(GO) test -run '^$$' -bench '^BenchmarkExec$$/roundtrip' -benchtime 2000x -count 1 -timeout 10m ./integration/
	$(GO) test -run '^$$' -bench '^BenchmarkExec$$/cat100MB' -benchtime 3x -count 1 -timeout 10m ./integration/

# bench-peer drives ../shared/bench/clientapi-bench (the harness that
# measured Nomad v1.6.5) against a Tether server and node with the peer
# workload. ARGS passes harness flags, e.g. ARGS="-scenarios small -reps 1".
bench-peer:
	scripts/clientapi-bench.sh $(ARGS)

# bench-fleet prints the fleet-scale table (README "Fleet scale"): three
# server processes with ACLs and mutual TLS, a tether fleet of simulated
# nodes, at each size of FLEET_NODES. Not part of make test. A quick run:
#   make bench-fleet FLEET_NODES=1000 FLEET_ARGS="-bench-fleet-settle=30s"
FLEET_NODES ?= 1000,5000,10000
FLEET_ARGS  ?=
bench-fleet:
	$(GO) test -run '^TestBenchFleet$$' -count=1 -v -timeout 120m ./integration/ \
		-args -bench-fleet -bench-fleet-nodes=$(FLEET_NODES) $(FLEET_ARGS)

# soak runs three server processes and three node agents with mutual TLS
# and ACLs under a mixed load for SOAK (default 30m): small calls, 100
# follows, bulk reads, metadata writes; a node and a server restarted
# every SOAK/6. It prints a verdict and a table: each process's RSS,
# goroutines and fds after warm-up and at the end (within 10 %), calls
# made and failed, follow lines in order. Not part of make test.
SOAK ?= 30m
soak:
	$(GO) test -run '^TestSoak$$' -count=1 -v -timeout 3h ./integration/ -args -soak=$(SOAK)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

clean:
	rm -rf bin
