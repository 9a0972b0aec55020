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
(M, K) counts move to the CPU. Tensor codes are held until the step that counts them (CPU
batches as clones, device batches by reference), then checked and counted in one pass: an update
costs one clone and some Python instead of a range check, a count and (on a GPU) a
synchronisation per batch. A device batch overwritten in place before its step is detected
(torch's version counter) and refused; an out-of-range batch is refused at its step, by its
update number. Loss tensors are held too and leave their device once per step. Counts accumulate
over the ``every`` updates of one step: the perplexity of a single small batch depends on the
batch size (a batch of 32 can use at most 32 codewords), so judge collapse over a window of batches.
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

HELD_ENTRIES = 1 << 22
"""Code entries (int64: 32 MB) of tensor batches held before they are counted ahead of their step."""

CLONE_CPU_BATCHES = True
"""Hold CPU tensor batches as clones (see ``CodebookMonitor._hold``); False holds them by reference
with their version counter, as device tensors are (the tests exercise that path on the CPU)."""


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


def _tensor_values(scalars: list) -> list[float]:
    """The values of 0-d tensors, as Python floats, in order: one stack and one transfer per device."""
    if not scalars:
        return []
    import torch
    try:
        return torch.stack(scalars).tolist()
    except RuntimeError:  # on several devices
        values = [0.0] * len(scalars)
        for device in {t.device for t in scalars}:
            where = [i for i, t in enumerate(scalars) if t.device == device]
            for i, v in zip(where, torch.stack([scalars[i] for i in where]).tolist()):
                values[i] = v
        return values


def _concatenated(batches: list, M: int):
    """Same-device tensor code ``batches`` (each (..., M)) as one (n, M) batch."""
    flat = [b if b.dim() == 2 and b.shape[1] == M else b.reshape(-1, M) for b in batches]  # (n, M) as given: no op
    if len(flat) == 1:
        return flat[0]
    import torch
    return torch.cat(flat)  # promotes mixed integer dtypes


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
        self._held: list[tuple[int, object, int | None]] = []  # (update number, codes, _version or None), uncounted
        self._held_entries = 0
        self._accepted = (None, None)  # (dtype, shape) of the last tensor batch that passed code_matrix
        self._pending_updates = 0
        self._losses: dict[str, list] = {}  # per name, floats and held (tensor, _version) pairs
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
            Tensors are held (not copied) and read at the step: pass each batch's own loss, not an
            accumulator changed in place (refused at the step, as is a non-finite mean).
        soft: (..., M, K) code probabilities, for the soft-vs-hard figures: ``agreement`` (argmax
            equals the hard code) and, with ``codebooks``, ``gap`` (squared distance between the
            soft reconstruction Σ_k p_k c_k and the hard codeword, summed over subspaces).
        codebooks: (M, K, d) codewords; with ``vectors`` (..., M, d), the sub-vectors that were
            quantized, they feed the embedding views' samples (taken only when one is due).
        Returns False once a subscriber asked to stop (see :attr:`stop_requested`).
        """
        if self.closed:
            raise InvalidParameter("update() after close(): make a new CodebookMonitor for a new run")
        tensor = hasattr(codes, "detach")
        if tensor and codes.dtype is self._accepted[0] and codes.shape == self._accepted[1]:
            checked = codes  # the dtype and shape of the last accepted batch: checked already
        else:
            checked = code_matrix(codes, self.n_subspaces, "codes", flatten=not tensor)
            if tensor:
                self._accepted = (codes.dtype, codes.shape)
        batch_losses = self._check_losses(losses)  # checked first: a refused batch changes no count
        flat = checked.reshape(-1, self.n_subspaces) if tensor and (soft is not None or vectors is not None) \
            else checked
        soft_hard = None if soft is None else self._soft_hard(flat, soft, codebooks)
        if tensor:  # held; counted with the rest of its step's batches
            now = self._hold(checked)
            if now or self._held_entries > HELD_ENTRIES or self._pending_updates + 1 >= self.every:
                self._count_held(current=self.updates + 1)  # before any state of this update changes
        else:
            self._pending += usage_counts(flat, self.n_codewords, ignore_index=self.ignore_index, name="codes")
        if soft_hard is not None:
            self._soft.append(soft_hard)
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
            if hasattr(value, "detach") and value.numel() == 1:  # held, summed where it lives, checked at the step
                held = value.detach() if value.requires_grad else value
                out[str(name)] = (held, held._version if not held.is_inference() else None)
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

    def _hold(self, codes) -> bool:
        """Hold a tensor batch until its step. A CPU tensor is held as a clone: holding the
        caller's own tensor pinned its block among the training step's allocations, which slowed
        the bench's loop by ~5% here, and a clone cannot be overwritten (a torch clone, not a numpy
        copy: right after a training step torch's code is warm and numpy's is not; ~2x cheaper
        here). A device tensor is held by reference with its version counter (no copy, no
        synchronisation). Returns True when the batch must be counted at once: one larger than
        :data:`HELD_ENTRIES` (held as it is, not copied), or an inference-mode tensor off the CPU
        (no version counter)."""
        number = self.updates + 1
        self._held_entries += codes.numel()
        if codes.numel() > HELD_ENTRIES:  # counted at once anyway: no copy
            self._held.append((number, codes, None))
            return True
        if CLONE_CPU_BATCHES and codes.is_cpu:
            self._held.append((number, codes.clone(), None))
            return False
        if codes.is_inference():
            self._held.append((number, codes, None))
            return True
        self._held.append((number, codes, codes._version))
        return False

    def _counts_of(self, batches: list, name: str):
        """Flat (M·K,) usage counts of same-device held tensor ``batches``, on their device."""
        return usage_counts_on_device(_concatenated(batches, self.n_subspaces), self.n_codewords,
                                      ignore_index=self.ignore_index, name=name)

    def _add_counts(self, counts) -> None:
        self._pending_device = counts if self._pending_device is None else self._pending_device + counts

    def _count_held(self, current: int | None = None) -> None:
        """Count the held batches: one concatenation, range check and count per device. On a
        refusal (a batch overwritten in place since its update, or holding an out-of-range code)
        the batches are checked one by one: the first bad one is raised, named by its update
        number; the good ones are counted, except update ``current`` (the one calling), so that an
        update that raises keeps nothing of its own."""
        held, self._held, self._held_entries = self._held, [], 0
        if all(version is None or codes._version == version for _, codes, version in held):
            by_device: dict = {}
            for _, codes, _ in held:
                by_device.setdefault(codes.device, []).append(codes)
            try:
                totals = [self._counts_of(group, "codes") for group in by_device.values()]
            except InvalidParameter:
                pass
            else:
                for counts in totals:
                    self._add_counts(counts)
                return
        error, good = None, []
        for number, codes, version in held:
            try:
                if version is not None and codes._version != version:
                    raise InvalidParameter(f"codes of update {number} were overwritten in place before their step "
                                           "was counted; pass a tensor you do not reuse (codes.clone()), or "
                                           "every=1 to count each batch at its update")
                good.append((number, self._counts_of([codes], f"codes of update {number}")))
            except InvalidParameter as refused:
                error = error or refused
        for number, counts in good:
            if error is None or number != current:
                self._add_counts(counts)
        if error is not None:
            raise error

    def _step_losses(self) -> dict[str, float]:
        """The mean of each loss over this step's updates; raises (and drops this step's losses)
        when one is not finite or a held loss tensor was changed in place after its update. The
        held tensors of all names leave their device in one transfer per device; the values are
        summed in Python floats, as floats passed directly are."""
        totals = {name: 0.0 for name in self._losses}
        held, owners = [], []
        for name, values in self._losses.items():
            for value in values:
                if not isinstance(value, tuple):
                    totals[name] += value
                    continue
                tensor, version = value  # a held tensor and its version
                if version is not None and tensor._version != version:
                    self._losses = {}
                    raise InvalidParameter(f"losses[{name!r}] was changed in place after its update; pass "
                                           "each batch's own loss tensor (loss.detach()), or a float")
                held.append(tensor if tensor.dim() == 0 else tensor.reshape(()))
                owners.append(name)
        for name, value in zip(owners, _tensor_values(held)):
            totals[name] += value
        try:
            return {name: _finite(name, total / len(self._losses[name])) for name, total in totals.items()}
        except InvalidParameter:
            self._losses = {}
            raise

    def _emit(self, step: int | None) -> None:
        if self._held:  # may refuse a held batch: then no step is emitted yet
            self._count_held()
        losses = self._step_losses()  # may refuse a loss: then no step is emitted yet either
        self.steps += 1
        number = self.steps if step is None else int(step)
        usage, self._pending = self._pending, np.zeros_like(self._pending)
        if self._pending_device is not None:  # the one transfer of this step
            usage = usage + self._pending_device.reshape(self.n_subspaces, self.n_codewords).cpu().numpy()
            self._pending_device = None
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
