#!/usr/bin/env bash
# clientapi-bench.sh runs ../shared/bench/clientapi-bench (the harness that
# measured Nomad v1.6.5, see ../shared/bench/PEER.md) against Tether: one
# server process and one node process on loopback, the peer workload
# (peer-job.json) registered as `nomad job run` sends it.
#
#   scripts/clientapi-bench.sh [harness flags...]
#   e.g. scripts/clientapi-bench.sh -scenarios small -reps 1
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

go build -o "$work/tether" ./cmd/tether
(cd "$bench_dir/clientapi-bench" && go build -o "$work/clientapi-bench" .)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
sh=$(free_port); sr=$(free_port); ss=$(free_port); ch=$(free_port); cr=$(free_port); cs=$(free_port)

cat > "$work/server.hcl" <<HCL
data_dir  = "$work/server"
bind_addr = "127.0.0.1"
log_level = "WARN"
ports { http = $sh  rpc = $sr  serf = $ss }
server { enabled = true  bootstrap_expect = 1 }
HCL
cat > "$work/client.hcl" <<HCL
data_dir  = "$work/client"
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

setsid "$work/tether" agent -config "$work/server.hcl" >"$work/server.log" 2>&1 & pids+=($!)
server_pid=$!
server="http://127.0.0.1:$sh"
for _ in $(seq 1 100); do curl -sf "$server/v1/status/leader" >/dev/null && break; sleep 0.1; done
setsid "$work/tether" agent -config "$work/client.hcl" >"$work/client.log" 2>&1 & pids+=($!)
client_pid=$!

node=""
for _ in $(seq 1 100); do
  node=$(curl -sf "$server/v1/nodes" | python3 -c 'import json,sys; n=[x for x in json.load(sys.stdin) if x["Status"]=="ready"]; print(n[0]["ID"] if n else "")' || true)
  [ -n "$node" ] && break; sleep 0.1
done
[ -n "$node" ] || { echo "node did not register" >&2; cat "$work/client.log" >&2; exit 1; }

curl -sf -XPOST --data @"$bench_dir/peer-job.json" "$server/v1/jobs" >/dev/null
alloc=""
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

echo "server pid $server_pid, client pid $client_pid, node $node, alloc $alloc" >&2
"$work/clientapi-bench" -server "$server" -direct "http://127.0.0.1:$ch" -node "$node" -alloc "$alloc" \
  -task writer -follow-task ticker -pids "server=$server_pid,client=$client_pid" "$@"
