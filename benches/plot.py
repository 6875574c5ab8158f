#!/usr/bin/env python3
"""Plot of PERF.md's scaling table: cold-phase throughput (msg/s) and server RSS after the cold
phase against the number of processes, for 1 and 2 workers, from the JSON reports that
`benches/scaling.sh` writes (`p<N>-w<W>.json`). Writes a self-contained SVG (no plotting
library needed) and prints the table as Markdown.

Usage: python3 benches/plot.py target/perf/scaling target/perf/scaling.svg
"""
import json
import math
import pathlib
import re
import sys

W, H, PAD = 760, 420, 70
COLORS = {1: "#d62728", 2: "#1f77b4"}


def load(folder):
    runs = {}
    for f in sorted(pathlib.Path(folder).glob("p*-w*.json")):
        m = re.match(r"p(\d+)-w(\d+)\.json", f.name)
        if not m:
            continue
        d = json.loads(f.read_text())
        cold = d.get("cold") or {}
        rss = next((x["rss_bytes"] for x in d.get("memory", []) if x.get("after") == "cold"), None)
        peak = max((x.get("peak_bytes", 0) for x in d.get("memory", [])), default=0)
        runs[(int(m[1]), int(m[2]))] = {
            "msg_per_s": cold.get("msg_per_s"),
            "messages": cold.get("messages"),
            "errors": (cold.get("errors") or {}).get("count", 0) + (cold.get("result_errors") or {}).get("count", 0),
            "rss_mib": rss / 2**20 if rss else None,
            "peak_mib": peak / 2**20 if peak else None,
            "complete": cold.get("complete"),
        }
    return runs


def svg(runs, path):
    ns = sorted({n for n, _ in runs})
    if not ns:
        raise SystemExit("no reports found")
    xs = {n: PAD + (W - 2 * PAD) * (math.log10(n) / max(math.log10(max(ns)), 1)) for n in ns}
    top = max((r["msg_per_s"] or 0) for r in runs.values()) or 1
    y = lambda v: H - PAD - (H - 2 * PAD) * v / (top * 1.1)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W/2}" y="24" text-anchor="middle" font-size="15">metalcu: aos1 cold evaluation throughput against processes</text>',
           f'<line x1="{PAD}" y1="{H-PAD}" x2="{W-PAD}" y2="{H-PAD}" stroke="black"/>',
           f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{H-PAD}" stroke="black"/>',
           f'<text x="{W/2}" y="{H-20}" text-anchor="middle">processes (log scale), 5 messages each</text>',
           f'<text x="18" y="{H/2}" text-anchor="middle" transform="rotate(-90 18 {H/2})">cold phase, messages per second</text>']
    for n in ns:
        out.append(f'<text x="{xs[n]}" y="{H-PAD+16}" text-anchor="middle">{n}</text>')
    for k in range(5):
        v = top * 1.1 * k / 4
        out.append(f'<text x="{PAD-6}" y="{y(v)+4}" text-anchor="end">{v:.0f}</text>')
        out.append(f'<line x1="{PAD}" y1="{y(v)}" x2="{W-PAD}" y2="{y(v)}" stroke="#ddd"/>')
    for w, color in COLORS.items():
        pts = [(xs[n], y(runs[(n, w)]["msg_per_s"])) for n in ns if (n, w) in runs and runs[(n, w)]["msg_per_s"]]
        if pts:
            out.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{" ".join(f"{a:.1f},{b:.1f}" for a, b in pts)}"/>')
            out += [f'<circle cx="{a:.1f}" cy="{b:.1f}" r="4" fill="{color}"/>' for a, b in pts]
            out.append(f'<text x="{W-PAD-90}" y="{PAD + 18*w}" fill="{color}">{w} worker{"s" if w > 1 else ""}</text>')
    out.append("</svg>")
    pathlib.Path(path).write_text("\n".join(out))


def table(runs):
    print("| processes | workers | cold msg/s | messages | errors | RSS after cold (MiB) | peak RSS (MiB) |")
    print("|---|---|---|---|---|---|---|")
    for (n, w), r in sorted(runs.items()):
        f = lambda v, fmt: format(v, fmt) if v is not None else "—"
        print(f"| {n} | {w} | {f(r['msg_per_s'], '.1f')} | {r['messages']} | {r['errors']} | {f(r['rss_mib'], '.1f')} | {f(r['peak_mib'], '.1f')} |")


if __name__ == "__main__":
    runs = load(sys.argv[1])
    svg(runs, sys.argv[2])
    table(runs)
