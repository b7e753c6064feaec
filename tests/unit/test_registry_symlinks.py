"""The registry never follows a symbolic link for its own files (item 10 of issue 12): a link anywhere below the
root where the registry keeps something is refused with one line naming the entry, and nothing outside changes.
The root itself may be a link (``~/.shipml -> /data``)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shipml
from shipml.errors import ShipmlError
from tests.unit.registry_support import build_tiny_registry, copy_registry, one_line, snapshot, tiny_model

OLD = time.time() - 3 * 24 * 3600  # older than the staging sweep's cut-off


@pytest.fixture(scope="module")
def tiny_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_registry(tmp_path_factory.mktemp("tiny") / "registry")


def make_outside(base: Path) -> tuple[Path, Path]:
    """An outside directory (with an old subdirectory, as a staging leftover would be) and an outside file."""
    tree = base / "outside"
    (tree / "old" / "deep").mkdir(parents=True)
    (tree / "canary.txt").write_text("do not touch")
    (tree / "old" / "deep" / "data.bin").write_bytes(b"\x00keep\xff")
    for path in (tree / "old" / "deep", tree / "old", tree / "canary.txt"):
        os.utime(path, (OLD, OLD))
    file = base / "outside.json"
    file.write_bytes(b'{"production": "1.1.0"}\n')
    return tree, file


def place_link(root: Path, rel: str, target: Path) -> None:
    path = root / rel
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)


#: where a link may be planted, and whether it stands for a directory or a file
PLACES = {
    "models": "dir", "models/m": "dir", "models/m/versions": "dir", "models/m/versions/1.1.0": "dir",
    "models/m/versions/1.2.0": "dir", "models/new": "dir", ".staging": "dir", ".staging/leftover": "dir",
    "models/m/aliases.json": "file", "models/m/history.jsonl": "file", "models/m/evaluations.jsonl": "file",
    "models/m/versions.jsonl": "file", "models/m/.lock": "file", "models/new/.lock": "file",
    "models/m/release.json": "file", "models/m/releases.jsonl": "file",
}


def operations(reg: shipml.Registry) -> dict[str, Callable[[], object]]:
    model, X = tiny_model()
    return {
        "save": lambda: shipml.save_model(model, "m", sample=X, registry=reg),
        "save-new": lambda: shipml.save_model(model, "new", sample=X, registry=reg),
        "add-package": lambda: reg.add_package(reg.get("m:1.0.0").path, name="new"),
        "alias": lambda: reg.set_alias("m", "production", "1.1.0", reason="r"),
        "unalias": lambda: reg.delete_alias("m", "production"),
        "delete": lambda: reg.delete("m:1.1.0"),
        "history": lambda: reg.alias_history("m"),
        "load": lambda: reg.load("m:1.0.0"),
        "load-alias": lambda: reg.load("m@production"),
        "record-evaluation": lambda: reg.record_evaluation(reg.get("m:1.0.0"), {"metrics": {"accuracy": 1.0}}),
        "evaluations": lambda: reg.evaluations(reg.get("m:1.0.0")),
        "versions": lambda: [mv.manifest for mv in reg.versions("m")],
        "models": reg.models,
        "aliases": lambda: reg.aliases("m"),
        "canary-start": lambda: reg.start_canary("m", "1.1.0", weight=10),
        "canary-abort": lambda: reg.end_canary("m", outcome="aborted"),
        "canary-promote": lambda: reg.end_canary("m", outcome="promoted"),
        "release-state": lambda: reg.release_state("m"),
        "release-history": lambda: reg.release_history("m"),
        "rollback": lambda: reg.rollback("m"),
    }


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(places=st.lists(st.sampled_from(sorted(PLACES)), min_size=1, max_size=3, unique=True),
       to_file=st.booleans(),
       ops=st.lists(st.sampled_from(sorted(operations(shipml.Registry("/nonexistent")))), min_size=1,
                    max_size=4))
def test_links_anywhere_in_the_registry_are_refused_and_nothing_outside_changes(
        tiny_source: Path, tmp_path_factory: pytest.TempPathFactory, places: list[str], to_file: bool,
        ops: list[str]) -> None:
    base = tmp_path_factory.mktemp("links")
    reg = copy_registry(tiny_source, base / "registry")
    tree, file = make_outside(base)
    placed = []
    for rel in sorted(places, key=len):  # a parent first: a link below a linked directory would land outside
        if any(rel.startswith(p + "/") for p in placed):
            continue
        place_link(reg.root, rel, file if PLACES[rel] == "file" or to_file else tree)
        placed.append(rel)
    before = snapshot(base / "outside"), file.read_bytes()
    todo = operations(reg)
    for op in ops:
        try:
            todo[op]()
        except ShipmlError as exc:
            one_line(exc)
    assert (snapshot(base / "outside"), file.read_bytes()) == before, (placed, ops)


def test_a_linked_staging_directory_is_refused_and_the_outside_kept(tiny_source: Path, tmp_path: Path) -> None:
    reg = copy_registry(tiny_source, tmp_path / "registry")
    tree, _ = make_outside(tmp_path)
    place_link(reg.root, ".staging", tree)
    before = snapshot(tree)
    model, X = tiny_model()
    with pytest.raises(ShipmlError) as exc:
        shipml.save_model(model, "m", sample=X, registry=reg)
    assert one_line(exc.value) == "registry entry .staging is a symbolic link; refusing to follow it"
    assert snapshot(tree) == before


def test_a_linked_history_is_never_appended_to(tiny_source: Path, tmp_path: Path) -> None:
    reg = copy_registry(tiny_source, tmp_path / "registry")
    _, file = make_outside(tmp_path)
    place_link(reg.root, "models/m/history.jsonl", file)
    with pytest.raises(ShipmlError) as exc:
        reg.set_alias("m", "production", "1.1.0")
    assert one_line(exc.value) == ("registry entry models/m/history.jsonl is a symbolic link; refusing to"
                                   " follow it")
    assert file.read_bytes() == b'{"production": "1.1.0"}\n'
    assert reg.aliases("m") == {"production": "1.0.0"}


@pytest.mark.parametrize("rel", ["models/m/release.json", "models/m/releases.jsonl"])
def test_linked_release_files_are_never_written(tiny_source: Path, tmp_path: Path, rel: str) -> None:
    reg = copy_registry(tiny_source, tmp_path / "registry")
    _, file = make_outside(tmp_path)
    place_link(reg.root, rel, file)
    with pytest.raises(ShipmlError) as exc:
        reg.start_canary("m", "1.1.0", weight=10)
    assert one_line(exc.value) == f"registry entry {rel} is a symbolic link; refusing to follow it"
    assert file.read_bytes() == b'{"production": "1.1.0"}\n'


def test_a_linked_model_directory_receives_no_version(tiny_source: Path, tmp_path: Path) -> None:
    reg = copy_registry(tiny_source, tmp_path / "registry")
    tree, _ = make_outside(tmp_path)
    place_link(reg.root, "models/new", tree)
    before = snapshot(tree)
    model, X = tiny_model()
    with pytest.raises(ShipmlError) as exc:
        shipml.save_model(model, "new", sample=X, registry=reg)
    assert one_line(exc.value) == "registry entry models/new is a symbolic link; refusing to follow it"
    assert snapshot(tree) == before


def test_the_root_itself_may_be_a_link(tiny_source: Path, tmp_path: Path) -> None:
    copy_registry(tiny_source, tmp_path / "data")
    (tmp_path / "home").symlink_to(tmp_path / "data")
    reg = shipml.Registry(tmp_path / "home")
    model, X = tiny_model()
    assert shipml.save_model(model, "m", sample=X, registry=reg).ref == "m:1.2.0"
    reg.set_alias("m", "production", "1.2.0")
    reg.delete("m:1.1.0")
    assert reg.load("m@production").version == "1.2.0"
    assert [mv.version for mv in shipml.Registry(tmp_path / "data").versions("m")] == ["1.0.0", "1.2.0"]
