"""Drop saved widget state from executed notebooks (``metadata.widgets``): the live views send
every redraw as widget messages, and a saved state would keep them all (tens of MB).

    python notebooks/strip_widget_state.py notebooks/*.ipynb
"""
import json
import sys

for path in sys.argv[1:]:
    with open(path, encoding="utf-8") as f:
        nb = json.load(f)
    if nb.get("metadata", {}).pop("widgets", None) is not None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(nb, f, indent=1, ensure_ascii=False)
            f.write("\n")
        print(f"{path}: widget state removed")
