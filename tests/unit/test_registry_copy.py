"""``shipml registry copy`` / ``copy_models``: local -> S3 -> local keeps every version, evaluation, alias and
history line, canary record and the release state, keeps deleted numbers unused, verifies every hash, and
resumes without duplicating anything."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

import shipml
from shipml.cli import cli
from shipml.errors import ConflictError, IntegrityError
from shipml.registry.copying import copy_models
from shipml.registry.objects import ObjectRegistry
from tests.s3_support import S3Server
from tests.unit.registry_backends import s3_registry
from tests.unit.registry_support import build_tiny_registry, one_line, tiny_model


@pytest.fixture
def source(tmp_path: Path) -> shipml.Registry:
    reg = build_tiny_registry(shipml.Registry(tmp_path / "source"))
    model, X = tiny_model(1)
    shipml.save_model(model, "m", sample=X, registry=reg)  # 1.2.0, deleted below: its number stays used
    reg.set_alias("m", "staging", "1.1.0", reason="try")
    reg.set_alias("m", "production", "1.1.0", reason="better")
    reg.delete("m:1.2.0")
    reg.start_canary("m", "1.0.0", alias="production", weight=10, reason="first try")
    reg.end_canary("m", alias="production", outcome="aborted", reason="worse")
    reg.start_canary("m", "1.0.0", alias="staging", weight=25)  # running when copied
    shipml.save_model(model, "n", sample=X, registry=reg)
    return reg


def contents(reg: shipml.Registry) -> dict[str, object]:
    out: dict[str, object] = {}
    for summary in reg.models():
        name = summary.name
        out[name] = {
            "versions": {mv.version: sorted((a.path, a.sha256) for a in mv.manifest.artifacts)
                         for mv in reg.versions(name)},
            "aliases": reg.aliases(name),
            "history": [m.to_dict() for m in reg.alias_history(name)],
            "evaluations": [reg.evaluations(mv) for mv in reg.versions(name)],
            "releases": [c.to_dict() for c in reg.release_history(name)],
            "release_state": reg.release_state(name).to_dict(),
        }
    return out


def test_local_to_s3_to_local_keeps_everything(source: shipml.Registry, s3: S3Server, tmp_path: Path) -> None:
    remote = s3_registry(s3, tmp_path / "cache")
    report = copy_models(source, remote)
    assert report.copied == ["m:1.0.0", "m:1.1.0", "n:1.0.0"] and report.skipped == []
    assert report.moves == {"m": 3, "n": 0} and report.releases == {"m": 3, "n": 0}
    assert contents(remote) == contents(source)
    running = remote.release_state("m").running("staging")
    assert running is not None and running.version == "1.0.0" and running.weight == 25
    assert shipml.load_model("m@production", registry=remote).version == "1.1.0"
    back = shipml.Registry(tmp_path / "back")
    copy_models(remote, back)
    assert contents(back) == contents(source)
    model, X = tiny_model(2)
    for reg in (remote, back):  # the deleted number is not reused in either copy
        assert shipml.save_model(model, "m", sample=X, registry=reg).version == "1.3.0"


def test_a_copy_resumes_and_never_merges_histories(source: shipml.Registry, s3: S3Server, tmp_path: Path) -> None:
    remote = s3_registry(s3, tmp_path / "cache")
    copy_models(source, remote, ["m"])
    again = copy_models(source, remote, ["m"])
    assert again.copied == [] and again.skipped == ["m:1.0.0", "m:1.1.0"] and again.moves == {"m": 0}
    assert again.releases == {"m": 0}
    assert [m.name for m in remote.models()] == ["m"]
    remote.end_canary("m", alias="staging", outcome="aborted", reason="only there")
    before = contents(remote)
    with pytest.raises(ConflictError) as exc:
        copy_models(source, remote, ["m"])
    assert "another release log" in one_line(exc.value)
    assert contents(remote) == before
    remote.set_alias("m", "production", "1.0.0", reason="only there")
    before = contents(remote)
    with pytest.raises(ConflictError) as exc:
        copy_models(source, remote, ["m"])
    assert "another alias history" in one_line(exc.value)
    assert contents(remote) == before


def test_a_changed_source_object_is_refused_and_not_copied(s3: S3Server, tmp_path: Path) -> None:
    remote = s3_registry(s3, tmp_path / "cache")
    build_tiny_registry(remote)
    assert isinstance(remote, ObjectRegistry)
    key = next(k for k in remote.store.keys("models/m/packages/1.1.0/") if k.endswith(".skops"))
    remote.store.put(key, b"not the model")
    fresh = ObjectRegistry(store=remote.store, cache=type(remote._cache)(tmp_path / "other-cache"))
    dest = shipml.Registry(tmp_path / "dest")
    with pytest.raises(IntegrityError) as exc:
        copy_models(fresh, dest)
    assert "m:1.1.0: its file model/model.skops does not match" in one_line(exc.value)
    assert [v.version for v in dest.versions("m")] == ["1.0.0"]


def test_the_cli_copies_between_registries(source: shipml.Registry, s3: S3Server, tmp_path: Path) -> None:
    uri = f"s3://{s3.new_bucket()}/copy"
    result = CliRunner().invoke(cli, ["--json", "registry", "copy", source.location, uri, "--model", "n"])
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.stdout)["copied"] == ["n:1.0.0"]
    assert [m.name for m in shipml.Registry(uri).models()] == ["n"]
    result = CliRunner().invoke(cli, ["registry", "copy", source.location, uri, "--model", "../x"])
    assert result.exit_code == 1 and result.stderr.startswith("error: invalid model name '../x'")


def test_a_tree_shipml_saved_copies_without_trust_as_it_loads_without(s3: S3Server, tmp_path: Path) -> None:
    from sklearn.tree import DecisionTreeClassifier

    _, X = tiny_model(1)
    y = (X.iloc[:, 0] > X.iloc[:, 0].median()).astype(int)
    local = shipml.Registry(tmp_path / "local")
    shipml.save_model(DecisionTreeClassifier(max_depth=3).fit(X, y), "tree", sample=X, registry=local)
    remote = s3_registry(s3, tmp_path / "cache")
    assert copy_models(local, remote).copied == ["tree:1.0.0"]
    back = shipml.Registry(tmp_path / "back")
    assert copy_models(remote, back).copied == ["tree:1.0.0"]
    expected = list(shipml.load_model("tree:1.0.0", registry=local).predict(X.head(5)))
    for reg in (remote, back):  # no trust recorded, none needed: the files are the ones shipml wrote
        assert list(shipml.load_model("tree:1.0.0", registry=reg).predict(X.head(5))) == expected
        assert not reg.get("tree:1.0.0").manifest.trust.required
    # the same files as a package directory outside any registry carry no such standing
    with pytest.raises(shipml.errors.UnsafeModelError):
        shipml.Registry(tmp_path / "other").add_package(local.directory(local.get("tree:1.0.0")), "tree")
