#!/usr/bin/env bash
# clientapi-bench.sh runs ../shared/bench/clientapi-bench (the harness that
# measured Nomad v1.6.5, see ../shared/bench/PEER.md) against Tether: one
# server process and one node process on loopback, the peer workload
# (peer-job.json) registered as `nomad job run` sends it.
#
#   scripts/clientapi-bench.sh [harness flags...]
#   e.g. scripts/clientapi-bench.sh -scenarios small -reps 1
#
# A/B: with TETHER_AB_BIN=/path/to/other/tether (and optionally
# TETHER_AB_RUNS, default 5) two such clusters run side by side, one on
# this tree's binary (B) and one on the other (A), and the harness
# alternates between them, A then B, TETHER_AB_RUNS times; each run's
# table is labelled with its side. A cluster is idle while the other is
# measured. TETHER_BIN uses a prebuilt binary instead of building this
# tree.
#
# Every loop of the harness is bounded and loopback only. Processes are
# stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
bench_dir="${BENCH_DIR:-$root/../shared/bench}"
[ -d "$bench_dir/clientapi-bench" ] || { echo "harness not found in $bench_dir" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() {
  # A graceful stop: the node agent stops its tasks before it exits.
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 1 150); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 -- "-$p" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

if [ -n "${TETHER_BIN:-}" ]; then
  cp "$TETHER_BIN" "$work/tether"
else
  go build -o "$work/tether" ./cmd/tether
fi
(cd "$bench_dir/clientapi-bench" && go build -o "$work/clientapi-bench" .)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

# start_cluster NAME BIN starts a server and a node on BIN in $work/NAME,
# runs the peer workload, and sets harness_args_NAME.
start_cluster() {
  local name=$1 bin=$2 dir="$work/$1"
  mkdir -p "$dir"
  local sh sr ss ch cr cs
  sh=$(free_port); sr=$(free_port); ss=$(free_port); ch=$(free_port); cr=$(free_port); cs=$(free_port)
  cat > "$dir/server.hcl" <<HCL
data_dir  = "$dir/server"
bind_addr = "127.0.0.1"
log_level = "WARN"
ports { http = $sh  rpc = $sr  serf = $ss }
server { enabled = true  bootstrap_expect = 1 }
HCL
  cat > "$dir/client.hcl" <<HCL
data_dir  = "$dir/client"
bind_addr = "127.0.0.1"
log_level = "WARN"
ports { http = $ch  rpc = $cr  serf = $cs }
client {
  enabled = true
  servers = ["127.0.0.1:$sr"]
  meta { rack = "r1"  "bench.owner" = "tether" }
}
plugin "raw_exec" { config { enabled = true } }
HCL
  setsid "$bin" agent -config "$dir/server.hcl" >"$dir/server.log" 2>&1 & pids+=($!)
  local server_pid=$!
  local server="http://127.0.0.1:$sh"
  for _ in $(seq 1 100); do curl -sf "$server/v1/status/leader" >/dev/null && break; sleep 0.1; done
  setsid "$bin" agent -config "$dir/client.hcl" >"$dir/client.log" 2>&1 & pids+=($!)
  local client_pid=$!

  local node=""
  for _ in $(seq 1 100); do
    node=$(curl -sf "$server/v1/nodes" | python3 -c 'import json,sys; n=[x for x in json.load(sys.stdin) if x["Status"]=="ready"]; print(n[0]["ID"] if n else "")' || true)
    [ -n "$node" ] && break; sleep 0.1
  done
  [ -n "$node" ] || { echo "node did not register" >&2; cat "$dir/client.log" >&2; exit 1; }

  curl -sf -XPOST --data @"$bench_dir/peer-job.json" "$server/v1/jobs" >/dev/null
  local alloc=""
  for _ in $(seq 1 300); do
    alloc=$(curl -sf "$server/v1/job/clientapi-bench/allocations" | python3 -c 'import json,sys; a=[x for x in json.load(sys.stdin) if x["ClientStatus"]=="running"]; print(a[0]["ID"] if a else "")' || true)
    [ -n "$alloc" ] && break; sleep 0.2
  done
  [ -n "$alloc" ] || { echo "allocation did not start" >&2; exit 1; }
  # Wait for the writer to finish its 256 MiB file and 90 MB of logs.
  for _ in $(seq 1 600); do
    curl -sf "$server/v1/client/fs/logs/$alloc?task=writer&type=stderr&plain=true" | grep -q "writer: done" && break
    sleep 0.5
  done
  echo "$name: server pid $server_pid, client pid $client_pid, node $node, alloc $alloc" >&2
  eval "harness_args_$name=(-server \"$server\" -direct \"http://127.0.0.1:$ch\" -node \"$node\" -alloc \"$alloc\" -task writer -follow-task ticker -pids \"server=$server_pid,client=$client_pid\")"
}

if [ -z "${TETHER_AB_BIN:-}" ]; then
  start_cluster b "$work/tether"
  "$work/clientapi-bench" "${harness_args_b[@]}" "$@"
  exit 0
fi

cp "$TETHER_AB_BIN" "$work/tether-a"
start_cluster a "$work/tether-a"
start_cluster b "$work/tether"
for i in $(seq 1 "${TETHER_AB_RUNS:-5}"); do
  for side in a b; do
    echo "=== run $i side $side ($([ $side = a ] && echo "$TETHER_AB_BIN" || echo "this tree"))"
    eval "args=(\"\${harness_args_$side[@]}\")"
    "$work/clientapi-bench" "${args[@]}" "$@"
  done
done
