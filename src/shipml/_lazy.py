"""pandas, imported only where it is needed.

A serving process whose models all take a numeric matrix never imports pandas (and with it pyarrow): ~75 MB of
resident memory and ~0.3 s of start-up. Code on that path asks :func:`loaded_pandas` instead of importing it: a
value cannot be a pandas object unless pandas is already imported.
"""

from __future__ import annotations

import sys
from types import ModuleType


def loaded_pandas() -> ModuleType | None:
    """The pandas module if this process has imported it, else None. While another thread is still importing
    it (the module is in ``sys.modules`` but half-initialised), also None: no pandas object exists yet."""
    module = sys.modules.get("pandas")
    if not isinstance(module, ModuleType) or getattr(getattr(module, "__spec__", None), "_initializing", False):
        return None
    return module


def is_frame(value: object) -> bool:
    pd = loaded_pandas()
    return pd is not None and isinstance(value, pd.DataFrame)


def is_series(value: object) -> bool:
    pd = loaded_pandas()
    return pd is not None and isinstance(value, pd.Series)
