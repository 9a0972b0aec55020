"""The :class:`Quantizer` base every method derives from, and the CLI option record.

A method file subclasses :class:`Quantizer`, sets ``name`` (its registry key), writes
``__init__`` with its hyper-parameters (stored unchanged, scikit-learn style) and ``_fit``; the
base class does validation, events, encoding, decoding, ADC search and faiss export.

Spaces: ``transform(X)`` maps input vectors (n, d) into the space where the codebooks live
(n, D): identity for PQ, a rotation for OPQ, a network for the deep methods. ``codebooks_`` are
(M, K, D/M) in that space. ``decode`` maps codes back to the input space when the transform is
invertible (PQ, OPQ) and otherwise returns the reconstruction in the embedding space.
"""
from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterable

import numpy as np
import torch

from .. import metrics
from ..errors import InvalidParameter, InvalidType
from ..events import FitFailed, FitFinished, FitStarted, EmbeddingSample, StopSignal, TrainingRun
from ..validation import (check_codes, check_labels, check_pq_shape, check_random_state, check_vectors, code_dtype,
                          errors_name_rows)


def check_bits(bits, step: int, scheme: str, fix: str | None = None) -> int:
    """``bits`` as an int when it is a positive multiple of ``step``, the bits one subspace takes.

    Raises :class:`InvalidParameter` naming ``bits``, the value and the ``scheme`` (e.g. "8 bits
    per subspace with K=256") that needs the multiple; used by ``grid_for_bits``.
    """
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or bits < step or bits % step:
        raise InvalidParameter(f"bits={bits!r} cannot be made by this method's grid ({scheme}); "
                               f"{fix or f'use a positive multiple of {step}'}")
    return int(bits)


@dataclass(frozen=True)
class Option:
    """One method-specific CLI flag, e.g. ``Option("--no-gini", "gini", "turn the Gini terms off", const=False)``.

    ``type`` converts a value (``--lambda-cd 0``); when ``type`` is None the flag takes no value
    and stores ``const``. The CLI refuses a flag that the chosen method does not declare.
    """

    flag: str
    param: str
    help: str
    type: Callable | None = None
    const: Any = True


def resolve_device(device: str | torch.device | None) -> torch.device:
    """Return a usable torch device; ``"auto"`` picks cuda, then mps, then cpu.

    Asking for an accelerator torch cannot see raises :class:`InvalidParameter` naming the fix.
    """
    name = str(device or "cpu")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidParameter(f"device={name!r} but torch sees no CUDA GPU; use device='cpu' or 'auto'")
    if name == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise InvalidParameter("device='mps' but torch sees no Apple GPU; use device='cpu' or 'auto'")
    try:
        return torch.device(name)
    except RuntimeError:
        raise InvalidParameter(f"device={name!r} is not a torch device; use 'cpu', 'cuda', 'mps' or 'auto'") from None


def _scan_device(quantizer) -> dict:
    """{"device": the fit's device} for :func:`~explorer.search.adc_search` when it is not the CPU, else {}."""
    dev = getattr(quantizer, "device_", None)
    return {} if dev is None or dev.type == "cpu" else {"device": dev}


def data_digest(X: np.ndarray) -> dict:
    """Cheap fingerprint of a training set (n, dim, sha1 of ≤ 1000 evenly spaced rows), to tell data apart."""
    import hashlib
    rows = np.linspace(0, len(X) - 1, num=min(1000, len(X))).astype(np.int64)
    digest = hashlib.sha1(np.ascontiguousarray(X[rows], dtype=np.float32).tobytes()).hexdigest()
    return {"n": int(X.shape[0]), "dim": int(X.shape[1]), "digest": digest}


def reads_in_batches(X, batch_size: int) -> bool:
    """True when X is a 2-D numpy array, memory map or :class:`~explorer.data.RowsExcept` with
    more than ``batch_size`` rows: :meth:`Quantizer.encode` (and the deep methods' ``transform``)
    then read and validate it ``batch_size`` rows at a time instead of copying it whole. Other
    inputs (lists, tensors, small arrays) are validated whole, so their error messages name
    rows of the whole input."""
    from ..data import RowsExcept
    return isinstance(X, (np.ndarray, RowsExcept)) and X.ndim == 2 and len(X) > batch_size


class Quantizer:
    """Base of every quantizer: ``fit(X, y=None, callbacks=())`` → self, ``encode``, ``decode``.

    Class attributes a method sets:
      name: registry key used by the CLI and the dashboard ("pq", "opq", "dpq", ...).
      title / paper: human-readable name and citation, shown in views and reports.
      supervised: ``fit`` requires class labels ``y``.
      has_soft_codes: steps report ``soft_hard`` (the soft-vs-hard view plots it).
      codes_follow_classes: a supervised method whose codes converge to one codeword per class
        and subspace (DPQ, FPPQ); codebook health is then judged against the number of classes.
      cli_options: the method's own CLI flags (:class:`Option`).
      param_choices: {parameter: allowed values} for the parameters that name one of a few
        options; ``fit`` rejects any other value, and the dashboard offers them in a drop-down.
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    supervised: ClassVar[bool] = False
    has_soft_codes: ClassVar[bool] = False
    codes_follow_classes: ClassVar[bool] = False
    cli_options: ClassVar[tuple[Option, ...]] = ()
    param_choices: ClassVar[dict[str, tuple]] = {}
    supports_checkpoint: ClassVar[bool] = False
    metric: str = "l2"  # a parameter of the methods that offer others (PQ, OPQ): see distance_tables
    checkpoint_attrs: ClassVar[tuple[str, ...]] = ("codebooks_",)

    def __init__(self, n_subspaces: int = 8, n_codewords: int = 256, *, random_state: int = 0, device: str = "cpu"):
        self.n_subspaces = n_subspaces
        self.n_codewords = n_codewords
        self.random_state = random_state
        self.device = device

    # ----------------------------------------------------------------- parameters
    @classmethod
    def param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self" and sig.parameters[p].kind != inspect.Parameter.VAR_KEYWORD]

    def get_params(self, deep: bool = True) -> dict:
        """{name: value} of the hyper-parameters as given to ``__init__`` (scikit-learn's contract).

        ``deep`` is accepted for scikit-learn (``clone``, ``Pipeline``, ``GridSearchCV`` pass it);
        a quantizer holds no sub-estimators, so both values give the same dict.
        """
        return {p: getattr(self, p) for p in self.param_names()}

    def set_params(self, **params) -> "Quantizer":
        """Self, with the named hyper-parameters replaced (scikit-learn's contract); an unknown
        name raises :class:`InvalidParameter` listing the valid ones. Values are checked by ``fit``."""
        names = self.param_names()
        for key, value in params.items():
            if key not in names:
                raise InvalidParameter(f"{type(self).__name__} has no parameter {key!r}; valid: {', '.join(names)}")
            setattr(self, key, value)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    @classmethod
    def grid_for_bits(cls, bits: int, dim: int) -> dict:
        """Parameters giving a ``bits``-bit code on ``dim``-dimensional data, as the method's paper
        would choose them; used by :mod:`explorer.sweep`.

        Default (PQ, OPQ, Jégou et al. 2011 and faiss): K = 256 codewords (one byte per
        subspace) and M = bits / 8 subspaces. ``dim`` is unused here; a method whose paper picks
        differently (or whose embedding size depends on the code length) overrides this.
        Whether M divides the dimension is left to ``fit``'s validation, so a sweep can report
        that combination as an error row. Raises :class:`InvalidParameter` when ``bits`` is not
        a positive multiple of 8.
        """
        bits = check_bits(bits, 8, "8 bits per subspace with K=256")
        return {"n_subspaces": bits // 8, "n_codewords": 256}

    @property
    def planned_steps(self) -> int | None:
        """How many steps a full fit takes (for progress bars), when the method knows."""
        return getattr(self, "n_iter", None) or getattr(self, "epochs", None)

    def extra_report(self, ds, evaluation: dict) -> dict:
        """Method-specific keys added to the ``pqx train`` JSON report (e.g. DPQ's per-LUT mAP)."""
        return {}

    @property
    def bits(self) -> int:
        """Code length in bits: M · ceil(log2 K)."""
        return int(self.n_subspaces * int(np.ceil(np.log2(self.n_codewords))))

    # ----------------------------------------------------------------- training
    def fit(self, X, y=None, *, callbacks: Iterable[Callable] = (), stop: StopSignal | None = None,
            resume: dict | None = None) -> "Quantizer":
        """Train on ``X`` (n, d) (and labels ``y`` (n,) for supervised methods); return self.

        ``callbacks`` receive the events of :mod:`explorer.events`; ``stop`` (a
        :class:`StopSignal` or ``threading.Event``) ends training after the current step,
        leaving a usable model with ``stopped_ = True``. ``resume`` is a :meth:`state_dict`
        saved during an earlier fit of the same method, parameters and data: training continues
        from its step and, with the same seed, ends with the codes an uninterrupted fit gives.
        """
        X = check_vectors(X, "X")
        y = check_labels(y, X.shape[0], "y")
        if self.supervised and y is None:
            raise InvalidParameter(f"method {self.name!r} is supervised: pass class labels y (one per vector) to fit")
        self._check_choices()
        check_random_state(self.random_state)
        self._validate(X, y)
        self.device_ = resolve_device(self.device)
        self.dim_ = X.shape[1]
        self._data_digest = data_digest(X)
        if resume is not None:
            self._check_resumable(resume)
        self._resume_state = resume
        run = TrainingRun(callbacks, stop)
        self._run = run
        if run.observed:
            run.emit(FitStarted(method=self.name, params=self.get_params(), n_samples=X.shape[0], dim=X.shape[1],
                                n_subspaces=self.n_subspaces, n_codewords=self.n_codewords,
                                usable_codewords=self.usable_codewords(y)))
        t0 = time.perf_counter()
        try:
            self._fit(X, y, run)
        except Exception as exc:
            run.emit(FitFailed(steps=run.steps, error=f"{type(exc).__name__}: {exc}"))
            self._run = None
            raise
        finally:
            self._resume_state = None
        self.fit_seconds_ = time.perf_counter() - t0
        self.n_steps_ = run.steps
        self.stopped_ = run.stopped
        if run.observed:  # the final metrics cost one more pass over X: only when a subscriber asked
            run.emit(FitFinished(steps=run.steps, stopped=run.stopped, seconds=self.fit_seconds_,
                                 metrics=self._final_metrics(X, y) if run.final_metrics else {}))
        self._run = None  # it holds the callbacks (locks, widgets): not part of a fitted, picklable model
        return self

    def fit_transform(self, X, y=None, **fit_params) -> np.ndarray:
        """``fit(X, y, **fit_params).transform(X)``: (n, D) float32 vectors in the codebooks' space
        (scikit-learn's transformer contract, so a quantizer can sit inside a ``Pipeline``)."""
        return self.fit(X, y, **fit_params).transform(X)

    def score(self, X, y=None) -> float:
        """Negative distortion −mean ||transform(x) − reconstruct(encode(x))||² over X (n, d):
        greater is better, as scikit-learn's ``GridSearchCV`` and ``cross_val_score`` expect.

        ``y`` is ignored (scikit-learn passes it). Measured in the codebooks' space, so scores of
        deep methods with different embeddings are not comparable with each other.
        """
        return -float(self.embedding_distortion(X))

    def __sklearn_tags__(self):
        """scikit-learn's estimator tags (imported lazily: scikit-learn is needed only by who asks)."""
        from sklearn.utils import Tags, TargetTags, TransformerTags
        return Tags(estimator_type=None, target_tags=TargetTags(required=self.supervised),
                    transformer_tags=TransformerTags(), requires_fit=True)

    def usable_codewords(self, y: np.ndarray | None) -> int | None:
        """Codewords per subspace this method can be expected to use on labels ``y``, when fewer
        than K: the class count for ``codes_follow_classes`` methods; None otherwise."""
        if not self.codes_follow_classes or y is None:
            return None
        n_classes = int(len(np.unique(y)))
        return n_classes if n_classes < self.n_codewords else None

    def _check_choices(self) -> None:
        """Raise :class:`InvalidParameter` naming the parameter whose value is not in :attr:`param_choices`."""
        for name, allowed in self.param_choices.items():
            value = getattr(self, name)
            if value not in allowed:
                raise InvalidParameter(f"{name}={value!r} is not known; use one of {', '.join(map(str, allowed))}")

    def _validate(self, X: np.ndarray, y: np.ndarray | None) -> None:
        """Check hyper-parameters against the data; methods with an embedding override the dim check."""
        check_pq_shape(X.shape[0], X.shape[1], self.n_subspaces, self.n_codewords)

    def _fit(self, X: np.ndarray, y: np.ndarray | None, run: TrainingRun) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement _fit")  # pragma: no cover

    def _final_metrics(self, X: np.ndarray, y: np.ndarray | None) -> dict:
        """``FitFinished.metrics`` when a subscriber asked for them: the distortion of X with the
        final codebooks (one encoding pass over X, as long as one training iteration or more)."""
        codes = self.encode(X)
        return {"distortion": self.embedding_distortion(X, codes)}

    # ----------------------------------------------------------------- checkpoints
    @property
    def current_step(self) -> int:
        """Steps completed so far in the running (or last) fit, counting steps before a resume."""
        run = getattr(self, "_run", None)
        return int(run.steps) if run is not None else int(getattr(self, "n_steps_", 0))  # during / after fit

    @property
    def at_resumable_step(self) -> bool:
        """Whether training could continue from the current state (False after a step reported
        in the middle of an epoch); True outside a fit."""
        run = getattr(self, "_run", None)
        return True if run is None else bool(run.resumable)

    @property
    def resumable_steps(self) -> int:
        """Resumable units trained so far, which ``Checkpointer(every=N)`` counts: the steps
        here; a method whose steps are finer than what it can resume from (mini-batches within
        an epoch) overrides this with the units it resumes from (epochs)."""
        return self.current_step

    def state_dict(self) -> dict:
        """Everything needed to continue training from the current step, as plain data.

        Keys: ``method``, ``params`` (:meth:`get_params`), ``step``, ``data`` (n, dim and a
        digest of the training set), ``arrays`` (the fitted attributes in ``checkpoint_attrs``,
        numpy copies), ``rng`` (numpy bit-generator state, torch generator and global torch RNG
        states) and ``extra`` (:meth:`_extra_state`: model/optimizer state for torch methods).
        Safe to call from a callback during ``fit``: it then describes the state after the
        step just reported. Methods opt in with ``supports_checkpoint = True``.
        """
        if not self.supports_checkpoint:
            from . import available, get
            supported = ", ".join(n for n in available() if get(n).supports_checkpoint)
            raise InvalidParameter(f"method {self.name!r} does not support checkpoints yet; "
                                   f"train without --checkpoint/--resume ({supported} support them)")
        self._check_fitted()
        return {
            "method": self.name,
            "params": {k: v for k, v in self.get_params().items() if k != "device"},
            "step": self.current_step,
            "data": dict(self._data_digest),
            "arrays": {a: np.array(getattr(self, a), copy=True) for a in self.checkpoint_attrs if hasattr(self, a)},
            "rng": self._rng_states(),
            "extra": self._extra_state(),
        }

    def _rng_states(self) -> dict:
        """The ``rng`` entry of :meth:`state_dict`: states of :meth:`_generators`' pair and of torch's global RNGs."""
        gen, rng = getattr(self, "_rngs", (None, None))
        return {"numpy": None if rng is None else rng.bit_generator.state,
                "torch": None if gen is None else gen.get_state().clone(),
                "torch_global": torch.get_rng_state().clone(),
                # CUDA's generators drive dropout & co. of torch methods on a GPU; only read when in use
                "torch_cuda": [t.clone() for t in torch.cuda.get_rng_state_all()] if torch.cuda.is_initialized() else None}

    def load_state_dict(self, state: dict) -> "Quantizer":
        """Restore the fitted attributes of a :meth:`state_dict` (a usable model); return self.

        To continue *training* from it, pass it to ``fit(X, resume=state)`` instead.
        """
        if not self.supports_checkpoint:
            self.state_dict()  # raises the message above
        if state.get("method") != self.name:
            raise InvalidParameter(f"checkpoint is for method {state.get('method')!r}, not {self.name!r}; "
                                   "resume with the method that wrote it")
        for attr, value in state["arrays"].items():
            setattr(self, attr, np.asarray(value))
        self.dim_ = int(state["data"]["dim"])
        self.n_steps_ = int(state["step"])
        return self

    def _check_resumable(self, state: dict) -> None:
        """Refuse a checkpoint from another method, other hyper-parameters or other data."""
        if not self.supports_checkpoint:
            self.state_dict()  # raises: not supported
        if state.get("method") != self.name:
            raise InvalidParameter(f"checkpoint is for method {state.get('method')!r}, not {self.name!r}; "
                                   "resume with the method that wrote it")
        mine = {k: v for k, v in self.get_params().items() if k != "device"}
        diff = sorted(k for k in set(mine) | set(state["params"]) if mine.get(k) != state["params"].get(k))
        if diff:
            shown = ", ".join(f"{k}={state['params'].get(k)!r} (now {mine.get(k)!r})" for k in diff)
            raise InvalidParameter(f"checkpoint was trained with {shown}; resume with the same parameters and seed")
        if state["data"] != self._data_digest:
            raise InvalidParameter(f"checkpoint was trained on other data ({state['data']['n']}×{state['data']['dim']}, "
                                   f"digest {state['data']['digest'][:12]}); resume on the same data (and --n-queries/--seed)")

    def _resume_from(self) -> int:
        """Step to start from: 0, or the checkpoint's step, after restoring its arrays and extra state."""
        state = getattr(self, "_resume_state", None)
        if state is None:
            return 0
        for attr, value in state["arrays"].items():
            setattr(self, attr, np.array(value, copy=True))
        self._load_extra_state(state.get("extra") or {})
        self._run.steps = int(state["step"])
        return int(state["step"])

    def _restore_rngs(self, gen: torch.Generator | None = None, rng: np.random.Generator | None = None) -> None:
        """Set the generators (default: those of :meth:`_generators`) to the checkpoint's states; no-op when not resuming.

        Call it after the deterministic set-up that consumed randomness (subsampling, init),
        right before the first resumed step.
        """
        state = getattr(self, "_resume_state", None)
        if state is None:
            return
        gen0, rng0 = getattr(self, "_rngs", (None, None))
        gen, rng = gen or gen0, rng or rng0
        if rng is not None and state["rng"]["numpy"] is not None:
            rng.bit_generator.state = state["rng"]["numpy"]
        if gen is not None and state["rng"]["torch"] is not None:
            gen.set_state(state["rng"]["torch"])
        torch.set_rng_state(state["rng"]["torch_global"])
        if state["rng"].get("torch_cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["torch_cuda"])

    def _extra_state(self) -> dict:
        """Method state beyond ``checkpoint_attrs`` (torch methods: model and optimizer ``state_dict()``)."""
        return {}

    def _load_extra_state(self, extra: dict) -> None:
        """Restore what :meth:`_extra_state` returned (called when a resumed fit starts)."""

    # ----------------------------------------------------------------- helpers for subclasses
    def _generators(self) -> tuple[torch.Generator, np.random.Generator]:
        """Seeded torch and numpy generators from ``random_state`` (also seeds torch's global RNG
        for layers that draw from it, such as dropout and parameter init). The pair is kept so
        that :meth:`state_dict` can save their states."""
        seed = int(self.random_state or 0)
        torch.manual_seed(seed)
        self._rngs = (torch.Generator().manual_seed(seed), np.random.default_rng(seed))
        return self._rngs

    def _embedding_sample(self, Z: np.ndarray, size: int = 300) -> EmbeddingSample:
        """An :class:`EmbeddingSample` of ≤ ``size`` rows of embedded vectors ``Z`` (n, D), fixed rows."""
        rows = np.linspace(0, len(Z) - 1, num=min(size, len(Z))).astype(np.int64)
        Zs = np.asarray(Z[rows], dtype=np.float32)
        codes = self._encode_embedded(Zs)
        M = self.n_subspaces
        sub = Zs.reshape(len(Zs), M, -1).transpose(1, 0, 2).copy()
        return EmbeddingSample(subvectors=sub, codes=codes.astype(np.int64), codebooks=np.array(self.codebooks_))

    # ----------------------------------------------------------------- inference
    def _check_fitted(self) -> None:
        if not hasattr(self, "codebooks_"):
            raise InvalidParameter(f"this {type(self).__name__} is not fitted yet; call fit(X) first")

    def _check_input(self, X, name: str = "X") -> np.ndarray:
        self._check_fitted()
        X = check_vectors(X, name)
        if X.shape[1] != self.dim_:
            raise InvalidType(f"{name} has dimension {X.shape[1]} but the quantizer was fitted on d={self.dim_}; "
                              "pass vectors of the training dimension")
        return X

    def _metric_space(self, X: np.ndarray) -> np.ndarray:
        """X (n, d) float32 as the metric sees it: L2-normalised rows for ``metric="cosine"``
        (cosine is the inner product of unit vectors), unchanged for "l2" and "ip"."""
        return metrics.l2_normalize(X) if self.metric == "cosine" else X

    def transform(self, X) -> np.ndarray:
        """Vectors (n, d) → the codebooks' space (n, D), float32. Identity here (unit rows for cosine)."""
        return self._metric_space(self._check_input(X))

    def _encode_embedded(self, Z: np.ndarray) -> np.ndarray:
        """Codes (n, M) of embedded vectors (n, D): nearest codeword per sub-vector (the PQ rule)."""
        from ..kmeans import assign_nearest, split_into_subspaces
        dev = getattr(self, "device_", None) or torch.device("cpu")  # the fit's device (CUDA: encode there)
        C = torch.from_numpy(np.ascontiguousarray(self.codebooks_, dtype=np.float32)).to(dev)
        out = np.empty((len(Z), self.n_subspaces), dtype=code_dtype(self.n_codewords))
        batch = 65536
        for start in range(0, len(Z), batch):
            # "W": a read-only memory map is copied (torch cannot wrap it), anything else is not
            rows = np.require(Z[start:start + batch], dtype=np.float32, requirements=["C", "W"])
            Zs = split_into_subspaces(torch.from_numpy(rows), self.n_subspaces)
            assign, _ = assign_nearest(Zs.to(dev), C)
            out[start:start + batch] = assign.T.cpu().numpy()
        return out

    def encode(self, X, *, batch_size: int = 65536) -> np.ndarray:
        """Codes (n, M), uint8 when K ≤ 256 else uint16: codeword index per subspace.

        A numpy array, memory map or :class:`~explorer.data.RowsExcept` with more than
        ``batch_size`` rows is read, validated, transformed and encoded ``batch_size`` rows at a
        time (:func:`reads_in_batches`), so a base larger than memory is never copied whole to
        float32; only the codes (n·M bytes) are held.
        """
        if not reads_in_batches(X, batch_size):
            return self._encode_rows(X)
        self._check_fitted()
        out = np.empty((len(X), self.n_subspaces), dtype=code_dtype(self.n_codewords))
        for start in range(0, len(X), batch_size):
            stop = min(start + batch_size, len(X))
            with errors_name_rows(start, stop, len(X)):
                out[start:stop] = self._encode_rows(X[start:stop])
        return out

    def _encode_rows(self, X) -> np.ndarray:
        """Codes (n, M) of input vectors X, validated here: the PQ rule on ``transform(X)``. A method
        with its own encoder (DPQ: argmax of its code logits) overrides this, and :meth:`encode`
        batches it."""
        return self._encode_embedded(self.transform(X))

    def reconstruct(self, codes) -> np.ndarray:
        """Codes (n, M) → reconstructions (n, D) in the codebooks' space: the chosen codewords side by side."""
        self._check_fitted()
        codes = check_codes(codes, self.n_subspaces, self.n_codewords)
        C = np.asarray(self.codebooks_)
        return C[np.arange(self.n_subspaces)[None, :], codes].reshape(len(codes), -1).astype(np.float32)

    def decode(self, codes) -> np.ndarray:
        """Codes (n, M) → vectors (n, d) in the input space (the embedding space for deep methods)."""
        return self.reconstruct(codes)

    def embedding_distortion(self, X, codes=None) -> float:
        """Mean squared error ||transform(x) − reconstruct(code)||², summed over dims, averaged over X."""
        Z = self.transform(X)
        codes = self._encode_embedded(Z) if codes is None else codes
        return metrics.distortion(Z, self.reconstruct(codes))

    def distance_tables(self, queries) -> np.ndarray:
        """Asymmetric distance tables (nq, M, K) float32, smaller is nearer: squared L2 from each
        query sub-vector to each codeword (Jégou et al. 2011's asymmetric distance, ADC); for ``metric="ip"`` and
        ``"cosine"`` the negated inner products −<q_m, c_mk> (of unit queries for cosine), whose
        sum over m is −<q, x̂>, faiss ``METRIC_INNER_PRODUCT``'s score negated."""
        Q = np.require(self.transform(queries), requirements=["C", "W"])  # a read-only memory map is copied
        nq = len(Q)
        Qs = torch.from_numpy(Q).reshape(nq, self.n_subspaces, -1).permute(1, 0, 2)  # (M, nq, ds)
        C = torch.from_numpy(np.ascontiguousarray(self.codebooks_, dtype=np.float32))
        if self.metric != "l2":
            return (-torch.bmm(Qs, C.transpose(1, 2))).permute(1, 0, 2).contiguous().numpy()  # (nq, M, K)
        d2 = torch.cdist(Qs, C).pow_(2)  # (M, nq, K)
        return d2.permute(1, 0, 2).contiguous().numpy()

    def _scores(self, distances: np.ndarray) -> np.ndarray:
        """ADC sums as the metric reports them: squared L2 as they are, inner products (−sums) for ip and cosine."""
        return distances if self.metric == "l2" else -distances

    def search(self, queries, codes, k: int = 100) -> tuple[np.ndarray, np.ndarray]:
        """ADC search: (distances (nq, k) float32, ids (nq, k) int64) of the k nearest coded vectors,
        nearest first, equal distances by id. For ``metric="ip"``/``"cosine"`` the distances are
        the inner products <q, x̂> (largest first), as faiss ``METRIC_INNER_PRODUCT`` returns them."""
        from ..search import adc_search
        distances, ids = adc_search(self.distance_tables(queries), codes, k, **_scan_device(self))
        return self._scores(distances), ids

    def search_blocks(self, queries, codes, k: int = 100, *, block: int | None = None):
        """Yield :meth:`search`'s (distances (b, k), ids (b, k)) for successive blocks of ``block``
        queries (None: all at once), so that a caller ranking the whole base (k = n) holds one
        block's (b, n) at a time. The query side (the distance tables of every query) is computed
        once, as :meth:`search` computes it: tables of a lone query can differ from its row of the
        tables of many in the last bits (torch's ``cdist`` and BLAS pick kernels by batch size),
        so blocks stacked equal one :meth:`search`. A method overriding :meth:`search` overrides this too.
        """
        from ..search import adc_search
        tables = self.distance_tables(queries)
        block = len(tables) if block is None else block
        for start in range(0, len(tables), block):
            distances, ids = adc_search(tables[start:start + block], codes, k, **_scan_device(self))
            yield self._scores(distances), ids

    # ----------------------------------------------------------------- persistence
    def save(self, path) -> "Path":
        """Path of the file written: this fitted quantizer saved to ``path`` (suggested suffix
        ``.pqx``) as plain data that loading never unpickles (:mod:`explorer.persist`), with its
        parameters, library version and training-data digest; read it with ``explorer.load(path)``."""
        from ..persist import save_model
        return save_model(self, path)

    @classmethod
    def load(cls, path, *, device: str = "cpu") -> "Quantizer":
        """The fitted quantizer saved at ``path`` (:func:`explorer.persist.load_model`); called on a
        method's class (``PQ.load``), a file holding another method raises :class:`InvalidParameter`."""
        from ..persist import load_model
        return load_model(path, cls.name or None, device=device)

    def to_faiss(self):
        """A faiss index holding this quantizer's codebooks (see :func:`explorer.search.to_faiss`)."""
        from ..search import to_faiss
        return to_faiss(self)
