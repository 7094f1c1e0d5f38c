#!/usr/bin/env bash
# Runs every fuzz target of the module (func FuzzXxx(f *testing.F) in a *_test.go file)
# for FUZZTIME each (default 60s), one after the other. `make fuzz` runs it; .ci/run runs
# `make fuzz FUZZTIME=2s`. docs/security.md describes it.
#
# Each package's test binary is built once with fuzzing instrumentation (go test -c
# -fuzz), then run once per target from the package's directory, so a failing input is
# written to PKG/testdata/fuzz/FuzzXxx/ (commit it: it becomes a regression test that
# every `go test` runs) and the interesting inputs found so far are kept in Go's fuzz
# cache. It fails if any target fails, or if it finds no target at all (a fuzz step
# that silently does nothing must not look like a pass).
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZTIME=${FUZZTIME:-60s}
GO=${GO:-go}
module=$($GO list -m)
cache=$($GO env GOCACHE)/fuzz
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Directories holding fuzz targets, and their targets.
mapfile -t dirs < <(grep -rlE --include='*_test.go' --exclude-dir=.tools --exclude-dir=.git \
	'^func Fuzz[A-Za-z0-9_]*\(f \*testing\.F\)' . | xargs -n1 dirname | sort -u)
if [ "${#dirs[@]}" -eq 0 ]; then
	echo "fuzz: no fuzz targets found" >&2
	exit 1
fi

start=$(date +%s)
targets=0
failed=()
for dir in "${dirs[@]}"; do
	dir=${dir#./}
	bin="$tmp/$(echo "$dir" | tr / _).test"
	if ! $GO test -c -fuzz=. -o "$bin" "./$dir"; then
		failed+=("$dir (build)")
		continue
	fi
	mapfile -t names < <(grep -ohE '^func Fuzz[A-Za-z0-9_]*\(f \*testing\.F\)' "$dir"/*_test.go |
		sed -E 's/^func (Fuzz[A-Za-z0-9_]*)\(.*/\1/' | sort)
	for name in "${names[@]}"; do
		targets=$((targets + 1))
		echo "fuzz: $dir $name ($FUZZTIME)"
		if ! (cd "$dir" && "$bin" -test.run='^$' -test.fuzz="^$name\$" -test.fuzztime="$FUZZTIME" \
			-test.fuzzcachedir="$cache/$module/$dir" >"$tmp/out" 2>&1); then
			cat "$tmp/out"
			failed+=("$dir $name")
			echo "fuzz: $dir $name FAILED: the failing input is in $dir/testdata/fuzz/$name/; fix the cause and commit the input as a regression test" >&2
		else
			grep '^fuzz: elapsed' "$tmp/out" | tail -n 1 | sed 's/^/  /' || true
		fi
	done
done
secs=$(($(date +%s) - start))
if [ "${#failed[@]}" -gt 0 ]; then
	echo "fuzz: ${#failed[@]} of $targets targets FAILED (${secs}s): ${failed[*]}" >&2
	exit 1
fi
echo "fuzz: $targets targets in ${#dirs[@]} packages passed, $FUZZTIME each (${secs}s)"
