"""Where a model came from: who, where, when, from which code commit and which data."""

from __future__ import annotations

import getpass
import hashlib
import inspect
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from shipml._lazy import loaded_pandas
from shipml.package.manifest import ImportedFrom, Lineage


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def current_user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return None


def fingerprint(data: Any) -> str:
    """A stable sha256 of a frame, series or array: same values, same fingerprint."""
    h = hashlib.sha256()
    pd = loaded_pandas()
    if pd is not None and isinstance(data, pd.DataFrame | pd.Series):
        if isinstance(data, pd.DataFrame):
            h.update(repr(list(map(str, data.columns))).encode())
        h.update(pd.util.hash_pandas_object(data, index=False).to_numpy().tobytes())
    else:
        array = np.ascontiguousarray(np.asarray(data))
        h.update(f"{array.dtype}{array.shape}".encode())
        h.update(array.tobytes() if array.dtype != object else repr(array.tolist()).encode())
    return "sha256:" + h.hexdigest()


def caller_file() -> Path | None:
    """The first source file on the stack outside shipml: the user's training code."""
    for frame in inspect.stack(context=0)[1:]:
        filename = frame.filename
        if filename.startswith("<"):
            continue
        path = Path(filename)
        if ("shipml" in path.parts and "src" in path.parts) or path.match("*/site-packages/*"):
            continue
        if path.is_file():
            return path.resolve()
    main = getattr(sys.modules.get("__main__"), "__file__", None)
    return Path(main).resolve() if main else None


def git_info(path: Path | None) -> tuple[str | None, bool | None, str | None]:
    """(commit, dirty, repository root) of the git checkout holding ``path``, or Nones."""
    where = path.parent if path is not None else Path.cwd()

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=where, capture_output=True, text=True, timeout=5, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None, None, None
    status = git("status", "--porcelain", "--untracked-files=no")
    return commit, bool(status) if status is not None else None, git("rev-parse", "--show-toplevel")


def build_lineage(sample: Any, target: Any, rows: int, shipml_version: str,
                  imported_from: ImportedFrom | None = None) -> Lineage:
    """The lineage of a model saved now. The training code is the caller's file and its git checkout, unless the
    model was ``imported_from`` elsewhere: then the code that trained it is unknown (the caller is shipml's own
    command line), and the source's description stands in for it."""
    code = caller_file() if imported_from is None else None
    commit, dirty, repo = git_info(code) if imported_from is None else (None, None, None)
    return Lineage(
        created_at=now_iso(),
        user=current_user(),
        host=socket.gethostname(),
        git_commit=commit,
        git_dirty=dirty,
        git_repo=repo,
        code_file=str(code) if code else None,
        sample_fingerprint=fingerprint(sample),
        target_fingerprint=fingerprint(target) if target is not None else None,
        sample_rows=rows,
        shipml_version=shipml_version,
        imported_from=imported_from,
    )
