#!/usr/bin/env bash
# Flame graphs of the hottest path (PERF.md, "Profile of the hottest path"): steady-state
# evaluation of messages on one aos1 process, then on one aos2 process.
#
# For each module it starts `metalcu dev --module M` (fresh data directory under target/flame/),
# warms it with `metalcu bench` (compile + WARM messages, not profiled), then samples the dev
# server with `perf record` (cpu-clock, DWARF call graphs, user and kernel) while a second
# `metalcu bench` run drives the steady phase: post one message, read its /result, repeat.
# The samples are folded with inferno and rendered as benches/results/flame-<module>.svg; the
# raw data, `perf report` summaries and the category table (benches/flame_table.py) stay in
# target/flame/<module>/.
#
# The release profile already carries line tables (Cargo.toml), so the normal release build is
# profiled as it is: no separate target directory. wasm code is JIT code without a perf map
# (wasmtime's `profiling` feature is off): it shows as one frame, "[wasm code]", and DWARF
# unwinding stops there, so a host function called from wasm shows without its wasm callers.
#
# Needs ../shared (or $METALCU_SHARED), perf, and permission to sample (root, or
# kernel.perf_event_paranoid <= 1 for kernel frames). Installs inferno into target/flame/tools if
# it is not on PATH. Bounded: each bench run stops by itself (--max-seconds), perf stops with it
# (and under `timeout`), the dev server gets SIGINT and then SIGKILL.
#
# Knobs (environment): FLAME_MODULES ("aos1 aos2"), FLAME_WARM (messages before profiling, 200),
# FLAME_STEADY (profiled messages, 2000), FLAME_SECONDS (bound of the steady phase, 60),
# FLAME_FREQ (samples/s, 499), FLAME_STACK (bytes of stack copied per sample, 32768),
# FLAME_WORKERS (workers of the dev server, 0 = one per CPU), FLAME_KEEP_DATA (1: keep perf.data).
set -euo pipefail
cd "$(dirname "$0")/.."
shared="${METALCU_SHARED:-../shared}"
out=target/flame
results=benches/results
warm="${FLAME_WARM:-200}"
steady="${FLAME_STEADY:-2000}"
seconds="${FLAME_SECONDS:-60}"
freq="${FLAME_FREQ:-499}"
stack="${FLAME_STACK:-32768}"
workers="${FLAME_WORKERS:-0}"
# perf and the dev server get this long beyond the bench's own bound before they are stopped.
grace=30

[ -d "$shared/fixtures/modules" ] || { echo "flame.sh: shared test data not found at $shared (set METALCU_SHARED)" >&2; exit 2; }
command -v perf > /dev/null || { echo "flame.sh: perf not found" >&2; exit 2; }
mkdir -p "$out" "$results"
# Kernel frames need root or perf_event_paranoid <= 1; otherwise sample user space only.
event=cpu-clock
if [ "$(id -u)" != 0 ] && [ "$(cat /proc/sys/kernel/perf_event_paranoid)" -gt 1 ]; then
  event=cpu-clock:u
  echo "flame.sh: kernel.perf_event_paranoid > 1 and not root: user-space samples only" >&2
fi

# inferno: on PATH, or installed once under target/flame/tools (not ~/.cargo).
if ! command -v inferno-flamegraph > /dev/null; then
  if [ ! -x "$out/tools/bin/inferno-flamegraph" ]; then
    echo "== installing inferno into $out/tools"
    cargo install inferno --locked --root "$out/tools"
  fi
  PATH="$PWD/$out/tools/bin:$PATH"
fi

echo "== cargo build --release --bin metalcu"
cargo build --release --locked --bin metalcu
bin=./target/release/metalcu

dev_pid=""
perf_pid=""
cleanup() {
  if [ -n "$perf_pid" ] && kill -0 "$perf_pid" 2> /dev/null; then kill -INT "$perf_pid" 2> /dev/null || true; wait "$perf_pid" 2> /dev/null || true; fi
  if [ -n "$dev_pid" ] && kill -0 "$dev_pid" 2> /dev/null; then
    kill -INT "$dev_pid" 2> /dev/null || true
    for _ in $(seq 1 100); do kill -0 "$dev_pid" 2> /dev/null || break; sleep 0.2; done
    kill -KILL "$dev_pid" 2> /dev/null || true
    wait "$dev_pid" 2> /dev/null || true
  fi
  dev_pid=""
  perf_pid=""
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

# utime + stime of a process, in clock ticks ("user system").
cpu_ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }

profile() {
  local name=$1 module=$2 format=$3
  local dir=$out/$name
  rm -rf "$dir"
  mkdir -p "$dir"
  echo "== $name: metalcu dev --module $module"
  "$bin" dev --port 0 --su-port 0 --data-dir "$dir/data" --module "$module" --format "$format" \
    --workers "$workers" > "$dir/dev.out" 2> "$dir/dev.log" &
  dev_pid=$!
  for _ in $(seq 1 300); do
    grep -qs '^process ' "$dir/dev.out" && break
    kill -0 "$dev_pid" 2> /dev/null || { echo "flame.sh: metalcu dev exited; log: $dir/dev.log" >&2; exit 1; }
    sleep 0.2
  done
  local cu su process
  cu=$(sed -n 's/^metalcu dev: CU \(http:[^ ]*\).*/\1/p' "$dir/dev.out")
  su=$(sed -n 's/.* scheduler \(http:[^ ]*\).*/\1/p' "$dir/dev.out" | head -1)
  process=$(awk '/^process /{print $2; exit}' "$dir/dev.out")
  [ -n "$cu" ] && [ -n "$su" ] && [ -n "$process" ] || { echo "flame.sh: metalcu dev did not say where it listens ($dir/dev.out)" >&2; exit 1; }
  local target=(--cu-url "$cu" --su-url "$su" --process "$process" --server-pid "$dev_pid"
    --dry-runs 0 --read-seconds 0.1 --concurrency 1)

  echo "== $name: warm-up, $warm messages (compile + cold evaluation; not profiled)"
  "$bin" bench "${target[@]}" --messages "$warm" --steady-messages 0 --max-seconds 600 > "$dir/warm.txt" 2>&1
  grep -E '^\s+cold' "$dir/warm.txt" || true

  echo "== $name: profiling the steady phase, $steady messages (at most ${seconds} s), perf -F $freq"
  local before load0 t0
  before=$(cpu_ticks "$dev_pid")
  load0=$(cut -d' ' -f1-3 /proc/loadavg)
  t0=$(date +%s.%N)
  timeout -s INT $((seconds + grace)) perf record -e "$event" -F "$freq" --call-graph "dwarf,$stack" \
    -p "$dev_pid" -o "$dir/perf.data" > "$dir/perf-record.log" 2>&1 &
  perf_pid=$!
  sleep 1 # perf attaches to every thread of the server
  "$bin" bench "${target[@]}" --messages 1 --steady-messages "$steady" --steady-seconds "$seconds" \
    --max-seconds $((seconds + grace)) --json "$dir/steady.json" > "$dir/steady.txt" 2>&1
  kill -INT "$perf_pid" 2> /dev/null || true
  wait "$perf_pid" 2> /dev/null || true
  perf_pid=""
  local after load1 t1
  after=$(cpu_ticks "$dev_pid")
  load1=$(cut -d' ' -f1-3 /proc/loadavg)
  t1=$(date +%s.%N)
  grep -E '^\s+(steady|round trip)' "$dir/steady.txt" || true
  cleanup

  local hz
  hz=$(getconf CLK_TCK)
  {
    echo "module: $name ($module, $format)"
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "machine: nproc $(nproc), $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//; s/  */ /g')"
    echo "load average (1 5 15 min): $load0 at the start, $load1 at the end"
    echo "profiled window: $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}') s"
    echo "$before $after" | awk -v hz="$hz" '{printf "server CPU in the window: user %.2f s, system %.2f s\n", ($3-$1)/hz, ($4-$2)/hz}'
    echo "perf: $event, -F $freq, --call-graph dwarf,$stack, -p <metalcu dev pid>"
    tail -1 "$dir/perf-record.log"
  } > "$dir/run.txt"

  echo "== $name: folding and rendering"
  # Samples in wasmtime's JIT code have no symbol: name them once, so they fold into one frame.
  perf script -i "$dir/perf.data" --no-inline 2> /dev/null |
    sed -E 's#\[unknown\] \((/tmp/perf-[0-9]+\.map|//anon)\)#[wasm code] (jit)#' > "$dir/perf.script"
  inferno-collapse-perf --all "$dir/perf.script" > "$dir/folded.txt"
  local steady_line
  steady_line=$(grep -m1 -E '^\s+steady' "$dir/steady.txt" | sed 's/^ *//; s/  */ /g')
  inferno-flamegraph --title "metalcu dev, $name: steady phase (post + /result), perf $event" \
    --subtitle "$steady_line; $(date -u '+%Y-%m-%d') nproc $(nproc) load $load0; [wasm code] = JIT code, unwinding stops there" \
    --minwidth 0.1 --width 1600 --countname ns < "$dir/folded.txt" > "$results/flame-$name.svg"
  perf report -i "$dir/perf.data" --no-inline --no-children --stdio -g none --sort dso 2> /dev/null > "$dir/report-dso.txt"
  perf report -i "$dir/perf.data" --no-inline --no-children --stdio -g none --sort sym 2> /dev/null > "$dir/report-self.txt"
  perf report -i "$dir/perf.data" --no-inline --children --stdio -g none --sort sym 2> /dev/null > "$dir/report-children.txt"
  python3 benches/flame_table.py "$dir/folded.txt" > "$dir/table.md"
  rm -f "$dir/perf.script"
  [ "${FLAME_KEEP_DATA:-0}" = 1 ] || rm -f "$dir/perf.data" # 100-300 MB each; the folded stacks stay
  echo "   $(du -h "$results/flame-$name.svg" | cut -f1) $results/flame-$name.svg; run: $dir/run.txt; table: $dir/table.md"
}

for name in ${FLAME_MODULES:-aos1 aos2}; do
  case $name in
    aos1) profile aos1 "$shared/fixtures/modules/aos1-emscripten2.wasm" wasm32-unknown-emscripten2 ;;
    aos2) profile aos2 "$shared/fixtures/modules/aos2-emscripten4.wasm" wasm32-unknown-emscripten4 ;;
    *) echo "flame.sh: unknown module $name (aos1, aos2)" >&2; exit 2 ;;
  esac
done
echo "== flame graphs:"
ls -l "$results"/flame-*.svg
