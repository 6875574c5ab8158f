#!/usr/bin/env bash
# Runs the reference host's engine figures and metalcu's criterion benches back to back, on the
# same machine, so PERF.md's ratios compare like with like. Output: target/perf/engine-*.txt.
# Needs ../shared (or $METALCU_SHARED), Node >= 20 and the npm registry (for ao-loader 0.0.49).
set -euo pipefail
cd "$(dirname "$0")/.."
shared="${METALCU_SHARED:-$(cd .. && pwd)/shared}"
out=target/perf; mkdir -p "$out"
ref="$out/ao-loader"
if [ ! -d "$ref/node_modules/@permaweb/ao-loader" ]; then
  mkdir -p "$ref" && (cd "$ref" && npm init -y >/dev/null && npm install --no-audit --no-fund @permaweb/ao-loader@0.0.49 >/dev/null)
fi
{ date -u; uname -srm; nproc; grep -m1 'model name' /proc/cpuinfo || true; node --version; } > "$out/engine-machine.txt"
echo "== reference host (ao-loader 0.0.49)"
NODE_PATH="$ref/node_modules" node --experimental-wasm-memory64 benches/reference/engine-ref.cjs "$shared" 20 | tee "$out/engine-reference.txt"
echo "== metalcu (criterion)"
METALCU_SHARED="$shared" cargo bench --bench engine -- --noplot 2>&1 | grep -E '^[a-z].*time:|^[a-z][^ ]*/[^:]*$|time:' | tee "$out/engine-metalcu.txt"
