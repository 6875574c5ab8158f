#!/usr/bin/env python3
"""Where the time goes, from folded stacks (inferno-collapse-perf output, root first).

Usage: flame_table.py FOLDED [TOP]

Counts are perf's sample periods (ns of CPU for cpu-clock), so shares are shares of sampled CPU.
Prints Markdown: the share of stacks unwound to their thread's start, samples per thread, a table of categories (wasm code, state hash, redb,
JSON, HTTP, ...) and the top frames by inclusive and by self share. Each sample counts once per
category or frame however often it matches in its stack. "inclusive" = the stack holds a
matching frame anywhere; "attributed" = the sample goes to the first category in CATEGORIES
order that matches (so those shares are disjoint and sum to 100 %).

Used by benches/flame.sh; the figures in PERF.md's "Profile of the hottest path" come from it.
"""

import re
import sys
from collections import Counter

# (name, pattern on a frame). Order = attribution priority: the specific subsystems first, the
# generic layers (allocator, async runtime, kernel) last, so that e.g. a memmove inside a redb
# commit counts as redb and an allocation inside serde_json as JSON.
CATEGORIES = [
    ("wasm code (JIT, the module itself)", r"^\[wasm code\]"),
    ("state hash (blake3 of dirty chunks)", r"blake3|StateHasher|engine::dirty"),
    ("checkpoint files", r"metalcu::checkpoint"),
    ("memory images (rollback copy, fork, restore)", r"memory_image|restore_known|instantiate_image|rollback"),
    ("embedded scheduler (dev only: post, pages, its redb log)", r"^<?metalcu::su::local"),
    ("SU pages to messages (CU side: parse, map, verify)", r"^<?metalcu::su::(?!local)"),
    ("redb (results store: commit + fsync)", r"redb::"),
    ("host imports (called from wasm)", r"metalcu::engine::host"),
    ("JSON (serde, msg/env in, result out)", r"serde_json|serde::|serde_core::|jsjson"),
    ("HTTP (hyper, routes)", r"hyper::|metalcu::http::|h1::"),
    ("wasmtime runtime (entry, stores, instances)", r"wasmtime"),
    ("resident-memory count (mincore)", r"engine::resident"),
    ("evaluator (other)", r"metalcu::process::|metalcu::engine::"),
    ("allocator (mimalloc, elsewhere)", r"^_?mi_|mimalloc"),
    ("async runtime, channels, wake-ups", r"tokio::|crossbeam|futex|parking_lot|std::sync"),
    ("kernel (other: syscalls, scheduler, page faults)", r"_\[k\]$"),
]


def parse(path):
    stacks = []
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            stack, _, count = line.rpartition(" ")
            frames = stack.split(";")
            stacks.append((frames, int(count)))
    return stacks


# Thread start-up and async-runtime plumbing: on nearly every stack, so left out of the top lists.
PLUMBING = re.compile(
    r"^(clone3|start_thread|_start|main|__libc_start)|thread_start|call_once|__rust_begin_short_backtrace"
    r"|^tokio::runtime::(task|scheduler|context|blocking|park|driver)|^<tokio::runtime::blocking"
    r"|^std::panicking|^std::panic|^std::rt::|catch_unwind|^\[unknown\]$"
)
# Roots that show a stack unwound all the way to its thread's start.
COMPLETE_ROOT = re.compile(r"^(clone3|_start|__libc_start)")


def pct(n, total):
    return f"{100.0 * n / total:.1f} %"


def main():
    path = sys.argv[1]
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 15
    stacks = parse(path)
    total = sum(c for _, c in stacks)
    if total == 0:
        print("no samples")
        return
    compiled = [(name, re.compile(p)) for name, p in CATEGORIES]

    threads = Counter()
    inclusive = Counter()
    attributed = Counter()
    frames_incl = Counter()
    frames_self = Counter()
    ours = Counter()
    complete = 0
    outside_wasm = 0
    for frames, count in stacks:
        thread, body = frames[0], frames[1:]
        threads[re.sub(r"[-_]?\d+$", "", thread)] += count
        hit = None
        for name, rx in compiled:
            if rx.pattern.startswith("^\\[wasm"):
                match = bool(body) and rx.search(body[-1]) is not None
            else:
                match = any(rx.search(fr) for fr in body)
            if match:
                inclusive[name] += count
                if hit is None:
                    hit = name
        attributed[hit or "other"] += count
        if body and body[-1] != "[wasm code]":
            outside_wasm += count
            if COMPLETE_ROOT.search(body[0]):
                complete += count
        for fr in set(body):
            if not PLUMBING.search(fr):
                frames_incl[fr] += count
            if fr.startswith("metalcu::") or fr.startswith("<metalcu::"):
                ours[fr] += count
        if body:
            frames_self[body[-1]] += count

    print(f"{total / 1e9:.2f} s of CPU sampled (perf's cpu-clock periods); samples outside wasm code whose stack\n"
          f"unwinds to its thread's start: {pct(complete, max(outside_wasm, 1))} (wasm code stops DWARF unwinding)\n")
    print("| thread | samples |\n|---|---|")
    for t, c in threads.most_common():
        print(f"| {t} | {pct(c, total)} |")
    print("\n| where | attributed | inclusive |\n|---|---|---|")
    for name, _ in CATEGORIES:
        print(f"| {name} | {pct(attributed[name], total)} | {pct(inclusive[name], total)} |")
    print(f"| other | {pct(attributed['other'], total)} | |")
    lists = (("metalcu functions, inclusive", ours), ("inclusive, without thread and runtime plumbing", frames_incl),
             ("self", frames_self))
    for title, counter in lists:
        print(f"\n| top frames ({title}) | share |\n|---|---|")
        for fr, c in counter.most_common(top):
            print(f"| `{fr[:110]}` | {pct(c, total)} |")


if __name__ == "__main__":
    main()
