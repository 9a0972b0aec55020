"""``pqx bench``: speed and memory ratios against faiss and against our own baselines, one run."""
from __future__ import annotations

import sys

from ..bench import TARGETS, run_benchmarks, verdict
from ..report import write_json_atomic
from ..validation import check_output_path

HELP = "benchmark PQ against faiss, the cost of training hooks, and memory of encoding a mapped file"


def add_arguments(p):
    p.add_argument("--quick", action="store_true", help="small sizes (seconds, for tests); not the reported figures")
    p.add_argument("--json", default=None, metavar="OUT.json", help="write the ratios (and raw details) here")


def run(args) -> int:
    if args.json:
        check_output_path(args.json, "--json")
    result = run_benchmarks(quick=args.quick, progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(f"{'benchmark':<30} {'ratio':>8}  {'target':<8} verdict")
    for key, value in result.items():
        if key in ("quick", "details"):
            continue
        op, target = TARGETS.get(key, ("", None))
        shown = "failed" if value is None else f"{value:8.3f}"
        print(f"{key:<30} {shown:>8}  {(op + ' ' + str(target)) if target else '':<8} {verdict(key, value)}")
    d = result["details"]
    pv, mm = d["pq_vs_faiss"], d["mmap_encode_memory"]
    print(f"(PQ {pv['n']}×{pv['d']} M={pv['M']} K={pv['K']}: fit {pv['ours_fit_s']:.2f}s vs faiss {pv['faiss_fit_s']:.2f}s, "
          f"encode {pv['ours_encode_s']:.3f}s vs {pv['faiss_encode_s']:.3f}s; memory: {mm['growth'] / 2**20:.1f} MiB "
          f"peak growth for a {mm['file_bytes'] / 2**20:.0f} MiB file, {mm['method']})")
    for name, info in d.get("encode_vs_pq", {}).items():
        if "error" in info:
            print(f"{name}: {info['error']}")
    th, load = d["threads"], d.get("load_average_before")
    print(f"(threads: torch {th['torch']}, faiss {th['faiss']}"
          + (f"; load average {load[0]:.1f} before, {d['load_average_after'][0]:.1f} after" if load else "") + ")")
    if args.quick:
        print("(--quick: small sizes, not the reported figures)")
    if args.json:
        write_json_atomic(args.json, result)
    return 0
