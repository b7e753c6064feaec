"""The local cache of an S3 registry's versions (registry/cache.py), against a real moto server: verified on the
way in, never downloaded twice, shared by processes, bounded, never half-used; and the names a client gives
checked before they reach the store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shipml
from shipml.errors import IntegrityError, InvalidNameError, NotFoundError, ShipmlError
from shipml.registry.cache import VersionCache
from shipml.registry.objects import ObjectRegistry
from tests.json_strategies import json_values
from tests.s3_support import S3Server
from tests.unit.registry_backends import Sources, snapshot_of
from tests.unit.registry_support import build_tiny_registry, one_line

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_source(tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server) -> Sources:
    return Sources(tmp_path_factory, s3_server, build_tiny_registry)


@pytest.fixture
def reg(tiny_source: Sources, tmp_path: Path, s3: S3Server) -> ObjectRegistry:
    found = tiny_source.clone("s3", tmp_path / "registry")
    assert isinstance(found, ObjectRegistry)
    return found


def same_store_new_cache(reg: ObjectRegistry, cache: Path, max_bytes: int | None = None,
                         in_use_s: float = 0.0) -> ObjectRegistry:
    return ObjectRegistry(store=reg.store, cache=VersionCache(cache, max_bytes, in_use_s))


def package_keys(reg: ObjectRegistry, version: str) -> list[str]:
    return reg.store.keys(f"models/m/packages/{version}/")


def test_a_cached_version_loads_without_downloading_again(reg: ObjectRegistry) -> None:
    assert reg.load("m:1.0.0").version == "1.0.0"
    for key in package_keys(reg, "1.0.0"):  # what a second download would need is gone from the store
        reg.store.delete(key)
    assert reg.load("m@production").version == "1.0.0"  # from the cache, verified again while loading
    assert shipml.load_model("m:1.0.0", registry=reg).version == "1.0.0"
    with pytest.raises(IntegrityError, match="missing from the store") as exc:
        same_store_new_cache(reg, reg._cache.root.parent / "other-cache").load("m:1.0.0")
    one_line(exc.value)


def test_a_changed_object_in_the_store_is_refused_and_nothing_is_cached(reg: ObjectRegistry) -> None:
    key = next(k for k in package_keys(reg, "1.1.0") if k.endswith(".skops"))
    blob = reg.store.get(key)
    assert blob is not None
    reg.store.put(key, blob.data[:-1] + bytes([blob.data[-1] ^ 1]))
    with pytest.raises(IntegrityError) as exc:
        reg.load("m:1.1.0")
    assert "m:1.1.0: its file model/model.skops does not match the sha256 recorded" in one_line(exc.value)
    assert not (reg._cache.root / "versions").exists() or not any((reg._cache.root / "versions").iterdir())
    assert not any((reg._cache.root / "tmp").iterdir())  # no half entry left behind either
    reg.store.put(key, blob.data)
    assert reg.load("m:1.1.0").version == "1.1.0"


def test_a_cache_entry_edited_on_disk_is_refused_at_load(reg: ObjectRegistry) -> None:
    mv = reg.get("m:1.0.0")
    directory = reg.directory(mv)
    artefact = directory / "model" / "model.skops"
    artefact.write_bytes(artefact.read_bytes() + b"x")
    with pytest.raises(IntegrityError) as exc:
        reg.load("m:1.0.0")
    one_line(exc.value)


def test_the_cache_is_bounded_least_recently_used_first(reg: ObjectRegistry, tmp_path: Path) -> None:
    first = reg.directory(reg.get("m:1.0.0"))
    size = sum(f.stat().st_size for f in first.rglob("*") if f.is_file())
    small = same_store_new_cache(reg, tmp_path / "small", max_bytes=int(size * 1.5))
    one = small.directory(small.get("m:1.0.0"))
    two = small.directory(small.get("m:1.1.0"))
    assert two.is_dir() and not one.exists()  # one entry fits: the older went
    assert small.load("m:1.1.0").version == "1.1.0"
    assert small.load("m:1.0.0").version == "1.0.0" and not two.exists()


def test_an_entry_in_use_is_never_evicted_by_another_process(reg: ObjectRegistry, tmp_path: Path) -> None:
    """A process that looked an entry up may be loading it: another's eviction leaves it until it has not been
    used for a while, whatever the bound."""
    first = reg.directory(reg.get("m:1.0.0"))
    size = sum(f.stat().st_size for f in first.rglob("*") if f.is_file())
    small = same_store_new_cache(reg, tmp_path / "small", max_bytes=int(size * 1.5), in_use_s=600)
    one = small.directory(small.get("m:1.0.0"))
    two = small.directory(small.get("m:1.1.0"))
    assert one.is_dir() and two.is_dir()  # over the bound: both used within the last 10 minutes
    long_ago = time.time() - 601
    os.utime(one, (long_ago, long_ago))
    assert small._cache.evict() == [one.name] and not one.exists() and two.is_dir()
    assert small._cache.evict() == []  # two alone fits


FETCHER = textwrap.dedent("""
    import os, signal, sys, pathlib, time
    import shipml
    from shipml.registry.s3 import S3Store
    location, mode, go = sys.argv[1:4]
    if mode == "die-mid-download":
        download = S3Store.download
        def once(self, key, path):
            found = download(self, key, path)
            os.kill(os.getpid(), signal.SIGKILL)
        S3Store.download = once
    deadline = time.monotonic() + 60
    while not pathlib.Path(go).exists() and time.monotonic() < deadline:
        time.sleep(0.002)
    print(shipml.load_model("m:1.0.0", registry=location).version, flush=True)
""")


def fetch(reg: ObjectRegistry, mode: str, go: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", FETCHER, reg.location, mode, str(go)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "SHIPML_CACHE": str(reg._cache.root)})


@pytest.mark.slow
def test_processes_share_one_cache_entry(reg: ObjectRegistry, tmp_path: Path) -> None:
    go = tmp_path / "go"
    procs = [fetch(reg, "load", go) for _ in range(3)]
    go.touch()
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert out.strip() == "1.0.0"
    assert [p.name for p in (reg._cache.root / "versions").iterdir()] == [reg.get("m:1.0.0").manifest_sha256]
    assert not any((reg._cache.root / "tmp").iterdir())


def test_a_download_killed_midway_leaves_no_entry_a_reader_uses(reg: ObjectRegistry, tmp_path: Path) -> None:
    go = tmp_path / "go"
    go.touch()
    with fetch(reg, "die-mid-download", go) as proc:
        proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert not (reg._cache.root / "versions").exists() or not any((reg._cache.root / "versions").iterdir())
    assert any((reg._cache.root / "tmp").iterdir())  # the half download, where no reader looks
    assert reg.load("m:1.0.0").version == "1.0.0"


# -- names a client gives -------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["local", pytest.param("s3", marks=pytest.mark.slow)])
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(alias=st.one_of(st.text(max_size=70), st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,63}", fullmatch=True)),
       name=st.one_of(st.text(max_size=40), st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,40}", fullmatch=True)))
def test_any_alias_or_model_name_is_stored_exactly_or_refused_storing_nothing(
        backend: str, tiny_source: Sources, tmp_path_factory: pytest.TempPathFactory, alias: str,
        name: str) -> None:
    registry = tiny_source.clone(backend, tmp_path_factory.mktemp("names") / "registry")
    before = snapshot_of(registry)
    try:
        move = registry.set_alias("m", alias, "1.1.0", reason=alias)
    except InvalidNameError as exc:
        one_line(exc)
        assert snapshot_of(registry) == before
    else:
        assert move.alias == alias and registry.aliases("m")[alias] == "1.1.0"
        assert shipml.load_model(f"m@{alias}", registry=registry).version == "1.1.0"
        assert registry.alias_history("m")[-1].reason == alias
    before = snapshot_of(registry)
    for call in (lambda: registry.versions(name), lambda: registry.get(name),
                 lambda: registry.set_alias(name, "production", "1.0.0"), lambda: registry.aliases(name)):
        try:
            found = call()
        except (InvalidNameError, NotFoundError) as exc:
            one_line(exc)
        else:
            assert name == "m" or found == {}  # the aliases of a model that does not exist: none
    if name != "m":
        assert snapshot_of(registry) == before


class CountingStore:
    """The registry's store, with every request it is asked for recorded (method, key)."""

    def __init__(self, store: object) -> None:
        self.inner = store
        self.calls: list[tuple[str, str]] = []

    def describe(self) -> str:
        return self.inner.describe()  # type: ignore[attr-defined,no-any-return]

    def __getattr__(self, method: str) -> object:
        found = getattr(self.inner, method)

        def call(key: str, *args: object) -> object:
            self.calls.append((method, key))
            return found(key, *args)

        return call


def test_a_cached_version_loads_after_one_small_read(reg: ObjectRegistry) -> None:
    reg.load("m@production")
    reg.load("m:1.1.0")
    counting = CountingStore(reg.store)
    again = ObjectRegistry(store=counting, cache=reg._cache)  # type: ignore[arg-type]
    for ref, version in [("m@production", "1.0.0"), ("m:1.1.0", "1.1.0")]:
        counting.calls.clear()
        assert again.load(ref).version == version
        assert counting.calls == [("get", "models/m/state.json")], ref
    counting.calls.clear()  # the newest version: the commits are listed too
    assert again.load("m").version == "1.1.0"
    assert counting.calls == [("get", "models/m/state.json"), ("keys", "models/m/versions/")]


def test_a_seal_never_outlives_a_deletion_or_points_elsewhere(reg: ObjectRegistry) -> None:
    reg.load("m:1.0.0")
    reg.set_alias("m", "production", "1.1.0")
    reg.delete("m:1.0.0")
    with pytest.raises(NotFoundError, match="was deleted"):
        reg.load("m:1.0.0")  # cached, sealed, and still refused
    found = reg.store.get("models/m/state.json")
    assert found is not None
    doc = orjson.loads(found.data)
    doc["seals"]["1.1.0"] = doc["seals"]["1.0.0"]  # an edited state: 1.1.0 pointed at 1.0.0's package
    reg.store.put("models/m/state.json", orjson.dumps(doc))
    with pytest.raises(IntegrityError) as exc:  # 1.0.0's package is in this cache
        reg.load("m@production")
    assert "m:1.1.0: the registry's records point to a package of m:1.0.0" in one_line(exc.value)
    with pytest.raises(IntegrityError) as exc:  # and not in this one: the commit named does not exist
        same_store_new_cache(reg, reg._cache.root.parent / "other-cache").load("m@production")
    assert "m:1.1.0: its commit s3://" in one_line(exc.value) and "is missing" in one_line(exc.value)


def test_a_snapshot_reads_each_state_once_and_a_change_afresh(reg: ObjectRegistry) -> None:
    reg.load("m@production")
    counting = CountingStore(reg.store)
    again = ObjectRegistry(store=counting, cache=reg._cache)  # type: ignore[arg-type]
    with again.snapshot():  # what a server's refresh reads: aliases, the version, the release state
        assert again.aliases("m")["production"] == "1.0.0"
        assert again.get("m@production").version == "1.0.0"
        assert again.release_state("m").canaries == {}
        assert counting.calls == [("get", "models/m/state.json")]
        again.set_alias("m", "production", "1.1.0")
        assert again.aliases("m")["production"] == "1.1.0"
    assert again.aliases("m")["production"] == "1.1.0"
    counting.calls.clear()
    again.aliases("m")
    again.aliases("m")
    assert counting.calls == [("get", "models/m/state.json")] * 2  # outside a snapshot: every read is fresh


SEALED = st.dictionaries(st.sampled_from(["1.0.0", "1.1.0", "2.0.0"]),
                         st.one_of(st.sampled_from(["<1.0.0>", "<1.1.0>"]), json_values), max_size=3)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.one_of(json_values, SEALED), field=st.sampled_from(["seals", "aliases", "deleted", "release"]))
def test_any_value_in_the_state_loads_the_right_version_or_refuses(reg: ObjectRegistry, value: object,
                                                                   field: str) -> None:
    """The state object is as editable as any file in the bucket: whatever it holds, a load gives the version
    asked for (or the alias's) with that version's own package, or one ShipmlError line; never another's files.
    ``<x.y.z>`` in a seal stands for the real seal of x.y.z."""
    reg.load("m:1.0.0")
    reg.load("m:1.1.0")
    found = reg.store.get("models/m/state.json")
    assert found is not None
    doc = json.loads(found.data)
    for version, digest in doc["seals"].items():
        value = json.loads(json.dumps(value).replace(f'"<{version}>"', json.dumps(digest)))
    try:
        reg.store.put("models/m/state.json", json.dumps({**doc, field: value}).encode())
        for ref in ("m@production", "m:1.0.0", "m:1.1.0"):
            try:
                loaded = reg.load(ref)
            except ShipmlError as exc:
                one_line(exc)
                continue
            manifest = reg.get(ref).manifest
            assert (loaded.name, loaded.version) == (manifest.name, manifest.version)
            if ref != "m@production":
                assert loaded.version == ref.split(":")[1]
    finally:
        reg.store.put("models/m/state.json", found.data)
