"""Benchmarks, each reported as a ratio measured within one run (so the machine's speed cancels).

Keys of :func:`run_benchmarks` (the ``pqx bench --json`` object), with their targets:

  pq_fit_vs_faiss            our PQ fit time / faiss ``IndexPQ.train`` time, 1e5×128 synthetic,
                             M=16, K=256, 25 iterations, both on ≤ 256·K training points. ≤ 1.
  pq_encode_vs_faiss         our encode throughput / faiss ``sa_encode`` throughput on the same
                             1e5 vectors (each with its own trained codebooks). ≥ 1.
  adc_search_vs_faiss        our ADC search throughput (``PQ.search``: distance tables and scan) /
                             faiss ``IndexPQ.search``'s, 1,000 queries over those 1e5 codes,
                             k = 100, each on its own codes. ≥ 1.
  map_all_vs_faiss           throughput of mAP@all — every query ranks all 1e5 labelled codes
                             (``search_blocks`` with k = n, scored by
                             :func:`~explorer.metrics.map_in_blocks`) — / faiss ranking the same
                             way (``IndexPQ.search`` with k = n, same blocks, same scoring).
  nanopq_fit_vs_faiss,       nanopq (the pure-numpy PQ) as a peer in the same run: its fit time /
  nanopq_encode_vs_faiss,    faiss's (same training size, 25 iterations), its encode and search
  nanopq_adc_search_vs_faiss throughputs / faiss's (search timed on the first 100 queries, as
                             queries per second). None when nanopq is not installed
                             (``pip install pq-explorer[bench]``).
  hook_overhead              PQ fit time on digits (M=8, K=256) with a :class:`~explorer.events.Recorder`
                             callback / without any callback; the median of 21 interleaved pairs'
                             ratios. ≤ 1.03.
  mmap_encode_memory_vs_file peak growth of the process's anonymous resident memory while
                             :func:`~explorer.search.encode_batched` encodes a memory-mapped
                             1M×128 ``.bvecs`` file (written by the benchmark to a temporary
                             folder, deleted after), divided by the file size. ≤ 0.25.
  monitor_overhead, dashboard_redraws_per_second, dashboard_training_slowdown
                             see :mod:`explorer.bench_watch` (≤ 1.03, ≥ 5, ≤ 1.05).
  <method>_encode_vs_pq      for each registered method other than pq/opq: its encode
                             throughput / PQ's, both at 64 bits on digits vectors (higher is faster).

Speed figures are medians of ``repeats`` interleaved runs (ours, faiss, ours, faiss, ...), so a
load that comes and goes hits both sides alike; ``details`` records the thread counts, the load
average before and after, and which BLAS and OpenMP libraries ran (threadpoolctl).
The dashboard's two keys of issue 22 (redraws per second, training slowdown with views attached)
are measured by the dashboard's own benchmark, not here.

How memory is measured: in a fresh Python subprocess (so nothing the parent allocated counts),
after loading the quantizer and one warm-up batch, a thread samples ``RssAnon`` of
``/proc/self/status`` every 0.5 ms while the file is encoded; the peak minus the value before
encoding is the growth. Anonymous memory is what the process allocates (batch copies, distance
buffers, the output codes). The pages of the mapped file are page cache that the kernel can drop
at any time, so they are not counted. Without ``/proc`` (not Linux), ``ru_maxrss`` is
used instead, which over-counts.

``quick=True`` shrinks every size (5,000 vectors for PQ, a 50,000-row file) for tests; its figures
are not the reported ones.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from . import methods
from .data import load_digits
from .events import Recorder

TARGETS = {
    "pq_fit_vs_faiss": ("<=", 1.0),
    "pq_encode_vs_faiss": (">=", 1.0),
    "adc_search_vs_faiss": (">=", 1.0),
    "hook_overhead": ("<=", 1.03),
    "mmap_encode_memory_vs_file": ("<=", 0.25),
    "monitor_overhead": ("<=", 1.03),
    "dashboard_redraws_per_second": (">=", 5.0),
    "dashboard_training_slowdown": ("<=", 1.05),
}
CLASSIC = ("pq", "opq")


def _synthetic(n: int, d: int, seed: int = 0, *, labels: bool = False):
    """(n, d) float32 Gaussian mixture (50 clusters), the benchmark's stand-in for SIFT-like data;
    with ``labels``, also the (n,) int64 cluster of each vector (the classes of mAP@all)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((50, d)).astype(np.float32)
    y = rng.integers(0, 50, size=n)
    X = centres[y]
    X += 0.5 * rng.standard_normal((n, d)).astype(np.float32)
    return (X, y) if labels else X


def _timed(fn: Callable) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def pq_vs_faiss(n: int = 100_000, d: int = 128, n_subspaces: int = 16, n_codewords: int = 256,
                repeats: int = 3, n_queries: int = 1000, k: int = 100, device: str = "cpu", n_iter: int = 25) -> dict:
    """Fit-time, encode- and search-throughput ratios of our PQ against faiss ``IndexPQ`` (medians
    over ``repeats`` interleaved runs; each side searches its own codes with its own codebooks),
    and nanopq's against faiss when nanopq is installed (one run: it is several times slower).
    Every fit runs ``n_iter`` Lloyd iterations (25, faiss's default; fewer only for ``quick``).
    Returns {"fit_ratio", "encode_ratio", "search_ratio", "nanopq": {...} or None, raw seconds}."""
    import faiss
    X = _synthetic(n + n_queries, d)
    X, Q = X[:n], X[n:]  # queries from the same mixture, never encoded
    nbits = int(np.log2(n_codewords))
    t = {key: [] for key in ("ours_fit", "faiss_fit", "ours_enc", "faiss_enc", "ours_search", "faiss_search")}
    for rep in range(repeats):
        index = faiss.IndexPQ(d, n_subspaces, nbits)
        index.pq.cp.niter = n_iter
        index.pq.cp.seed = rep
        t["faiss_fit"].append(_timed(lambda: index.train(X)))
        pq = methods.create("pq", n_subspaces=n_subspaces, n_codewords=n_codewords, n_iter=n_iter, random_state=rep,
                            device=device)
        t["ours_fit"].append(_timed(lambda: pq.fit(X)))
        faiss_codes, codes = [], []
        t["faiss_enc"].append(_timed(lambda: faiss_codes.append(index.sa_encode(X))))
        index.add_sa_codes(faiss_codes[0])
        t["ours_enc"].append(_timed(lambda: codes.append(pq.encode(X))))
        t["faiss_search"].append(_timed(lambda: index.search(Q, k)))
        t["ours_search"].append(_timed(lambda: pq.search(Q, codes[0], k)))
    med = {key: statistics.median(v) for key, v in t.items()}
    out = {"fit_ratio": med["ours_fit"] / med["faiss_fit"], "encode_ratio": med["faiss_enc"] / med["ours_enc"],
           "search_ratio": med["faiss_search"] / med["ours_search"],
           **{f"{key}_s": v for key, v in med.items()}, "n": n, "d": d, "M": n_subspaces, "K": n_codewords,
           "n_queries": n_queries, "k": k, "repeats": repeats, "device": device}
    out["n_iter"] = n_iter
    out["nanopq"] = _nanopq_vs_faiss(X, Q, n_subspaces, n_codewords, k, med, n_iter)
    return out


def _nanopq_vs_faiss(X: np.ndarray, Q: np.ndarray, n_subspaces: int, n_codewords: int, k: int, faiss_s: dict,
                     n_iter: int = 25):
    """nanopq's fit time / faiss's and its encode and search throughputs / faiss's, one run each,
    on the training size faiss uses (256·K rows) and the first 100 queries; None without nanopq."""
    try:
        import nanopq
    except ImportError:
        return None
    train = X[:256 * n_codewords]
    pq = nanopq.PQ(M=n_subspaces, Ks=n_codewords, verbose=False)
    fit_s = _timed(lambda: pq.fit(train, iter=n_iter, seed=0))
    codes = []
    enc_s = _timed(lambda: codes.append(pq.encode(X)))
    nq = min(100, len(Q))

    def search():
        for q in Q[:nq]:
            dist = pq.dtable(q).adist(codes[0])
            top = np.argpartition(dist, k)[:k]
            top[np.argsort(dist[top], kind="stable")]

    search_s = _timed(search) * len(Q) / nq  # as if all queries had been searched
    return {"fit_ratio": fit_s / faiss_s["faiss_fit"], "encode_ratio": faiss_s["faiss_enc"] / enc_s,
            "search_ratio": faiss_s["faiss_search"] / search_s, "fit_s": fit_s, "encode_s": enc_s,
            "search_s_per_query": search_s / len(Q), "version": getattr(nanopq, "__version__", None)}


def map_all_vs_faiss(n: int = 100_000, d: int = 128, n_subspaces: int = 16, n_codewords: int = 256,
                     n_queries: int = 100, repeats: int = 3, device: str = "cpu") -> dict:
    """Throughput of mAP@all over ``n`` labelled codes — our ``search_blocks`` ranking all of them
    per query — / faiss ``IndexPQ.search`` with k = n on the same blocks of queries, both scored
    by :func:`~explorer.metrics.map_in_blocks` (medians of interleaved repeats; the PQ is fitted
    once, briefly: the ranking is timed, not the fit). Returns {"ratio", "ours_s", "faiss_s", "map"...}."""
    from . import metrics
    from .search import faiss_pq
    X, y = _synthetic(n + n_queries, d, labels=True)
    X, Q, y, qy = X[:n], X[n:], y[:n], y[n:]  # queries from the same mixture: their class is their cluster
    pq = methods.create("pq", n_subspaces=n_subspaces, n_codewords=n_codewords, n_iter=5, device=device).fit(X)
    codes = pq.encode(X)
    index = faiss_pq(d, n_subspaces, n_codewords, pq.codebooks_)
    index.add(X)
    block = metrics.queries_per_block(n)
    maps, ours, theirs = {}, [], []

    def ours_map():
        rankings = (ids for _, ids in pq.search_blocks(Q, codes, n, block=block))
        maps["ours"] = metrics.map_in_blocks(rankings, qy, y)[0][0]

    def faiss_map():
        rankings = (index.search(Q[s:s + block], n)[1] for s in range(0, len(Q), block))
        maps["faiss"] = metrics.map_in_blocks(rankings, qy, y)[0][0]

    for _ in range(repeats):
        theirs.append(_timed(faiss_map))
        ours.append(_timed(ours_map))
    med = statistics.median
    return {"ratio": med(theirs) / med(ours), "ours_s": med(ours), "faiss_s": med(theirs), "map": maps["ours"],
            "faiss_map": maps["faiss"], "n": n, "n_queries": n_queries, "block": block}


def blas_info() -> list[dict]:
    """Which BLAS and OpenMP libraries are loaded, with their kernels and threads (threadpoolctl),
    or [] when threadpoolctl is missing. torch links MKL statically, so it appears only in
    ``torch_blas``."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    keep = ("internal_api", "prefix", "architecture", "num_threads", "version", "threading_layer")
    return [{key: lib.get(key) for key in keep if lib.get(key) is not None} for lib in threadpool_info()]


def alternating_pairs(base: Callable[[], float], treated: Callable[[], float], repeats: int) -> dict:
    """Time ``repeats`` pairs of runs, ``base`` and ``treated`` back to back (each returns its own
    seconds), the order within a pair alternating: the second run of a pair runs on warmer caches
    and a later share of the machine's load, which a fixed order would book to one side. Returns
    {"ratio": median of the pairs' treated/base ratios, "ratio_of_medians", "base_s", "treated_s"
    (medians), "pairs", and the raw lists "base_times", "treated_times"}."""
    times = {"base": [], "treated": []}
    for i in range(repeats):
        for side in (("base", "treated") if i % 2 == 0 else ("treated", "base")):
            times[side].append((base if side == "base" else treated)())
    med = statistics.median
    b, t = times["base"], times["treated"]
    return {"ratio": med(x / y for x, y in zip(t, b)), "ratio_of_medians": med(t) / med(b), "base_s": med(b),
            "treated_s": med(t), "pairs": repeats, "base_times": b, "treated_times": t}


def hook_overhead(repeats: int = 21) -> dict:
    """Fit time with a :class:`Recorder` / without callbacks: PQ M=8, K=256 on digits, after one
    warm-up fit; the median over ``repeats`` interleaved pairs of each pair's ratio (the order
    within a pair alternates). A fit takes
    ~0.1 s, so a load that comes and goes moves single fits by more than the target's 3%: a
    ratio within each pair, timed back to back, cancels most of it (the ratio of the two medians,
    measured here too, swung from 1.01 to 1.16 between two 9-pair runs on 2 busy cores).

    The Recorder does not ask for ``FitFinished``'s final metrics (one more pass over X, about
    4% of this fit: see :class:`~explorer.events.FitFinished`), as an event log does."""
    X = load_digits().base
    make = lambda: methods.create("pq", n_subspaces=8, n_codewords=256, random_state=0)  # noqa: E731
    make().fit(X)
    r = alternating_pairs(lambda: _timed(lambda: make().fit(X)),
                          lambda: _timed(lambda: make().fit(X, callbacks=[Recorder()])), repeats)
    return {"ratio": r["ratio"], "ratio_of_medians": r["ratio_of_medians"], "with_recorder_s": r["treated_s"],
            "without_s": r["base_s"], "pairs": repeats}


_MEMORY_CHILD = r"""
import json, resource, sys, threading, time
import numpy as np
from explorer.data import read_bvecs
from explorer.methods.pq import PQ
from explorer.search import encode_batched

path, codebooks_path, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])

def status(key):
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None

X = read_bvecs(path)
C = np.load(codebooks_path)
q = PQ(C.shape[0], C.shape[1])  # a fitted PQ, loaded from the parent's codebooks
q.codebooks_, q.dim_ = C, X.shape[1]
encode_batched(q, X[:batch], batch)  # warm-up: thread pools and first allocations are not the encode's
base_anon = status("RssAnon")
base_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
peak = [base_anon or 0]
done = threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], status("RssAnon") or 0)
        time.sleep(0.0005)
sampler = threading.Thread(target=sample, daemon=True)
sampler.start()
t0 = time.perf_counter()
codes = encode_batched(q, X, batch)
seconds = time.perf_counter() - t0
done.set()
sampler.join()
peak[0] = max(peak[0], status("RssAnon") or 0)
out = {"seconds": seconds, "n": int(len(X)), "codes_bytes": int(codes.nbytes), "batch": batch,
       "check": int(np.array_equal(codes[:1000], q.encode(np.asarray(X[:1000], dtype=np.float32))))}
if base_anon is not None:
    out.update(method="RssAnon sampled every 0.5 ms", growth=peak[0] - base_anon)
else:
    out.update(method="ru_maxrss (includes file pages)",
               growth=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base_maxrss)
print(json.dumps(out))
"""


def _write_bvecs_chunked(path: Path, n: int, d: int, seed: int = 0, chunk: int = 100_000) -> None:
    """Write an (n, d) uint8 ``.bvecs`` file chunk by chunk (never the whole array in memory)."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(20, 235, size=(50, d)).astype(np.float32)
    with open(path, "wb") as fh:
        for start in range(0, n, chunk):
            b = min(chunk, n - start)
            X = centres[rng.integers(0, 50, size=b)] + 20 * rng.standard_normal((b, d)).astype(np.float32)
            rec = np.empty((b, 4 + d), dtype=np.uint8)
            rec[:, :4] = np.full((b, 1), d, dtype="<i4").view(np.uint8)
            rec[:, 4:] = np.clip(X, 0, 255).astype(np.uint8)
            fh.write(rec.tobytes())


def mmap_encode_memory(n: int = 1_000_000, d: int = 128, n_subspaces: int = 16, n_codewords: int = 256,
                       batch: int = 1024, n_train: int = 20_000) -> dict:
    """Peak memory growth of encoding a memory-mapped ``.bvecs`` file in batches / the file's size.

    Writes the file to a temporary folder (deleted after), fits PQ on its first ``n_train`` rows
    here, and measures the encode in a subprocess (see the module docstring for how).
    """
    from .data import read_bvecs
    with tempfile.TemporaryDirectory(prefix="pqx-bench-") as tmp:
        path = Path(tmp) / "base.bvecs"
        _write_bvecs_chunked(path, n, d)
        train = np.asarray(read_bvecs(path)[:min(n_train, n)], dtype=np.float32)
        pq = methods.create("pq", n_subspaces=n_subspaces, n_codewords=n_codewords, n_iter=10).fit(train)
        np.save(Path(tmp) / "codebooks.npy", pq.codebooks_)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        proc = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, str(path), str(Path(tmp) / "codebooks.npy"),
                               str(batch)], capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"memory benchmark subprocess failed: {proc.stderr.strip().splitlines()[-1:]}")
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        out["file_bytes"] = path.stat().st_size
    if not out.pop("check"):
        raise RuntimeError("encode_batched codes differ from encode on the first 1,000 rows")
    out["ratio"] = max(out["growth"], 1) / out["file_bytes"]
    return out


def deep_encode_vs_pq(names: list[str], n: int = 20_000, repeats: int = 3, n_train: int | None = None) -> dict:
    """{name: encode throughput of ``name`` / PQ's}, both trained briefly at 64 bits on digits
    (M, K from each method's ``grid_for_bits``; one epoch / iteration: speed, not quality, is
    measured; on the first ``n_train`` digits, or all) and timed encoding ``n`` digits vectors
    (the base tiled), medians of ``repeats``.
    A method that fails gives {"error": ...} instead of a ratio."""
    ds = load_digits()
    X = np.ascontiguousarray(np.resize(ds.base, (n, ds.dim)))

    def encode_seconds(name: str) -> float:
        cls = methods.get(name)
        params = dict(cls.grid_for_bits(64, ds.dim))
        valid = cls.param_names()
        params.update({k: 1 for k in ("epochs", "n_iter") if k in valid})
        q = methods.create(name, **params).fit(ds.base[:n_train], ds.labels[:n_train] if cls.supervised else None)
        q.encode(X[:256])  # warm-up
        return statistics.median(_timed(lambda: q.encode(X)) for _ in range(repeats))

    pq_seconds = encode_seconds("pq")
    out = {}
    for name in names:
        try:
            out[name] = {"ratio": pq_seconds / encode_seconds(name)}
        except Exception as exc:  # a method in progress must not sink the whole benchmark
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


def run_benchmarks(quick: bool = False, deep_methods: list[str] | None = None,
                   progress: Callable[[str], None] | None = None, device: str = "cpu") -> dict:
    """Every benchmark; returns the ``pqx bench --json`` object (keys in the module docstring)
    plus ``details`` (raw seconds, sizes, the memory method, BLAS libraries) and ``quick``.

    deep_methods: methods for the ``<method>_encode_vs_pq`` keys; None = every registered
    method other than pq and opq. A failing method's key is None and its error is in details.
    device: where our PQ fits, encodes and searches ("cuda" on a GPU machine); faiss runs on the CPU.
    """
    say = progress or (lambda msg: None)
    deep = [m for m in methods.available() if m not in CLASSIC] if deep_methods is None else list(deep_methods)
    import faiss
    import torch
    details: dict = {"threads": {"torch": torch.get_num_threads(), "faiss": faiss.omp_get_max_threads()},
                     "blas": blas_info(), "torch_blas": torch.__config__.show().split("BLAS_INFO=")[-1].split(",")[0],
                     "faiss_simd": faiss.get_compile_options(), "device": device,
                     # other processes competing for the cores skew multi-threaded ratios: record the load
                     "load_average_before": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
    say("PQ fit, encode and search vs faiss (and nanopq) ...")
    details["pq_vs_faiss"] = pq_vs_faiss(n=5_000 if quick else 100_000, repeats=1 if quick else 3,
                                         n_queries=50 if quick else 1000, device=device, n_iter=5 if quick else 25)
    say("mAP@all vs faiss ...")
    details["map_all_vs_faiss"] = map_all_vs_faiss(n=5_000 if quick else 100_000, n_queries=20 if quick else 100,
                                                   repeats=1 if quick else 3, device=device)
    say("hook overhead ...")
    details["hook_overhead"] = hook_overhead(repeats=3 if quick else 21)
    say("memory of encoding a memory-mapped .bvecs file ...")
    details["mmap_encode_memory"] = mmap_encode_memory(n=50_000 if quick else 1_000_000,
                                                       n_train=2_000 if quick else 20_000)
    from .bench_watch import dashboard_figures, monitor_overhead
    say("CodebookMonitor in a VQ autoencoder's loop ...")
    details["monitor_overhead"] = monitor_overhead(steps=40 if quick else 400, repeats=1 if quick else 3)
    say("dashboard views beside a long fit (subprocess) ...")
    details["dashboard"] = dashboard_figures(quick=quick)
    nano = details["pq_vs_faiss"]["nanopq"] or {}
    result = {
        "monitor_overhead": details["monitor_overhead"]["ratio"],
        "dashboard_redraws_per_second": details["dashboard"].get("redraws_per_second"),
        "dashboard_training_slowdown": details["dashboard"].get("training_slowdown"),
        "pq_fit_vs_faiss": details["pq_vs_faiss"]["fit_ratio"],
        "pq_encode_vs_faiss": details["pq_vs_faiss"]["encode_ratio"],
        "adc_search_vs_faiss": details["pq_vs_faiss"]["search_ratio"],
        "map_all_vs_faiss": details["map_all_vs_faiss"]["ratio"],
        "nanopq_fit_vs_faiss": nano.get("fit_ratio"),
        "nanopq_encode_vs_faiss": nano.get("encode_ratio"),
        "nanopq_adc_search_vs_faiss": nano.get("search_ratio"),
        "hook_overhead": details["hook_overhead"]["ratio"],
        "mmap_encode_memory_vs_file": details["mmap_encode_memory"]["ratio"],
    }
    if deep:
        say(f"encode throughput of {', '.join(deep)} vs PQ ...")
        details["encode_vs_pq"] = deep_encode_vs_pq(deep, n=2_000 if quick else 20_000, repeats=1 if quick else 3,
                                                    n_train=600 if quick else None)
        for name, value in details["encode_vs_pq"].items():
            result[f"{name}_encode_vs_pq"] = value.get("ratio")
    details["load_average_after"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    result["quick"] = quick
    result["details"] = details
    return result


def verdict(key: str, value) -> str:
    """"ok" / "MISSED" against the key's target, "" when it has none (or no value)."""
    if key not in TARGETS or value is None:
        return ""
    op, target = TARGETS[key]
    return "ok" if (value <= target if op == "<=" else value >= target) else "MISSED"


__all__ = ["run_benchmarks", "alternating_pairs", "pq_vs_faiss", "map_all_vs_faiss", "blas_info", "hook_overhead", "mmap_encode_memory", "deep_encode_vs_pq", "TARGETS",
           "verdict"]
