"""``shipml gc`` / ``Registry.gc``: what interrupted writes left behind goes, nothing a reader can see does."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

import shipml
from shipml.cli import cli
from shipml.registry import ledger
from shipml.registry.objects import ObjectRegistry
from tests.unit.registry_backends import new_registry
from tests.unit.registry_support import tiny_model
from tests.unit.test_registry import _run_saver


def gc_cli(registry: shipml.Registry, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["--registry", registry.location, "gc", *args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def s3_reg(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectRegistry:
    reg = new_registry("s3", request, tmp_path / "registry")
    assert isinstance(reg, ObjectRegistry)
    model, X = tiny_model()
    for _ in range(2):
        shipml.save_model(model, "m", sample=X, registry=reg)
    reg.set_alias("m", "production", "1.1.0")
    return reg


def test_gc_removes_the_files_of_a_save_killed_mid_upload_once_old_enough(s3_reg: ObjectRegistry) -> None:
    with _run_saver(s3_reg.location, "mid-upload", 1) as proc:
        proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    left = s3_reg.store.keys("models/m/packages/1.2.0/")
    assert left  # the killed save's first file
    assert s3_reg.gc() == []  # younger than a day: it could be a save still uploading
    assert s3_reg.store.keys("models/m/packages/1.2.0/") == left
    code, out, err = gc_cli(s3_reg, "--older-than", "0", "--json")
    assert code == 0, err
    assert orjson.loads(out)["removed"] == [f"m:1.2.0 (a save that never committed; {len(left)} file(s))"]
    assert s3_reg.store.keys("models/m/packages/1.2.0/") == []
    assert [v.version for v in s3_reg.versions("m")] == ["1.0.0", "1.1.0"]
    assert shipml.load_model("m@production", registry=s3_reg).version == "1.1.0"
    model, X = tiny_model()
    assert shipml.save_model(model, "m", sample=X, registry=s3_reg).version == "1.3.0"  # 1.2.0 stays used
    assert s3_reg.gc(older_than_s=0) == []


def test_gc_finishes_a_deletion_whose_files_a_crash_left(s3_reg: ObjectRegistry) -> None:
    keys = [*s3_reg.store.keys("models/m/packages/1.0.0/"), *s3_reg.store.keys("models/m/versions/")]
    kept = {k: s3_reg.store.get(k) for k in keys if "/versions/1.0.0_" in k or "/packages/" in k}
    s3_reg.delete("m:1.0.0")
    for key, blob in kept.items():  # what a process killed after recording the deletion leaves
        assert blob is not None
        s3_reg.store.put(key, blob.data)
    assert [v.version for v in s3_reg.versions("m")] == ["1.1.0"]
    assert s3_reg.gc(older_than_s=3600) == [f"m:1.0.0 (deleted; {len(kept) - 1} file(s))"]
    assert s3_reg.store.keys("models/m/packages/1.0.0/") == []
    assert not any("/versions/1.0.0_" in k for k in s3_reg.store.keys("models/m/versions/"))
    assert [v.version for v in s3_reg.versions("m")] == ["1.1.0"]


def test_gc_of_a_local_registry_sweeps_old_staging_and_finishes_deletions(tmp_path: Path) -> None:
    reg = shipml.Registry(tmp_path / "registry")
    model, X = tiny_model()
    for _ in range(2):
        shipml.save_model(model, "m", sample=X, registry=reg)
    staging = reg.root / ".staging"
    old, young = staging / "old.1", staging / "young.2"
    for d in (old, young):
        d.mkdir()
        (d / "model.skops").write_bytes(b"half")
    past = time.time() - 7200
    os.utime(old, (past, past))
    with (reg.root / "models" / "m" / "versions.jsonl").open("ab") as f:  # a deletion killed before its rename
        f.write(ledger.deleted("1.0.0").to_line() + b"\n")
    assert (reg.root / "models" / "m" / "versions" / "1.0.0").is_dir()
    code, out, err = gc_cli(reg, "--older-than", "1")
    assert code == 0, err
    assert out.splitlines() == ["removed .staging/old.1 (left by an interrupted write)",
                                "removed m:1.0.0 (a deletion a crash interrupted)",
                                f"2 item(s) removed from {reg.location}"]
    assert young.is_dir() and not old.exists()
    assert not (reg.root / "models" / "m" / "versions" / "1.0.0").exists()
    assert [v.version for v in reg.versions("m")] == ["1.1.0"]


@pytest.mark.parametrize("hours", ["-1", "nan"])
def test_gc_refuses_a_bad_age(hours: str, tmp_path: Path) -> None:
    code, out, err = gc_cli(shipml.Registry(tmp_path / "r"), "--older-than", hours)
    assert code == 1 and out == "" and err.startswith("error: --older-than must be a number of hours >= 0")
