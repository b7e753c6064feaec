"""Pure merge/split of request columns: no I/O, no clock, no event loop."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def merge_columns(parts: Sequence[Mapping[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    """Concatenate each named column over the parts (one part: returned as is, no copy)."""
    if len(parts) == 1:
        return dict(parts[0])
    merged: dict[str, Any] = {}
    for name in names:
        arrays = [np.asarray(p[name]) for p in parts]
        kinds = {a.dtype.kind for a in arrays}
        if len(kinds) > 1:  # e.g. floats from one request, objects from another: keep every value as is
            arrays = [a.astype(object) for a in arrays]
        merged[name] = np.concatenate(arrays)
    return merged


def offsets(rows: Sequence[int]) -> list[tuple[int, int]]:
    """[(start, stop)] of each part in the merged batch."""
    bounds = []
    start = 0
    for n in rows:
        bounds.append((start, start + n))
        start += n
    return bounds
