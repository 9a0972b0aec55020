import ipywidgets as ipw
import pytest

from explorer import methods
from explorer.errors import InvalidParameter
from widgets import Dashboard
from widgets.dashboard import _knob, method_knobs, steps_param


def small(**kw):
    return Dashboard("pq", "digits", n_subspaces=4, n_codewords=16, n_iter=5, background_embedding=False,
                     sample_every=5, **kw)


def test_blocking_fit_fills_every_view_and_adds_recall_rows():
    dash = small(references={"pq": (2, 4, 8), "opq": (2,)})
    model = dash.fit(blocking=True)
    assert model is dash.model and model.n_steps_ == 5 and not model.stopped_
    assert set(dash.figures) == {"usage", "collapse", "soft_hard", "embedding", "recall", "losses"}
    ours = [r for r in dash.recall.rows if not r["reference"]]
    n_refs = len([r for r in dash.recall.rows if r["reference"]])
    refs = {r["method"] for r in dash.recall.rows if r["reference"]}
    assert len(ours) == 1 and ours[0]["bits"] == 16 and refs == {"faiss-pq", "faiss-opq"}
    assert n_refs == 4  # faiss PQ at M = 2, 4, 8 and OPQ at M = 2
    assert 0 < ours[0]["recall_at"]["10"] <= 1 and ours[0]["map"] is not None
    assert list(dash.figures["recall"].data[0].y) == [ours[0]["recall_at"]["1"]]
    assert len(dash.figures["losses"].data[0].x) == 5
    assert dash.embedding.picture["step"] == 5
    assert dash.status_text.startswith("Finished 5 steps")
    # a second fit adds a row but trains the faiss references only once per dataset and K
    dash.fit(n_iter=3)
    assert len([r for r in dash.recall.rows if not r["reference"]]) == 2
    assert len([r for r in dash.recall.rows if r["reference"]]) == n_refs
    # each fit is recorded with its row: opening pq at 16 bits shows the latest run, as the live views did
    usage, collapse = dash.recall.open_run("pq", 16)
    assert (usage.usage == dash.usage.usage).all() and collapse.steps == [1, 2, 3]


def test_start_while_running_is_refused_and_stop_keeps_the_model():
    # pace=30 s per step keeps the run alive until Stop wakes it: no sleeping in the test.
    dash = small(pace=30.0, references=False).set_params(n_iter=1000)
    assert dash.start()
    assert not dash.start()
    assert dash.status_text.startswith("Already training")
    dash.stop()
    dash.wait(60)
    assert not dash.running
    assert dash.model is not None and dash.model.stopped_ and dash.model.n_steps_ == 1
    assert dash.status_text.startswith("Stopped at step 1")
    assert hasattr(dash.model, "codebooks_")


def test_errors_during_training_appear_in_the_dashboard():
    dash = small(references=False).set_params(n_subspaces=7)  # 64 is not divisible by 7
    assert dash.start()
    dash.wait(60)
    assert dash.model is None
    assert "n_subspaces" in dash.last_error or "7" in dash.last_error
    assert "Training failed" in dash.errors.value
    with pytest.raises(InvalidParameter):
        dash.fit()


def test_bad_parameters_are_refused_at_construction():
    with pytest.raises(ValueError, match="no parameter"):
        Dashboard("pq", epochs=3)


def test_controls_come_from_the_registry_and_signatures():
    dash = Dashboard("opq", n_subspaces=4, n_iter=7, n_iter_pq=2)
    assert list(dash.method_w.options) == methods.available()
    assert dash.steps_w.description == "iterations" and dash.steps_w.value == 7
    assert set(dash.knobs) == set(method_knobs(methods.get("opq")))
    assert dash.knobs["n_iter_pq"].value == 2
    dash.method_w.value = "pq"
    assert set(dash.knobs) == {"init", "repair_empty", "max_points_per_codeword", "metric"}
    assert dash.params()["repair_empty"] is True and dash.params()["max_points_per_codeword"] == 256


def test_knobs_for_a_new_method_are_built_from_its_signature():
    class Toy(methods.Quantizer):
        name = "toy"

        def __init__(self, n_subspaces=8, n_codewords=256, *, epochs=3, lam=0.5, gini=True, note="x",
                     hidden=None, random_state=0, device="cpu"):
            super().__init__(n_subspaces, n_codewords, random_state=random_state, device=device)

    knobs = method_knobs(Toy)
    assert knobs == {"lam": 0.5, "gini": True, "note": "x", "hidden": None}
    assert steps_param(Toy) == "epochs"
    kinds = {name: type(_knob(name, value)) for name, value in knobs.items()}
    assert kinds == {"lam": ipw.FloatText, "gini": ipw.Checkbox, "note": ipw.Text, "hidden": ipw.Text}


def test_named_options_are_a_drop_down_that_refuses_other_values():
    """A method's ``param_choices`` (SSCQ's L_cd forms, say) become a drop-down of exactly those
    values; the programmatic path refuses others with the parameter's name, as ``fit`` does."""
    dash = Dashboard("sscq")
    knob = dash.knobs["cd_variant"]
    assert isinstance(knob, ipw.Dropdown) and tuple(knob.options) == methods.get("sscq").param_choices["cd_variant"]
    dash.set_params(cd_variant="soft")
    assert dash.params()["cd_variant"] == "soft"
    with pytest.raises(ValueError, match="cd_variant"):
        dash.set_params(cd_variant="gini")
    assert isinstance(dash.knobs["fusion"], ipw.Dropdown) and isinstance(dash.knobs["backbone"], ipw.Dropdown)
