"""A tiny real registry for the registry's own tests, and what those tests check over and over.

``m`` 1.0.0 and 1.1.0 (scikit-learn logistic regressions on columns a, b, c), ``@production`` -> 1.0.0, one
alias move in the history and one stored evaluation. Built once per session; each test (or each hypothesis
example) works on its own copy.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import orjson
import pandas as pd
from sklearn.linear_model import LogisticRegression

import shipml
from shipml.errors import ConflictError, NotFoundError

T = TypeVar("T")
R = TypeVar("R")
Where = TypeVar("Where", Path, shipml.Registry)

def tiny_model(seed: int = 0) -> tuple[LogisticRegression, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(60, 3)), columns=["a", "b", "c"])
    return LogisticRegression().fit(X, (X["a"] > 0).astype(int)), X


def build_tiny_registry(root: Where) -> Where:
    model, X = tiny_model()
    registry = root if isinstance(root, shipml.Registry) else shipml.Registry(root)
    for _ in range(2):
        shipml.save_model(model, "m", sample=X, registry=registry, description="tiny")
    registry.set_alias("m", "production", "1.0.0", reason="first")
    registry.record_evaluation(registry.get("m:1.0.0"), {"metrics": {"accuracy": 0.9}, "task": "classification",
                                                         "rows": 10, "rejected": 0, "data": "valid.csv",
                                                         "fingerprint": "sha256:0", "target": "y",
                                                         "at": "2026-01-01T00:00:00Z", "by": "test"})
    return root


def copy_registry(source: Path, dest: Path) -> shipml.Registry:
    shutil.copytree(source, dest, symlinks=True)
    return shipml.Registry(dest)


def one_line(exc: BaseException) -> str:
    """The message of a library error, checked to be one line a person can read."""
    text = str(exc)
    assert text and "\n" not in text and "Traceback" not in text, repr(text)
    return text


def race(plans: Sequence[Sequence[T]], step: Callable[[int, int, T], list[R]], timeout_s: float = 120) -> list[R]:
    """Run each plan in its own thread, the threads starting together: ``step(thread, i, item)`` per item, which
    returns what it changed. A refusal (ConflictError, NotFoundError: another thread got there first) skips the
    item, after checking its message is one readable line; any other exception fails the race. What every step
    changed, in the order the threads finished them."""
    barrier = threading.Barrier(len(plans))
    done: list[R] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker(thread: int, plan: Sequence[T]) -> None:
        barrier.wait(timeout=30)
        for i, item in enumerate(plan):
            try:
                changed = step(thread, i, item)
            except (ConflictError, NotFoundError) as exc:
                one_line(exc)
                continue
            except BaseException as exc:
                with lock:
                    errors.append(exc)
                return
            with lock:
                done.extend(changed)

    threads = [threading.Thread(target=worker, args=(i, plan)) for i, plan in enumerate(plans)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout_s)
    assert not errors, errors
    return done


def snapshot(root: Path) -> dict[str, tuple[str, bytes | str]]:
    """Every entry below ``root`` (links not followed): kind and content, to compare before and after."""
    out: dict[str, tuple[str, bytes | str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                out[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                out[rel] = ("dir", "")
            else:
                out[rel] = ("file", path.read_bytes())
    return out


def reseal(registry: shipml.Registry, name: str, version: str) -> None:
    """Rewrite the ledger's record of ``name:version`` to the manifest's current sha256: what an operator does,
    deliberately, to accept an edited manifest (the only way an edit gets in)."""
    ledger = registry.root / "models" / name / "versions.jsonl"
    digest = hashlib.sha256((registry.root / "models" / name / "versions" / version / "shipml.json")
                            .read_bytes()).hexdigest()
    lines = []
    for line in ledger.read_bytes().splitlines():
        record = orjson.loads(line)
        if record.get("event") == "saved" and record.get("version") == version:
            record["manifest_sha256"] = digest
        lines.append(orjson.dumps(record))
    ledger.write_bytes(b"\n".join(lines) + b"\n")
