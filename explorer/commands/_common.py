"""Arguments and helpers shared by the sub-commands: data flags (train, sweep), the method flags
in one argument group per method (train, export), progress bars (tqdm, on stderr)."""
from __future__ import annotations

import argparse
import signal
import sys
import threading
import time

from .. import data, methods
from ..errors import InvalidParameter
from ..events import FitFinished, FitStarted, Step, StopSignal
from ..validation import check_finite_rows, check_random_state


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", default="digits", metavar="NAME|PATH",
                   help="digits (default), synthetic, fashion-mnist, or a file: .fvecs .ivecs .bvecs .npy IDX, "
                        ".npz (named arrays), .hdf5 (ann-benchmarks layout; its neighbors are the ground truth)")
    g.add_argument("--base-key", default=None, metavar="NAME",
                   help="the .npz array that is the base (default: base, train or x, or the only array)")
    g.add_argument("--queries", default=None, metavar="PATH",
                   help="query vectors file (default: the file's own, else hold out --n-queries base vectors)")
    g.add_argument("--learn", default=None, metavar="PATH", help="separate training vectors (SIFT1M's learn file): "
                   "fit on them, encode and evaluate --data (default: fit on --data itself)")
    g.add_argument("--labels", default=None, metavar="PATH", help="per-vector labels file (.npy, .ivecs or IDX), enables mAP")
    g.add_argument("--query-labels", default=None, metavar="PATH",
                   help="labels of the --queries vectors; with --labels, mAP on a separate query file")
    g.add_argument("--n-queries", type=int, default=200, metavar="N", help="base vectors held out as queries (default 200)")
    g.add_argument("--seed", type=int, default=0, metavar="N", help="random_state for data split and training (default 0)")


def load_dataset(args) -> data.Dataset:
    """The dataset of ``--data`` / ``--labels`` / ``--queries`` (/ ``--query-labels``, ``--base-key``)
    with ``--n-queries`` held out (seeded by ``--seed``).

    Every vector is checked for NaN/inf here, before any training: the base *before* the queries
    are held out of it, so an error names the row of the file (not a row counted after the
    split), and a ``--queries`` file on its own.
    """
    seed = check_random_state(args.seed, "--seed")
    ds = data.load(args.data, labels=args.labels, queries=args.queries,
                   query_labels=getattr(args, "query_labels", None), base_key=getattr(args, "base_key", None),
                   learn=getattr(args, "learn", None))
    check_finite_rows(ds.base, f"--data {args.data}")
    if ds.learn is not None:
        check_finite_rows(ds.learn, f"--learn {args.learn}")
    if ds.queries is not None:
        check_finite_rows(ds.queries, f"--queries {args.queries}")
    return data.split_queries(ds, args.n_queries, random_state=seed)


class _StoreMethod(argparse.Action):
    """Stores ``--method`` and notes that it was given, so ``--help`` can show that method's flags only."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        namespace._method_given = True


class _MethodHelp(argparse.Action):
    """``--help``: after ``--method NAME``, the common flags and NAME's own only; else every method's."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        method = getattr(namespace, "method", None) if getattr(namespace, "_method_given", False) else None
        if method in methods.available():
            for action in parser._actions:
                takers = getattr(action, "methods", None)
                if takers is not None and method not in takers:
                    action.help = argparse.SUPPRESS
        parser.print_help()
        parser.exit()


def _metavar(opt, takers: list[str]) -> str:
    """A metavar a user reads: the allowed values, N for counts, else the parameter's name."""
    choices = [c for name in takers for c in methods.get(name).param_choices.get(opt.param, ())]
    if choices:  # every taker's, in order (a shared flag such as --init names different starts per method)
        return "{" + ",".join(map(str, dict.fromkeys(choices))) + "}"
    return "N" if opt.type is int else opt.param.upper()


def add_method_arguments(p: argparse.ArgumentParser) -> None:
    """Common training flags, then one argument group per method with its own flags (the flags
    every deep method shares in one "deep methods" group); defaults None = the method's default.
    ``--method NAME --help`` shows the common flags and NAME's only."""
    from ..methods._deep import DEEP_OPTIONS
    for container in (p, p._optionals):  # replace argparse's -h/--help by the method-aware one, then back
        container.conflict_handler = "resolve"
    p.add_argument("-h", "--help", action=_MethodHelp, help="show this help (after --method NAME: NAME's flags only)")
    for container in (p, p._optionals):
        container.conflict_handler = "error"
    g = p.add_argument_group("training")
    g.add_argument("--method", default="pq", action=_StoreMethod, metavar="NAME",
                   help=f"one of: {', '.join(methods.available())} (default pq)")
    g.add_argument("-M", "--subspaces", type=int, default=None, dest="n_subspaces", metavar="M", help="M, number of subspaces")
    g.add_argument("-K", "--codewords", type=int, default=None, dest="n_codewords", metavar="K",
                   help="K, codewords per subspace")
    g.add_argument("--iters", type=int, default=None, dest="n_iter", metavar="N", help="training iterations (PQ, OPQ, RLQ stages)")
    g.add_argument("--epochs", type=int, default=None, metavar="N", help="training epochs (deep methods)")
    g.add_argument("--device", default=None, metavar="DEVICE", help="cpu (default), cuda, mps or auto")
    by_flag: dict[str, dict[str, object]] = {}  # flag → {method taking it: its Option}, in registry order
    for name in methods.available():
        for opt in methods.get(name).cli_options:
            by_flag.setdefault(opt.flag, {})[name] = opt
    deep_flags = {o.flag for o in DEEP_OPTIONS}
    deep = sorted({n for f in deep_flags for n in by_flag.get(f, {})
                   if all(o.flag in {x.flag for x in methods.get(n).cli_options} for o in DEEP_OPTIONS)})
    groups: dict[str, argparse._ArgumentGroup] = {}
    for flag, options in by_flag.items():
        names, opt = list(options), next(iter(options.values()))
        title = (f"deep methods ({', '.join(deep)})" if flag in deep_flags else f"{' and '.join(names)} options")
        group = groups.get(title) or groups.setdefault(title, p.add_argument_group(title))
        extra = sorted(set(names) - set(deep)) if flag in deep_flags else []
        help_text = opt.help + (f" (also {', '.join(extra)})" if extra else "")
        if flag not in deep_flags and len({o.help for o in options.values()}) > 1:  # one flag, a meaning per method
            help_text = "; ".join(f"{name}: {o.help}" for name, o in options.items())
        dest = "opt_" + flag.lstrip("-").replace("-", "_")
        if opt.type is None:
            action = group.add_argument(flag, dest=dest, action="store_const", const=opt.const, default=None, help=help_text)
        else:
            action = group.add_argument(flag, dest=dest, type=opt.type, default=None, metavar=_metavar(opt, names),
                                        help=help_text)
        action.methods = tuple(names)


def add_sink_arguments(p: argparse.ArgumentParser, *, per_run: bool = False) -> None:
    """``--events``, ``--tensorboard`` and ``--sample-every``: where the training events go besides the terminal."""
    g = p.add_argument_group("watching the run elsewhere")
    if per_run:
        g.add_argument("--events", default=None, metavar="DIR",
                       help="write each run's training events to its own JSON-lines log in DIR "
                            "(followed live by widgets.RunView or explorer.events.read_events)")
    else:
        g.add_argument("--events", default=None, metavar="RUN.jsonl",
                       help="append the training events to this JSON-lines log, flushed per event "
                            "(followed live by widgets.RunView or explorer.events.read_events)")
    g.add_argument("--tensorboard", default=None, metavar="DIR",
                   help="write perplexity, dead codes, collapse flags, losses and usage histograms for TensorBoard")
    g.add_argument("--sample-every", type=int, default=0, metavar="N",
                   help="with --events/--tensorboard: embedding samples every N steps (default 0: none)")


def make_sinks(args, *, per_run: bool = False) -> list:
    """The callbacks :func:`add_sink_arguments`' flags ask for; bad paths fail here, before any training."""
    from ..eventlog import EventLog, EventLogDir
    from ..sinks import TensorBoard
    from ..validation import check_int
    every = check_int(args.sample_every, "--sample-every", low=0)
    sinks = []
    if args.events:
        sinks.append((EventLogDir if per_run else EventLog)(args.events, sample_every=every))
    if args.tensorboard:
        import importlib.util
        if importlib.util.find_spec("tensorboard") is None:  # fail before training, writing nothing
            raise InvalidParameter("--tensorboard needs the tensorboard package: pip install tensorboard "
                                   '(or "pq-explorer[watch]")')
        sinks.append(TensorBoard(args.tensorboard, sample_every=every))
    return sinks


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
    params["random_state"] = check_random_state(args.seed, "--seed")
    return params


STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))
"""Every catchable signal that asks a process to end (SIGKILL and SIGSTOP cannot be caught)."""


def signal_name(signum: int) -> str:
    """"Ctrl-C (SIGINT)" for SIGINT, else the signal's name ("SIGTERM")."""
    name = signal.Signals(signum).name
    return "Ctrl-C (SIGINT)" if signum == signal.SIGINT else name


class SignalAbort(KeyboardInterrupt):
    """A second stop signal: abort at once. A KeyboardInterrupt, so ``except Exception`` (a sweep's
    per-run error rows) never swallows it; ``signum`` says which signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def run_until_aborted(run, args, prog: str, lost: str) -> int:
    """``run(args)``; when a second stop signal aborts it (:class:`SignalAbort`), one line on
    stderr ("PROG: aborted by a second SIGTERM; LOST") and exit code 128 + the signal number."""
    try:
        return run(args)
    except SignalAbort as exc:
        sys.stderr.write(f"\n{prog}: aborted by a second {signal_name(exc.signum)}; {lost}\n")
        return 128 + int(exc.signum)


class StopOnSignals:
    """Context manager: while active, the first SIGINT, SIGTERM or SIGHUP sets ``stop`` (training
    ends after its current step) and is remembered in ``signum``; a second one raises
    :class:`SignalAbort`. Previous handlers come back on exit.

    ``phase`` (set by the command) says what runs: "training" (the default) or something after
    the last step ("evaluation", "writing"), when a first signal cannot shorten anything and is
    told so on stderr: the work finishes, its result is written, and the exit code still says a
    signal came (:attr:`exit_code`, 128 + signal number, the shell convention).
    Only the main thread can install handlers: elsewhere (``cli.main`` called from a worker
    thread) signals are left alone.
    """

    def __init__(self, stop: StopSignal | None = None, prog: str = "pqx") -> None:
        self.stop = stop if stop is not None else StopSignal()
        self.prog = prog
        self.signum: int | None = None
        self.phase = "training"
        self._previous: dict = {}

    @property
    def received(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        """128 + the signal number (130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP); 0 without a signal."""
        return 0 if self.signum is None else 128 + int(self.signum)

    @property
    def name(self) -> str:
        """How messages name the signal ("Ctrl-C (SIGINT)", "SIGTERM"); "" without one."""
        return "" if self.signum is None else signal_name(self.signum)

    @property
    def signame(self) -> str | None:
        """The signal's name for reports ("SIGINT", "SIGTERM", "SIGHUP"), or None."""
        return None if self.signum is None else signal.Signals(self.signum).name

    def _handler(self, signum, frame):
        if self.signum is not None:
            raise SignalAbort(signum)
        self.signum = signum
        self.stop.set()
        if self.phase != "training":
            sys.stderr.write(f"\n{self.prog}: {signal_name(signum)} after the last training step; finishing "
                             f"{self.phase} so the trained result is kept (a second signal aborts)\n")
            sys.stderr.flush()

    def __enter__(self):
        self._active = threading.current_thread() is threading.main_thread()
        if self._active:
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc):
        if self._active:
            for sig, previous in self._previous.items():
                signal.signal(sig, previous)
        return False



def progress(total: int | None, unit: str, *, quiet: bool = False, desc: str | None = None,
             bar_format: str | None = None):
    """A tqdm progress bar on stderr (looked up now, so a replaced ``sys.stderr`` is honoured),
    at most 10 redraws a second; disabled with ``quiet``."""
    from tqdm import tqdm
    return tqdm(total=total, unit=unit, desc=desc, file=sys.stderr, mininterval=0.1, disable=quiet, leave=True,
                dynamic_ncols=True, bar_format=bar_format)


# "train [####      ] step 12/25, loss=…, perplexity=… [00:03<00:04]": the step count reads as before tqdm
TRAIN_BAR = "{desc} [{bar:30}] step {n_fmt}/{total_fmt}{postfix} [{elapsed}<{remaining}]"


class ProgressBar:
    """Callback drawing the training progress (steps, loss, mean perplexity) as a tqdm bar on stderr.

    ``total``: the planned steps, None (unknown), or a zero-argument function read at
    ``FitStarted`` (``lambda: quantizer.planned_steps``, known only once the fit has the data)."""

    def __init__(self, total, stream=None):
        self.total, self.stream = total, stream
        self._bar = None

    def __call__(self, event):
        if isinstance(event, FitStarted):
            if callable(self.total):  # steps known once the fit has seen the data (deep methods' mini-batches)
                self.total = self.total()
            self._bar = progress(self.total, "step", desc="train", bar_format=TRAIN_BAR)
            if self.stream is not None:
                self._bar.fp = self.stream
        elif isinstance(event, Step) and self._bar is not None:
            self._bar.set_postfix(loss=f"{event.loss:.4g}", perplexity=f"{event.perplexity.mean():.1f}", refresh=False)
            self._bar.update(event.step - self._bar.n)  # a resumed fit starts at its checkpoint's step
        elif isinstance(event, FitFinished) and self._bar is not None:
            self._bar.close()
            self._bar = None
