"""CodebookMonitor: a user's own training loop gets the built-in methods' events, counted right.

The collapse test trains a small VQ autoencoder on digits with vector-quantize-pytorch: a plain
codebook collapses (most of its 128 codewords never chosen), ``kmeans_init`` with
``threshold_ema_dead_code`` keeps it in use, and the monitor's detector must tell them apart.
"""
import numpy as np
import pytest
import torch
from torch import nn

from explorer import data, diagnostics
from explorer.events import STOP, FitFinished, FitStarted, Recorder, Step
from explorer.monitor import CodebookMonitor

vqp = pytest.importorskip("vector_quantize_pytorch")


def events_of(monitor_kwargs, feed):
    rec = []
    mon = CodebookMonitor(callbacks=[rec.append], **monitor_kwargs)
    feed(mon)
    mon.close()
    return rec, mon


def test_usage_equals_bincount_per_subspace_and_skips_ignore_index():
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 32, (6, 50, 3), generator=g)
    codes[0, :7, 1] = -1  # vector-quantize-pytorch's "masked" marker
    rec, mon = events_of(dict(n_codewords=32, n_subspaces=3), lambda m: m.update(codes))
    flat = codes.reshape(-1, 3)
    expected = np.stack([torch.bincount(flat[:, m][flat[:, m] >= 0], minlength=32).numpy() for m in range(3)])
    np.testing.assert_array_equal(mon.usage, expected)
    assert mon.usage[1].sum() == 300 - 7
    step = next(e for e in rec if isinstance(e, Step))
    np.testing.assert_allclose(step.perplexity, diagnostics.perplexity(expected))
    np.testing.assert_array_equal(step.dead_codes, (expected == 0).sum(1))


def test_counts_accumulate_over_every_updates_and_the_events_are_ordered():
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, 16, size=(8, 2)) for _ in range(7)]
    rec, mon = events_of(dict(n_codewords=16, n_subspaces=2, every=3),
                         lambda m: [m.update(b, losses={"commit": 0.5}) for b in batches])
    assert isinstance(rec[0], FitStarted) and rec[0].n_samples is None and isinstance(rec[-1], FitFinished)
    steps = [e for e in rec if isinstance(e, Step)]
    assert [s.step for s in steps] == [1, 2, 3]  # 3 + 3 updates, then close() flushes the last one
    np.testing.assert_array_equal(steps[0].usage, diagnostics.usage_counts(np.concatenate(batches[:3]), 16))
    np.testing.assert_array_equal(steps[2].usage, diagnostics.usage_counts(batches[6], 16))
    assert steps[0].losses == {"commit": 0.5, "total": 0.5}
    assert rec[-1].metrics["updates"] == 7


def test_tensor_codes_skip_any_ignore_index_as_numpy_counting_does():
    g = torch.Generator().manual_seed(1)
    for ignore in (-1, 7, None):
        codes = torch.randint(0, 16, (200, 2), generator=g)
        if ignore is not None:
            codes[torch.rand(200, 2, generator=g) < 0.3] = ignore
        expected = diagnostics.usage_counts(codes.numpy(), 16, ignore_index=ignore)
        mon = CodebookMonitor(16, 2, ignore_index=ignore)  # a step per update: usage is that batch's
        mon.update(codes)
        np.testing.assert_array_equal(mon.usage, expected)
        mon.update(codes.numpy())
        np.testing.assert_array_equal(mon.usage, expected)


def test_the_callers_step_numbers_are_kept():
    rec, _ = events_of(dict(n_codewords=4), lambda m: [m.update(np.array([0, 1, 2]), step=s) for s in (100, 200)])
    assert [e.step for e in rec if isinstance(e, Step)] == [100, 200]


@pytest.mark.parametrize("codes, kwargs, message", [
    (np.array([[0.5, 1.0]]), {}, "dtype float64; pass integer codeword indices"),
    (np.array([[0, 16]]), {}, "holds 16, outside [0, n_codewords (K)=16)"),
    (np.array([[0, -1]]), {"ignore_index": None}, "holds -1, outside [0, n_codewords (K)=16); pass ignore_index=-1"),
    (np.array([[0, -2]]), {}, "holds -2"),
    (torch.tensor([[0, -2], [-1, 3]]), {}, "holds -2"),  # tensors are counted on their device: same checks
    (torch.tensor([[0, 16], [-1, 3]]), {}, "holds 16, outside [0, n_codewords (K)=16)"),
    (torch.tensor([[0, -1]]), {"ignore_index": None}, "holds -1, outside [0, n_codewords (K)=16); pass ignore_index"),
    (torch.tensor([[5, -1]]), {"ignore_index": 5}, "holds -1"),
    (np.zeros((4, 3), dtype=np.int64), {}, "last axis is not n_subspaces (M)=2"),
])
def test_bad_codes_raise_errors_naming_the_argument_and_the_fix(codes, kwargs, message):
    mon = CodebookMonitor(16, 2, **kwargs)
    with pytest.raises((ValueError, TypeError)) as err:
        mon.update(codes)
    assert message in str(err.value)


def test_a_nan_loss_is_refused_by_name():
    mon = CodebookMonitor(4)
    with pytest.raises(ValueError, match=r"losses\['recon'\] is nan: training diverged"):
        mon.update(np.array([1, 2]), losses={"recon": torch.tensor(float("nan"))})


def test_loss_tensors_are_summed_at_the_step_like_floats():
    values = [0.25, 1.5, 3.0]
    as_floats, _ = events_of(dict(n_codewords=4, every=3), lambda m: [m.update(np.array([1]), losses={"recon": v})
                                                                      for v in values])
    as_tensors, _ = events_of(dict(n_codewords=4, every=3), lambda m: [
        m.update(np.array([1]), losses={"recon": torch.tensor(v, requires_grad=True) * 1.0}) for v in values])
    step_f, step_t = (next(e for e in rec if isinstance(e, Step)) for rec in (as_floats, as_tensors))
    assert step_t.losses == step_f.losses == {"recon": pytest.approx(sum(values) / 3), "total": pytest.approx(sum(values) / 3)}


def test_a_nan_loss_tensor_is_refused_at_its_step_and_the_counts_wait_for_the_next():
    mon = CodebookMonitor(4, every=2)
    mon.update(np.array([1, 2]), losses={"recon": torch.tensor(float("nan"))})
    with pytest.raises(ValueError, match=r"losses\['recon'\] is nan: training diverged"):
        mon.update(np.array([3]), losses={"recon": torch.tensor(1.0)})
    assert mon.steps == 0
    mon.update(np.array([0]), losses={"recon": torch.tensor(2.0)})
    assert mon.steps == 1 and mon.usage.tolist() == [[1, 1, 1, 1]]


def test_a_loss_tensor_changed_in_place_after_its_update_is_refused():
    running = torch.tensor(1.0)
    mon = CodebookMonitor(4, every=2)
    mon.update(np.array([1]), losses={"recon": running})
    running += 1.0  # an accumulator passed as the batch's loss
    with pytest.raises(ValueError, match=r"losses\['recon'\] was changed in place after its update"):
        mon.update(np.array([1]), losses={"recon": running})


def test_built_in_usage_counting_refuses_out_of_range_codes_instead_of_miscounting():
    """Before, a -1 was counted as codeword K-1 and a code >= K gave a bare numpy error."""
    with pytest.raises(ValueError, match="holds -1, outside"):
        diagnostics.usage_counts(np.array([[0, -1]]), 4)
    with pytest.raises(ValueError, match="holds 4, outside"):
        diagnostics.usage_counts(np.array([[0, 4]], dtype=np.uint8), 4)
    np.testing.assert_array_equal(diagnostics.usage_counts(np.array([[0, -1], [3, 1]]), 4, ignore_index=-1),
                                  [[1, 0, 0, 1], [0, 1, 0, 0]])


def test_a_tensor_is_counted_like_the_same_numpy_codes():
    codes = torch.randint(0, 10, (40, 4), generator=torch.Generator().manual_seed(1))
    np.testing.assert_array_equal(diagnostics.usage_counts(codes, 10), diagnostics.usage_counts(codes.numpy(), 10))


def _counted(batches, K=8):
    """The (M, K) usage of tensor ``batches`` counted one by one in numpy: what a step must hold."""
    return sum(diagnostics.usage_counts(b.numpy(), K) for b in batches)


def _tensor_batches(n_batches, n=30, M=2, K=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, K, (n, M), generator=g) for _ in range(n_batches)]


@pytest.mark.parametrize("held_by_reference", [False, True])
def test_tensor_batches_are_counted_once_per_step_with_the_same_counts(monkeypatch, held_by_reference):
    """Tensor codes are held until their step: one count per step, not per update (the cost an
    update adds to a training step), and the counts are those of each batch counted alone. CPU
    tensors are held as numpy copies, device tensors by reference (exercised here on the CPU)."""
    from explorer import monitor as monitor_module
    if held_by_reference:
        monkeypatch.setattr(monitor_module, "CLONE_CPU_BATCHES", False)
    calls = []
    real = CodebookMonitor._counts_of
    monkeypatch.setattr(CodebookMonitor, "_counts_of", lambda self, *a: calls.append(1) or real(self, *a))
    batches = _tensor_batches(10)
    rec, _ = events_of(dict(n_codewords=8, n_subspaces=2, every=5), lambda m: [m.update(b) for b in batches])
    steps = [e for e in rec if isinstance(e, Step)]
    assert len(calls) == 2 and len(steps) == 2
    for s, chunk in zip(steps, (batches[:5], batches[5:])):
        np.testing.assert_array_equal(s.usage, _counted(chunk))


def test_a_cpu_batch_is_copied_so_the_caller_may_reuse_its_buffer():
    batches = _tensor_batches(2)
    expected = _counted(batches)
    mon = CodebookMonitor(8, 2, every=2)
    mon.update(batches[0])
    batches[0].fill_(0)  # reused before the step: the held copy is what counts
    mon.update(batches[1])
    np.testing.assert_array_equal(mon.usage, expected)


def test_a_full_hold_is_counted_before_its_step(monkeypatch):
    from explorer import monitor as monitor_module
    monkeypatch.setattr(monitor_module, "HELD_ENTRIES", 100)  # 60 entries a batch: counted every 2nd
    batches = _tensor_batches(6)
    mon = CodebookMonitor(8, 2, every=6)
    for b in batches[:4]:
        mon.update(b)
    assert len(mon._held) == 0 and int(mon._pending_device.sum()) == 4 * 60  # counted, not yet emitted
    for b in batches[4:]:
        mon.update(b)
    np.testing.assert_array_equal(mon.usage, _counted(batches))


@pytest.mark.parametrize("case", ["larger than the hold", "inference mode"])
def test_a_batch_that_cannot_be_held_is_counted_at_its_update(monkeypatch, case):
    """A batch over HELD_ENTRIES (held as it is, not copied), and an inference-mode tensor held
    by reference (it has no version counter to check at the step), are counted at once."""
    from explorer import monitor as monitor_module
    if case == "larger than the hold":
        monkeypatch.setattr(monitor_module, "HELD_ENTRIES", 50)  # a batch holds 60 entries
        batches = _tensor_batches(2)
    else:
        monkeypatch.setattr(monitor_module, "CLONE_CPU_BATCHES", False)
        with torch.inference_mode():
            batches = _tensor_batches(2)
    mon = CodebookMonitor(8, 2, every=2)
    mon.update(batches[0])
    assert not mon._held and int(mon._pending_device.sum()) == 60
    mon.update(batches[1])
    np.testing.assert_array_equal(mon.usage, _counted(batches))


def test_a_held_batch_overwritten_in_place_is_refused_by_its_update_number(monkeypatch):
    from explorer import monitor as monitor_module
    monkeypatch.setattr(monitor_module, "CLONE_CPU_BATCHES", False)  # held by reference, as on a GPU
    batches = _tensor_batches(3)
    mon = CodebookMonitor(8, 2, every=3)
    mon.update(batches[0])
    mon.update(batches[1])
    batches[0][0, 0] = 7  # the caller reuses its buffer before the step counted it
    with pytest.raises(ValueError, match=r"codes of update 1 were overwritten in place .*codes\.clone\(\)"):
        mon.update(batches[2], losses={"commit": 1.0})
    assert mon.updates == 2 and mon.steps == 0  # the raising update kept nothing
    mon.update(batches[2], losses={"commit": 2.0})
    # update 1 was refused; update 2 was counted; the retried update 3 closes the step
    np.testing.assert_array_equal(mon.usage, _counted(batches[1:]))


@pytest.mark.parametrize("held_by_reference", [False, True])
def test_an_out_of_range_held_batch_is_refused_at_its_step_by_its_update_number(monkeypatch, held_by_reference):
    from explorer import monitor as monitor_module
    if held_by_reference:
        monkeypatch.setattr(monitor_module, "CLONE_CPU_BATCHES", False)
    batches = _tensor_batches(3)
    batches[1][2, 1] = 8
    mon = CodebookMonitor(8, 2, every=3)
    mon.update(batches[0])
    mon.update(batches[1])
    with pytest.raises(ValueError, match=r"codes of update 2 holds 8, outside \[0, n_codewords \(K\)=8\)"):
        mon.update(batches[2])
    mon.update(batches[2])
    np.testing.assert_array_equal(mon.usage, _counted(batches[::2]))


def test_soft_codes_give_agreement_and_gap():
    C = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2)       # (M=2, K=3, d=2)
    codes = np.array([[0, 2], [1, 1]])
    onehot = np.eye(3, dtype=np.float32)[codes]                       # (n, M, K)
    rec, _ = events_of(dict(n_codewords=3, n_subspaces=2), lambda m: m.update(codes, soft=onehot, codebooks=C))
    sh = next(e for e in rec if isinstance(e, Step)).soft_hard
    assert sh == {"gap": 0.0, "agreement": 1.0}
    soft = onehot.copy()
    soft[0, 0] = [0.2, 0.7, 0.1]  # argmax 1 where the hard code is 0: one of the 4 entries disagrees
    soft[1, 1] = [0.3, 0.5, 0.2]  # still agrees (code 1), but its soft reconstruction moves
    rec, _ = events_of(dict(n_codewords=3, n_subspaces=2), lambda m: m.update(codes, soft=soft, codebooks=C))
    sh = next(e for e in rec if isinstance(e, Step)).soft_hard
    assert sh["agreement"] == pytest.approx(3 / 4)
    soft_rec = np.einsum("nmk,mkd->nmd", soft, C)
    hard_rec = C[np.arange(2)[None], codes]
    assert sh["gap"] == pytest.approx(((soft_rec - hard_rec) ** 2).sum(-1).sum(-1).mean(), rel=1e-6)


def test_embedding_samples_come_from_the_vectors_and_codebooks_when_asked():
    C = torch.randn(2, 8, 3)
    vectors = torch.randn(50, 2, 3)
    codes = torch.cdist(vectors.transpose(0, 1), C).argmin(-1).T      # (50, 2) nearest codewords
    rec = []
    mon = CodebookMonitor(8, 2, callbacks=[rec.append], sample_every=2)
    for _ in range(4):
        mon.update(codes, codebooks=C, vectors=vectors)
    samples = [e.sample for e in rec if isinstance(e, Step)]
    assert [s is not None for s in samples] == [False, True, False, True]
    s = samples[1]
    assert s.subvectors.shape == (2, 50, 3) and s.codes.shape == (50, 2) and s.codebooks.shape == (2, 8, 3)
    nearest = np.linalg.norm(s.subvectors[:, :, None] - s.codebooks[:, None], axis=-1).argmin(-1).T
    np.testing.assert_array_equal(nearest, s.codes)


def test_a_callback_returning_stop_asks_the_loop_to_stop():
    mon = CodebookMonitor(4, callbacks=[lambda e: STOP if isinstance(e, Step) and e.step == 2 else None])
    assert mon.update(np.array([0, 1])) is True
    assert mon.update(np.array([0, 1])) is False and mon.stop_requested


def test_hook_and_explicit_update_give_the_same_events():
    x = torch.randn(4, 20, 8, generator=torch.Generator().manual_seed(0))

    def trained(hooked: bool):
        torch.manual_seed(0)
        vq = vqp.VectorQuantize(dim=8, codebook_size=32, decay=0.8)
        rec = Recorder()
        mon = CodebookMonitor(32, callbacks=[rec], every=2)
        if hooked:
            mon.hook(vq)
        for _ in range(4):
            _, codes, _ = vq(x)
            if not hooked:
                mon.update(codes)
        mon.close()
        return [s.usage for s in rec.steps]

    for a, b in zip(trained(True), trained(False), strict=True):
        np.testing.assert_array_equal(a, b)


def test_residual_vq_levels_are_the_codebooks():
    torch.manual_seed(0)
    rvq = vqp.ResidualVQ(dim=8, num_quantizers=3, codebook_size=16)
    rec = Recorder()
    mon = CodebookMonitor(16, 3, callbacks=[rec])
    handle = mon.hook(rvq)
    _, codes, _ = rvq(torch.randn(2, 30, 8))
    handle.remove()
    rvq(torch.randn(2, 30, 8))  # removed: not counted
    assert codes.shape == (2, 30, 3) and len(rec.steps) == 1
    np.testing.assert_array_equal(rec.steps[0].usage, diagnostics.usage_counts(codes.reshape(-1, 3), 16))


def test_hook_counts_training_passes_only_by_default():
    torch.manual_seed(0)
    vq = vqp.VectorQuantize(dim=4, codebook_size=8)
    mon = CodebookMonitor(8)
    mon.hook(vq)
    vq.eval()
    vq(torch.randn(1, 10, 4))
    assert mon.updates == 0
    vq.train()
    vq(torch.randn(1, 10, 4))
    assert mon.updates == 1


def _vq_autoencoder_verdict(seed: int, **vq_kwargs):
    """Train a 64→16→64 VQ autoencoder on digits for 10 epochs; the monitor's last verdict."""
    X = torch.from_numpy(data.load("digits").base.astype(np.float32) / 16.0)
    torch.manual_seed(seed)
    enc = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 16))
    dec = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64))
    vq = vqp.VectorQuantize(dim=16, codebook_size=128, **vq_kwargs)
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=3e-3)
    monitor = CodebookMonitor(128, every=10)
    monitor.hook(vq)
    order = torch.Generator().manual_seed(seed)
    for _ in range(10):
        for idx in torch.randperm(len(X), generator=order).split(128):
            quantized, _, commit = vq(enc(X[idx]))
            loss = ((dec(quantized) - X[idx]) ** 2).mean() + commit.sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    monitor.close()
    return monitor.verdicts[0]


def test_a_collapsing_vq_codebook_is_flagged_and_the_revived_one_is_not():
    plain = _vq_autoencoder_verdict(0)
    revived = _vq_autoencoder_verdict(0, kmeans_init=True, threshold_ema_dead_code=2)
    assert plain.collapsed and plain.dead_codes > 64, plain.reason       # measured: 90 of 128 dead
    assert not revived.collapsed and revived.dead_codes < 10, revived.reason  # measured: 0 dead
