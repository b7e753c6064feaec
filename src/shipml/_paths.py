"""Paths as the user typed them, made absolute once, where they enter shipml."""

from __future__ import annotations

import os
from pathlib import Path


def absolute(path: str | os.PathLike[str]) -> Path:
    """``path`` made absolute against the current directory and normalised: ``~`` expanded, ``.`` and ``..``
    segments removed (``./dir``, ``dir/``, ``../x/dir``, ``.`` all name the directory the shell would), without
    following symlinks, so that names derived from it (a directory's name, a path in a message) are the user's."""
    return Path(os.path.abspath(os.path.expanduser(os.fspath(path))))
