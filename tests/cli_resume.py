"""Shared steps of the CLI checkpoint tests: an uninterrupted `pqx train`, the same run stopped by a
real Ctrl-C once step 2 is checkpointed, then `--resume`; returns the three reports."""
import json
import signal

from explorer import cli
from explorer.checkpoint import Checkpointer, load_checkpoint
from explorer.commands import train as train_command
from explorer.events import Step


class _CtrlCAfterStep2(Checkpointer):  # the user presses Ctrl-C once step 2 is saved
    def __call__(self, event):
        super().__call__(event)
        if isinstance(event, Step) and event.step == 2:
            signal.raise_signal(signal.SIGINT)


def full_interrupted_resumed(common: list[str], tmp_path, monkeypatch) -> tuple[dict, dict, dict]:
    """Run ``pqx <common>`` three ways (whole; Ctrl-C after step 2 with --checkpoint; --resume)."""
    assert cli.main(common + ["--json", str(tmp_path / "full.json")]) == 0
    monkeypatch.setattr(train_command, "Checkpointer", _CtrlCAfterStep2)
    ckpt = tmp_path / "ckpt"
    assert cli.main(common + ["--checkpoint", str(ckpt), "--checkpoint-every", "1",
                              "--json", str(tmp_path / "interrupted.json")]) == 130
    assert load_checkpoint(ckpt)["step"] == 2
    monkeypatch.undo()
    assert cli.main(common + ["--resume", str(ckpt), "--json", str(tmp_path / "resumed.json")]) == 0
    reports = [json.loads((tmp_path / f"{name}.json").read_text()) for name in ("full", "interrupted", "resumed")]
    assert reports[1]["interrupted"] is True
    assert reports[2]["resumed_from_step"] == 2 and not reports[2]["interrupted"]
    return tuple(reports)
