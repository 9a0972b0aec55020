"""The TensorBoard sink: TensorBoard's own reader finds the per-subspace scalars, the loss terms,
the usage histograms and the collapse flags of a run."""
import numpy as np
import pytest

from explorer import methods
from explorer.events import Recorder
from explorer.monitor import CodebookMonitor
from explorer.sinks import TensorBoard

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def accumulate(logdir):
    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    return acc


def test_tensorboard_holds_the_per_subspace_scalars_of_a_fit(tmp_path, digits):
    rec = Recorder()
    with TensorBoard(tmp_path) as board:
        methods.create("pq", n_subspaces=4, n_codewords=16, n_iter=3).fit(digits.base, callbacks=[rec, board])
    acc = accumulate(tmp_path)
    tags = acc.Tags()["scalars"]
    for m in range(4):
        assert {f"perplexity/{m}", f"dead_codes/{m}", f"collapsed/{m}"} <= set(tags)
        values = [s.value for s in acc.Scalars(f"perplexity/{m}")]
        np.testing.assert_allclose(values, [s.perplexity[m] for s in rec.steps], rtol=1e-6)
    assert [s.step for s in acc.Scalars("loss/total")] == [1, 2, 3]
    hist = acc.Histograms("usage/0")[-1].histogram_value
    np.testing.assert_array_equal(hist.bucket, rec.steps[-1].usage[0])


def test_a_collapsed_monitor_run_raises_the_collapse_flag(tmp_path):
    with TensorBoard(tmp_path) as board:
        mon = CodebookMonitor(64, 2, callbacks=[board])
        codes = np.zeros((500, 2), dtype=np.int64)
        codes[:, 1] = np.arange(500) % 64  # subspace 0 uses one codeword, subspace 1 all of them
        mon.update(codes, losses={"commit": 0.1})
        mon.close()
    acc = accumulate(tmp_path)
    assert [s.value for s in acc.Scalars("collapsed/0")] == [1.0]
    assert [s.value for s in acc.Scalars("collapsed/1")] == [0.0]
    assert [s.value for s in acc.Scalars("collapsed/total")] == [1.0]
    assert acc.Scalars("loss/commit")[0].value == pytest.approx(0.1)
