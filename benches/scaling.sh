#!/usr/bin/env bash
# Scaling table of PERF.md: `metalcu bench` with aos1 for N processes × 5 messages on 1 and 2
# workers, one JSON report per run in target/perf/scaling/, then the plot (benches/plot.py).
# Needs ../shared (or $METALCU_SHARED) and a release build. Bounded: each run stops by itself
# (--max-seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
shared="${METALCU_SHARED:-../shared}"
module="$shared/fixtures/modules/aos1-emscripten2.wasm"
out=target/perf/scaling
mkdir -p "$out"
for n in ${SCALING_PROCESSES:-1 100 1000}; do  # the 10,000 row: SCALING_PROCESSES=10000 with --messages 1 (PERF.md)
  for w in 1 2; do
    echo "== $n processes, $w worker(s)"
    ./target/release/metalcu bench --module "$module" --format wasm32-unknown-emscripten2 \
      --processes "$n" --messages 5 --steady-messages 20 --dry-runs 5 --read-seconds 1 \
      --workers "$w" --max-seconds 600 --json "$out/p$n-w$w.json" > "$out/p$n-w$w.txt" 2>&1 || true
    grep -E '^\s+(cold|memory)' "$out/p$n-w$w.txt" || tail -3 "$out/p$n-w$w.txt"
  done
done
python3 benches/plot.py "$out" target/perf/scaling.svg
