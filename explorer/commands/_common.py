"""Arguments and helpers shared by the sub-commands that train (train, sweep)."""
from __future__ import annotations

import argparse
import sys
import time

from .. import data, methods
from ..errors import InvalidParameter
from ..events import FitFinished, FitStarted, Step


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="digits", help="digits (default), synthetic, fashion-mnist, or a vector file "
                   "(.fvecs .ivecs .bvecs .npy IDX)")
    p.add_argument("--queries", default=None, help="query vectors file (default: hold out --n-queries base vectors)")
    p.add_argument("--learn", default=None, metavar="PATH", help="separate training vectors (SIFT1M's learn file): "
                   "fit on them, encode and evaluate --data (default: fit on --data itself)")
    p.add_argument("--labels", default=None, help="per-vector labels file (.npy, .ivecs or IDX), enables mAP")
    p.add_argument("--n-queries", type=int, default=200, help="base vectors held out as queries (default 200)")
    p.add_argument("--seed", type=int, default=0, help="random_state for data split and training (default 0)")


def load_dataset(args) -> data.Dataset:
    ds = data.load(args.data, labels=args.labels, queries=args.queries, learn=getattr(args, "learn", None))
    return data.split_queries(ds, args.n_queries, random_state=args.seed)


def add_method_arguments(p: argparse.ArgumentParser) -> None:
    """Common training flags plus every registered method's own flags (defaults None = method default)."""
    p.add_argument("--method", default="pq", help=f"one of: {', '.join(methods.available())}")
    p.add_argument("-M", "--subspaces", type=int, default=None, dest="n_subspaces", help="M, number of subspaces")
    p.add_argument("-K", "--codewords", type=int, default=None, dest="n_codewords", help="K, codewords per subspace")
    p.add_argument("--iters", type=int, default=None, dest="n_iter", help="training iterations (PQ, OPQ, RLQ stages)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (deep methods)")
    p.add_argument("--device", default=None, help="cpu (default), cuda, mps or auto")
    seen = {"--method", "--iters", "--epochs", "--device", "-M", "-K", "--data", "--seed"}
    for name in methods.available():
        for opt in methods.get(name).cli_options:
            if opt.flag in seen:
                continue
            seen.add(opt.flag)
            dest = "opt_" + opt.flag.lstrip("-").replace("-", "_")
            if opt.type is None:
                p.add_argument(opt.flag, dest=dest, action="store_const", const=opt.const, default=None,
                               help=f"[{name}] {opt.help}")
            else:
                p.add_argument(opt.flag, dest=dest, type=opt.type, default=None, help=f"[{name}] {opt.help}")


def fall_back_device(params: dict, prog: str = "pqx") -> dict:
    """Replace an accelerator torch cannot see (``--device cuda`` / ``mps`` on a machine without one)
    by ``"cpu"``, saying so in one line on stderr; other device errors are left to the method."""
    from ..methods.base import resolve_device
    device = params.get("device")
    if device is None or not str(device).startswith(("cuda", "mps")):
        return params
    try:
        resolve_device(device)
    except InvalidParameter:
        what = "Apple (MPS) GPU" if str(device) == "mps" else "CUDA GPU"
        sys.stderr.write(f"{prog}: warning: --device {device} but torch sees no {what}; training on cpu instead\n")
        params["device"] = "cpu"
    return params


def method_params(args, method: str | None = None) -> dict:
    """kwargs for the chosen method from the parsed flags; a flag the method lacks is an error."""
    method = method or args.method
    cls = methods.get(method)
    valid = set(cls.param_names())
    params = {}
    generic = {"n_subspaces": "-M", "n_codewords": "-K", "n_iter": "--iters", "epochs": "--epochs", "device": "--device"}
    for param, flag in generic.items():
        value = getattr(args, param, None)
        if value is None:
            continue
        if param not in valid:
            raise InvalidParameter(f"{flag} does not apply to method {method!r}; it takes: {', '.join(sorted(valid))}")
        params[param] = value
    own = {opt.flag: opt for opt in cls.cli_options}
    for name in methods.available():
        for opt in methods.get(name).cli_options:
            value = getattr(args, "opt_" + opt.flag.lstrip("-").replace("-", "_"), None)
            if value is None:
                continue
            if opt.flag not in own:
                raise InvalidParameter(f"{opt.flag} does not apply to method {method!r}; drop it or choose a method "
                                       f"that takes it ({name})")
            params[own[opt.flag].param] = value
    params["random_state"] = args.seed
    return params


class ProgressBar:
    """Callback drawing a one-line progress bar on a stream (stderr), at most 10 redraws a second."""

    def __init__(self, total: int | None, stream=None, width: int = 30, interval: float = 0.1):
        # stderr is looked up when the bar is made, not when this module is imported, so a
        # replaced sys.stderr (pytest's capture, a notebook) is honoured
        self.total, self.stream, self.width, self.interval = total, stream or sys.stderr, width, interval
        self._last = 0.0

    def __call__(self, event):
        if isinstance(event, FitStarted):
            self._t0 = time.monotonic()
        elif isinstance(event, Step):
            now = time.monotonic()
            if now - self._last < self.interval and event.step != self.total:
                return
            self._last = now
            frac = min(1.0, event.step / self.total) if self.total else 0.0
            bar = "#" * int(frac * self.width)
            self.stream.write(f"\r[{bar:<{self.width}}] step {event.step}/{self.total or '?'} loss {event.loss:.4g} "
                              f"perplexity {event.perplexity.mean():.1f}")
            self.stream.flush()
        elif isinstance(event, FitFinished):
            self.stream.write("\n")
            self.stream.flush()
