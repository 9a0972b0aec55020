"""Checkpoints: a fit stopped part-way and resumed from its checkpoint ends with the codes of an
uninterrupted fit with the same seed; checkpoints are written atomically; misuse is refused clearly."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from explorer import cli, data, methods
from explorer.checkpoint import FILENAME, Checkpointer, load_checkpoint, save_checkpoint
from explorer.errors import DataFileError, InvalidParameter
from explorer.events import STOP, Step
from explorer.methods.base import Quantizer

# The checkpoint rows of the bad-input catalogue (docs/reliability.md): case: (input, exit code, message).
CHECKPOINT_CASES = {
    "checkpoint with a flipped byte": ("pqx train --resume DIR (a byte of DIR/checkpoint.pt changed)", 2,
                                       "DIR/checkpoint.pt: checkpoint is corrupt (its sha256 does not match its "
                                       "contents: a changed or truncated file); delete it and train again"),
    "checkpoint without a checksum": ("pqx train --resume DIR (a bare torch.save file)", 2,
                                      "DIR/checkpoint.pt: not a PQ Explorer checkpoint (no PQXCKPT1 checksum header"),
}

SETTINGS = {
    "pq": dict(n_subspaces=8, n_codewords=32, n_iter=12, random_state=5),
    "opq": dict(n_subspaces=8, n_codewords=32, n_iter=6, n_iter_pq_first=5, n_iter_pq=2, random_state=5),
}


@pytest.fixture(scope="module")
def X():
    return data.load_digits().base


def stop_after(k):
    return lambda event: STOP if isinstance(event, Step) and event.step == k else None


@pytest.mark.parametrize("name", sorted(SETTINGS))
@pytest.mark.parametrize("every,stop_at", [(2, 5), (3, 4)])
def test_resume_reaches_the_codes_of_an_uninterrupted_fit(X, tmp_path, name, every, stop_at):
    reference = methods.create(name, **SETTINGS[name]).fit(X)
    first = methods.create(name, **SETTINGS[name])
    ckpt = Checkpointer(first, tmp_path, every=every)
    first.fit(X, callbacks=[ckpt, stop_after(stop_at)])
    assert first.stopped_ and first.n_steps_ == stop_at
    # saved every `every` steps, then once more when the stopped fit finished
    assert ckpt.saved_steps == sorted({*range(every, stop_at + 1, every), stop_at})
    state = load_checkpoint(tmp_path)
    assert state["step"] == stop_at
    assert not np.array_equal(first.encode(X), reference.encode(X))  # stopping early did change the model

    resumed = methods.create(name, **SETTINGS[name]).fit(X, resume=state)
    assert resumed.n_steps_ == reference.n_steps_
    np.testing.assert_array_equal(resumed.encode(X), reference.encode(X))
    np.testing.assert_array_equal(resumed.codebooks_, reference.codebooks_)


def test_resume_from_an_earlier_checkpoint_than_the_stop(X, tmp_path):
    """A crash loses the steps after the last periodic save; resuming from it still ends identically."""
    reference = methods.create("pq", **SETTINGS["pq"]).fit(X)
    q = methods.create("pq", **SETTINGS["pq"])
    saved = {}
    q.fit(X, callbacks=[lambda e: saved.setdefault(e.step, q.state_dict()) if isinstance(e, Step) and e.step == 4 else None,
                        stop_after(9)])
    resumed = methods.create("pq", **SETTINGS["pq"]).fit(X, resume=saved[4])
    np.testing.assert_array_equal(resumed.encode(X), reference.encode(X))


def test_history_after_resume_continues_the_step_count(X, tmp_path):
    q = methods.create("pq", **SETTINGS["pq"])
    q.fit(X, callbacks=[Checkpointer(q, tmp_path, every=100), stop_after(5)])
    steps = []
    methods.create("pq", **SETTINGS["pq"]).fit(X, resume=load_checkpoint(tmp_path),
                                                  callbacks=[lambda e: steps.append(e.step) if isinstance(e, Step) else None])
    assert steps == list(range(6, 13))


def test_load_state_dict_gives_a_usable_model(X, tmp_path):
    q = methods.create("opq", **SETTINGS["opq"]).fit(X)
    save_checkpoint(tmp_path, q.state_dict())
    loaded = methods.create("opq", **SETTINGS["opq"]).load_state_dict(load_checkpoint(tmp_path))
    np.testing.assert_array_equal(loaded.encode(X), q.encode(X))
    np.testing.assert_allclose(loaded.decode(q.encode(X[:10])), q.decode(q.encode(X[:10])))


def test_resume_refuses_other_parameters_method_or_data(X, tmp_path):
    q = methods.create("pq", **SETTINGS["pq"]).fit(X)
    state = q.state_dict()
    with pytest.raises(InvalidParameter, match="random_state=5 .now 6.*same parameters"):
        methods.create("pq", **{**SETTINGS["pq"], "random_state": 6}).fit(X, resume=state)
    with pytest.raises(InvalidParameter, match="checkpoint is for method 'pq', not 'opq'"):
        methods.create("opq", **SETTINGS["opq"]).fit(X, resume=state)
    with pytest.raises(InvalidParameter, match="other data"):
        methods.create("pq", **SETTINGS["pq"]).fit(X[::-1], resume=state)


def test_method_without_checkpoint_support_is_refused_before_training(X, tmp_path):
    class NoCheckpoints(Quantizer):
        name = "no-checkpoints"

        def _fit(self, X, y, run):  # pragma: no cover - never reached
            raise AssertionError("training must not start")

    q = NoCheckpoints(8, 16)
    with pytest.raises(InvalidParameter, match="does not support checkpoints yet"):
        Checkpointer(q, tmp_path)
    with pytest.raises(InvalidParameter, match="does not support checkpoints yet"):
        q.fit(X, resume={"method": "no-checkpoints"})
    assert not os.listdir(tmp_path)


def test_checkpoint_file_is_replaced_atomically_and_unreadable_ones_are_refused(X, tmp_path):
    q = methods.create("pq", **SETTINGS["pq"]).fit(X)
    save_checkpoint(tmp_path, q.state_dict())
    save_checkpoint(tmp_path, q.state_dict())
    assert os.listdir(tmp_path) == [FILENAME]  # no temporary files left behind
    raw = (tmp_path / FILENAME).read_bytes()
    (tmp_path / FILENAME).write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataFileError, match="checkpoint.pt: checkpoint is corrupt .its sha256 does not match"):
        load_checkpoint(tmp_path)
    with pytest.raises(DataFileError, match="no checkpoint.pt there"):
        load_checkpoint(tmp_path / "missing")


def test_cli_checkpoint_then_resume_matches_an_uninterrupted_run(tmp_path, capsys):
    common = ["train", "--method", "pq", "-K", "32", "--iters", "12", "--seed", "3", "--quiet"]
    assert cli.main(common + ["--json", str(tmp_path / "full.json")]) == 0
    q = methods.create("pq", n_codewords=32, n_iter=12, random_state=3)
    # simulate an interrupted run: the checkpoint of a run stopped after step 5
    ds = data.split_queries(data.load("digits"), 200, random_state=3)
    q.fit(ds.base, callbacks=[Checkpointer(q, tmp_path / "ck", every=100), stop_after(5)])
    assert cli.main(common + ["--resume", str(tmp_path / "ck"), "--json", str(tmp_path / "resumed.json")]) == 0
    full = json.loads((tmp_path / "full.json").read_text())
    resumed = json.loads((tmp_path / "resumed.json").read_text())
    assert resumed["resumed_from_step"] == 5 and full["resumed_from_step"] is None
    assert resumed["usage"] == full["usage"] and resumed["distortion"] == full["distortion"]
    assert [h["step"] for h in resumed["history"]] == list(range(6, 13))
    assert load_checkpoint(tmp_path / "ck")["step"] == 12  # --resume keeps checkpointing into its directory
    capsys.readouterr()
    assert cli.main(common[:-1] + ["--seed", "4", "--quiet", "--resume", str(tmp_path / "ck")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "random_state=3 (now 4)" in err


def test_a_model_stopped_from_outside_can_be_saved_later_and_resumed(X):
    """The dashboard's Stop: the fit returns a usable, picklable model; its state_dict taken
    afterwards still continues to the uninterrupted result."""
    import pickle

    from explorer.events import Recorder, StopSignal
    reference = methods.create("pq", **SETTINGS["pq"]).fit(X)
    stop = StopSignal()
    q = methods.create("pq", **SETTINGS["pq"])
    q.fit(X, callbacks=[Recorder(), lambda e: stop.set() if isinstance(e, Step) and e.step == 3 else None], stop=stop)
    assert q.stopped_ and q.n_steps_ == 3
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(q)).encode(X), q.encode(X))
    resumed = methods.create("pq", **SETTINGS["pq"]).fit(X, resume=q.state_dict())
    np.testing.assert_array_equal(resumed.encode(X), reference.encode(X))


@pytest.mark.parametrize("where", ["payload start", "middle", "last byte", "digest"])
def test_a_flipped_byte_anywhere_is_refused_naming_the_file(X, tmp_path, where):
    """The sha256 in the header covers the whole payload: one flipped bit in an array (which
    torch would load silently, giving wrong codes) or in the digest itself is refused."""
    from explorer.checkpoint import HEADER_LEN
    q = methods.create("pq", **SETTINGS["pq"]).fit(X)
    path = save_checkpoint(tmp_path, q.state_dict())
    raw = bytearray(path.read_bytes())
    at = {"payload start": HEADER_LEN, "middle": (HEADER_LEN + len(raw)) // 2, "last byte": len(raw) - 1,
          "digest": HEADER_LEN - 10}[where]
    raw[at] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(DataFileError) as info:
        load_checkpoint(tmp_path)
    assert CHECKPOINT_CASES["checkpoint with a flipped byte"][2].replace("DIR", str(tmp_path)) in str(info.value)


def test_a_checkpoint_without_the_checksum_header_is_refused(X, tmp_path):
    import torch
    from explorer.checkpoint import to_storable
    torch.save(to_storable(methods.create("pq", **SETTINGS["pq"]).fit(X).state_dict()), tmp_path / FILENAME)
    with pytest.raises(DataFileError) as info:
        load_checkpoint(tmp_path)
    assert CHECKPOINT_CASES["checkpoint without a checksum"][2].replace("DIR", str(tmp_path)) in str(info.value)
