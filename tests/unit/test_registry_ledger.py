"""The registry's ledger (models/<name>/versions.jsonl): each version's manifest sha256, recorded when the
version is committed and checked on every load through the registry; version numbers never reused; deletions
that race."""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shipml
from shipml.errors import IntegrityError, NotFoundError
from tests.unit.registry_support import (
    build_tiny_registry,
    copy_registry,
    one_line,
    reseal,
    tiny_model,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_registry(tmp_path_factory.mktemp("tiny") / "registry")


@pytest.fixture
def reg(tiny_source: Path, tmp_path: Path) -> shipml.Registry:
    return copy_registry(tiny_source, tmp_path / "registry")


def manifest_path(reg: shipml.Registry, version: str = "1.1.0") -> Path:
    return reg.root / "models" / "m" / "versions" / version / "shipml.json"


def edit_manifest(reg: shipml.Registry, change: Any, version: str = "1.1.0") -> None:
    path = manifest_path(reg, version)
    data = orjson.loads(path.read_bytes())
    change(data)
    path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))


EDITS = {
    "description": lambda d: d.update(description="the best model ever"),
    "metrics": lambda d: d.update(metrics={"accuracy": 0.999}),
    "trust": lambda d: d.update(trust={"required": False, "types": [], "granted_by": "someone",
                                       "granted_at": "2026-01-01T00:00:00Z"}),
    "tags": lambda d: d.update(tags={"approved": "yes"}),
}


@pytest.mark.parametrize("field", sorted(EDITS))
def test_an_edited_manifest_is_refused_with_one_line(reg: shipml.Registry, field: str) -> None:
    edit_manifest(reg, EDITS[field])
    for load in (lambda: reg.load("m:1.1.0"), lambda: shipml.load_model("m:1.1.0", registry=reg),
                 lambda: reg.load("m"), lambda: reg.get("m:1.1.0").manifest):
        with pytest.raises(IntegrityError) as exc:
            load()
        message = one_line(exc.value)
        assert "m:1.1.0" in message and "shipml.json" in message
    assert reg.load("m:1.0.0").version == "1.0.0"  # the other version is untouched


def test_the_ledger_line_is_the_only_way_in(reg: shipml.Registry) -> None:
    edit_manifest(reg, EDITS["description"])
    with pytest.raises(IntegrityError):
        reg.load("m:1.1.0")
    reseal(reg, "m", "1.1.0")
    assert reg.load("m:1.1.0").manifest.description == "the best model ever"


def test_every_commit_records_its_manifest_digest(reg: shipml.Registry, tmp_path: Path) -> None:
    model, X = tiny_model(1)
    saved = shipml.save_model(model, "m", sample=X, registry=reg)
    added = reg.add_package(reg.get("m:1.0.0").path, name="other")
    records = [orjson.loads(line) for line in (reg.root / "models/m/versions.jsonl").read_bytes().splitlines()]
    assert [(r["event"], r["version"]) for r in records] == [("saved", "1.0.0"), ("saved", "1.1.0"),
                                                            ("saved", "1.2.0")]
    for r, version in zip(records, ["1.0.0", "1.1.0", "1.2.0"], strict=True):
        digest = hashlib.sha256(manifest_path(reg, version).read_bytes()).hexdigest()
        assert r["manifest_sha256"] == digest and r["at"] and "by" in r
    assert saved.manifest_sha256 == records[-1]["manifest_sha256"]
    other = orjson.loads((reg.root / "models/other/versions.jsonl").read_bytes())
    assert other["manifest_sha256"] == added.manifest_sha256
    assert reg.load("other").version == "1.0.0"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_byte_edit_of_a_manifest_is_refused(tiny_source: Path, tmp_path_factory: pytest.TempPathFactory,
                                                data: st.DataObject) -> None:
    reg = copy_registry(tiny_source, tmp_path_factory.mktemp("edit") / "registry")
    path = manifest_path(reg)
    raw = bytearray(path.read_bytes())
    kind = data.draw(st.sampled_from(["flip", "insert", "delete", "append"]))
    at = data.draw(st.integers(0, len(raw) - 1))
    if kind == "flip":
        raw[at] ^= data.draw(st.integers(1, 255))
    elif kind == "insert":
        raw[at:at] = data.draw(st.binary(min_size=1, max_size=8))
    elif kind == "delete":
        del raw[at:at + data.draw(st.integers(1, 8))]
    else:
        raw += data.draw(st.binary(min_size=1, max_size=8))
    path.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError) as exc:
        reg.load("m:1.1.0")
    assert "m:1.1.0" in one_line(exc.value)


def test_a_version_without_a_ledger_record_is_refused(reg: shipml.Registry) -> None:
    """A version directory copied in by hand, not committed by the registry."""
    versions = reg.root / "models" / "m" / "versions"
    shutil.copytree(versions / "1.1.0", versions / "5.0.0")
    with pytest.raises(IntegrityError, match="no record") as exc:
        reg.load("m:5.0.0")
    assert "m:5.0.0" in one_line(exc.value)


def test_a_registry_made_before_the_ledger_is_recorded_once(reg: shipml.Registry,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    ledger = reg.root / "models" / "m" / "versions.jsonl"
    ledger.unlink()
    with caplog.at_level(logging.WARNING, logger="shipml.registry"):
        assert reg.load("m:1.1.0").version == "1.1.0"
    assert any("m" in r.getMessage() and "ledger" in r.getMessage() for r in caplog.records)
    assert [orjson.loads(line)["version"] for line in ledger.read_bytes().splitlines()] == ["1.0.0", "1.1.0"]
    caplog.clear()
    assert reg.load("m:1.0.0").version == "1.0.0"
    assert not caplog.records  # recorded once
    edit_manifest(reg, EDITS["metrics"])
    with pytest.raises(IntegrityError):
        reg.load("m:1.1.0")


# -- item 11: version numbers are never reused -----------------------------------------------------------

def test_a_deleted_version_number_is_never_reused(reg: shipml.Registry) -> None:
    model, X = tiny_model(2)
    reg.delete("m:1.1.0")
    assert shipml.save_model(model, "m", sample=X, registry=reg).ref == "m:1.2.0"
    with pytest.raises(shipml.ConflictError, match=r"1\.1\.0 was deleted; versions are never reused") as exc:
        shipml.save_model(model, "m", sample=X, registry=reg, version="1.1.0")
    one_line(exc.value)
    with pytest.raises(NotFoundError) as not_found:
        reg.get("m:1.1.0")
    one_line(not_found.value)
    reg.set_alias("m", "production", "1.2.0")
    reg.delete("m:1.0.0")
    assert [v.version for v in reg.versions("m")] == ["1.2.0"]
    assert shipml.save_model(model, "m", sample=X, registry=reg).ref == "m:1.3.0"


def test_deleting_the_latest_versions_does_not_rewind_the_numbering(reg: shipml.Registry) -> None:
    model, X = tiny_model(3)
    reg.set_alias("m", "production", "1.1.0")
    reg.delete("m:1.0.0")
    reg.delete_alias("m", "production")
    reg.delete("m:1.1.0")
    assert reg.versions("m") == []
    assert shipml.save_model(model, "m", sample=X, registry=reg).ref == "m:1.2.0"


def test_threads_deleting_one_version_one_wins_the_others_get_not_found(reg: shipml.Registry) -> None:
    for round_ in range(3):
        model, X = tiny_model(round_)
        version = shipml.save_model(model, "m", sample=X, registry=reg).version
        barrier = threading.Barrier(4)
        outcomes: list[str] = []

        def delete(barrier: threading.Barrier = barrier, version: str = version,
                   outcomes: list[str] = outcomes) -> None:
            barrier.wait()
            try:
                reg.delete(f"m:{version}")
                outcomes.append("deleted")
            except NotFoundError as exc:
                outcomes.append(one_line(exc))
            except BaseException as exc:  # a raw FileNotFoundError, say: recorded so the test shows it
                outcomes.append(f"{type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=delete) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert sorted(outcomes)[0] == "deleted" and outcomes.count("deleted") == 1, outcomes
        assert all(o == f"m:{version} does not exist (deleted meanwhile?)" for o in outcomes if o != "deleted"), \
            outcomes


DELETER = """
import sys, time
from pathlib import Path
import shipml
from shipml.errors import NotFoundError
root, ref, go = sys.argv[1], sys.argv[2], Path(sys.argv[3])
registry = shipml.Registry(root)
mv = registry.get(ref)  # resolved before the others delete it, as a slower process would
print("ready", flush=True)
while not go.exists():
    time.sleep(0.005)
try:
    registry.delete(ref)
    print("deleted")
except NotFoundError as exc:
    print("notfound:" + str(exc))
"""


@pytest.mark.slow
def test_processes_deleting_one_version_one_wins_the_others_get_not_found(reg: shipml.Registry,
                                                                          tmp_path: Path) -> None:
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", DELETER, str(reg.root), "m:1.1.0", str(go)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline() == "ready\n"
    go.touch()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(out.strip())
    assert results.count("deleted") == 1, results
    assert sorted(r for r in results if r != "deleted") == [
        "notfound:m:1.1.0 does not exist (deleted meanwhile?)"] * 2


READ_ONLY = """
import logging, sys
import shipml
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
registry = shipml.Registry(sys.argv[1])
mv = registry.get("m:1.1.0")
print("digest", mv.manifest_sha256)
print("loaded", registry.load("m:1.1.0").version)
"""


@pytest.mark.slow
def test_a_read_only_registry_made_before_the_ledger_loads_unsealed_and_says_so(reg: shipml.Registry,
                                                                                tmp_path: Path) -> None:
    """An image or a mounted bucket holding a registry made before ledgers: nothing can be recorded, so its
    versions load unsealed (their manifests then authenticate nothing) and the log says so."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"], check=False).returncode:
        pytest.skip("needs unshare -rm (a private mount namespace) for a read-only mount")
    (reg.root / "models" / "m" / "versions.jsonl").unlink()
    mount = tmp_path / "ro"
    mount.mkdir()
    script = (f"mount --bind {reg.root} {mount} && mount -o remount,ro,bind {mount} && "
              f"exec {sys.executable} -c '{READ_ONLY}' {mount}")
    out = subprocess.run(["unshare", "-rm", "sh", "-c", script], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["digest None", "loaded 1.1.0"]
    assert "models/m has no ledger of manifest digests and none can be written (Read-only file system)" \
        in out.stderr
    assert not (reg.root / "models" / "m" / "versions.jsonl").exists()
