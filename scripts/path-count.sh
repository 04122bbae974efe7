#!/usr/bin/env bash
# path-count.sh counts the functions and files of Tether on the path of
# one forwarded stats call and of one cat through a peer server
# (integration/TestPathCount), for docs/design.md.
#
#   scripts/path-count.sh [-v]
#
# It runs the test three times under a coverage build (N stats calls, N
# cats, then no calls for longer than either took) and counts the
# functions with a statement block run at least 0.9 N more times than
# without the calls: background work (heartbeats, stats sampling) runs at
# least as often in the idle run, a call's path N times more. -v lists
# the functions.
set -euo pipefail
cd "$(dirname "$0")/.."
calls=${TETHER_PATH_CALLS:-200}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
idle=0
for which in stats cat none; do
  TETHER_PATH_COUNT=$which TETHER_PATH_CALLS=$calls TETHER_PATH_IDLE="${idle}ms" go test -count=1 -v -run '^TestPathCount$' \
    -covermode=count -coverpkg=tether/... -coverprofile="$work/$which.out" ./integration/ >"$work/$which.log" 2>&1 ||
    { cat "$work/$which.log" >&2; exit 1; }
  took=$(sed -n 's/^path-count elapsed \(.*\)$/\1/p' "$work/$which.log" | python3 -c 'import sys,re
t=sys.stdin.read().strip()
m=re.fullmatch(r"([\d.]+)(ms|s)", t)
print(int(float(m[1])*(1 if m[2]=="ms" else 1000)) if m else 0)')
  if [ "$took" -ge "$idle" ]; then idle=$((took + 1000)); fi
done
for which in stats cat; do
  python3 - "$work/none.out" "$work/$which.out" "$calls" "$work/$which.delta" <<'PY'
import sys
def load(p):
    m = {}
    for line in open(p):
        if line.startswith("mode:"):
            continue
        block, n = line.rsplit(" ", 1)
        m[block] = m.get(block, 0) + int(n)
    return m
base, run, calls = load(sys.argv[1]), load(sys.argv[2]), int(sys.argv[3])
with open(sys.argv[4], "w") as out:
    out.write("mode: set\n")
    for block, n in run.items():
        out.write(f"{block} {1 if n - base.get(block, 0) >= 0.9 * calls else 0}\n")
PY
  go tool cover -func="$work/$which.delta" | awk '$1 != "total:" && $3 != "0.0%" {print $1 " " $2}' |
    sed 's/:[0-9]*:\? / /' | sort -u >"$work/$which.funcs"
  nf=$(wc -l <"$work/$which.funcs")
  nfiles=$(awk '{print $1}' "$work/$which.funcs" | sort -u | wc -l)
  echo "$which through a peer server: $nf functions in $nfiles files"
  if [ "${1:-}" = "-v" ]; then sed 's/^/  /' "$work/$which.funcs"; fi
done
