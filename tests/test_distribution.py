"""What a user gets from `pip install`: a wheel with the notebooks, a version, a license, a torch range."""
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import explorer

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))


def run(cmd, **kw):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)
    assert proc.returncode == 0, f"{cmd}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the sources (the checkout itself is left untouched)."""
    tmp = tmp_path_factory.mktemp("dist")
    src = tmp / "src"
    ignore = shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints")
    for folder in ("explorer", "widgets", "notebooks"):
        shutil.copytree(ROOT / folder, src / folder, ignore=ignore)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", str(tmp / "wheels"), str(src)])
    (found,) = (tmp / "wheels").glob("pq_explorer-*.whl")
    return found


def test_the_wheel_ships_every_notebook_the_license_and_a_torch_range(wheel):
    version = explorer.__version__
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        meta = Parser().parsestr(z.read(f"pq_explorer-{version}.dist-info/METADATA").decode())
    for name in NOTEBOOKS:
        assert f"pq_explorer-{version}.data/data/share/pq-explorer/notebooks/{name}" in names, name
    assert f"pq_explorer-{version}.dist-info/licenses/LICENSE" in names
    assert meta["Version"] == version and meta["License-Expression"] == "MIT"
    torch = next(Requirement(r) for r in meta.get_all("Requires-Dist") if Requirement(r).name == "torch")
    assert str(torch.specifier) == ">=2.2"  # a library's range; README's install line pins the CPU build
    assert "MIT License" in (ROOT / "LICENSE").read_text()


def test_pqx_dashboard_finds_the_tour_after_a_plain_install(wheel, tmp_path):
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "--ignore-installed", "-q", str(wheel)])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # this checkout must not be importable
    # A development machine also has an editable install (a meta-path finder from the system
    # site-packages, which the venv sees for its dependencies): hide it, as a user's machine has none.
    code = ("import sys; sys.meta_path[:] = [f for f in sys.meta_path if '__editable__' not in "
            "getattr(f, '__module__', '') + getattr(f, '__name__', '')]; "
            "import explorer.commands.dashboard as d; print(d.__file__); print(d.TOUR); "
            "from explorer.cli import main; main(['--version'])")
    proc = subprocess.run([str(python), "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout.splitlines()
    assert proc.returncode == 0 and len(out) == 3, proc.stderr[-3000:]
    module, tour = Path(out[0]), Path(out[1])
    assert venv in module.parents, f"the installed copy was not the one imported: {module}"
    assert tour == venv / "share" / "pq-explorer" / "notebooks" / "00_tour.ipynb" and tour.is_file()
    assert out[2] == f"pqx {explorer.__version__}"


def test_pqx_version_is_the_package_version(capsys):
    from explorer import cli

    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"pqx {explorer.__version__}"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "explorer.__version__"}

