#!/bin/sh
# fuzz.sh runs every fuzz target of the module for FUZZTIME (default 30s)
# each, one after another (go test -fuzz takes one target per run), and
# prints a line per target: its package, its execs and its result. It
# fails when a target found an input that fails it; go test wrote that
# input to the package's testdata/fuzz/<target>/, where it stays as a seed.
#
# Go up to 1.26 sometimes ends a run at the fuzztime boundary with
# "context deadline exceeded" and no failing input (golang/go#75804); such a
# run is reported as "ok (toolchain deadline race)", not as a finding.
#
#   FUZZTIME=60s scripts/fuzz.sh          every target, a minute each
#   FUZZ='FuzzRPCPort' scripts/fuzz.sh    the targets matching a pattern
set -eu

GO=${GO:-go}
FUZZTIME=${FUZZTIME:-30s}
FUZZ=${FUZZ:-.}
FUZZFLAGS=${FUZZFLAGS:-}

# go test -list prints a package's targets, then "ok <package>".
targets=$($GO test -list '^Fuzz' ./... | awk '
	/^Fuzz/ { names = names " " $1 }
	/^ok/   { n = split(names, a, " "); for (i = 1; i <= n; i++) print $2, a[i]; names = "" }')

log=$(mktemp)
trap 'rm -f "$log"' EXIT
printf '%-28s %-32s %12s  %s\n' package target execs result
echo "$targets" | while read -r pkg target; do
	[ -n "$target" ] || continue
	echo "$target" | grep -Eq -- "$FUZZ" || continue
	status=0
	# shellcheck disable=SC2086
	$GO test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" $FUZZFLAGS "$pkg" >"$log" 2>&1 || status=$?
	execs=$(grep -o 'execs: [0-9]*' "$log" | tail -1 | awk '{print $2}')
	if [ "$status" -eq 0 ]; then
		result=ok
	elif grep -q 'Failing input written' "$log"; then
		result="FAILED: $(grep -o 'testdata/fuzz/[^ ]*' "$log" | head -1)"
	elif grep -q 'context deadline exceeded' "$log" && ! grep -q -- '--- FAIL: .*/' "$log"; then
		result="ok (toolchain deadline race)"
	else
		result=FAILED
	fi
	printf '%-28s %-32s %12s  %s\n' "${pkg#tether/}" "$target" "${execs:-0}" "$result"
	case $result in FAILED*) cat "$log"; echo failed >>"$log.found" ;; esac
done
if [ -e "$log.found" ]; then
	rm -f "$log.found"
	exit 1
fi
