"""Checkpoints of RLQ: a fit stopped after k stages and resumed from its checkpoint ends with
exactly the codes of an uninterrupted fit with the same seed, because the checkpoint holds the
codebooks, the best codes so far, both networks, both Adam states (with the decayed learning
rate), the decayed entropy coefficient, the running return statistics, the stage and every RNG."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from explorer import data
from explorer.checkpoint import Checkpointer, load_checkpoint
from explorer.events import STOP, Step
from explorer.methods.rlq import RLQ

from cli_resume import full_interrupted_resumed

# small: 4 stages on 600 × 16 vectors, M = 3 codebooks of 32 codewords, 3 minibatches per pass;
# sampling warmer than the default (0.005) so that another sampling generator also changes the codes
SETTINGS = dict(n_subspaces=3, n_codewords=32, n_iter=4, batch_size=200, init_iter=3, references=False,
                temperature=0.1, random_state=7)


@pytest.fixture(scope="module")
def X():
    return data.make_synthetic(600, 16, n_clusters=10, random_state=3).base


@pytest.fixture(scope="module")
def reference(X):
    """The uninterrupted fit."""
    return RLQ(**SETTINGS).fit(X)


def stop_after(k):
    return lambda event: STOP if isinstance(event, Step) and event.step == k else None


def test_resume_reaches_the_codes_of_an_uninterrupted_fit(X, reference, tmp_path):
    first = RLQ(**SETTINGS)
    ckpt = Checkpointer(first, tmp_path, every=1)
    first.fit(X, callbacks=[ckpt, stop_after(2)])
    assert first.stopped_ and first.n_steps_ == 2 and ckpt.saved_steps == [1, 2]
    codes = first.encode(X)  # the stopped model is usable ...
    assert codes.shape == (len(X), 3) and first.embedding_distortion(X, codes) < np.mean((X ** 2).sum(1))
    assert not np.array_equal(codes, reference.encode(X))  # ... and two more stages do change the codes

    state = load_checkpoint(tmp_path)  # through the file: torch.save, weights_only load
    assert state["step"] == 2
    assert {"policy", "value", "policy_optimizer", "value_optimizer", "codes", "entropy_coef"} <= set(state["extra"])
    assert state["extra"]["entropy_coef"] == pytest.approx(0.05 * 0.9999 ** 2)
    steps = []
    resumed = RLQ(**SETTINGS).fit(X, resume=state,
                                  callbacks=[lambda e: steps.append(e.step) if isinstance(e, Step) else None])
    assert steps == [3, 4] and resumed.n_steps_ == 4
    assert np.array_equal(resumed.encode(X), reference.encode(X))
    np.testing.assert_array_equal(resumed.codebooks_, reference.codebooks_)
    assert resumed.history_ == reference.history_  # per-stage errors and losses, bit for bit


@pytest.mark.parametrize("drop", ["value_optimizer", "entropy_coef", "rng"])
def test_each_saved_part_is_needed(X, reference, drop):
    """The equality above is not vacuous: resuming with a fresh value optimizer, no entropy
    coefficient or another sampling generator gives another training run (per-stage losses);
    another generator also gives other codes. (With the distance prior the policy's changes
    move few codes within two stages, so the losses are the sharper witness.)"""
    q = RLQ(**SETTINGS).fit(X, callbacks=[stop_after(2)])
    state = q.state_dict()
    if drop == "rng":
        state["rng"]["torch"] = torch.Generator().manual_seed(12345).get_state()
    elif drop == "entropy_coef":
        state["extra"]["entropy_coef"] = 0.0
    else:
        state["extra"][drop] = None  # the resumed fit then keeps a fresh Adam
    resumed = RLQ(**SETTINGS).fit(X, resume=state)
    assert resumed.history_[:2] == reference.history_[:2]  # the checkpoint's stages, restored
    assert resumed.history_[2:] != reference.history_[2:]
    if drop == "rng":
        assert not np.array_equal(resumed.encode(X), reference.encode(X))


def test_stopped_model_pickles_loads_and_still_resumes(X, reference):
    """After a stop the model keeps the stage's state: its state_dict() — after pickling, and
    after the caller used torch's global RNG — resumes exactly; load_state_dict gives a model
    that encodes like the stopped one."""
    q = RLQ(**SETTINGS).fit(X, callbacks=[stop_after(3)])
    q = pickle.loads(pickle.dumps(q))
    torch.manual_seed(99), torch.rand(3)
    state = q.state_dict()
    loaded = RLQ(**SETTINGS).load_state_dict(state)
    np.testing.assert_array_equal(loaded.encode(X), q.encode(X))
    resumed = RLQ(**SETTINGS).fit(X, resume=state)
    assert np.array_equal(resumed.encode(X), reference.encode(X))


def test_cli_ctrl_c_with_checkpoint_then_resume_matches_an_uninterrupted_run(X, tmp_path, monkeypatch, capsys):
    """`pqx train --method rlq --checkpoint D`, Ctrl-C after stage 2, then `--resume D`: the
    report equals that of an uninterrupted run."""
    np.save(tmp_path / "base.npy", X)
    common = ["train", "--method", "rlq", "--data", str(tmp_path / "base.npy"), "--n-queries", "50", "-M", "3",
              "-K", "32", "--iters", "4", "--seed", "7", "--no-references", "--quiet"]
    full, _, resumed = full_interrupted_resumed(common, tmp_path, monkeypatch)
    capsys.readouterr()
    for key in ("distortion", "usage", "recall_at", "policy_distortion"):
        assert resumed[key] == full[key], key


# ---- steps within stages (log_every): live at the pace of training, checkpoints at stage ends
WITHIN = dict(SETTINGS, log_every=2)  # 3 minibatches × 2 passes = 6 updates a stage: steps after 2, 4, then the end


@pytest.fixture(scope="module")
def within_reference(X):
    steps = []
    q = RLQ(**WITHIN).fit(X, callbacks=[lambda e: steps.append(e) if isinstance(e, Step) else None])
    return q, steps


def adam_updates(q) -> int:
    return int(q._after_fit["training"]["policy_optimizer"]["state"][0]["step"])


def test_steps_within_a_stage_carry_its_fraction_and_only_stage_ends_are_checkpointed(X, within_reference, tmp_path):
    q, steps = within_reference
    assert [s.step for s in steps] == list(range(1, 13))
    assert [round(s.epoch, 3) for s in steps[:3]] == [round(1 / 3, 3), round(2 / 3, 3), 1.0]
    assert {"total", "policy_mse", "greedy_mse", "policy", "value", "entropy"} <= set(steps[0].losses)
    assert len(q.history_) == 4 and adam_updates(q) == 24
    first = RLQ(**WITHIN)
    ckpt = Checkpointer(first, tmp_path, every=1)
    first.fit(X, callbacks=[ckpt, stop_after(5)])  # step 5: four updates into stage 2
    assert ckpt.saved_steps == [3]  # the stage-1 end; the stop within stage 2 saves nothing
    assert adam_updates(first) == 6 + 4 and first.stopped_  # stopped at once: no update after the reported one
    assert first.encode(X).shape == (len(X), 3)  # ... and usable
    state = load_checkpoint(tmp_path)
    assert state["step"] == 3 and state["extra"]["stage"] == 1
    resumed = RLQ(**WITHIN).fit(X, resume=state)
    np.testing.assert_array_equal(resumed.encode(X), q.encode(X))
    assert resumed.history_ == q.history_
    # the stopped model's own state_dict() is that stage end too, and resumes exactly
    again = RLQ(**WITHIN).fit(X, resume=first.state_dict())
    np.testing.assert_array_equal(again.encode(X), q.encode(X))


class _StopAfterChecks:
    """A stop signal that turns on after ``k`` checks (training checks once per update)."""

    def __init__(self, k):
        self.k, self.n = k, 0

    def is_set(self):
        self.n += 1
        return self.n > self.k


def test_stop_acts_within_one_update_without_steps_within_stages(X):
    """log_every=0 reports stage ends only; a stop requested during stage 2 still ends the fit
    after the update in progress, not at the stage end."""
    q = RLQ(**dict(SETTINGS, log_every=0)).fit(X, stop=_StopAfterChecks(6 + 1 + 1))  # 6 updates, the stage-1 step, 1 more
    assert q.stopped_ and adam_updates(q) == 8 and len(q.history_) == 1
