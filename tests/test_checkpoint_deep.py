"""Checkpoints of the deep methods (FPPQ, SSCQ): a fit stopped part-way and resumed from its
checkpoint ends with exactly the codes of an uninterrupted fit with the same seed, because the
checkpoint holds the model, the optimizer, the LR schedule, the epoch, every RNG and (FPPQ) the
PQ labels and the pre-training phase."""
from __future__ import annotations

import json
import pickle
import signal

import numpy as np
import pytest
import torch

from explorer import data, methods
from explorer.checkpoint import Checkpointer, load_checkpoint, save_checkpoint
from explorer.errors import InvalidParameter
from explorer.events import STOP, Note, Recorder, Step, StopSignal

from cli_resume import full_interrupted_resumed

# tiny but real: 4 epochs on 400 digits, MLP backbones, small batches; one Step per epoch (log_every
# covers an epoch's 6 or 12 mini-batches) except in the tests of Steps within epochs below
SETTINGS = {
    "fppq": dict(n_subspaces=4, n_codewords=16, embedding_dim=32, epochs=4, pretrain_epochs=2, batch_size=64,
                 backbone="mlp", random_state=3, log_every=100),
    "dpq": dict(n_subspaces=4, n_codewords=16, embedding_dim=32, epochs=4, batch_size=64, backbone="mlp",
                random_state=3, log_every=100),
    "sscq": dict(n_subspaces=2, n_codewords=16, epochs=4, batch_size=32, warmup_epochs=1, n_neighbours=5,
                 backbone="mlp", random_state=3, log_every=100),
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
              "-K", "16", "--epochs", "4", "--batch-size", "32", "--backbone", "mlp", "--seed", "3", "--quiet",
              "--log-every", "100"]
    full, _, resumed = full_interrupted_resumed(common, tmp_path, monkeypatch)
    capsys.readouterr()
    for key in ("distortion", "usage", "recall_at", "loss_terms"):
        assert resumed[key] == full[key], key
    assert [h["step"] for h in resumed["history"]] == [3, 4]
    without_time = [{k: v for k, v in h.items() if k != "elapsed"} for h in full["history"][2:]]
    assert [{k: v for k, v in h.items() if k != "elapsed"} for h in resumed["history"]] == without_time
    assert load_checkpoint(tmp_path / "ckpt")["step"] == 4  # --resume keeps checkpointing into its directory


# ------------------------------------------------------------------ Steps within epochs
@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_steps_come_every_log_every_mini_batches_with_the_fractional_epoch(Xy, name):
    """400 rows in batches of 64 (32 for SSCQ): 6 (12) mini-batches an epoch, a Step every 4 and one
    at the epoch's end, numbered 1, 2, ... across epochs; only epoch ends are resumable."""
    q = methods.create(name, **{**SETTINGS[name], "log_every": 4, "epochs": 2})
    seen = []
    q.fit(Xy[0], Xy[1] if q.supervised else None,
          callbacks=[lambda e: seen.append((e.step, e.epoch, q.at_resumable_step, int(e.usage.sum())))
                     if isinstance(e, Step) else None])
    per_epoch = 400 // SETTINGS[name]["batch_size"]
    rows = SETTINGS[name]["batch_size"] * (2 if name == "sscq" else 1) * SETTINGS[name]["n_subspaces"]  # SSCQ: 2 views
    ends = sorted({min(j, per_epoch) for j in range(4, per_epoch + 4, 4)})
    expected = [(k + 1 + e * len(ends), e + j / per_epoch, j == per_epoch, (j - ([0] + ends)[i]) * rows)
                for e in range(2) for i, j in enumerate(ends) for k in [i]]
    assert [(s, pytest.approx(f), r, u) for s, f, r, u in seen] == expected
    assert q.planned_steps == q.n_steps_ == len(seen) == 2 * len(ends)


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_stop_acts_within_one_mini_batch_and_resume_from_the_last_epoch_end_is_exact(Xy, reference, tmp_path, name):
    """A stop set during the 3rd mini-batch of epoch 2 (not a Step: log_every is 4) ends the fit
    after that mini-batch, with a last Step for it at epoch 1 + 3/batches and a usable model (the
    codebooks of the network as the stop left it); the checkpoint stays at epoch 1, and resuming
    from it ends with the codes of the uninterrupted fit."""
    X, y = Xy
    y = y if methods.get(name).supervised else None
    per_epoch = 400 // SETTINGS[name]["batch_size"]
    pretrain = SETTINGS[name].get("pretrain_epochs", 0) * per_epoch  # FPPQ's pre-training batches come first
    q = methods.create(name, **{**SETTINGS[name], "log_every": 4})
    stop, seen, calls = StopSignal(), [], [0]

    def count_batches(module, args, output):
        if module.training:
            calls[0] += 1
            if calls[0] == pretrain + per_epoch + 3:
                stop.set()
    real_make = q._make_model

    def make(dim, gen):  # hooks the network the fit builds
        net = real_make(dim, gen)
        net.backbone.register_forward_hook(count_batches)  # one training pass per mini-batch in every method
        return net
    q._make_model = make
    q.fit(X, y, stop=stop, callbacks=[Checkpointer(q, tmp_path, every=1),
                                      lambda e: seen.append(e) if isinstance(e, Step) else None])
    assert q.stopped_ and calls[0] == pretrain + per_epoch + 3  # not one mini-batch more
    assert seen[-1].epoch == pytest.approx(1 + 3 / per_epoch) and seen[-1].usage.sum() > 0
    net_codebooks = q.model_.codebooks() if callable(q.model_.codebooks) else q.model_.codebooks
    np.testing.assert_allclose(q.codebooks_, net_codebooks.detach().numpy() if name != "dpq" else q.centroids_)
    if name == "dpq":
        np.testing.assert_array_equal(q.centroids_, q.model_.codebooks.detach().numpy())
    assert q.encode(X).shape == (len(X), q.n_subspaces)
    state = load_checkpoint(tmp_path)
    assert state["extra"]["epochs_done"] == 1 and state["step"] == -(-per_epoch // 4)
    resumed = methods.create(name, **{**SETTINGS[name], "log_every": 4}).fit(X, y, resume=state)
    # the reference reported one Step per epoch: how often Steps come changes nothing in training
    assert np.array_equal(resumed.encode(X), reference[name].encode(X))
    np.testing.assert_array_equal(resumed.codebooks_, reference[name].codebooks_)


class _CtrlCMidEpoch(Checkpointer):  # the user presses Ctrl-C at step 5, inside epoch 2
    def __call__(self, event):
        super().__call__(event)
        if isinstance(event, Step) and event.step == 5:
            signal.raise_signal(signal.SIGINT)


def test_cli_ctrl_c_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path, monkeypatch, capsys):
    """`pqx train --method dpq --log-every 2 --checkpoint D`: 6 mini-batches an epoch, 3 Steps; Ctrl-C
    at step 5 (mid epoch 2) keeps the checkpoint of step 3 (epoch 1); `--resume D` then reports
    what an uninterrupted run reports."""
    from explorer import cli
    from explorer.commands import train as train_command
    ds = data.load_digits()
    np.save(tmp_path / "base.npy", ds.base[:450])
    np.save(tmp_path / "labels.npy", ds.labels[:450])
    common = ["train", "--method", "dpq", "--data", str(tmp_path / "base.npy"), "--labels", str(tmp_path / "labels.npy"),
              "--n-queries", "50", "-M", "4", "-K", "16", "--embedding-dim", "32", "--epochs", "3", "--batch-size", "64",
              "--backbone", "mlp", "--seed", "3", "--quiet", "--log-every", "2"]
    assert cli.main(common + ["--json", str(tmp_path / "full.json")]) == 0
    monkeypatch.setattr(train_command, "Checkpointer", _CtrlCMidEpoch)
    ckpt = tmp_path / "ckpt"
    assert cli.main(common + ["--checkpoint", str(ckpt), "--checkpoint-every", "1",
                              "--json", str(tmp_path / "interrupted.json")]) == 130
    state = load_checkpoint(ckpt)
    assert (state["step"], state["extra"]["epochs_done"]) == (3, 1)
    monkeypatch.undo()
    assert cli.main(common + ["--resume", str(ckpt), "--json", str(tmp_path / "resumed.json")]) == 0
    capsys.readouterr()
    full, interrupted, resumed = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("full", "interrupted", "resumed"))
    assert interrupted["interrupted"] and [h["step"] for h in interrupted["history"]] == [1, 2, 3, 4, 5]
    assert resumed["resumed_from_step"] == 3 and [h["step"] for h in resumed["history"]] == [4, 5, 6, 7, 8, 9]
    for key in ("distortion", "usage", "recall_at", "map", "map_by_lut"):
        assert resumed[key] == full[key], key
    strip = lambda rows: [{k: v for k, v in h.items() if k != "elapsed"} for h in rows]  # noqa: E731
    assert strip(resumed["history"]) == strip(full["history"][3:])


def test_fppq_stop_during_a_pretraining_epoch_acts_within_one_mini_batch(Xy, tmp_path):
    """A stop set during FPPQ's 3rd pre-training mini-batch (of 6) ends the fit after it; that state
    is mid-epoch, so no checkpoint is written (a resume could not be exact)."""
    from explorer.errors import DataFileError
    X, y = Xy
    q = methods.create("fppq", **SETTINGS["fppq"])
    stop, calls = StopSignal(), [0]
    real_make = q._make_model

    def count(module, args, output):  # returns None: the output stays the backbone's
        if module.training:
            calls[0] += 1
            if calls[0] == 3:
                stop.set()

    def make(dim, gen):
        net = real_make(dim, gen)
        net.backbone.register_forward_hook(count)
        return net
    q._make_model = make
    q.fit(X, y, stop=stop, callbacks=[Checkpointer(q, tmp_path, every=1)])
    assert q.stopped_ and calls[0] == 3 and q.encode(X).shape == (len(X), 4)
    with pytest.raises(DataFileError):
        load_checkpoint(tmp_path)
