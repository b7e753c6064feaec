"""The bundle's runner (predict.py): it checks the bundle before predicting, and any input a user can give it
ends in predictions or in one clear error line (exit code 2), never a traceback."""

from __future__ import annotations

import io
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shipml.export import runner
from tests.json_strategies import TRICKY_SCALARS, json_values

MIXED = "sk_logistic_mixed"  # numbers, an integer, nullable columns, categories


def _run(bundle: Path, text: str, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = runner.main(["--bundle", str(bundle), *args], stdin=io.StringIO(text), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def _valid(bundle: Path) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = json.loads((bundle / "golden.json").read_text())["records"]
    return records


def test_predictions_for_an_object_an_array_and_json_lines(bundles: dict[str, Path]) -> None:
    bundle = bundles[MIXED]
    records = _valid(bundle)[:3]
    expected = json.loads((bundle / "golden.json").read_text())["expected"]["predictions"][:3]
    for text in (json.dumps(records), "\n".join(json.dumps(r) for r in records)):
        code, out, err = _run(bundle, text)
        assert (code, err) == (0, "")
        rows = [json.loads(line) for line in out.splitlines()]
        assert [r["prediction"] for r in rows] == expected
        assert all(set(r["probabilities"]) == {"churn", "stay"} for r in rows)
    code, out, _ = _run(bundle, json.dumps(records[0]))
    assert code == 0 and len(out.splitlines()) == 1


@pytest.mark.parametrize(("text", "message"), [
    ("[1, 2]", "record 0 must be an object, not a number"),
    ("not json", "input is not JSON"),
    ('{"age": 1}', "record 0: missing field(s) 'income'"),
    ('{"age": 30, "income": NaN, "tenure": 1, "state": "CA", "plan": "pro"}', "input is not JSON"),
    ('{"age": 30.5, "income": 1, "tenure": 1, "state": "CA", "plan": "pro"}', "field 'age' must be a whole number"),
    ('{"age": 30, "income": 1, "tenure": 1, "state": "XX", "plan": "pro"}',
     "field 'state' has \"XX\", a category training never saw"),
    ('{"age": 30, "income": 1, "tenure": null, "state": "CA", "plan": "pro"}', "field 'tenure' must not be null"),
    ('{"age": 30, "income": 1, "tenure": 1, "state": null, "plan": null}', "field 'plan' must be a string, not null"),
    ('{"age": 30, "income": 1e39, "tenure": 1, "state": "CA", "plan": "pro"}', "beyond what a 32-bit float holds"),
    ('{"age": 30, "income": 1, "tenure": true, "state": "CA", "plan": "pro", "x": 1}', "unknown field(s) 'x'"),
    ("[" * 100_000, "nested too deeply"),
])
def test_bad_input_is_refused_with_what_is_wrong(bundles: dict[str, Path], text: str, message: str) -> None:
    code, out, err = _run(bundles[MIXED], text)
    assert code == runner.EXIT_BAD_INPUT and out == ""
    assert err.startswith("error: ") and message in err, err
    assert err.count("\n") == 1


MIXED_COLUMNS = {"None": "tenure", "'1'": "age", "True": "income", "1e+39": "income", "10**400": "age",
                 "0.5": "age", "'XX'": "state", "[]": "plan", "{}": "plan"}


@pytest.mark.parametrize("name", [MIXED, "lgb_binary", "sk_logistic_matrix"])
@pytest.mark.parametrize("bad", [None, "1", True, 1e39, 10**400, 0.5, "XX", [], {}], ids=repr)
def test_a_bad_value_among_many_records_is_named(bundles: dict[str, Path], name: str, bad: Any) -> None:
    """Many records are checked a column (or a matrix) at a time; a bad value still gets the per-value message."""
    bundle = bundles[name]
    records = _valid(bundle)[:20]
    shown = "10**400" if bad == 10**400 else repr(bad)
    column = MIXED_COLUMNS[shown] if name == MIXED else next(iter(records[0]))
    alone = _run(bundle, json.dumps([{**records[13], column: bad}]))
    records[13] = {**records[13], column: bad}
    code, out, err = _run(bundle, json.dumps(records))
    if alone[0] == 0:  # a value this column takes (a whole number, a null where nulls are allowed)
        assert code == 0 and len(out.splitlines()) == 20
        return
    assert code == runner.EXIT_BAD_INPUT and out == "", err
    assert err == alone[2].replace("record 0", "record 13"), (err, alone[2])


def test_a_changed_file_is_refused_before_any_prediction(bundles: dict[str, Path], tmp_path: Path) -> None:
    bundle = shutil.copytree(bundles[MIXED], tmp_path / "b")
    data = bytearray((bundle / "model.onnx").read_bytes())
    data[-1] ^= 1
    (bundle / "model.onnx").write_bytes(bytes(data))
    code, out, err = _run(bundle, json.dumps(_valid(bundle)[:1]))
    assert code == runner.EXIT_BAD_BUNDLE and out == ""
    assert "model.onnx does not match the sha256 in manifest.json" in err


def test_a_golden_sample_that_does_not_reproduce_is_refused(bundles: dict[str, Path], tmp_path: Path) -> None:
    """A golden file re-hashed after its expected outputs were changed: the hashes pass, the golden check not."""
    bundle = shutil.copytree(bundles[MIXED], tmp_path / "b")
    golden = json.loads((bundle / "golden.json").read_text())
    golden["expected"]["probabilities"][4] = [0.5, 0.5]
    (bundle / "golden.json").write_text(json.dumps(golden))
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"]["golden.json"] = runner.sha256_bytes((bundle / "golden.json").read_bytes())
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    code, _, err = _run(bundle, "", "--check")
    assert code == runner.EXIT_BAD_BUNDLE
    assert "does not reproduce its golden sample here: 1 of" in err and "(rows 4)" in err


def test_check_and_bench(bundles: dict[str, Path]) -> None:
    code, out, _ = _run(bundles[MIXED], "", "--check")
    assert code == 0 and out.startswith("ok: sk_logistic_mixed:1.0.0 verified")
    code, out, _ = _run(bundles[MIXED], "", "--bench", "20")
    assert code == 0 and json.loads(out)["us_per_row"] > 0


def _bad_value() -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), st.sampled_from(TRICKY_SCALARS), st.text(max_size=4), json_values,
                     st.integers(-(10**6), 10**6), st.floats(-1e6, 1e6))


@st.composite
def records(draw: st.DrawFn, valid: list[dict[str, Any]]) -> list[Any]:
    """Valid records (golden ones) with a few cells replaced by any value, a field dropped or one added."""
    rows = []
    for _ in range(draw(st.integers(1, 3))):
        row = dict(draw(st.sampled_from(valid)))
        for _ in range(draw(st.integers(0, 2))):
            row[draw(st.sampled_from(sorted(row)))] = draw(_bad_value())
        if draw(st.integers(0, 15)) == 0:
            row.pop(draw(st.sampled_from(sorted(row))))
        if draw(st.integers(0, 15)) == 0:
            row[draw(st.text(max_size=4))] = draw(json_values)
        rows.append(row)
    return rows


def _representable(value: Any, integer: bool) -> bool:
    """Whether the runner can hold ``value`` exactly: a 32-bit float's range; a whole number within 2**53."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return True
    try:
        return abs(float(value)) <= runner.FLOAT32_MAX and (not integer or abs(value) <= 2**53)
    except OverflowError:
        return False


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_records_give_predictions_or_one_clear_error(bundles: dict[str, Path], data: st.DataObject) -> None:
    """Agrees with the bundle's own JSON Schema: what it accepts the schema admits, and what the schema admits
    (numbers a 32-bit float holds) it accepts."""
    bundle = bundles[data.draw(st.sampled_from([MIXED, "lgb_binary", "xgb_regressor"]))]
    schema = json.loads((bundle / "signature.json").read_text())
    rows = data.draw(records(_valid(bundle)))
    if data.draw(st.booleans()):  # enough records for the vectorised checks
        rows += _valid(bundle)[: runner.FAST_ROWS]
    text = json.dumps(rows) if all(_finite(r) for r in rows) else json.dumps(rows, allow_nan=True)
    code, out, err = _run(bundle, text)
    assert "Traceback" not in err
    valid = all(jsonschema.Draft202012Validator(schema).is_valid(r) for r in rows)
    integers = {name for name, p in schema["properties"].items() if "integer" in p["type"]}
    representable = all(_representable(v, k in integers) for r in rows for k, v in r.items())
    if code == 0:
        assert valid and len(out.splitlines()) == len(rows)
    else:
        assert code == runner.EXIT_BAD_INPUT, err
        assert err.startswith("error: ") and err.count("\n") == 1 and out == ""
        assert not (valid and representable and all(_finite(r) for r in rows)), err


def _finite(record: dict[str, Any]) -> bool:
    return all(not (isinstance(v, float) and not math.isfinite(v)) for v in record.values())


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(st.text(max_size=40), json_values.map(lambda v: json.dumps(v, allow_nan=True))))
def test_any_text_gives_predictions_or_one_clear_error(bundles: dict[str, Path], text: str) -> None:
    code, _, err = _run(bundles[MIXED], text)
    assert code in (0, runner.EXIT_BAD_INPUT), err
    assert "Traceback" not in err
    if code:
        assert err.startswith("error: ") and err.count("\n") == 1


def test_predict_py_as_a_program(bundles: dict[str, Path], tmp_path: Path) -> None:
    bundle = bundles[MIXED]
    source = tmp_path / "in.json"
    source.write_text(json.dumps(_valid(bundle)[:5]))
    done = subprocess.run([sys.executable, str(bundle / "predict.py"), str(source), "-o", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert len((tmp_path / "out").read_text().splitlines()) == 5
    bad = subprocess.run([sys.executable, str(bundle / "predict.py")], input=b"\xff\xfe{", capture_output=True,
                         timeout=60, check=False)
    assert bad.returncode == runner.EXIT_BAD_INPUT and bad.stderr.startswith(b"error: input is not")
    assert b"Traceback" not in bad.stderr
