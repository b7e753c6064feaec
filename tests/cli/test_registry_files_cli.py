"""Malformed registry files (item 11 of issue 12): aliases.json, the history, the evaluations and the ledger
hold whatever bytes; every command either works or says in one line which file is wrong (exit code 1), in the
library as in the CLI, and never prints a traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shipml
from shipml.cli import cli
from shipml.errors import ShipmlError
from tests.unit.registry_support import build_tiny_registry, copy_registry, one_line, tiny_model


@pytest.fixture(scope="module")
def tiny_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("tiny")
    build_tiny_registry(base / "registry")
    _, X = tiny_model()
    X.assign(y=(X["a"] > 0).astype(int)).to_csv(base / "valid.csv", index=False)
    return base


def invoke(base: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--registry", str(base / "registry"), *args])


def assert_one_line_or_success(result: Result, args: tuple[str, ...]) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), (args, result.exception)
    assert result.exit_code in (0, 1), (args, result.exit_code, result.output)
    if result.exit_code == 1:
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, (args, result.stderr)
    assert "Traceback" not in result.output


def copy(tiny_source: Path, dest: Path) -> Path:
    copy_registry(tiny_source / "registry", dest / "registry")
    (dest / "valid.csv").write_bytes((tiny_source / "valid.csv").read_bytes())
    return dest


BAD_ALIASES = {
    "not JSON": b"{production: 1.0.0",
    "not an object": b'["production", "1.0.0"]',
    "a number for a version": b'{"production": 1}',
    "null for a version": b'{"production": null}',
    "an invalid alias name": b'{"../prod": "1.0.0"}',
    "an invalid version": b'{"production": "latest"}',
}


@pytest.mark.parametrize("case", sorted(BAD_ALIASES))
def test_a_malformed_aliases_file_is_one_line_naming_it(tiny_source: Path, tmp_path: Path, case: str) -> None:
    base = copy(tiny_source, tmp_path)
    (base / "registry/models/m/aliases.json").write_bytes(BAD_ALIASES[case])
    with pytest.raises(ShipmlError) as exc:
        shipml.Registry(base / "registry").aliases("m")
    assert type(exc.value).__name__ == "RegistryCorrupt"
    assert one_line(exc.value).startswith("registry file models/m/aliases.json ")
    for args in (("models",), ("versions", "m"), ("show", "m@production"), ("alias", "m", "staging", "1.1.0"),
                 ("delete", "m:1.1.0")):
        result = invoke(base, *args)
        assert result.exit_code == 1, (args, result.output)
        assert result.stderr.startswith("error: registry file models/m/aliases.json "), (args, result.stderr)
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.output


@pytest.mark.parametrize(("filename", "command"), [
    ("history.jsonl", ("history", "m")),
    ("evaluations.jsonl", ("show", "m:1.0.0")),
    ("versions.jsonl", ("show", "m:1.0.0")),
])
def test_a_malformed_line_is_one_line_naming_the_file_and_line(tiny_source: Path, tmp_path: Path,
                                                               filename: str, command: tuple[str, ...]) -> None:
    base = copy(tiny_source, tmp_path)
    path = base / "registry/models/m" / filename
    path.write_bytes(b'{"oops": \n' + path.read_bytes())
    result = invoke(base, *command)
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(f"error: registry file models/m/{filename} line 1 "), result.stderr
    assert result.stderr.count("\n") == 1


def test_a_torn_last_line_is_a_crash_mid_append_and_is_repaired(tiny_source: Path, tmp_path: Path) -> None:
    base = copy(tiny_source, tmp_path)
    reg = shipml.Registry(base / "registry")
    for filename in ("history.jsonl", "evaluations.jsonl", "versions.jsonl"):
        with (base / "registry/models/m" / filename).open("ab") as f:
            f.write(b'{"event": "sav')
    assert len(reg.alias_history("m")) == 1 and reg.load("m:1.1.0").version == "1.1.0"
    reg.set_alias("m", "production", "1.1.0")
    model, X = tiny_model()
    shipml.save_model(model, "m", sample=X, registry=reg)
    reg.record_evaluation(reg.get("m:1.0.0"), {"metrics": {"accuracy": 0.5}})
    assert [m.to_version for m in reg.alias_history("m")] == ["1.0.0", "1.1.0"]
    assert reg.load("m:1.2.0").version == "1.2.0" and len(reg.evaluations(reg.get("m:1.0.0"))) == 2


@pytest.mark.parametrize("record", [{"rows": 1.5}, {"metrics": {"accuracy": "high"}}, {"metrics": [1]},
                                    {"task": True}])
def test_an_evaluation_record_that_could_not_be_read_back_is_refused(tiny_source: Path, tmp_path: Path,
                                                                     record: dict[str, Any]) -> None:
    reg = shipml.Registry(copy(tiny_source, tmp_path) / "registry")
    before = (reg.root / "models/m/evaluations.jsonl").read_bytes()
    with pytest.raises(shipml.errors.BadRequest) as exc:
        reg.record_evaluation(reg.get("m:1.0.0"), record)
    assert one_line(exc.value).startswith("the evaluation record for m:1.0.0 has ")
    assert (reg.root / "models/m/evaluations.jsonl").read_bytes() == before


# -- random bytes in every registry file -------------------------------------------------------------------

FILES = ["aliases.json", "history.jsonl", "evaluations.jsonl", "versions.jsonl", "versions/1.1.0/shipml.json"]
JSON = st.recursive(st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False)
                    | st.text(max_size=8)
                    | st.sampled_from(["m", "1.0.0", "1.1.0", "production", "saved", "deleted"]),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.sampled_from(["name", "alias", "from", "to", "at", "by", "reason",
                                                       "event", "version", "manifest_sha256", "metrics",
                                                       "production", "rows"]), inner, max_size=5),
                    max_leaves=8)


def _jsonl(values: list[Any]) -> bytes:
    return b"".join(orjson.dumps(v) + b"\n" for v in values)


CONTENT = st.one_of(st.binary(max_size=120), JSON.map(orjson.dumps), st.lists(JSON, max_size=4).map(_jsonl))


def commands(base: Path) -> list[tuple[str, ...]]:
    data = ("--data", str(base / "valid.csv"), "--target", "y")
    return [("models",), ("versions", "m"), ("show", "m"), ("show", "m@production"), ("history", "m"),
            ("alias", "m", "staging", "1.1.0"), ("alias", "m", "production", "--delete"), ("delete", "m:1.1.0"),
            ("evaluate", "m:1.1.0", *data), ("promote", "m:1.1.0", "production", "--against", "@production",
                                               *data)]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(filename=st.sampled_from(FILES), content=CONTENT, which=st.lists(st.integers(0, 9), min_size=1,
                                                                          max_size=3))
def test_random_bytes_in_any_registry_file_give_success_or_one_line(
        tiny_source: Path, tmp_path_factory: pytest.TempPathFactory, filename: str, content: bytes,
        which: list[int]) -> None:
    base = copy(tiny_source, tmp_path_factory.mktemp("bytes"))
    (base / "registry/models/m" / filename).write_bytes(content)
    for i in which:
        args = commands(base)[i]
        assert_one_line_or_success(invoke(base, *args), args)
