"""``pqx bench``: speed and memory ratios against faiss and against our own baselines, one run."""
from __future__ import annotations

import sys

from ..bench import TARGETS, run_benchmarks, verdict
from ..report import write_json_atomic
from ..validation import check_output_path

HELP = "benchmark PQ against faiss and nanopq, the cost of training hooks, and memory of encoding a mapped file"


def add_arguments(p):
    p.add_argument("--quick", action="store_true", help="small sizes (seconds, for tests); not the reported figures")
    p.add_argument("--json", default=None, metavar="OUT.json", help="write the ratios (and raw details) here")
    p.add_argument("--device", default="cpu", metavar="DEVICE",
                   help="where our PQ fits, encodes and searches: cpu (default) or cuda; faiss and nanopq run on the CPU")


def run(args) -> int:
    if args.json:
        check_output_path(args.json, "--json")
    from ..methods.base import resolve_device
    device = str(resolve_device(args.device))  # a bad or absent device fails here, before any output
    result = run_benchmarks(quick=args.quick, progress=lambda msg: print(msg, file=sys.stderr, flush=True), device=device)
    print(f"{'benchmark':<30} {'ratio':>8}  {'target':<8} verdict")
    for key, value in result.items():
        if key in ("quick", "details"):
            continue
        op, target = TARGETS.get(key, ("", None))
        shown = ("absent" if key.startswith("nanopq_") else "failed") if value is None else f"{value:8.3f}"
        print(f"{key:<30} {shown:>8}  {(op + ' ' + str(target)) if target else '':<8} {verdict(key, value)}")
    d = result["details"]
    pv, mp, mm = d["pq_vs_faiss"], d["map_all_vs_faiss"], d["mmap_encode_memory"]
    print(f"(PQ {pv['n']}×{pv['d']} M={pv['M']} K={pv['K']} on {pv['device']}, medians of {pv['repeats']}: "
          f"fit {pv['ours_fit_s']:.2f}s vs faiss {pv['faiss_fit_s']:.2f}s, "
          f"encode {pv['ours_enc_s']:.3f}s vs {pv['faiss_enc_s']:.3f}s, {pv['n_queries']} queries k={pv['k']} "
          f"{pv['ours_search_s']:.3f}s vs {pv['faiss_search_s']:.3f}s; mAP@all of {mp['n_queries']} queries over "
          f"{mp['n']} codes {mp['ours_s']:.2f}s vs {mp['faiss_s']:.2f}s (mAP {mp['map']:.4f} vs {mp['faiss_map']:.4f}); "
          f"memory: {mm['growth'] / 2**20:.1f} MiB peak growth for a {mm['file_bytes'] / 2**20:.0f} MiB file, {mm['method']})")
    if pv["nanopq"] is None:
        print("(nanopq is not installed: its rows are empty; pip install 'pq-explorer[bench]')")
    for name, info in d.get("encode_vs_pq", {}).items():
        if "error" in info:
            print(f"{name}: {info['error']}")
    th, load = d["threads"], d.get("load_average_before")
    blas = ", ".join(f"{lib.get('internal_api')} {lib.get('architecture', '')} ×{lib.get('num_threads')}".replace("  ", " ")
                     for lib in d["blas"] if lib.get("internal_api") != "openmp")
    print(f"(BLAS: torch {d['torch_blas']}; {blas or 'threadpoolctl not installed'}; faiss {d['faiss_simd'].strip()})")
    print(f"(threads: torch {th['torch']}, faiss {th['faiss']}"
          + (f"; load average {load[0]:.1f} before, {d['load_average_after'][0]:.1f} after" if load else "") + ")")
    if args.quick:
        print("(--quick: small sizes, not the reported figures)")
    if args.json:
        write_json_atomic(args.json, result)
    return 0
