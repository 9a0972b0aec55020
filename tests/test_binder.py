"""Binder launches the same project pyproject.toml describes."""
import os
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
        if name != "torch":
            assert str(binder[name].specifier) == str(req.specifier), name
    # the library's metadata takes a torch range; Binder, like README's install line, pins the
    # release whose CPU wheel it installs (a range would let pip pull a multi-GB CUDA build)
    pin = str(binder["torch"].specifier)
    assert pin.startswith("==") and declared["torch"].specifier.contains(pin[2:]), (pin, declared["torch"])
    assert f"torch{pin}" in readme_install_lines(), "README's install commands must pin the torch Binder pins"


def readme_install_lines() -> str:
    """README's command lines that pip-install the project."""
    lines = (ROOT / "README.md").read_text().splitlines()
    return "\n".join(line for line in lines if "pip install" in line and (" -e ." in line or '-e ".[' in line))


def test_binder_runtime_and_apt():
    assert (ROOT / "binder" / "runtime.txt").read_text().strip() == "python-3.11"
    assert "dataset-fashion-mnist" in (ROOT / "binder" / "apt.txt").read_text().split()
    # kaleido (View.snapshot) needs a Chrome at build time: postBuild fetches it
    assert "kaleido_get_chrome" in (ROOT / "binder" / "postBuild").read_text()
    assert os.access(ROOT / "binder" / "postBuild", os.X_OK)
