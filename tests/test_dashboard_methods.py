"""Every registered method runs in the dashboard, and every view ends up holding that run's data.

One dashboard switches through ``explorer.methods.available()`` as a person would with the method
dropdown. Each run is repeated outside the dashboard with the same seed and a Recorder asking for
the same embedding samples; the figures must hold exactly what that recorder saw.
"""
import numpy as np
import pytest

from explorer import methods
from explorer.events import Recorder
from widgets import Dashboard
from widgets.dashboard import steps_param

M, K = 4, 16
# Tiny settings (1-2 steps, small networks) per method; a method not listed runs with 1 step.
TINY = {
    "pq": {"n_iter": 2},
    "opq": {"n_iter": 2, "n_iter_pq": 1, "n_iter_pq_first": 2},
    "dpq": {"epochs": 2, "backbone": "mlp"},
    "fppq": {"epochs": 1, "pretrain_epochs": 1, "backbone": "mlp"},
    "sscq": {"epochs": 1, "backbone": "mlp"},
    "rlq": {"n_iter": 1, "init_iter": 2, "refine_iters": 1, "references": False},
}


def tiny(name):
    cls = methods.get(name)
    params = {steps_param(cls): 1} if steps_param(cls) else {}
    params.update(TINY.get(name, {}))
    return params


@pytest.fixture(scope="module")
def dash():
    return Dashboard("pq", "digits", n_subspaces=M, n_codewords=K, sample_every=1, background_embedding=False,
                     references=False)


@pytest.mark.parametrize("name", methods.available())
def test_dashboard_runs_the_method_and_every_view_holds_its_data(dash, name):
    cls = methods.get(name)
    params = tiny(name)
    dash.set_params(method=name, n_subspaces=M, n_codewords=K, **params)
    rows_before = len(dash.recall.rows)
    model = dash.fit(blocking=True)

    # the same run outside the dashboard (same seed, same sampling) is the reference
    ds, _ = dash.dataset()
    rec = Recorder()
    rec.sample_every = dash.embedding.sample_every
    methods.create(name, **dash.params()).fit(ds.base, ds.labels if cls.supervised else None, callbacks=[rec])
    steps = list(rec.steps)
    n = len(steps)
    assert n == model.n_steps_ == model.planned_steps and not model.stopped_
    assert dash.status_text.startswith(f"Finished {n} step{'' if n == 1 else 's'} ")
    step_ids = [s.step for s in steps]

    # usage: the bars are the last step's counts, one histogram per subspace
    usage = np.asarray(steps[-1].usage)
    assert usage.shape == (M, K)
    fig = dash.figures["usage"]
    for m in range(M):
        np.testing.assert_array_equal(fig.data[2 * m].y, usage[m])
        assert list(fig.data[2 * m + 1].x) == np.flatnonzero(usage[m] == 0).tolist()  # dead-code marks
    assert f"step {n}" in fig.layout.title.text

    # collapse monitor: perplexity and dead codes of every step
    fig = dash.figures["collapse"]
    for m in range(M):
        assert list(fig.data[m].x) == step_ids
        np.testing.assert_allclose(fig.data[m].y, [s.perplexity[m] for s in steps], rtol=1e-6)
        assert list(fig.data[M + m].y) == [int(s.dead_codes[m]) for s in steps]
    assert dash.collapse.alarm_text.split(":")[0].endswith(f"step {n}")

    # loss curves: one trace per term the method reports
    fig = dash.figures["losses"]
    assert [t.name for t in fig.data] == list(steps[0].losses)
    for trace in fig.data:
        np.testing.assert_allclose(trace.y, [s.losses[trace.name] for s in steps], rtol=1e-5, atol=1e-6)

    # soft vs hard: a curve exactly for methods with soft codes, the explanation otherwise
    fig = dash.figures["soft_hard"]
    if cls.has_soft_codes:
        assert list(fig.data[0].x) == step_ids and dash.soft_hard.message_text == ""
        np.testing.assert_allclose(fig.data[0].y, [s.soft_hard["gap"] for s in steps], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(fig.data[1].y, [s.soft_hard["agreement"] for s in steps], rtol=1e-6)
    else:
        assert len(fig.data[0].y) == 0
        assert f"{name!r} has no soft codes" in dash.soft_hard.message_text
        assert dash.soft_hard._box.layout.display == "none"

    # subspace embedding: the last step's sample, one point per sampled sub-vector
    sample = steps[-1].sample
    assert sample is not None and dash.embedding.picture["step"] == n
    fig = dash.figures["embedding"]
    assert len(fig.data[0].x) == len(sample.codes)
    assert list(fig.data[0].marker.color) == np.asarray(sample.codes)[:, dash.embedding.subspace.value].tolist()

    # recall vs bits: this run added one row, drawn on its method's curve
    assert len(dash.recall.rows) == rows_before + 1
    row = dash.recall.rows[-1]
    assert row["method"] == name and row["bits"] == M * 4 and not row["reference"]
    trace = next(t for t in dash.figures["recall"].data if t.name == name)
    assert row["recall_at"]["1"] in list(trace.y)
