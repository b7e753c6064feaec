"""Where shipml keeps things. Read at call time from the environment (never at import)."""

from __future__ import annotations

import os
from pathlib import Path


def shipml_home() -> Path:
    """The default registry: ``$SHIPML_HOME``, else ``~/.shipml``."""
    home = os.environ.get("SHIPML_HOME")
    return Path(home).expanduser() if home else Path.home() / ".shipml"
