from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

import shipml
from shipml.registry.names import Ref, Version
from shipml.registry.objects import ObjectRegistry
from tests.unit.registry_backends import BACKENDS, new_registry

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=BACKENDS)
def any_registry(request: pytest.FixtureRequest, tmp_path: Path) -> shipml.Registry:
    """An empty registry: a local directory, or a fresh bucket on the test's S3 server."""
    return new_registry(request.param, request, tmp_path / "registry")


def stores_nothing(registry: shipml.Registry) -> bool:
    if isinstance(registry, ObjectRegistry):
        return registry.store.keys("") == []
    return not (registry.root / "models").exists() or not any((registry.root / "models").iterdir())


@pytest.fixture
def tiny() -> tuple[LogisticRegression, pd.DataFrame]:
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(60, 3)), columns=["a", "b", "c"])
    y = (X["a"] > 0).astype(int)
    return LogisticRegression().fit(X, y), X


@pytest.mark.parametrize("bad", ["../x", "/etc/passwd", "a/b", "%2e%2e", "..", ".hidden", "a\x00b", "", "a b",
                                 "x" * 129, "a..b"])
def test_path_tricks_in_names_are_refused(bad: str, any_registry: shipml.Registry, tiny: tuple) -> None:
    model, X = tiny
    with pytest.raises(shipml.InvalidNameError):
        shipml.save_model(model, bad, sample=X, registry=any_registry)
    assert stores_nothing(any_registry)


@pytest.mark.parametrize("bad", ["1.0", "01.0.0", "1.0.0-rc1", "../1.0.0", "v1.0.0", "1.0.0/..", "%2e"])
def test_bad_versions_are_refused(bad: str, any_registry: shipml.Registry, tiny: tuple) -> None:
    model, X = tiny
    with pytest.raises(shipml.InvalidNameError):
        shipml.save_model(model, "m", sample=X, version=bad, registry=any_registry)
    assert stores_nothing(any_registry)


@pytest.mark.parametrize("bad", ["m@../x", "m@", "m:1.0", "m@pro duction", "m@1abc"])
def test_bad_refs_are_refused(bad: str) -> None:
    with pytest.raises(shipml.InvalidNameError):
        Ref.parse(bad)


def test_ref_forms() -> None:
    assert Ref.parse("churn") == Ref(name="churn")
    assert Ref.parse("churn:1.2.0") == Ref(name="churn", version="1.2.0")
    assert Ref.parse("churn@production") == Ref(name="churn", alias="production")
    assert Ref.parse("./pkg").path == Path("./pkg")
    assert Version.parse("1.10.0") > Version.parse("1.9.3")


def test_versions_are_semver_minor_bumps_and_immutable(any_registry: shipml.Registry, tiny: tuple) -> None:
    model, X = tiny
    refs = [shipml.save_model(model, "m", sample=X, registry=any_registry).ref for _ in range(2)]
    assert refs == ["m:1.0.0", "m:1.1.0"]
    assert shipml.save_model(model, "m", sample=X, version="2.0.0", registry=any_registry).ref == "m:2.0.0"
    assert shipml.save_model(model, "m", sample=X, registry=any_registry).ref == "m:2.1.0"
    with pytest.raises(shipml.AlreadyExistsError):
        shipml.save_model(model, "m", sample=X, version="1.1.0", registry=any_registry)
    assert [v.version for v in any_registry.versions("m")] == ["1.0.0", "1.1.0", "2.0.0", "2.1.0"]
    assert any_registry.get("m").version == "2.1.0"
    assert [s.name for s in any_registry.models()] == ["m"]


def test_aliases_move_with_history(any_registry: shipml.Registry, tiny: tuple) -> None:
    model, X = tiny
    for _ in range(2):
        shipml.save_model(model, "m", sample=X, registry=any_registry)
    any_registry.set_alias("m", "production", "1.0.0", reason="first release")
    any_registry.set_alias("m", "production", "1.1.0", reason="better auc")
    any_registry.set_alias("m", "staging", "1.0.0")
    assert any_registry.aliases("m") == {"production": "1.1.0", "staging": "1.0.0"}
    assert shipml.load_model("m@production", registry=any_registry).version == "1.1.0"
    any_registry.delete_alias("m", "staging", reason="cleanup")
    moves = any_registry.alias_history("m")
    assert [(h.alias, h.from_version, h.to_version, h.reason) for h in moves] == [
        ("production", None, "1.0.0", "first release"),
        ("production", "1.0.0", "1.1.0", "better auc"),
        ("staging", None, "1.0.0", None),
        ("staging", "1.0.0", None, "cleanup"),
    ]
    assert all(h.at and h.by for h in moves)
    with pytest.raises(shipml.NotFoundError):
        any_registry.set_alias("m", "production", "9.0.0")
    with pytest.raises(shipml.NotFoundError):
        shipml.load_model("m@staging", registry=any_registry)


def test_delete_refused_while_an_alias_holds_the_version(any_registry: shipml.Registry, tiny: tuple) -> None:
    model, X = tiny
    for _ in range(2):
        shipml.save_model(model, "m", sample=X, registry=any_registry)
    any_registry.set_alias("m", "production", "1.0.0")
    with pytest.raises(shipml.ConflictError, match="production"):
        any_registry.delete("m:1.0.0")
    with pytest.raises(shipml.InvalidNameError):
        any_registry.delete("m")
    any_registry.set_alias("m", "production", "1.1.0")
    any_registry.delete("m:1.0.0")
    assert [v.version for v in any_registry.versions("m")] == ["1.1.0"]
    assert shipml.load_model("m@production", registry=any_registry).version == "1.1.0"


def test_torn_history_line_does_not_lose_earlier_moves(registry: shipml.Registry, tiny: tuple) -> None:
    model, X = tiny
    shipml.save_model(model, "m", sample=X, registry=registry)
    registry.set_alias("m", "production", "1.0.0")
    with (registry.root / "models" / "m" / "history.jsonl").open("ab") as f:
        f.write(b'{"name": "m", "alias": "prod')  # a crash mid-append
    assert len(registry.alias_history("m")) == 1


SAVER = textwrap.dedent("""
    import os, signal, sys
    import numpy as np, pandas as pd
    from sklearn.linear_model import LogisticRegression
    import shipml
    from shipml.registry.files import RegistryFiles

    registry, mode, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    go = sys.argv[4] if len(sys.argv) > 4 else None
    rng = np.random.default_rng(os.getpid())
    X = pd.DataFrame(rng.normal(size=(60, 3)), columns=["a", "b", "c"])
    model = LogisticRegression().fit(X, (X["a"] > 0).astype(int))
    if mode in ("before-rename", "mid-manifest", "mid-upload", "before-commit"):
        def die(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGKILL)
        if mode == "before-rename":
            RegistryFiles.move_into_place = die
        elif mode in ("mid-upload", "before-commit"):  # an s3:// registry: killed between its writes
            from shipml.registry.s3 import S3Store
            upload, create = S3Store.upload, S3Store.create
            def upload_one(self, key, path):
                upload(self, key, path)
                if mode == "mid-upload":
                    die()
            def create_claim(self, key, data):
                if "/versions/" in key:  # the commit, written last
                    die()
                return create(self, key, data)
            S3Store.upload, S3Store.create = upload_one, create_claim
        else:
            import shipml.registry.registry as reg
            def half(directory, manifest):
                (directory / "shipml.json").write_bytes(manifest.to_json()[:50])
                die()
            reg.write_manifest = half
    if go is not None:  # start together with the other savers
        import pathlib, time
        deadline = time.monotonic() + 120
        while not pathlib.Path(go).exists() and time.monotonic() < deadline:
            time.sleep(0.002)
    for _ in range(count):
        shipml.save_model(model, "m", sample=X, registry=registry)
        print("saved", flush=True)
""")


def _run_saver(registry: Path | str, mode: str, count: int, go: Path | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", SAVER, str(registry), mode, str(count),
                             *([str(go)] if go is not None else [])], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _assert_consistent(registry: shipml.Registry) -> list[str]:
    try:
        versions = [v.version for v in registry.versions("m")]
    except shipml.NotFoundError:
        versions = []
    for v in versions:
        assert shipml.load_model(f"m:{v}", registry=registry).version == v  # integrity + golden check
    if not isinstance(registry, ObjectRegistry):
        for child in (registry.root / "models" / "m" / "versions").iterdir() if versions else []:
            assert (child / "shipml.json").is_file(), f"half version left: {child}"
    return versions


@pytest.mark.parametrize("mode", ["before-rename", "mid-manifest"])
def test_kill_9_during_save_leaves_no_half_version(mode: str, registry: shipml.Registry, tiny: tuple) -> None:
    model, X = tiny
    shipml.save_model(model, "m", sample=X, registry=registry)
    with _run_saver(registry.root, mode, 1) as proc:
        proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert _assert_consistent(registry) == ["1.0.0"]
    # The registry is still writable. A save killed after its number went into the ledger (just before the
    # rename) leaves that number used: numbers are never reused, even one that never appeared.
    expected = "m:1.2.0" if mode == "before-rename" else "m:1.1.0"
    assert shipml.save_model(model, "m", sample=X, registry=registry).ref == expected


@pytest.mark.parametrize("mode", ["mid-upload", "before-commit"])
def test_an_s3_save_killed_before_its_commit_leaves_no_visible_version(mode: str, tiny: tuple,
                                                                       request: pytest.FixtureRequest,
                                                                       tmp_path: Path) -> None:
    registry = new_registry("s3", request, tmp_path / "registry")
    model, X = tiny
    shipml.save_model(model, "m", sample=X, registry=registry)
    with _run_saver(registry.location, mode, 1) as proc:
        proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert _assert_consistent(registry) == ["1.0.0"]
    assert [m.name for m in registry.models()] == ["m"] and registry.get("m").version == "1.0.0"
    # its number was claimed, so it stays used; the registry takes the next one
    assert shipml.save_model(model, "m", sample=X, registry=registry).ref == "m:1.2.0"
    assert [v.version for v in registry.versions("m")] == ["1.0.0", "1.2.0"]


@pytest.mark.slow
def test_kill_9_at_random_moments_keeps_registry_consistent(registry: shipml.Registry) -> None:
    rng = np.random.default_rng(1)
    for _ in range(4):
        with _run_saver(registry.root, "loop", 50) as proc:
            deadline = time.monotonic() + 60
            assert proc.stdout is not None
            while proc.stdout.readline() != "saved\n":  # wait until it is busy saving
                assert time.monotonic() < deadline and proc.poll() is None, "saver died early"
            time.sleep(float(rng.uniform(0.0, 0.3)))
            os.kill(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=30)
        _assert_consistent(registry)
    versions = _assert_consistent(registry)
    assert len(versions) == len(set(versions)) >= 4


def test_concurrent_saves_get_distinct_versions(any_registry: shipml.Registry, tmp_path: Path) -> None:
    registry = any_registry
    go = tmp_path / "go"
    procs = [_run_saver(registry.location, "loop", 3, go) for _ in range(3)]
    time.sleep(2.0)  # let every process import shipml and train its model
    go.touch()
    for p in procs:
        with p:
            out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
        assert out.count("saved") == 3
    versions = _assert_consistent(registry)
    assert len(versions) == 9
    assert sorted(versions, key=Version.parse) == [f"1.{i}.0" for i in range(9)]
