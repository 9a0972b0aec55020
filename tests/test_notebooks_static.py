"""The committed notebooks as GitHub and nbviewer show them: pictures kept, widget state dropped,
small enough to open; the ones issue #19 covered check their claims in code (nbval runs them)."""
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# notebook -> the least number of static pictures it keeps (one per view its prose discusses)
PICTURED = {"00_tour": 5, "01_product_quantization": 2, "02_opq": 2, "03_codebook_collapse": 4,
            "04_dpq_soft_vs_hard": 5, "05_fppq": 5, "06_sscq_tsne": 6,
            "07_rl_multicodebook": 6, "08_recall_vs_bits": 4, "09_your_own_quantizer": 5}


def pictures(nb: dict) -> int:
    return sum(1 for cell in nb["cells"] for out in cell.get("outputs", [])
               if {"image/png", "image/svg+xml"} & set(out.get("data", {})))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_small_and_keeps_no_widget_state(path):
    assert path.stat().st_size < 600_000, f"{path.name}: {path.stat().st_size / 1024:.0f} KB (limit 600 KB)"
    nb = json.loads(path.read_text())
    assert "widgets" not in nb["metadata"], f"{path.name}: strip metadata.widgets (python .ci/execute_notebook.py)"


@pytest.mark.parametrize("stem", sorted(PICTURED))
def test_notebook_shows_its_views_as_pictures_and_asserts_its_claims(stem):
    nb = json.loads((ROOT / "notebooks" / f"{stem}.ipynb").read_text())
    assert pictures(nb) >= PICTURED[stem], f"{stem}: {pictures(nb)} static pictures, expected {PICTURED[stem]}"
    code = [cell for cell in nb["cells"] if cell["cell_type"] == "code"]
    assert all(cell.get("execution_count") for cell in code), f"{stem}: commit it executed"
    assert sum("assert " in "".join(cell["source"]) for cell in code) >= 3, f"{stem}: claims are not checked in code"
