"""2-D pictures of sub-vectors (t-SNE, UMAP), computed here or in a low-priority process of their own.

:func:`project` computes one picture in the calling thread. :class:`ProjectionProcess` computes
it in a separate Python process, started once and reused, at the lowest scheduling priority and
with one thread: the embedding view's pictures during a live fit. In a thread of the training
process, a projection made the fit 1.85x slower (t-SNE's Python loop holds the GIL that the fit's
Python glue between faiss calls needs; limited to one OpenMP thread it was still 2.05x); in a
process of its own it shares no GIL and yields the cores whenever training wants them.

The worker is this file run as a script (``python projection.py``), not ``-m explorer...`` and
not :mod:`multiprocessing`: both would import the ``explorer`` package (torch, faiss) or the
parent's ``__main__`` into it, seconds of start-up and hundreds of MB, where it needs numpy and
scikit-learn only. So this module imports nothing of the package. Requests and answers are one
JSON line and one ``.npy`` array each way over the worker's stdin/stdout (never pickles).
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading

import numpy as np

ALGORITHMS = ("t-SNE", "UMAP")


def _check_algorithm(algorithm: str) -> None:
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm={algorithm!r}; use one of {', '.join(ALGORITHMS)}")


def project(points: np.ndarray, algorithm: str = "t-SNE", random_state: int = 0) -> np.ndarray:
    """Return (n, 2) float coordinates of ``points`` (n, ds) by t-SNE (scikit-learn) or UMAP (umap-learn).

    Points with ds <= 2, or fewer than 4 points, are returned as they are (zero-padded to 2 columns).
    t-SNE: perplexity min(30, (n - 1) / 3), PCA initialisation, 500 iterations; a 1e-4 * std
    jitter first separates identical points. UMAP: 15 neighbours (fewer for tiny n); it is
    imported only when chosen, since its first import compiles with numba (~10 s).
    """
    _check_algorithm(algorithm)
    points = np.asarray(points, dtype=np.float32)
    n, ds = points.shape
    if n < 4 or ds <= 2:  # nothing to reduce (or too few points for a neighbourhood graph)
        out = np.zeros((n, 2), dtype=np.float32)
        out[:, :min(ds, 2)] = points[:, :2]
        return out
    if algorithm == "UMAP":
        import umap  # lazy: ~10 s on first import
        return umap.UMAP(n_neighbors=min(15, n - 1), random_state=random_state, n_jobs=1).fit_transform(points)
    from sklearn.manifold import TSNE
    # Jitter breaks ties between identical sub-vectors (digits' blank border pixels), which
    # otherwise sit at distance zero and slow t-SNE's gradient down for nothing.
    jitter = np.random.default_rng(random_state).normal(scale=1e-4 * (points.std() + 1e-6), size=points.shape)
    return TSNE(n_components=2, perplexity=min(30.0, (n - 1) / 3), init="pca", learning_rate="auto",
                max_iter=500, random_state=random_state).fit_transform(points + jitter.astype(np.float32))


class ProjectionProcess:
    """:func:`project` run in a worker process of its own; :meth:`project` blocks until it answers.

    The worker starts on the first request (numpy and scikit-learn imports, ~1-3 s) and serves
    every later one. nice: the worker's niceness increment (19, the lowest priority, by default:
    it gets the cores only when training leaves them idle, so a picture can take longer during a
    fit). Its BLAS and OpenMP run one thread. Requests from several threads are served one at a
    time. A worker that has died (killed, out of memory) is started again by the next request;
    a request during which it dies raises ``RuntimeError``, and so does one that
    :func:`project` refused (the worker goes on).
    """

    def __init__(self, nice: int = 19):
        self.nice = int(nice)
        self.requests = 0  # answered by the worker (tests, diagnostics)
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        """The worker's process id, or None before the first request (or after :meth:`close`)."""
        return None if self._proc is None else self._proc.pid

    def _start(self) -> subprocess.Popen:
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
                   NUMBA_NUM_THREADS="1", PQX_PROJECTION_NICE=str(self.nice))
        # -P: the script's folder (explorer/, whose inspect.py would shadow the standard library's)
        # is not put on sys.path.
        return subprocess.Popen([sys.executable, "-P", os.path.abspath(__file__)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, env=env, close_fds=True)

    def project(self, points: np.ndarray, algorithm: str = "t-SNE", random_state: int = 0) -> np.ndarray:
        """Return :func:`project` of the same arguments, computed by the worker process."""
        _check_algorithm(algorithm)  # refused here, before a request is sent
        points = np.ascontiguousarray(points, dtype=np.float32)
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._proc = self._start()
            proc = self._proc
            try:
                _send(proc.stdin, {"algorithm": algorithm, "random_state": int(random_state)}, points)
                answer, out = _receive(proc.stdout)
            except (OSError, ValueError) as exc:  # the worker died mid-request (broken pipe, torn answer)
                proc.kill()
                self._proc = None
                raise RuntimeError(f"the projection worker failed: {exc}") from exc
            if "error" in answer:
                raise RuntimeError(answer["error"])
            self.requests += 1
            return out

    def close(self) -> None:
        """End the worker (the next request starts a new one)."""
        with self._lock:
            if self._proc is not None:
                self._proc.stdin.close()  # the worker's loop ends at end of input
                try:
                    self._proc.wait(5)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                self._proc = None

    def __del__(self):
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.poll() is None:
            proc.kill()


_shared: ProjectionProcess | None = None
_shared_lock = threading.Lock()


def shared_process() -> ProjectionProcess:
    """The process's one :class:`ProjectionProcess`, which every embedding view shares (one worker
    per kernel, whatever the number of views); ended at interpreter exit."""
    global _shared
    with _shared_lock:
        if _shared is None:
            import atexit

            _shared = ProjectionProcess()
            atexit.register(_shared.close)
        return _shared


def _send(stream, header: dict, array: np.ndarray | None = None) -> None:
    """Write one message: a JSON line (with the array's ``.npy`` size in bytes), then the array."""
    data = b""
    if array is not None:
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        data = buffer.getvalue()
    stream.write(json.dumps(dict(header, nbytes=len(data))).encode() + b"\n" + data)
    stream.flush()


def _receive(stream) -> tuple[dict, np.ndarray | None]:
    """Read one message written by :func:`_send`; ValueError when the stream ends or is torn."""
    line = stream.readline()
    if not line:
        raise ValueError("end of stream")
    header = json.loads(line)
    nbytes = int(header.pop("nbytes"))
    data = stream.read(nbytes) if nbytes else b""
    if len(data) != nbytes:
        raise ValueError(f"torn message: {len(data)} of {nbytes} bytes")
    return header, (np.load(io.BytesIO(data), allow_pickle=False) if nbytes else None)


def _serve(stdin, stdout) -> None:
    """The worker's loop: answer each request on ``stdin`` until it closes (or tears)."""
    while True:
        try:
            request, points = _receive(stdin)
        except ValueError:
            return
        try:
            out = project(points, request["algorithm"], request["random_state"])
            answer = ({}, np.ascontiguousarray(out, dtype=np.float32))
        except Exception as exc:  # reported to the caller; the worker goes on
            answer = ({"error": f"{type(exc).__name__}: {exc}"}, None)
        try:
            _send(stdout, *answer)
        except BrokenPipeError:  # the caller's process ended during the projection: nobody to answer
            os.dup2(os.open(os.devnull, os.O_WRONLY), stdout.fileno())  # nor an error at exit's flush
            return


if __name__ == "__main__":  # the worker (see the module docstring)
    try:
        os.nice(int(os.environ.get("PQX_PROJECTION_NICE", "19")))
    except (AttributeError, OSError):  # no nice() on this platform: run at normal priority
        pass
    _serve(sys.stdin.buffer, sys.stdout.buffer)
