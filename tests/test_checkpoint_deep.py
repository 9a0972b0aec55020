"""Checkpoints of the deep methods (FPPQ, SSCQ): a fit stopped part-way and resumed from its
checkpoint ends with exactly the codes of an uninterrupted fit with the same seed, because the
checkpoint holds the model, the optimizer, the LR schedule, the epoch, every RNG and (FPPQ) the
PQ labels and the pre-training phase."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from explorer import data, methods
from explorer.checkpoint import Checkpointer, load_checkpoint, save_checkpoint
from explorer.errors import InvalidParameter
from explorer.events import STOP, Note, Recorder, Step, StopSignal

from cli_resume import full_interrupted_resumed

# tiny but real: 4 epochs on 400 digits, MLP backbones, small batches
SETTINGS = {
    "fppq": dict(n_subspaces=4, n_codewords=16, embedding_dim=32, epochs=4, pretrain_epochs=2, batch_size=64,
                 backbone="mlp", random_state=3),
    "dpq": dict(n_subspaces=4, n_codewords=16, embedding_dim=32, epochs=4, batch_size=64, backbone="mlp",
                random_state=3),
    "sscq": dict(n_subspaces=2, n_codewords=16, epochs=4, batch_size=32, warmup_epochs=1, n_neighbours=5,
                 backbone="mlp", random_state=3),
}


@pytest.fixture(scope="module")
def Xy():
    ds = data.load_digits()
    return ds.base[:400], ds.labels[:400]


def fit(name, Xy, **kwargs):
    X, y = Xy
    q = methods.create(name, **SETTINGS[name])
    return q.fit(X, y if q.supervised else None, **kwargs)


@pytest.fixture(scope="module")
def reference(Xy):
    """The uninterrupted fit of each method."""
    return {name: fit(name, Xy) for name in SETTINGS}


def stop_after(k):
    return lambda event: STOP if isinstance(event, Step) and event.step == k else None


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_resume_reaches_the_codes_of_an_uninterrupted_fit(Xy, reference, tmp_path, name):
    X = Xy[0]
    ref = reference[name]
    first = methods.create(name, **SETTINGS[name])
    ckpt = Checkpointer(first, tmp_path, every=1)
    first.fit(X, Xy[1] if first.supervised else None, callbacks=[ckpt, stop_after(2)])
    assert first.stopped_ and first.n_steps_ == 2 and ckpt.saved_steps == [1, 2]
    assert not np.array_equal(first.encode(X), ref.encode(X))  # two more epochs do change the codes

    state = load_checkpoint(tmp_path)  # through the file: torch.save, weights_only load
    assert state["step"] == 2 and {"model", "optimizer", "scheduler", "history"} <= set(state["extra"])
    steps = []
    resumed = fit(name, Xy, resume=state, callbacks=[lambda e: steps.append(e.step) if isinstance(e, Step) else None])
    assert steps == [3, 4] and resumed.n_steps_ == 4
    assert np.array_equal(resumed.encode(X), ref.encode(X))
    np.testing.assert_array_equal(resumed.codebooks_, ref.codebooks_)
    if hasattr(ref, "history_"):  # FPPQ and SSCQ keep per-epoch losses; the resumed ones match bit for bit
        assert resumed.history_ == ref.history_


def test_a_state_taken_mid_fit_is_a_snapshot_not_a_view(Xy, reference):
    """state_dict() copies the tensors that training updates in place (weights, Adam moments):
    a state taken at epoch 1 of a fit that then runs to the end still resumes from epoch 1."""
    q = methods.create("sscq", **SETTINGS["sscq"])
    saved = {}
    q.fit(Xy[0], callbacks=[lambda e: saved.setdefault("s", q.state_dict()) if isinstance(e, Step) and e.step == 1 else None])
    assert saved["s"]["step"] == 1
    resumed = fit("sscq", Xy, resume=saved["s"])
    assert np.array_equal(resumed.encode(Xy[0]), reference["sscq"].encode(Xy[0]))


@pytest.mark.parametrize("drop", ["optimizer", "scheduler", "rng"])
def test_each_saved_part_is_needed(Xy, reference, tmp_path, drop):
    """The equality above is not vacuous: resuming without the optimizer's moments, the LR
    schedule's position or the batch/augmentation generator's state gives other codes."""
    q = methods.create("sscq", **SETTINGS["sscq"])
    q.fit(Xy[0], callbacks=[stop_after(2)])
    state = q.state_dict()
    if drop == "rng":
        state["rng"]["torch"] = torch.Generator().manual_seed(12345).get_state()
    else:
        state["extra"][drop] = None  # the resumed fit then keeps a fresh optimizer / schedule
    resumed = fit("sscq", Xy, resume=state)
    assert not np.array_equal(resumed.encode(Xy[0]), reference["sscq"].encode(Xy[0]))


def test_fppq_stopped_during_pretraining_resumes_the_pretraining(Xy, reference, tmp_path):
    X, y = Xy
    q = methods.create("fppq", **SETTINGS["fppq"])
    stop = lambda e: STOP if isinstance(e, Note) and e.topic == "pretrain" and e.data["epoch"] == 1 else None  # noqa: E731
    q.fit(X, y, callbacks=[Checkpointer(q, tmp_path, every=1), stop])
    assert q.stopped_ and not hasattr(q, "labels_")  # stopped before the labels were made
    assert q.encode(X).shape == (len(X), 4)          # ... leaving a usable model
    assert q.extra_report(None, {})["duplicate_rate"] is None
    state = load_checkpoint(tmp_path)
    assert (state["step"], state["extra"]["phase"], state["extra"]["pretrain_epochs_done"]) == (0, "pretrain", 1)
    assert state["extra"]["labels"] is None
    notes = []
    resumed = fit("fppq", Xy, resume=state, callbacks=[lambda e: notes.append(e.topic) if isinstance(e, Note) else None])
    assert notes[:2] == ["pretrain", "labels"]  # one more pre-training epoch, then the labels
    assert np.array_equal(resumed.encode(X), reference["fppq"].encode(X))
    np.testing.assert_array_equal(resumed.class_codes_, reference["fppq"].class_codes_)


def test_fppq_checkpoint_after_pretraining_keeps_the_labels(Xy, reference):
    """In the training phase the labels come from the checkpoint, not from pre-training again:
    a resume whose labels were changed trains towards the changed labels."""
    X, y = Xy
    q = methods.create("fppq", **SETTINGS["fppq"])
    q.fit(X, y, callbacks=[stop_after(1)])
    state = q.state_dict()
    assert state["extra"]["phase"] == "train"
    np.testing.assert_array_equal(state["extra"]["labels"]["codes"], reference["fppq"].class_codes_)
    notes = []
    resumed = fit("fppq", Xy, resume=state, callbacks=[lambda e: notes.append(e.topic) if isinstance(e, Note) else None])
    assert "pretrain" not in notes and "labels" in notes
    assert np.array_equal(resumed.encode(X), reference["fppq"].encode(X))
    state["extra"]["labels"]["codes"] = (state["extra"]["labels"]["codes"] + 1) % SETTINGS["fppq"]["n_codewords"]
    relabelled = fit("fppq", Xy, resume=state)
    np.testing.assert_array_equal(relabelled.class_codes_, state["extra"]["labels"]["codes"])


def test_dashboard_stop_then_pickle_then_state_dict_still_resumes(Xy, reference):
    """Stop from outside (StopSignal): the fitted model drops its optimizer and scheduler objects
    (it pickles) but keeps their states and the RNG states as training left them, so its
    state_dict() taken later — after the caller used torch's global RNG — resumes exactly."""
    stop = StopSignal()
    q = methods.create("sscq", **SETTINGS["sscq"])
    q.fit(Xy[0], callbacks=[Recorder(), lambda e: stop.set() if isinstance(e, Step) and e.step == 2 else None], stop=stop)
    assert q.stopped_ and q.n_steps_ == 2
    with pytest.raises(ValueError, match="NaN"):  # a refused fit leaves the stopped model and its states alone
        q.fit(np.full((10, 64), np.nan))
    q = pickle.loads(pickle.dumps(q))
    torch.manual_seed(99), torch.rand(3)
    resumed = fit("sscq", Xy, resume=q.state_dict())
    assert np.array_equal(resumed.encode(Xy[0]), reference["sscq"].encode(Xy[0]))


def test_load_state_dict_rebuilds_a_usable_model(Xy, reference, tmp_path):
    X = Xy[0]
    ref = reference["fppq"]
    save_checkpoint(tmp_path, ref.state_dict())
    rng_before = torch.get_rng_state()
    loaded = methods.create("fppq", **SETTINGS["fppq"]).load_state_dict(load_checkpoint(tmp_path))
    assert torch.equal(torch.get_rng_state(), rng_before)  # rebuilding the network drew nothing from the caller's RNG
    np.testing.assert_array_equal(loaded.transform(X[:50]), ref.transform(X[:50]))
    np.testing.assert_array_equal(loaded.encode(X), ref.encode(X))
    np.testing.assert_array_equal(loaded.class_codes_, ref.class_codes_)
    with pytest.raises(InvalidParameter, match=r"embedding_dim=32 \(now 16\).*same parameters"):
        methods.create("fppq", **{**SETTINGS["fppq"], "embedding_dim": 16}).load_state_dict(ref.state_dict())


def test_cli_ctrl_c_with_checkpoint_then_resume_matches_an_uninterrupted_run(tmp_path, monkeypatch, capsys):
    """`pqx train --method sscq --checkpoint D`, Ctrl-C after epoch 2, then `--resume D`: the
    report equals that of an uninterrupted run (distortion, usage, recall, per-epoch losses)."""
    ds = data.load_digits()
    np.save(tmp_path / "base.npy", ds.base[:450])
    common = ["train", "--method", "sscq", "--data", str(tmp_path / "base.npy"), "--n-queries", "50", "-M", "2",
              "-K", "16", "--epochs", "4", "--batch-size", "32", "--backbone", "mlp", "--seed", "3", "--quiet"]
    full, _, resumed = full_interrupted_resumed(common, tmp_path, monkeypatch)
    capsys.readouterr()
    for key in ("distortion", "usage", "recall_at", "loss_terms"):
        assert resumed[key] == full[key], key
    assert [h["step"] for h in resumed["history"]] == [3, 4]
    without_time = [{k: v for k, v in h.items() if k != "elapsed"} for h in full["history"][2:]]
    assert [{k: v for k, v in h.items() if k != "elapsed"} for h in resumed["history"]] == without_time
    assert load_checkpoint(tmp_path / "ckpt")["step"] == 4  # --resume keeps checkpointing into its directory
