"""Strict JSON: the one conversion every file the project writes as JSON goes through (reports,
sweep rows, benchmarks, event logs), kept free of other imports so any module can use it."""
from __future__ import annotations

import numpy as np


def json_ready(value):
    """``value`` as strict JSON data: NaN and ±inf (Python or numpy floats, also inside arrays)
    become None (JSON ``null``), numpy scalars and arrays become Python numbers and lists, tuples
    become lists, dict keys become strings; objects with ``to_dict()`` are converted by it.

    JSON has no NaN: ``json.dump`` writes a bare ``NaN`` that strict parsers (browsers,
    ``jq``, Go, Rust) reject, so every report, sweep row and benchmark goes through this first.
    """
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, np.generic):
        return json_ready(value.item())
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if hasattr(value, "to_dict"):
        return json_ready(value.to_dict())
    return value  # left for json.dump to refuse (TypeError), as any unknown object
