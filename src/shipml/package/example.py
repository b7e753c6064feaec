"""A typical input row made from what the package records about its training data - never a copied row.

A served model shows an example request (``GET /models/NAME``, ``/openapi.json``). Copying training rows there
(the golden sample) would publish real records. :func:`example_row` builds one from the signature and the
reference profile instead: each number is its column's median, rounded to a hundredth of the column's spread
(interquartile range) and kept inside the training range; each category is the most frequent one; a free-text column
(too many values to list as categories: names, ids, messages) shows a value only when many training rows share
it. The row is valid input under the strictest input policy.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from shipml.package.signature import ColumnSpec, Signature

if TYPE_CHECKING:
    from shipml.package.loaded import LoadedModel

__all__ = ["example_row", "model_example"]

#: A free-text value is shown only when at least this many training rows hold it: a value that few rows share
#: (a name, an id, a message) describes those rows rather than the data.
SHARED_BY = 5
TEXT_PLACEHOLDER = "example"


def example_row(signature: Signature, profile: dict[str, Any]) -> dict[str, Any]:
    """One input record for ``signature``, from ``profile`` (the package's ``profile.json``; empty when missing)."""
    features = profile.get("features") or {}
    return {c.name: _typical(c, features.get(c.name) or {}) for c in signature.inputs}


def model_example(model: LoadedModel) -> dict[str, Any]:
    """:func:`example_row` for a loaded model (from its signature alone when its profile cannot be read)."""
    try:
        profile = model.profile()
    except (OSError, ValueError):
        profile = {}
    return example_row(model.signature, profile if isinstance(profile, dict) else {})


def _typical(column: ColumnSpec, feature: dict[str, Any]) -> Any:
    if column.dtype in ("int", "float"):
        return _number(column, feature)
    if column.dtype == "bool":
        frequencies = feature.get("frequencies") or {}
        if not frequencies:
            return None if column.nullable else False
        return max(frequencies, key=frequencies.__getitem__) == "True"
    if column.dtype == "datetime":
        return _datetime(column, feature)
    return _text(column, feature)


def _number(column: ColumnSpec, feature: dict[str, Any]) -> int | float | None:
    low, high = _bound(column.min), _bound(column.max)
    quantiles = feature.get("quantiles") or {}
    median = quantiles.get("0.5")
    if median is None:
        if low is None or high is None:
            return None if column.nullable else 0
        median = (low + high) / 2
    spread = float(quantiles.get("0.75", median)) - float(quantiles.get("0.25", median))
    value = _round(float(median), spread)
    if column.dtype == "int":
        whole = round(value)
        if low is not None:
            whole = max(whole, math.ceil(low))
        if high is not None:
            whole = min(whole, math.floor(high))
        return int(whole)
    if low is not None:
        value = max(value, low)
    if high is not None:
        value = min(value, high)
    return value


def _round(value: float, spread: float) -> float:
    """``value`` to a hundredth of ``spread``'s magnitude (three significant digits when there is no spread): a
    typical figure, not a measured one."""
    scale = abs(spread) if spread and math.isfinite(spread) else abs(value)
    if not scale or not math.isfinite(value):
        return value
    return round(value, 2 - math.floor(math.log10(scale)))


def _bound(value: float | str | None) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _datetime(column: ColumnSpec, feature: dict[str, Any]) -> str | None:
    """The median day, as naive ISO 8601 (what the signature's range is compared in)."""
    import pandas as pd

    if column.min is None or column.max is None:
        return None if column.nullable else "1970-01-01T00:00:00"
    low = pd.Timestamp(column.min).tz_localize(None)
    high = pd.Timestamp(column.max).tz_localize(None)
    median = (feature.get("quantiles") or {}).get("0.5")
    stamp = pd.Timestamp(float(median), unit="s") if median is not None else None
    day = pd.Timedelta(days=1)
    if stamp is None or not low - day <= stamp <= high + day:
        # Profiles of datetime columns stored at another resolution than nanoseconds hold figures that are not
        # epoch seconds (shipml <= 0.1.0): trust the signature's range then.
        stamp = low + (high - low) / 2
    stamp = min(max(stamp.floor("D"), low), high)
    return str(stamp.isoformat())


def _text(column: ColumnSpec, feature: dict[str, Any]) -> str | None:
    frequencies: dict[str, float] = feature.get("frequencies") or {}
    if column.categories is not None:
        listed = [c for c in frequencies if c in column.categories]
        if listed:
            return max(listed, key=frequencies.__getitem__)
        return column.categories[0] if column.categories else (None if column.nullable else TEXT_PLACEHOLDER)
    present = feature.get("count", 0) * (1 - feature.get("null_rate", 0.0))
    if frequencies:
        value = max(frequencies, key=frequencies.__getitem__)
        if frequencies[value] * present >= SHARED_BY - 1e-9:
            return value
    return TEXT_PLACEHOLDER
