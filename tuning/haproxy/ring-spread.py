#!/usr/bin/env python3
"""How HAProxy's ring (metalcu-fleet.cfg.in, rendered by render.sh) spreads process ids over
N CUs, how many move when one CU is added, and where a drained CU's processes go. Runs a real HAProxy on 127.0.0.1 whose "CUs" are
stand-ins inside the same HAProxy (answering /healthz and everything else with 200), sends
GET /results/<pid> for PROCESSES pseudo-random process ids (fixed seed) and reads
X-Metalcu-Server. Nothing leaves 127.0.0.1.

    python3 tuning/haproxy/ring-spread.py [--processes 10000] [--cus 2] [--haproxy haproxy]
"""

import argparse
import base64
import http.client
import os
import random
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
STAND_IN_BASE = 17100  # stand-in CU n listens on 127.0.0.1:STAND_IN_BASE + n


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config(cus, bind, socket_path=None):
    with tempfile.NamedTemporaryFile("w", suffix=".nodes", delete=False) as nodes:
        for n in range(1, cus + 1):
            nodes.write(f"{n} cu{n} 127.0.0.1:{STAND_IN_BASE + n}\n")
    args = [os.path.join(HERE, "render.sh"), nodes.name, "--bind", bind, "--unprivileged"]
    if socket_path:
        args += ["--stats-socket", socket_path]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    os.unlink(nodes.name)
    for n in range(1, cus + 1):
        out += (f"\nfrontend stand_in_cu{n}\n    bind 127.0.0.1:{STAND_IN_BASE + n}\n"
                f"    http-request return status 200 content-type application/json string \"{{}}\"\n")
    return out


def runtime_api(path, command):
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(path)
        s.sendall(command.encode() + b"\n")
        return s.makefile().read().strip()


def owners(haproxy, cus, pids, drain=None):
    """Which CU answers each pid; with `drain`, after draining that CU through the runtime API."""
    port = free_port()
    sock = os.path.join(tempfile.mkdtemp(), "haproxy.sock") if drain else None
    with tempfile.NamedTemporaryFile("w", suffix=".cfg", delete=False) as f:
        f.write(config(cus, f"127.0.0.1:{port}", sock))
    proc = subprocess.Popen([haproxy, "-db", "-f", f.name], stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 20
        conn = None
        while conn is None:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                c.request("GET", "/healthz")
                c.getresponse().read()
                conn = c
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    sys.exit("haproxy did not start")
                time.sleep(0.1)
        if drain:
            answer = runtime_api(sock, f"set server metalcu/{drain} state drain")
            if answer:
                sys.exit(f"drain {drain}: {answer}")
        out = {}
        for pid in pids:
            conn.request("GET", f"/results/{pid}")
            r = conn.getresponse()
            r.read()
            out[pid] = r.getheader("X-Metalcu-Server")
        return out
    finally:
        proc.terminate()
        proc.wait()
        os.unlink(f.name)
        if sock:
            if os.path.exists(sock):
                os.unlink(sock)
            os.rmdir(os.path.dirname(sock))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--processes", type=int, default=10000)
    ap.add_argument("--cus", type=int, default=2)
    ap.add_argument("--haproxy", default="haproxy")
    a = ap.parse_args()
    rng = random.Random(1)
    pids = [base64.urlsafe_b64encode(rng.randbytes(32)).decode().rstrip("=") for _ in range(a.processes)]
    before = owners(a.haproxy, a.cus, pids)
    after = owners(a.haproxy, a.cus + 1, pids)
    for label, table, n in (("before", before, a.cus), ("after ", after, a.cus + 1)):
        counts = {f"cu{i}": 0 for i in range(1, n + 1)}
        for cu in table.values():
            counts[cu] += 1
        shares = ", ".join(f"{cu} {100 * c / len(pids):.1f} %" for cu, c in counts.items())
        print(f"{label} ({n} CUs): {shares}")
    moved = [p for p in pids if before[p] != after[p]]
    to_new = sum(1 for p in moved if after[p] == f"cu{a.cus + 1}")
    print(f"adding cu{a.cus + 1} moved {len(moved)} of {len(pids)} processes "
          f"({100 * len(moved) / len(pids):.1f} %; 1/{a.cus + 1} = {100 / (a.cus + 1):.1f} %), "
          f"{to_new} of them to the new CU")
    drained = owners(a.haproxy, a.cus + 1, pids, drain="cu1")
    moved = [p for p in pids if after[p] != drained[p]]
    spread = {}
    for p in moved:
        spread[drained[p]] = spread.get(drained[p], 0) + 1
    owned = sum(1 for p in pids if after[p] == "cu1")
    print(f"draining cu1 ({a.cus + 1} CUs) moved {len(moved)} processes "
          f"({'all' if all(after[p] == 'cu1' for p in moved) else 'not only'} cu1's {owned}), "
          f"to: {', '.join(f'{cu} {n}' for cu, n in sorted(spread.items()))}")


if __name__ == "__main__":
    main()
