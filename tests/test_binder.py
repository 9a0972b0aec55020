"""Binder launches the same project pyproject.toml describes."""
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _binder_requirements():
    reqs, local = [], []
    for line in (ROOT / "binder" / "requirements.txt").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or line.startswith("--"):
            continue
        (local if line == "." else reqs).append(line)
    return {Requirement(r).name: Requirement(r) for r in reqs}, local


def test_binder_requirements_match_pyproject_dependencies():
    """Binder installs the dependencies and the ``watch`` extra (notebook 09), with the same specifiers."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["watch"]
    declared = {Requirement(r).name: Requirement(r) for r in wanted}
    binder, local = _binder_requirements()
    assert local == ["."], "binder/requirements.txt must install the project itself with a line '.'"
    assert set(binder) == set(declared)
    for name, req in declared.items():
        assert str(binder[name].specifier) == str(req.specifier), name
    assert str(declared["torch"].specifier) == "==2.13.0"  # a range would let pip pull a CUDA build


def test_binder_runtime_and_apt():
    assert (ROOT / "binder" / "runtime.txt").read_text().strip() == "python-3.11"
    assert "dataset-fashion-mnist" in (ROOT / "binder" / "apt.txt").read_text().split()
