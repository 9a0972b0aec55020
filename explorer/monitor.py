"""Codebook health for any training loop: your own VQ layer, vector-quantize-pytorch, residual VQ.

Two lines in an existing loop give the usage histograms, perplexity, dead codes and the
collapse alarm of the built-in methods, live in any view, log or TensorBoard::

    monitor = CodebookMonitor(n_codewords=512, callbacks=[RunView().callback, EventLog("vq.jsonl")])
    monitor.hook(model.vq)                     # or monitor.update(indices, losses={...}) per batch
    ...train as usual...
    monitor.close()

The monitor emits exactly the events the built-in methods emit (``FitStarted`` first, one
:class:`~explorer.events.Step` every ``every`` updates, ``FitFinished`` at ``close()``), built
by the same code (:meth:`explorer.events.Step.from_usage` over
:func:`explorer.diagnostics.usage_counts`), so every view, sink and the collapse detector serve
both. Conventions follow vector-quantize-pytorch: codes are ``(..., M)`` with the codebook (head,
residual level) on the last axis, and ``-1`` marks entries to ignore (masked positions, dropped
levels). Usage is counted where the codes live (``torch.bincount`` on their device); only the
(M, K) counts move to the CPU. Counts accumulate over the ``every`` updates of one step: the
perplexity of a single small batch depends on the batch size (a batch of 32 can use at most 32
codewords), so judge collapse over a window of batches.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable

import numpy as np

from .diagnostics import code_matrix, detect_collapse, usage_counts, usage_counts_on_device
from .errors import InvalidParameter, InvalidType
from .events import STOP, EmbeddingSample, FitFinished, FitStarted, TrainingRun
from .validation import check_int

SAMPLE_SIZE = 300
"""Vectors per embedding sample (per subspace), drawn from the latest update's vectors."""


def _default_codes(output):
    """The codes in a quantizer's forward output: vector-quantize-pytorch's ``(quantized, indices,
    loss)`` tuples (``VectorQuantize``, ``ResidualVQ``) give ``indices``; an integer tensor is
    taken as it is."""
    if isinstance(output, (tuple, list)) and len(output) >= 2:
        return output[1]
    if hasattr(output, "dtype") and not getattr(output.dtype, "is_floating_point", True):
        return output
    raise InvalidType("hook: cannot find the codes in the module's output "
                      f"({type(output).__name__}); pass codes=lambda output: <the integer indices>")


def _finite(name, value: float) -> float:
    if not math.isfinite(value):
        raise InvalidParameter(f"losses[{name!r}] is {value}: training diverged (or the loss is masked out); "
                               "pass only finite losses, e.g. skip the batch or lower the learning rate")
    return value


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        return x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


class CodebookMonitor:
    """Watches the codes a quantizer assigns and emits the standard training events.

    n_codewords: K, codewords per codebook.
    n_subspaces: M, codebooks (PQ subspaces, heads, residual levels); the codes' last axis.
    callbacks: subscribers of the events (views, :class:`~explorer.events.EventLog`,
        :class:`~explorer.sinks.TensorBoard`, a :class:`~explorer.events.Recorder`); a callback
        returning :data:`~explorer.events.STOP` sets :attr:`stop_requested`.
    method: the run's name in views and logs.
    sample_every: steps between embedding samples (0: only when a subscriber asks for them).
    every: updates (batches) counted into one step.
    ignore_index: code value that is not counted (None: every value must lie in [0, K)).

    Attributes: ``usage`` (M, K) int64 counts of the latest step (None before the first),
    ``verdicts`` (the collapse detector's on them), ``steps`` emitted so far.
    """

    def __init__(self, n_codewords: int, n_subspaces: int = 1, *, callbacks: Iterable[Callable] = (),
                 method: str = "custom", sample_every: int = 0, every: int = 1, ignore_index: int | None = -1):
        self.n_codewords = check_int(n_codewords, "n_codewords (K)", low=1)
        self.n_subspaces = check_int(n_subspaces, "n_subspaces (M)", low=1)
        self.every = check_int(every, "every", low=1)
        self.sample_every = check_int(sample_every, "sample_every", low=0)
        if ignore_index is not None and (isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer))):
            raise InvalidType(f"ignore_index={ignore_index!r} must be an int (vector-quantize-pytorch uses -1) or None")
        self.ignore_index = ignore_index
        self.method = str(method)
        self.usage: np.ndarray | None = None
        self.steps = 0
        self.updates = 0
        self.closed = False
        self.stop_requested = False
        self._run = TrainingRun(callbacks)
        if self.sample_every:  # the monitor's own cadence joins its subscribers' requests
            self._run.sample_every = min(p for p in (self._run.sample_every, self.sample_every) if p > 0)
        self._started = False
        self._pending = np.zeros((self.n_subspaces, self.n_codewords), dtype=np.int64)
        self._pending_device = None  # torch counts of this step's tensor batches, on their device
        self._pending_updates = 0
        self._losses: dict[str, list[float]] = {}
        self._soft: list[tuple[float, int, int, int]] = []  # (gap sum, vectors, agreements, entries) per update
        self._sample_source = None
        self._rng = np.random.default_rng(0)

    # ------------------------------------------------------------------ intake
    def update(self, codes, *, step: int | None = None, losses: dict | None = None, soft=None,
               codebooks=None, vectors=None) -> bool:
        """Count one batch of ``codes``; every ``every`` updates emit one ``Step``.

        codes: integer (..., M) codes, numpy or a torch tensor on any device ((...) when M is 1).
        step: the caller's global step for the emitted event (default: steps emitted so far + 1).
        losses: {name: float or 0-d tensor} of this batch; a step reports their mean over its updates.
        soft: (..., M, K) code probabilities, for the soft-vs-hard figures: ``agreement`` (argmax
            equals the hard code) and, with ``codebooks``, ``gap`` (squared distance between the
            soft reconstruction Σ_k p_k c_k and the hard codeword, summed over subspaces).
        codebooks: (M, K, d) codewords; with ``vectors`` (..., M, d), the sub-vectors that were
            quantized, they feed the embedding views' samples (taken only when one is due).
        Returns False once a subscriber asked to stop (see :attr:`stop_requested`).
        """
        if self.closed:
            raise InvalidParameter("update() after close(): make a new CodebookMonitor for a new run")
        flat = code_matrix(codes, self.n_subspaces, "codes")
        batch_losses = self._check_losses(losses)  # checked first: a refused batch changes no count
        if hasattr(flat, "detach"):  # a tensor: counted on its device, summed there until the step
            counts = usage_counts_on_device(flat, self.n_codewords, ignore_index=self.ignore_index, name="codes")
            self._pending_device = counts if self._pending_device is None else self._pending_device + counts
        else:
            self._pending += usage_counts(flat, self.n_codewords, ignore_index=self.ignore_index, name="codes")
        if soft is not None:
            self._soft.append(self._soft_hard(flat, soft, codebooks))
        if not self._started:
            self._start(codebooks)
        self._pending_updates += 1
        self.updates += 1
        for name, value in batch_losses.items():
            self._losses.setdefault(name, []).append(value)
        if vectors is not None and codebooks is not None:
            self._sample_source = (flat, vectors, codebooks)
        if self._pending_updates >= self.every:
            self._emit(step)
        return not self.stop_requested

    def _check_losses(self, losses) -> dict:
        if losses is None:
            return {}
        if not isinstance(losses, dict):
            raise InvalidType(f"losses must be a dict {{name: value}}; got {type(losses).__name__}")
        out = {}
        for name, value in losses.items():
            if hasattr(value, "detach") and value.device.type != "cpu" and value.numel() == 1:
                out[str(name)] = value.detach().reshape(())  # summed on its device; checked at the step
                continue
            try:
                v = float(value.detach().item() if hasattr(value, "detach") else value)
            except (TypeError, ValueError, RuntimeError):
                raise InvalidType(f"losses[{name!r}] = {value!r} is not a number; pass floats or 0-d tensors") from None
            out[str(name)] = _finite(name, v)
        return out

    def _soft_hard(self, flat, soft, codebooks) -> tuple[float, int, int, int]:
        M, K = self.n_subspaces, self.n_codewords
        p = soft.detach() if hasattr(soft, "detach") else np.asarray(soft)
        if tuple(p.shape[-2:]) != (M, K):
            raise InvalidParameter(f"soft has shape {tuple(p.shape)}; pass probabilities of shape (..., M={M}, K={K})")
        p = _to_numpy(p).reshape(-1, M, K)
        hard = _to_numpy(flat).astype(np.int64).reshape(-1, M)
        if len(p) != len(hard):
            raise InvalidParameter(f"soft holds {len(p)} vectors but codes hold {len(hard)}; pass both for the same batch")
        keep = np.ones_like(hard, dtype=bool) if self.ignore_index is None else hard != self.ignore_index
        agree = int(((p.argmax(-1) == hard) & keep).sum())
        gap = float("nan")
        if codebooks is not None:
            C = _to_numpy(codebooks)
            if C.shape[:2] != (M, K):
                raise InvalidParameter(f"codebooks has shape {C.shape}; pass (M={M}, K={K}, d)")
            soft_rec = np.einsum("nmk,mkd->nmd", p, C)                 # Σ_k p_k c_k per subspace
            hard_rec = C[np.arange(M)[None, :], np.where(keep, hard, 0)]
            gap = float((((soft_rec - hard_rec) ** 2).sum(-1) * keep).sum())
        return gap, int(keep.any(axis=1).sum()), agree, int(keep.sum())

    # ------------------------------------------------------------------ events
    def _start(self, codebooks) -> None:
        self._started = True
        dim = None
        if codebooks is not None:
            shape = tuple(getattr(codebooks, "shape", ()))
            dim = int(shape[0] * shape[-1]) if len(shape) == 3 else None
        params = {"n_codewords": self.n_codewords, "n_subspaces": self.n_subspaces, "every": self.every,
                  "ignore_index": self.ignore_index}
        self._emit_event(FitStarted(method=self.method, params=params, n_subspaces=self.n_subspaces,
                                    n_codewords=self.n_codewords, dim=dim))

    def _emit_event(self, event) -> None:
        self._run.emit(event)
        if self._run.stopped:
            self.stop_requested = True

    def _emit(self, step: int | None) -> None:
        self.steps += 1
        number = self.steps if step is None else int(step)
        usage, self._pending = self._pending, np.zeros_like(self._pending)
        if self._pending_device is not None:  # the one transfer of this step
            usage = usage + self._pending_device.reshape(self.n_subspaces, self.n_codewords).cpu().numpy()
            self._pending_device = None
        losses = {k: _finite(k, float(sum(v)) / len(v)) for k, v in self._losses.items()}
        if losses and "total" not in losses:
            losses["total"] = float(sum(losses.values()))
        soft_hard = None
        if self._soft:  # squared soft-hard distance per vector (summed over subspaces); agreement per code
            gap, n, agree, entries = (sum(s[i] for s in self._soft) for i in range(4))
            soft_hard = {"gap": gap / max(n, 1), "agreement": agree / max(entries, 1)}
        self._pending_updates, self._losses, self._soft = 0, {}, []
        self.usage = usage
        self._run.step(number, losses, n_codewords=self.n_codewords, usage=usage, soft_hard=soft_hard,
                       sample=self._sample if self._sample_source is not None else None)
        if self._run.stopped:
            self.stop_requested = True

    def _sample(self) -> EmbeddingSample:
        flat, vectors, codebooks = self._sample_source
        M = self.n_subspaces
        V = vectors.detach() if hasattr(vectors, "detach") else np.asarray(vectors)
        if M == 1 and (V.ndim < 2 or V.shape[-2] != 1):
            V = V.reshape(-1, 1, V.shape[-1])
        if V.ndim < 2 or V.shape[-2] != M:
            raise InvalidParameter(f"vectors has shape {tuple(V.shape)}; pass (..., M={M}, d) sub-vectors")
        V = V.reshape(-1, M, V.shape[-1])
        n = V.shape[0]
        if n != flat.shape[0]:
            raise InvalidParameter(f"vectors holds {n} vectors but codes hold {flat.shape[0]}; pass both for one batch")
        rows = np.sort(self._rng.choice(n, size=min(SAMPLE_SIZE, n), replace=False))
        sub = _to_numpy(V[rows])                        # only the sample leaves the device
        codes = _to_numpy(flat[rows]).astype(np.int64)
        return EmbeddingSample(subvectors=np.ascontiguousarray(sub.transpose(1, 0, 2)), codes=codes,
                               codebooks=_to_numpy(codebooks))

    # ------------------------------------------------------------------ results
    @property
    def verdicts(self):
        """The collapse detector's per-subspace verdicts on :attr:`usage` (empty before the first step)."""
        return [] if self.usage is None else detect_collapse(self.usage)

    def close(self) -> None:
        """Emit the pending partial step (if any) and ``FitFinished``; later calls do nothing."""
        if self.closed:
            return
        if not self._started:
            self._start(None)
        if self._pending_updates:
            self._emit(None)
        self.closed = True
        verdicts = self.verdicts
        metrics = {"updates": self.updates,
                   "collapsed_subspaces": int(sum(v.collapsed for v in verdicts)),
                   "perplexity_mean": float(np.mean([v.perplexity for v in verdicts])) if verdicts else None}
        self._emit_event(FitFinished(steps=self.steps, stopped=self.stop_requested,
                                     seconds=self._run.elapsed, metrics=metrics))

    def __enter__(self) -> "CodebookMonitor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ torch hook
    def hook(self, module, codes: Callable | None = None, *, losses: Callable | None = None,
             soft: Callable | None = None, training_only: bool = True):
        """Register a forward hook on ``module`` that calls :meth:`update` with its output's codes.

        codes: output → integer codes (default: ``output[1]`` of vector-quantize-pytorch's
            ``(quantized, indices, loss)``, or the output itself when it is an integer tensor).
        losses: output → {name: value} (optional); soft: output → (..., M, K) probabilities.
        training_only: count only forward passes in training mode (evaluation passes between
            training steps would otherwise mix into the usage).
        Returns the hook's handle (``handle.remove()`` detaches it).
        """
        pick = codes or _default_codes

        def forward_hook(mod, inputs, output):
            if training_only and not mod.training:
                return
            self.update(pick(output), losses=None if losses is None else losses(output),
                        soft=None if soft is None else soft(output))

        return module.register_forward_hook(forward_hook)


__all__ = ["CodebookMonitor", "STOP"]
