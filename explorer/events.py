"""Typed training events, and the small subscribers every front end builds on.

A training run emits, in order: one :class:`FitStarted`, any number of :class:`Step` (and
method-specific :class:`Note`), then exactly one of :class:`FitFinished` or :class:`FitFailed`.
A *callback* is any callable taking one event. It may return :data:`STOP` to ask training to
end after the current step; another thread can do the same through a :class:`StopSignal`.

Payloads are plain floats, dicts and small numpy arrays, so ``event.to_dict()`` is JSON-ready.
Heavy payloads (the sub-vector sample for embedding views) are built only when a subscriber
asks for them by carrying a ``sample_every`` attribute (in steps); so are the final metrics of
:class:`FitFinished` (an extra pass over the training set), for a subscriber whose
``final_metrics`` attribute is true (an :class:`EventLog`, whose reader may be on another machine;
``Recorder(final_metrics=True)``).
"""
from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Iterable

import numpy as np

from .diagnostics import dead_codes, perplexity_from_usage, usage_counts  # noqa: F401  (re-exported)

_DERIVED = object()  # a Step field to compute from usage when first read
_STEP_DERIVED = {"perplexity": perplexity_from_usage, "dead_codes": dead_codes}  # field -> f(usage)

STOP = "stop"
"""Return value with which a callback asks the run to stop after the current step."""


def _plain(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return value


class _Event:
    kind: str = "event"
    _arrays: dict = {}  # field name -> dtype of the fields that are numpy arrays (restored by from_dict)

    def to_dict(self) -> dict:
        """JSON-ready dict of every field, with ``kind`` first."""
        out = {"kind": self.kind}
        out.update({f.name: _plain(getattr(self, f.name)) for f in fields(self)})
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "_Event":
        """The event a :meth:`to_dict` (or a line of an event log) describes, typed by its ``kind``.

        Called on the base class it dispatches on ``data["kind"]`` to the event type of that kind;
        keys that are not fields (an event log's ``wall_time``) are ignored, arrays come back as
        numpy arrays and nulls in float arrays or loss dicts (NaN written as null) as NaN.
        Raises :class:`~explorer.errors.DataFileError` for an unknown kind.
        """
        if cls is _Event or "kind" not in cls.__dict__:
            return event_type(data.get("kind"))._from_fields(data)
        return cls._from_fields(data)

    @classmethod
    def _from_fields(cls, data: dict) -> "_Event":
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        for name, dtype in cls._arrays.items():
            if values.get(name) is not None:
                values[name] = _array(values[name], dtype)
        return cls(**values)


def _array(value, dtype) -> np.ndarray:
    if np.issubdtype(np.dtype(dtype), np.floating):
        value = _nulls_to_nan(value)
    return np.asarray(value, dtype=dtype)


def _nulls_to_nan(value):
    if value is None:
        return float("nan")
    if isinstance(value, list):
        return [_nulls_to_nan(v) for v in value]
    if isinstance(value, dict):
        return {k: _nulls_to_nan(v) for k, v in value.items()}
    return value


def event_type(kind) -> type:
    """The event class whose ``kind`` is ``kind`` (every subclass of the event base, wherever defined)."""
    stack, seen = list(_Event.__subclasses__()), {}
    while stack:
        sub = stack.pop()
        seen.setdefault(sub.__dict__.get("kind"), sub)
        stack.extend(sub.__subclasses__())
    if kind not in seen or kind is None:
        from .errors import DataFileError
        known = ", ".join(sorted(k for k in seen if k))
        raise DataFileError(f"unknown event kind {kind!r}; known kinds: {known}")
    return seen[kind]


@dataclass(frozen=True)
class FitStarted(_Event):
    """Training began: ``method`` name, its ``params``, M and K, and the data shape (n_samples × dim).

    n_samples, dim: None when the trainer cannot know them (a :class:`~explorer.monitor.CodebookMonitor`
    watching a user's own loop sees codes, not the data set).
    usable_codewords: the most codewords per subspace the method can be expected to use, when
    that is fewer than K — the number of classes for supervised methods whose codes follow the
    classes (DPQ, FPPQ); None otherwise. Collapse views judge usage against it.
    """

    method: str
    params: dict
    n_subspaces: int
    n_codewords: int
    n_samples: int | None = None
    dim: int | None = None
    usable_codewords: int | None = None
    kind = "fit_started"


@dataclass(frozen=True)
class EmbeddingSample(_Event):
    """A sample of sub-vectors for the subspace embedding views.

    subvectors: (M, s, sub_dim) float32, the sample's sub-vectors in each subspace.
    codes: (s, M) int64, the codeword each one is assigned to.
    codebooks: (M, K, sub_dim) float32, the codewords at that step.
    """

    subvectors: np.ndarray
    codes: np.ndarray
    codebooks: np.ndarray
    kind = "embedding_sample"
    _arrays = {"subvectors": np.float32, "codes": np.int64, "codebooks": np.float32}


@dataclass(frozen=True)
class Step(_Event):
    """One training step (a Lloyd iteration, an epoch or a sampling stage: the method says).

    losses: loss terms by name; ``"total"`` is the objective being minimised.
    usage: (M, K) int64, how many training vectors each codeword received this step.
    perplexity: (M,) float, exp(entropy) of each subspace's usage distribution, in codewords.
    dead_codes: (M,) int, codewords with zero usage.
        Both are derived from ``usage``: left out (as :meth:`from_usage` does), each is computed
        on its first read and kept. A fit emits a step per iteration and most subscribers read a
        few of them (a throttled view, the latest step), so the training thread does not pay
        for the rest (a :class:`Recorder`'s PQ fit on digits: 1.04–1.05× the unobserved fit's
        time with them computed at every step, see ``hook_overhead`` in :mod:`explorer.bench`).
    soft_hard: for methods with soft codes, ``{"gap": mean squared distance between soft and
        hard reconstructions, "agreement": fraction of argmax(soft) == hard code}``; else None.
    sample: an :class:`EmbeddingSample` when a subscriber asked for one this step; else None.
    elapsed: seconds since the fit started.
    epoch: for methods trained by mini-batch epochs, the epochs completed at this step as a
        fraction (1.5: half-way through the second epoch); None for methods whose steps are
        iterations or stages.
    """

    step: int
    losses: dict
    usage: np.ndarray
    perplexity: np.ndarray = field(default_factory=lambda: _DERIVED)
    dead_codes: np.ndarray = field(default_factory=lambda: _DERIVED)
    soft_hard: dict | None = None
    sample: EmbeddingSample | None = None
    elapsed: float = 0.0
    epoch: float | None = None
    kind = "step"
    _arrays = {"usage": np.int64, "perplexity": np.float64, "dead_codes": np.int64}

    def __post_init__(self):
        # a derived field left out is taken out of the instance, so that reading it reaches
        # __getattr__ (a default_factory leaves no class attribute in the way)
        for name in _STEP_DERIVED:
            if self.__dict__.get(name) is _DERIVED:
                del self.__dict__[name]

    def __getattr__(self, name):
        derive = _STEP_DERIVED.get(name)
        if derive is None or "usage" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        value = derive(self.usage)
        self.__dict__[name] = value  # frozen: kept without __setattr__; a race computes it twice, alike
        return value

    @classmethod
    def _from_fields(cls, data: dict) -> "Step":
        data = dict(data)
        data["losses"] = _nulls_to_nan(data.get("losses") or {})
        if data.get("soft_hard") is not None:
            data["soft_hard"] = _nulls_to_nan(data["soft_hard"])
        if data.get("sample") is not None:
            data["sample"] = EmbeddingSample._from_fields(data["sample"])
        return super()._from_fields.__func__(cls, data)

    @classmethod
    def from_usage(cls, step: int, losses: dict, usage, *, soft_hard: dict | None = None,
                   sample: EmbeddingSample | None = None, elapsed: float = 0.0,
                   epoch: float | None = None) -> "Step":
        """The step event of ``usage`` (M, K) counts: perplexity and dead codes computed by
        :mod:`explorer.diagnostics` when first read, losses and soft-vs-hard figures as floats. The one way
        from counts to a :class:`Step`, shared by every built-in method (through
        :meth:`TrainingRun.step`) and by :class:`~explorer.monitor.CodebookMonitor`."""
        return cls(step=int(step), losses={str(k): float(v) for k, v in losses.items()}, usage=np.asarray(usage),
                   soft_hard=None if soft_hard is None else {k: float(v) for k, v in soft_hard.items()},
                   sample=sample, elapsed=float(elapsed), epoch=None if epoch is None else float(epoch))

    @property
    def loss(self) -> float:
        """The objective: ``losses["total"]`` when present, else the sum of all terms."""
        if "total" in self.losses:
            return float(self.losses["total"])
        return float(sum(self.losses.values()))


@dataclass(frozen=True)
class Note(_Event):
    """A method-specific milestone (e.g. FPPQ's label generation), with a plain-data payload."""

    step: int
    topic: str
    message: str
    data: dict = field(default_factory=dict)
    kind = "note"


@dataclass(frozen=True)
class FitFinished(_Event):
    """Training ended normally or by a stop request; the model is usable either way.

    ``metrics``: the method's final figures (``{"distortion": mean squared error of the training
    set X with the final codebooks}`` for most) when a subscriber asked for them with a true
    ``final_metrics`` attribute; otherwise ``{}``, and the fit pays no extra pass over X.
    """

    steps: int
    stopped: bool
    seconds: float
    metrics: dict
    kind = "fit_finished"


@dataclass(frozen=True)
class FitFailed(_Event):
    """Training raised; ``error`` is the exception's type and message. The exception propagates."""

    steps: int
    error: str
    kind = "fit_failed"


Callback = Callable[[Any], Any]


class StopSignal:
    """Thread-safe stop request: ``signal.set()`` from any thread ends the run after its step."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    def is_set(self) -> bool:
        return self._event.is_set()

    def __call__(self, event) -> str | None:  # usable as a callback too
        return STOP if self._event.is_set() else None


class Recorder:
    """Keeps the run's events: the last ``max_steps`` steps (a ring buffer), plus the start,
    the notes (last ``max_notes``) and the end. Memory stays bounded however long training runs.
    ``final_metrics``: ask fits for :class:`FitFinished`'s metrics (one more pass over X).
    """

    def __init__(self, max_steps: int = 1000, max_notes: int = 100, *, final_metrics: bool = False) -> None:
        self.final_metrics = bool(final_metrics)  # ask fits for FitFinished.metrics (one more pass over X)
        self.started: FitStarted | None = None
        self.steps: collections.deque[Step] = collections.deque(maxlen=max_steps)
        self.notes: collections.deque[Note] = collections.deque(maxlen=max_notes)
        self.finished: FitFinished | FitFailed | None = None
        self._lock = threading.Lock()

    def __call__(self, event) -> None:
        with self._lock:
            if isinstance(event, Step):
                self.steps.append(event)
            elif isinstance(event, Note):
                self.notes.append(event)
            elif isinstance(event, FitStarted):
                self.started = event
                self.steps.clear()
                self.notes.clear()
                self.finished = None
            elif isinstance(event, (FitFinished, FitFailed)):
                self.finished = event

    @property
    def last(self) -> Step | None:
        with self._lock:
            return self.steps[-1] if self.steps else None

    def history(self) -> list[dict]:
        """One small dict per recorded step: step, loss, every loss term, mean perplexity, dead codes."""
        with self._lock:
            steps = list(self.steps)
        out = []
        for s in steps:
            row = {"step": s.step, "loss": s.loss, "perplexity_mean": float(np.mean(s.perplexity)),
                   "dead_codes": int(np.sum(s.dead_codes)), "elapsed": s.elapsed}
            row.update({f"loss_{k}": float(v) for k, v in s.losses.items() if k != "total"})
            if s.soft_hard:
                row.update({f"soft_hard_{k}": float(v) for k, v in s.soft_hard.items()})
            out.append(row)
        return out


class Throttle:
    """Forwards step events to ``callback`` at most once per ``interval`` seconds.

    Every non-step event passes at once; before a finish event the newest held-back step is
    flushed, so the subscriber always sees the final state. Use it to keep redraws to a few
    per second. ``sample_every`` of the wrapped callback is passed through.
    """

    def __init__(self, callback: Callback, interval: float = 0.25, clock=time.monotonic) -> None:
        self.callback = callback
        self.interval = float(interval)
        self._clock = clock
        self._last = -float("inf")
        self._pending: Step | None = None
        if hasattr(callback, "sample_every"):
            self.sample_every = callback.sample_every

    def __call__(self, event):
        if isinstance(event, Step):
            now = self._clock()
            if now - self._last >= self.interval:
                self._last = now
                self._pending = None
                return self.callback(event)
            self._pending = event
            return None
        if isinstance(event, (FitFinished, FitFailed)) and self._pending is not None:
            self.callback(self._pending)
            self._pending = None
        return self.callback(event)


class TrainingRun:
    """What a method's training loop talks to: emits events, hears stop requests.

    Methods call :meth:`step` once per iteration/epoch with their loss terms and this step's
    codes (or usage counts), and stop looping when it returns False. Nothing is computed for
    events when there are no callbacks, so an unobserved fit pays almost nothing.
    """

    def __init__(self, callbacks: Iterable[Callback] = (), stop: StopSignal | threading.Event | None = None):
        self.callbacks = [cb for cb in callbacks if cb is not None]
        self._stop = stop
        self.stopped = False
        self.steps = 0
        self.resumable = True
        self._t0 = time.perf_counter()
        periods = [int(getattr(cb, "sample_every", 0) or 0) for cb in self.callbacks]
        periods = [p for p in periods if p > 0]
        self.sample_every = min(periods) if periods else 0
        self.final_metrics = any(bool(getattr(cb, "final_metrics", False)) for cb in self.callbacks)

    def emit(self, event) -> None:
        for cb in self.callbacks:
            if cb(event) == STOP:
                self.stopped = True

    @property
    def observed(self) -> bool:
        return bool(self.callbacks)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self._t0

    def stop_requested(self) -> bool:
        if self._stop is not None and self._stop.is_set():
            self.stopped = True
        return self.stopped

    def wants_sample(self, step: int) -> bool:
        return self.sample_every > 0 and step % self.sample_every == 0

    def step(self, step: int, losses: dict, *, n_codewords: int, codes: np.ndarray | None = None,
             usage: np.ndarray | None = None, soft_hard: dict | None = None,
             sample: Callable[[], EmbeddingSample] | None = None, epoch: float | None = None,
             resumable: bool = True) -> bool:
        """Report one step; return True to continue, False when a stop was requested.

        Give either ``codes`` (n, M) assigned this step or ``usage`` (M, K) counts. ``sample``
        is a zero-argument function building an :class:`EmbeddingSample`; it is called only
        when a subscriber asked for samples at this step. ``epoch`` is the fractional epoch of
        a mini-batch method (see :class:`Step`). ``resumable`` says whether training could be
        continued from the state after this step (False for a step reported in the middle of
        an epoch): a :class:`~explorer.checkpoint.Checkpointer` saves only at resumable steps.
        """
        self.steps = step
        self.resumable = bool(resumable)
        if self.callbacks:
            if usage is None:
                usage = usage_counts(codes, n_codewords)
            self.emit(Step.from_usage(step, losses, usage, soft_hard=soft_hard, elapsed=self.elapsed, epoch=epoch,
                                      sample=sample() if (sample is not None and self.wants_sample(step)) else None))
        return not self.stop_requested()

    def note(self, topic: str, message: str, **data) -> None:
        """Emit a method-specific :class:`Note` (cheap; skipped when nobody listens)."""
        if self.callbacks:
            self.emit(Note(step=self.steps, topic=topic, message=message, data={k: _plain(v) for k, v in data.items()}))


from .eventlog import EventLog, EventLogDir, read_events  # noqa: E402  (the log format lives in its own module)
