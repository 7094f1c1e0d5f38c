#!/usr/bin/env bash
# Runs the benchmarks quoted in docs/benchmarks.md. Needs root (netns, BIRD).
# COIL_BENCH_1M=1 (the default here) uses the full 1M-event sizes; set it to 0 for a quick pass.
set -euo pipefail
cd "$(dirname "$0")/.."
export COIL_BENCH_1M=${COIL_BENCH_1M:-1}
out=bench/results
mkdir -p "$out"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
{
	echo "# $(date -u) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), kernel $(uname -r)"
	echo "## load: $(cut -d' ' -f1-3 /proc/loadavg)"
	go test ./events -run '^$' -bench 'Append|Decode|BytesPerEvent|Read' -benchtime 1x -count 1 -timeout 60m
	go test ./allocator -run '^$' -bench 'Allocate' -benchtime 60000x -count 3 -timeout 30m
	go test ./allocator -run '^$' -bench 'BlockAcquire3Nodes' -benchtime 3000x -count 3 -timeout 30m
	go test ./readside -run '^$' -bench 'Replay' -benchtime 3x -count 1 -timeout 60m
	go test ./netplumb -run '^$' -bench . -benchtime 60x -count 1
	go test ./daemon -run '^$' -bench 'BenchmarkAdd' -benchtime 100x -count 3
	go test ./logio -run '^$' -bench LogIO -benchtime 1x -count 1 -timeout 60m
	go test ./internal/cli -run '^$' -bench 'Benchmark(History|Events)$' -benchtime 3x -count 1 -timeout 60m
	go test ./lab -run '^$' -bench . -benchtime 20x -count 1
} 2>&1 | tee "$out/go-$stamp.txt"
go run ./bench/cni 2>&1 | tee "$out/cni-$stamp.txt"
go run ./bench/e2e 2>&1 | tee "$out/e2e-$stamp.txt"
go run ./bench/kube 2>&1 | tee "$out/kube-$stamp.txt"
echo "results in $out/*-$stamp.txt"
