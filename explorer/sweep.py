"""Recall versus code length: train a grid of methods × bit lengths on one dataset, with faiss
reference quantizers at the same bits, streaming one result row per finished run.

For each bit length every method picks its own (M, K) through
:meth:`Quantizer.grid_for_bits <explorer.methods.base.Quantizer.grid_for_bits>` (PQ and OPQ:
K = 256, M = bits/8, as in Jégou et al. and Ge et al.). The faiss references use M = bits/8
codebooks of 256 codewords: ``faiss-pq`` (``IndexPQ``), ``faiss-opq`` (``OPQMatrix`` + PQ),
``faiss-rq`` (residual quantizer) and ``faiss-lsq`` (local-search quantizer, LSQ++).

A row is a plain JSON-ready dict (the contract of ``pqx sweep --json`` and of the
recall-vs-bits view's ``add_row``):

  method, bits, subspaces, codewords, distortion, recall_at {"1","10","100"}, map (None without
  labels), fit_seconds, encode_seconds, reference (True for faiss rows), dataset,
  and for our methods: collapsed_subspaces, dead_codes (summed over subspaces), perplexity_mean.

A method may carry its own parameters, ``name[param=value,...]`` (:func:`parse_methods`): the
row is named by that spec, so ``sscq`` and ``sscq[preset=spq]`` (SSCQ beside its SPQ baseline,
the paper's Table 1) or ``sscq[n_neighbours=0]`` ... ``sscq[n_neighbours=50]`` (the supplement's
Table 4) are curves of one sweep, trained on the same data, bits, epochs and seed.

A run that cannot happen (M does not divide d, K > n, a method error) gives a row with the same
keys, None values and an ``error`` string; the sweep goes on. Our rows are measured exactly as
``pqx train`` measures them (same split, same seed, :func:`explorer.report.evaluate`), so a row
equals the report of ``pqx train --method m -M .. -K .. --seed s`` on the same data.
"""
from __future__ import annotations

import inspect
import re
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from . import diagnostics, metrics
from . import methods as registry
from .data import Dataset, ground_truth, split_queries, training_rows, training_set
from .errors import InvalidParameter
from .events import Recorder, Step, StopSignal, _Event
from .report import RECALL_AT, evaluate
from .search import evaluate_faiss, faiss_reference, native_stderr_silenced
from .validation import check_int, check_vectors

REFERENCES = ("pq", "opq", "rq", "lsq")
"""faiss reference quantizers a sweep adds by default (rows named ``faiss-<kind>``)."""

ROW_KEYS = ("method", "bits", "subspaces", "codewords", "distortion", "recall_at", "map", "fit_seconds",
            "encode_seconds", "reference", "dataset")


@dataclass(frozen=True)
class SweepRow(_Event):
    """One finished run of a sweep: ``row`` is the JSON-ready result dict (see the module doc).

    ``quantizer`` is the fitted model for our methods (None for faiss rows and failed runs);
    ``events`` is the run's :class:`~explorer.events.Recorder` (its last ``record_steps`` steps)
    when the sweep was asked to record, else None — what a view replays to open that run's usage
    and collapse views. Neither is part of :meth:`to_dict`.
    """

    row: dict
    quantizer: Any = field(default=None, compare=False, repr=False)
    events: Recorder | None = field(default=None, compare=False, repr=False)
    kind = "sweep_row"

    def to_dict(self) -> dict:
        """``{"kind": "sweep_row", "row": {...}}``."""
        return {"kind": self.kind, "row": dict(self.row)}


def parse_bits(bits) -> list[int]:
    """Bit lengths from ``"16,32,64"`` or an iterable of ints; each a positive integer."""
    items = [b for b in bits.split(",") if b.strip()] if isinstance(bits, str) else list(bits)
    if not items:
        raise InvalidParameter("bits is empty; give code lengths such as 16,32,64")
    out = []
    for b in items:
        try:
            value = int(str(b).strip()) if isinstance(b, str) else b
        except ValueError:
            raise InvalidParameter(f"bits: {b!r} is not an integer; give code lengths such as 16,32,64") from None
        out.append(check_int(value, "bits", low=1))
    return out


@dataclass(frozen=True)
class MethodSpec:
    """One method of a sweep: the registered ``name`` and the ``params`` it is trained with
    beyond its grid (they take precedence over the sweep's overrides). ``label`` names its rows."""

    name: str
    params: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        """``name``, or ``name[p=v,...]`` in the order given (the spec as written, normalised)."""
        if not self.params:
            return self.name
        return f"{self.name}[{','.join(f'{k}={_spelled(v)}' for k, v in self.params.items())}]"


def _spelled(value) -> str:
    return str(value).lower() if isinstance(value, bool) or value is None else str(value)


SWEEP_PARAMS = ("n_subspaces", "n_codewords", "random_state")  # set by the sweep's grid and seed, never by a spec
_SPEC = re.compile(r"^\s*([A-Za-z0-9_-]+)\s*(?:\[(.*)\])?\s*$")


def _split_top_level(text: str) -> list[str]:
    """Split at the commas outside brackets: ``"pq,sscq[preset=spq,epochs=3]"`` -> two items."""
    items, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return [item.strip() for item in items if item.strip()]


def _typed(cls, param: str, text: str, spec: str):
    """``text`` converted to the type of ``param``'s default in ``cls.__init__`` (bool: true/false,
    int, float, str; a None default: int, else float, else the text)."""
    default = inspect.signature(cls.__init__).parameters[param].default
    text = text.strip()
    if isinstance(default, bool):
        if text.lower() in ("true", "1", "yes", "on"):
            return True
        if text.lower() in ("false", "0", "no", "off"):
            return False
        raise InvalidParameter(f"methods: {spec!r}: {param}={text!r} is not a boolean; write {param}=true or "
                               f"{param}=false")
    kinds = (int,) if isinstance(default, int) else (float,) if isinstance(default, float) else \
        (int, float) if default is None or default is inspect.Parameter.empty else ()
    for kind in kinds:
        try:
            return kind(text)
        except ValueError:
            continue
    if kinds and default is not None and default is not inspect.Parameter.empty:
        raise InvalidParameter(f"methods: {spec!r}: {param}={text!r} is not {'an integer' if kinds == (int,) else 'a number'}"
                               f" (default {default!r})")
    return None if default is None and text.lower() == "none" else text


def parse_methods(methods) -> list[MethodSpec]:
    """The methods of a sweep from ``"pq,opq,sscq[preset=spq]"`` or an iterable of names, specs
    and :class:`MethodSpec`.

    A spec is ``name`` or ``name[param=value,...]``; each value is converted to the type of the
    parameter's default and checked against the method's choices now, so a typo fails before any
    training with an :class:`~explorer.errors.InvalidParameter` naming the spec, the parameter and
    the fix. Grid parameters (``n_subspaces``, ``n_codewords``) and ``random_state`` are the
    sweep's and cannot be set here.
    """
    items = _split_top_level(methods) if isinstance(methods, str) else list(methods)
    if not items:
        raise InvalidParameter(f"methods is empty; give a comma-separated list from: {', '.join(registry.available())}")
    specs = []
    for item in items:
        if isinstance(item, MethodSpec):
            specs.append(item)
            continue
        match = _SPEC.match(str(item))
        if not match:
            raise InvalidParameter(f"methods: {item!r} is not a method spec; write name or name[param=value,...], "
                                   "e.g. sscq[preset=spq]")
        name, body = match.group(1), match.group(2)
        if name not in registry.available():
            raise InvalidParameter(f"methods: unknown {name!r}; choose from: {', '.join(registry.available())}")
        cls = registry.get(name)
        params = {}
        for pair in _split_top_level(body or ""):
            key, sep, value = pair.partition("=")
            key = key.strip()
            if not sep or not key:
                raise InvalidParameter(f"methods: {item!r}: {pair!r} is not param=value; e.g. {name}[epochs=3]")
            if key in SWEEP_PARAMS:
                raise InvalidParameter(f"methods: {item!r}: {key} is set by the sweep ({'--seed' if key == 'random_state' else '--bits'}); "
                                       "leave it out of the spec")
            if key not in cls.param_names():
                raise InvalidParameter(f"methods: {item!r}: {name} has no parameter {key!r}; valid: "
                                       f"{', '.join(p for p in cls.param_names() if p not in SWEEP_PARAMS)}")
            params[key] = _typed(cls, key, value, item)
        allowed = {k: v for k, v in cls.param_choices.items() if k in params}
        for key, choices in allowed.items():
            if params[key] not in choices:
                raise InvalidParameter(f"methods: {item!r}: {key}={params[key]!r} is not known; use one of "
                                       f"{', '.join(map(str, choices))}")
        specs.append(MethodSpec(name, params))
    labels = [s.label for s in specs]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise InvalidParameter(f"methods: {', '.join(repeated)} given twice; each curve once")
    return specs


def _empty_row(method: str, bits: int, dataset: str, reference: bool, params: dict | None = None) -> dict:
    params = params or {}
    return {"method": method, "bits": int(bits), "subspaces": params.get("n_subspaces"),
            "codewords": params.get("n_codewords"), "distortion": None,
            "recall_at": {str(r): None for r in RECALL_AT}, "map": None, "fit_seconds": None,
            "encode_seconds": None, "reference": reference, "dataset": dataset}


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def run_method(name: "str | MethodSpec", bits: int, ds: Dataset, gt: np.ndarray, *, random_state: int = 0,
               overrides: dict | None = None, fit_callbacks: Iterable[Callable] = (),
               stop: StopSignal | None = None, train_size: int | None = None) -> tuple[dict, Any]:
    """Train method ``name`` at ``bits`` on ``ds`` (which has queries) and measure it.

    ``name``: a method name, a spec ``name[param=value,...]`` or a :class:`MethodSpec` (its
    parameters win over ``overrides``; the row's ``method`` is the spec's label).
    Returns (row, fitted quantizer or None). ``overrides``: parameters applied when the method
    takes them (e.g. ``{"n_iter": 5, "epochs": 3}``); others are ignored, so one override can
    serve a mixed grid. ``train_size``: fit on the seeded sample of that many base vectors that
    ``pqx train --train-size`` fits on (:func:`~explorer.data.training_set`); the row is still
    measured on the whole base. Errors become the row's ``error`` field.
    """
    spec = name if isinstance(name, MethodSpec) else parse_methods([name])[0]
    cls = registry.get(spec.name)
    row = _empty_row(spec.label, bits, ds.name, False)
    try:
        params = dict(cls.grid_for_bits(bits, ds.dim))
        row.update(subspaces=params.get("n_subspaces"), codewords=params.get("n_codewords"))
        valid = set(cls.param_names())
        params.update({k: v for k, v in (overrides or {}).items() if k in valid})
        params.update(spec.params)
        params["random_state"] = random_state
        quantizer = registry.create(spec.name, **params)
        # Unsupervised methods never see the labels: they are for scoring (mAP) only, as in pqx train.
        X, y = training_set(ds, train_size, random_state)
        quantizer.fit(X, y if quantizer.supervised else None, callbacks=fit_callbacks, stop=stop)
        row = quantizer_row(quantizer, ds, gt, bits=bits)
        row["method"] = spec.label
    except Exception as exc:  # one failed run must not end the sweep: it becomes an error row
        row["error"] = _error(exc)
        return row, None
    return row, quantizer


def quantizer_row(quantizer, ds: Dataset, gt: np.ndarray | None = None, *, bits: int | None = None) -> dict:
    """The result row (see the module doc) of a fitted ``quantizer`` measured on ``ds`` (which
    has queries) by :func:`~explorer.report.evaluate`: the one row format of the sweep, the
    dashboard's recall-vs-bits view and ``pqx sweep --json``. ``bits``: the code length the
    caller asked for (a ``note`` says when the method's grid gave another); default the model's."""
    ev = evaluate(quantizer, ds, gt)
    row = _empty_row(quantizer.name, quantizer.bits, ds.name, False)
    row.update(subspaces=int(quantizer.n_subspaces), codewords=int(quantizer.n_codewords),
               distortion=float(ev["distortion"]), recall_at=ev["recall_at"], map=ev["map"],
               fit_seconds=float(quantizer.fit_seconds_), encode_seconds=float(ev["encode_seconds"]),
               collapsed_subspaces=int(np.sum(ev["collapsed"])), dead_codes=int(np.sum(ev["dead_codes"])),
               perplexity_mean=float(np.mean(ev["perplexity"])))
    if bits is not None:
        row["bits"] = int(bits)
    if getattr(quantizer, "stopped_", False):
        row["stopped"] = True
    if bits is not None and quantizer.bits != bits:
        row["note"] = f"the method's grid gives {quantizer.bits} bits for the requested {bits}"
    return row


def run_reference(kind: str, bits: int, ds: Dataset, gt: np.ndarray, *, random_state: int = 0,
                  train_size: int | None = None, batch_size: int | None = None,
                  map_block: int | None = None) -> dict:
    """The row of faiss reference ``kind`` (pq, opq, rq, lsq) at ``bits``: M = bits/8 codebooks
    of 256 codewords, measured by :func:`reference_row`; the row's ``bits`` is the one asked for."""
    row = _empty_row(f"faiss-{kind}", bits, ds.name, True)
    try:
        params = registry.Quantizer.grid_for_bits(bits, ds.dim)
    except Exception as exc:
        row["error"] = _error(exc)
        return row
    return reference_row(kind, ds, gt, params["n_subspaces"], params["n_codewords"], random_state=random_state,
                         train_size=train_size, batch_size=batch_size, map_block=map_block)


def reference_row(kind: str, ds: Dataset, gt: np.ndarray | None, n_subspaces: int, n_codewords: int = 256, *,
                  random_state: int = 0, train_size: int | None = None, batch_size: int | None = None,
                  map_block: int | None = None, train: np.ndarray | None = None) -> dict:
    """Train faiss reference ``kind`` (pq, opq, rq, lsq) with ``n_subspaces`` codebooks of
    ``n_codewords`` (a power of two: faiss's constraint) and measure it as our rows are measured:
    distortion in the input space, ADC search of the queries through the faiss index, mAP over
    the whole base with labels. ``train_size``: train on the same seeded sample as
    :func:`run_method`; ``train``: train on these (n_train, d) vectors instead (RLQ's report
    gives its own budget's sample). The row is named ``faiss-<kind>`` with ``"reference": True``;
    errors become its ``error`` field. Without ``gt`` (no queries) recall stays None.

    The base is measured in bounded memory, as :func:`~explorer.report.evaluate` measures our
    rows (:func:`~explorer.search.evaluate_faiss`): read, encoded, decoded for the distortion and
    added to the index ``batch_size`` rows at a time (default 2^21 / d rows), and, with labels,
    searched for ``map_block`` queries at a time (default ~10^6 ids per block) for mAP@all; what is
    held is the codes. Only training without ``train_size`` reads the whole base into memory
    (faiss trains on an in-memory array). Results equal one faiss call over the whole base, but
    for LSQ on a base of more than ``batch_size`` rows and the ordering of near-tied items
    between query blocks (see :func:`~explorer.search.evaluate_faiss`).

    ``random_state`` seeds faiss PQ's k-means; OPQ, RQ and LSQ use faiss's fixed internal seeds.
    """
    M, K = int(n_subspaces), int(n_codewords)
    row = _empty_row(f"faiss-{kind}", M * max(1, int(np.log2(max(K, 2)))), ds.name, True,
                     {"n_subspaces": M, "n_codewords": K})
    try:
        if kind not in REFERENCES:
            raise InvalidParameter(f"unknown faiss reference {kind!r}; use {', '.join(REFERENCES)}")
        if kind in ("pq", "opq") and ds.dim % M:
            raise InvalidParameter(f"M={M} subspaces (for {row['bits']} bits) do not divide d={ds.dim}")
        t0 = time.perf_counter()
        X = check_vectors(training_set(ds, train_size, random_state)[0], "base") if train is None else train
        with native_stderr_silenced():
            index = faiss_reference(kind, X, M, K, seed=random_state)
        fit_seconds = time.perf_counter() - t0
        labelled = ds.labels is not None and ds.query_labels is not None
        ev = evaluate_faiss(index, ds.base, ds.queries, k=max(RECALL_AT), query_labels=ds.query_labels if labelled else None,
                            base_labels=ds.labels if labelled else None, batch_size=batch_size, map_block=map_block)
    except Exception as exc:  # faiss asserts surface as RuntimeError; keep sweeping
        row["error"] = _error(exc)
        return row
    codes = ev["codes"]
    row.update(distortion=float(ev["distortion"]), map=ev["map"], fit_seconds=float(fit_seconds),
               encode_seconds=float(ev["encode_seconds"]))
    if gt is not None:
        row["recall_at"] = metrics.recalls(ev["ranking"], gt, RECALL_AT)
    if codes.shape[1] == M and K <= 256:  # one byte per codebook: usage is readable from the codes
        usage = diagnostics.usage_histogram(codes, K)
        row.update(collapsed_subspaces=int(np.sum(diagnostics.collapsed_mask(usage))),
                   dead_codes=int(np.sum(diagnostics.dead_codes(usage))),
                   perplexity_mean=float(np.mean(diagnostics.perplexity(usage))))
    return row


DASHBOARD_REFERENCES = {"pq": (2, 4, 8, 16), "opq": (4, 8)}
"""M of each faiss reference curve the dashboard draws: faiss OPQ trains 50 rounds (on digits at
K=256 ~1.3 s at M=4 and ~3.7 s at M=8 on one core), so its curve gets two points; PQ is cheap."""


def reference_rows(ds: Dataset, gt: np.ndarray, n_codewords: int, subspaces: dict = DASHBOARD_REFERENCES, *,
                   random_state: int = 1234) -> list[dict]:
    """:func:`reference_row` for every kind and M in ``subspaces`` ({kind: (M, ...)}) whose M
    divides the dimension, at ``n_codewords`` (rows whose training failed are left out)."""
    rows = []
    for kind, ms in subspaces.items():
        for M in ms:
            if ds.dim % M == 0:
                row = reference_row(kind, ds, gt, M, n_codewords, random_state=random_state)
                if "error" not in row:
                    rows.append(row)
    return rows


def record_without_samples(recorder: Recorder) -> Callable:
    """A callback feeding ``recorder`` steps stripped of embedding samples (another subscriber
    may ask for them; a run's record keeps usage and losses only, so it stays small)."""
    def record(event):
        recorder(replace(event, sample=None) if isinstance(event, Step) and event.sample is not None else event)
    return record


def sweep(ds: Dataset, methods: "str | Sequence[str | MethodSpec]" = ("pq", "opq"), bits: Sequence[int] | str = (16, 32, 64), *,
          references: Sequence[str] = REFERENCES, random_state: int = 0, n_queries: int = 200,
          overrides: dict | None = None, callbacks: Iterable[Callable] = (), fit_callbacks: Iterable[Callable] = (),
          stop: StopSignal | None = None, record_steps: int = 0, train_size: int | None = None) -> list[dict]:
    """Rows (list of dicts, see the module doc) for every (bits, method) and (bits, reference).

    methods: names or specs ``name[param=value,...]`` (:func:`parse_methods`), a list or one
    comma-separated string. ds: the dataset; without queries, ``n_queries`` base vectors are held out with
    ``random_state`` (as ``pqx train`` does). Order: for each bit length, our methods in the
    given order, then the faiss references — so every curve of a live view grows together.
    callbacks: receive one :class:`SweepRow` per finished run. fit_callbacks: receive every
    run's training events. stop: a set :class:`StopSignal` ends the current fit after its step
    and the sweep before the next run (rows so far are returned). record_steps: when > 0, each
    of our runs is recorded by its own :class:`~explorer.events.Recorder` keeping its last
    ``record_steps`` steps, handed out as ``SweepRow.events`` (memory stays bounded: at most
    record_steps (M, K) usage arrays per run); 0 (default) records nothing and leaves fits
    unobserved, as fast as ``pqx train``. train_size: every run (faiss references too) fits on
    the same seeded sample of that many base vectors, the one ``pqx train --train-size`` takes
    with the same seed; None fits on the whole base.
    """
    # unknown names or parameters fail before any training; no methods at all is a sweep of the
    # faiss references alone
    methods = methods.strip() if isinstance(methods, str) else list(methods)
    names = parse_methods(methods) if methods else []
    bit_list = parse_bits(bits)
    record_steps = check_int(record_steps, "record_steps", low=0)
    for kind in references:
        if kind not in REFERENCES:
            raise InvalidParameter(f"unknown faiss reference {kind!r}; use {', '.join(REFERENCES)}")
    if ds.queries is None:
        ds = split_queries(ds, n_queries, random_state=random_state)
    if train_size is not None:
        training_rows(ds, train_size, random_state)  # a bad size fails before any training, naming train_size
    gt = ground_truth(ds, max(RECALL_AT))
    callbacks = [cb for cb in callbacks if cb is not None]
    fit_callbacks = [cb for cb in fit_callbacks if cb is not None]  # reused by every run: no one-shot iterators
    rows: list[dict] = []

    def emit(row: dict, quantizer=None, events: Recorder | None = None) -> None:
        rows.append(row)
        event = SweepRow(row=row, quantizer=quantizer, events=events)
        for cb in callbacks:
            cb(event)

    for b in bit_list:
        for name in names:
            if stop is not None and stop.is_set():
                return rows
            recorder = Recorder(max_steps=record_steps) if record_steps else None
            run_callbacks = [*fit_callbacks, record_without_samples(recorder)] if recorder is not None else fit_callbacks
            row, quantizer = run_method(name, b, ds, gt, random_state=random_state, overrides=overrides,
                                        fit_callbacks=run_callbacks, stop=stop, train_size=train_size)
            emit(row, quantizer, recorder if recorder is not None and recorder.started is not None else None)
        for kind in references:
            if stop is not None and stop.is_set():
                return rows
            emit(run_reference(kind, b, ds, gt, random_state=random_state, train_size=train_size))
    return rows


CSV_COLUMNS = ("method", "bits", "subspaces", "codewords", "distortion", "recall_at_1", "recall_at_10",
               "recall_at_100", "map", "fit_seconds", "encode_seconds", "reference", "dataset",
               "collapsed_subspaces", "dead_codes", "perplexity_mean", "error")


def flat_row(row: dict) -> dict:
    """A row with ``recall_at`` spread into recall_at_1/10/100 columns (for CSV and tables)."""
    out = {k: v for k, v in row.items() if k != "recall_at"}
    for r, value in (row.get("recall_at") or {}).items():
        out[f"recall_at_{r}"] = value
    return {c: out.get(c) for c in CSV_COLUMNS}


__all__ = ["SweepRow", "MethodSpec", "parse_methods", "sweep", "record_without_samples", "run_method", "run_reference", "quantizer_row", "reference_row", "reference_rows", "DASHBOARD_REFERENCES", "parse_bits", "flat_row", "REFERENCES", "ROW_KEYS",
           "CSV_COLUMNS"]
