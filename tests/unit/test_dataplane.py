"""The dataplane (ModelRunner) over real tiny models, and the dense fast path of validation.

Three models are trained once per module and saved/loaded through a registry in a temp dir: LightGBM on four
float columns (dense), a scikit-learn pipeline with a string category column (general path), and a LightGBM
regressor with an int column and a nullable float column (dense, with int rules).

Requests sent together with ``asyncio.gather`` reach the batcher before its loop runs again, so they share one
batch; every test that depends on that asserts it from the ``on_batch`` statistics.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import shipml
from shipml.batching.batcher import BatchStats
from shipml.errors import SchemaError, TooManyRows
from shipml.package.columns import records_matrix
from shipml.package.loaded import LoadedModel
from shipml.package.signature import Problem
from shipml.package.validation import Checked, InputPolicy, check, dense_signature
from shipml.protocol.dataplane import ModelRunner, Outcome

FLOATS = ["a", "b", "c", "d"]


# -- models -------------------------------------------------------------------------------------------------

def _saved(model: Any, name: str, sample: pd.DataFrame, target: Any, root: Path) -> LoadedModel:
    shipml.save_model(model, name, sample=sample, target=target, registry=root, golden_rows=20)
    return shipml.load_model(name, registry=root)


@pytest.fixture(scope="module")
def dense_model(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.uniform(0, 1, size=(200, 4)), columns=FLOATS)
    y = (X["a"] + X["b"] > 1).astype(int)
    model = lgb.LGBMClassifier(n_estimators=5, num_leaves=4, verbose=-1).fit(X, y)
    return _saved(model, "dense", X, y, tmp_path_factory.mktemp("dense"))


@pytest.fixture(scope="module")
def mixed_model(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    rng = np.random.default_rng(1)
    X = pd.DataFrame({"x": rng.normal(size=200), "y": rng.normal(size=200),
                      "state": rng.choice(["CA", "NY", "TX"], 200)})
    target = ((X["x"] > 0) ^ (X["state"] == "CA")).astype(int)
    model = Pipeline([
        ("prep", ColumnTransformer([("num", StandardScaler(), ["x", "y"]),
                                    ("cat", OneHotEncoder(handle_unknown="ignore"), ["state"])])),
        ("clf", LogisticRegression(max_iter=200)),
    ]).fit(X, target)
    return _saved(model, "mixed", X, target, tmp_path_factory.mktemp("mixed"))


@pytest.fixture(scope="module")
def int_model(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    rng = np.random.default_rng(2)
    z = rng.uniform(0, 1, 200)
    z[::10] = np.nan
    X = pd.DataFrame({"n": rng.integers(0, 10, 200), "x": rng.uniform(-1, 1, 200), "z": z})
    y = X["n"] * 0.5 + X["x"]
    model = lgb.LGBMRegressor(n_estimators=5, num_leaves=4, min_child_samples=5, verbose=-1).fit(X, y)
    return _saved(model, "ints", X, y, tmp_path_factory.mktemp("ints"))


def test_the_models_have_the_signatures_these_tests_rely_on(
        dense_model: LoadedModel, mixed_model: LoadedModel, int_model: LoadedModel) -> None:
    assert dense_signature(dense_model.signature) and dense_signature(int_model.signature)
    assert not dense_signature(mixed_model.signature)
    kinds = {c.name: (c.dtype, c.nullable) for c in int_model.signature.inputs}
    assert kinds == {"n": ("int", False), "x": ("float", False), "z": ("float", True)}


# -- helpers -------------------------------------------------------------------------------------------------

@contextlib.asynccontextmanager
async def serving(model: LoadedModel, *, policy: InputPolicy | None = None, max_rows: int = 1000,
                  max_batch_size: int = 1000) -> AsyncIterator[tuple[ModelRunner, list[BatchStats]]]:
    stats: list[BatchStats] = []
    runner = ModelRunner(model, policy=policy or InputPolicy(), max_rows=max_rows, max_batch_size=max_batch_size,
                         max_latency_ms=2, max_queue=64, on_batch=stats.append)
    try:
        yield runner, stats
    finally:
        await runner.batcher.stop()


async def together(runner: ModelRunner, requests: Sequence[Any], want_proba: bool = True,
                   ) -> list[Outcome | BaseException]:
    calls = [runner.infer(r, want_proba=want_proba) for r in requests]
    return await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 30)


def one_batch(stats: list[BatchStats], requests: int) -> None:
    """The requests were predicted (or checked) together, in one batch."""
    assert [s.requests for s in stats if s.requests] == [requests]


def outcome(x: Outcome | BaseException) -> Outcome:
    assert isinstance(x, Outcome), f"expected an outcome, got {x!r}"
    return x


def schema_error(x: Outcome | BaseException) -> SchemaError:
    assert isinstance(x, SchemaError), f"expected a SchemaError, got {x!r}"
    assert x.status == 422
    return x


def where(problems: Sequence[Problem]) -> list[tuple[int | None, str | None, str, str]]:
    return [(p.row, p.column, p.rule, p.severity) for p in problems]


def assert_same(got: Outcome, model: LoadedModel, data: Any, *, exact: bool = True) -> None:
    """Batched outcome == what the model gives on the same rows alone."""
    np.testing.assert_array_equal(got.predictions, model.predict(data))
    if model.has_proba:
        assert got.probabilities is not None
        expected = model.predict_proba(data)
        if exact:
            np.testing.assert_array_equal(got.probabilities, expected)
        else:  # a linear model's matrix product may round differently with the batch size
            np.testing.assert_allclose(got.probabilities, expected, rtol=1e-12, atol=1e-15)
    else:
        assert got.probabilities is None


def floats(rows: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.1, 0.9, size=(rows, 4))


def records(matrix: np.ndarray, names: Sequence[str] = FLOATS) -> list[dict[str, Any]]:
    return [dict(zip(names, map(float, row), strict=True)) for row in matrix]


def columnar(matrix: np.ndarray, names: Sequence[str] = FLOATS) -> dict[str, list[float]]:
    return {name: matrix[:, j].tolist() for j, name in enumerate(names)}


# -- batched == unbatched -------------------------------------------------------------------------------------

def _dense_requests() -> list[Any]:
    return [records(floats(3, 1)), floats(2, 2), records(floats(1, 3)), floats(4, 4)]


def _dense_and_columnar_requests() -> list[Any]:
    return [records(floats(3, 5)), columnar(floats(2, 6)), floats(2, 7)]


def _mixed_requests() -> list[Any]:
    rows = [{"x": 0.3, "y": -1.2, "state": "CA"}, {"x": -0.7, "y": 0.1, "state": "TX"},
            {"x": 1.1, "y": 0.4, "state": "NY"}]
    return [
        rows,
        {"x": [0.2, -0.2], "y": [0.0, 0.5], "state": ["NY", "CA"]},
        np.array([[-1.0, 2.0, "TX"], [0.5, -0.5, "CA"]], dtype=object),
        rows[1:],
    ]


def _int_requests() -> list[Any]:
    names = ["n", "x", "z"]
    m = np.array([[1.0, 0.5, 0.2], [7.0, -0.3, np.nan], [3.0, 0.0, 0.9]])
    return [records(m, names), m[:2], columnar(m[1:], names), [{"z": 0.5, "x": 0.1, "n": 4}]]


@pytest.mark.parametrize(("model_name", "make_requests", "exact"), [
    ("dense_model", _dense_requests, True),
    ("dense_model", _dense_and_columnar_requests, True),
    ("mixed_model", _mixed_requests, False),
    ("int_model", _int_requests, True),
], ids=["dense-records-and-matrix", "dense-with-columnar", "pipeline-with-strings", "int-column-regressor"])
def test_batched_results_equal_the_model_on_each_request_alone(
        request: pytest.FixtureRequest, model_name: str, make_requests: Any, exact: bool) -> None:
    model: LoadedModel = request.getfixturevalue(model_name)
    inputs = make_requests()

    async def go() -> None:
        async with serving(model) as (runner, stats):
            got = await together(runner, inputs)
        one_batch(stats, len(inputs))
        assert stats[0].rows == sum(len(o.predictions) for o in map(outcome, got))
        for data, result in zip(inputs, got, strict=True):
            assert_same(outcome(result), model, data, exact=exact)
            assert outcome(result).warnings == []

    asyncio.run(go())


def test_want_proba_is_per_request(dense_model: LoadedModel) -> None:
    async def go() -> None:
        async with serving(dense_model) as (runner, stats):
            with_proba, without = await asyncio.gather(runner.infer(floats(2, 1), want_proba=True),
                                                       runner.infer(floats(3, 2), want_proba=False))
        one_batch(stats, 2)
        assert with_proba.probabilities is not None and with_proba.probabilities.shape == (2, 2)
        assert without.probabilities is None
        np.testing.assert_array_equal(without.predictions, dense_model.predict(floats(3, 2)))

    asyncio.run(go())


# -- a bad request fails alone ---------------------------------------------------------------------------------

def test_a_request_falling_back_to_the_general_path_fails_alone_with_its_own_rows(dense_model: LoadedModel) -> None:
    good = records(floats(2, 1))
    oops = records(floats(3, 2))
    oops[1]["b"] = "oops"  # not a number: records_matrix gives up, the general path says what is wrong
    gap = records(floats(2, 3))
    del gap[1]["c"]  # a key missing from one record: a null there, found on the general path
    null = records(floats(2, 4))
    null[0]["d"] = None  # a null in a non-nullable column
    matrix = floats(2, 5)
    inputs: list[Any] = [good, oops, gap, null, matrix]
    assert records_matrix(oops, FLOATS) is None and records_matrix(gap, FLOATS) is None
    assert records_matrix(good, FLOATS) is not None

    async def go() -> None:
        async with serving(dense_model) as (runner, stats):
            got = await together(runner, inputs)
        one_batch(stats, 5)
        assert_same(outcome(got[0]), dense_model, good)
        assert_same(outcome(got[4]), dense_model, matrix)
        bad_oops, bad_gap, bad_null = schema_error(got[1]), schema_error(got[2]), schema_error(got[3])
        assert where(bad_oops.problems) == [(1, "b", "type", "error")]
        assert "'oops'" in bad_oops.problems[0].message and "row 1, column 'b'" in str(bad_oops)
        assert where(bad_gap.problems) == [(1, "c", "null", "error")]
        assert where(bad_null.problems) == [(0, "d", "null", "error")]
        assert (bad_oops.total, bad_gap.total, bad_null.total) == (1, 1, 1)

    asyncio.run(go())


def test_non_integer_in_an_int_column_fails_that_request_only(int_model: LoadedModel) -> None:
    good = [{"n": 2, "x": 0.1, "z": None}, {"n": 5, "x": -0.4, "z": 0.3}]  # z is nullable: None is fine
    bad = [{"n": 3, "x": 0.0, "z": 0.5}, {"n": 3, "x": 0.0, "z": 0.5}, {"n": 2.5, "x": 0.2, "z": 0.1}]

    async def go() -> None:
        async with serving(int_model) as (runner, stats):
            got = await together(runner, [good, bad])
        one_batch(stats, 2)
        assert_same(outcome(got[0]), int_model, good)
        assert where(schema_error(got[1]).problems) == [(2, "n", "type", "error")]

    asyncio.run(go())


def test_a_bad_row_in_a_non_dense_batch_fails_alone(mixed_model: LoadedModel) -> None:
    good = [{"x": 0.1, "y": 0.2, "state": "NY"}]
    bad = [{"x": 0.1, "y": 0.2, "state": "CA"}, {"x": "?", "y": 0.2, "state": "ZZ"}]
    also_good = {"x": [0.3], "y": [-0.3], "state": ["TX"]}

    async def go() -> None:
        async with serving(mixed_model) as (runner, stats):
            got = await together(runner, [good, bad, also_good])
        one_batch(stats, 3)
        assert_same(outcome(got[0]), mixed_model, good, exact=False)
        assert_same(outcome(got[2]), mixed_model, also_good, exact=False)
        assert where(schema_error(got[1]).problems) == [(1, "x", "type", "error"),
                                                        (1, "state", "unseen_category", "error")]

    asyncio.run(go())


def test_warnings_are_split_back_per_request_with_their_own_rows(dense_model: LoadedModel) -> None:
    first = records(floats(2, 1))
    first[1]["a"] = 5.0  # above the training range
    second = floats(3, 2)
    second[0, 3] = -3.0  # below it, in a matrix request
    clean = records(floats(1, 3))

    async def go() -> None:
        async with serving(dense_model, policy=InputPolicy(out_of_range="warn")) as (runner, stats):
            got = await together(runner, [first, second, clean])
        one_batch(stats, 3)
        a, b, c = map(outcome, got)
        assert where(a.warnings) == [(1, "a", "out_of_range", "warning")] and "got 5.0" in a.warnings[0].message
        assert where(b.warnings) == [(0, "d", "out_of_range", "warning")]
        assert c.warnings == []
        for data, result in zip([first, second, clean], [a, b, c], strict=True):
            assert_same(result, dense_model, data)

        async with serving(dense_model, policy=InputPolicy(out_of_range="reject")) as (runner, stats):
            got = await together(runner, [first, second, clean])
        one_batch(stats, 3)
        assert where(schema_error(got[0]).problems) == [(1, "a", "out_of_range", "error")]
        assert where(schema_error(got[1]).problems) == [(0, "d", "out_of_range", "error")]
        assert_same(outcome(got[2]), dense_model, clean)

    asyncio.run(go())


def test_warnings_of_a_request_in_a_batch_with_a_general_path_request(dense_model: LoadedModel) -> None:
    warned = floats(2, 1)
    warned[1, 0] = 2.0
    general = records(floats(2, 2))
    general[0]["d"] = None

    async def go() -> None:
        async with serving(dense_model) as (runner, stats):
            got = await together(runner, [general, warned])
        one_batch(stats, 2)
        assert where(schema_error(got[0]).problems) == [(0, "d", "null", "error")]
        assert where(outcome(got[1]).warnings) == [(1, "a", "out_of_range", "warning")]
        assert_same(outcome(got[1]), dense_model, warned)

    asyncio.run(go())


def test_a_request_keeps_its_problems_when_an_earlier_one_in_the_batch_has_many(dense_model: LoadedModel) -> None:
    noisy = np.full((1001, 4), 0.5)
    noisy[:, 0] = 5.0  # 1001 out-of-range rows
    quiet = floats(2, 1)
    quiet[1, 2] = -7.0

    async def go() -> None:
        async with serving(dense_model, policy=InputPolicy(out_of_range="reject"), max_rows=2000,
                           max_batch_size=2000) as (runner, stats):
            got = await together(runner, [noisy, quiet])
        one_batch(stats, 2)
        assert schema_error(got[0]).total == 1001
        assert where(schema_error(got[1]).problems) == [(1, "c", "out_of_range", "error")]

    asyncio.run(go())


# -- limits and empty requests -----------------------------------------------------------------------------------

@pytest.mark.parametrize("form", ["records", "matrix", "columnar", "records-general-path"])
def test_too_many_rows_is_refused_before_batching(dense_model: LoadedModel, form: str) -> None:
    m = floats(4, 1)
    rows = records(m)
    rows[0]["a"] = "oops"
    data = {"records": records(m), "matrix": m, "columnar": columnar(m), "records-general-path": rows}[form]

    async def go() -> None:
        async with serving(dense_model, max_rows=3) as (runner, stats):
            with pytest.raises(TooManyRows, match=r"4 rows.*limit is 3") as refused:
                await runner.infer(data)
            assert refused.value.status == 413
            exactly = await runner.infer(m[:3])  # at the limit: fine
        assert len(exactly.predictions) == 3
        assert [s.requests for s in stats] == [1]  # the refused request never reached the batcher

    asyncio.run(go())


def test_too_many_rows_on_a_non_dense_model(mixed_model: LoadedModel) -> None:
    async def go() -> None:
        async with serving(mixed_model, max_rows=1) as (runner, _):
            with pytest.raises(TooManyRows):
                await runner.infer([{"x": 0.0, "y": 0.0, "state": "CA"}] * 2)

    asyncio.run(go())


@pytest.mark.parametrize("form", ["columnar", "matrix"])
def test_an_empty_request_gets_an_empty_outcome(dense_model: LoadedModel, form: str) -> None:
    data = {"columnar": {name: [] for name in FLOATS}, "matrix": np.empty((0, 4))}[form]

    async def go() -> None:
        async with serving(dense_model) as (runner, stats):
            got = await runner.infer(data)
            no_proba = await runner.infer(data, want_proba=False)
        assert got.predictions.shape == (0,) and got.warnings == []
        assert got.probabilities is not None and got.probabilities.shape == (0, 2)
        assert no_proba.probabilities is None
        assert stats == []  # nothing to batch

    asyncio.run(go())


def test_an_empty_records_list_gets_an_empty_outcome(dense_model: LoadedModel) -> None:
    async def go() -> None:
        async with serving(dense_model) as (runner, _):
            got = await runner.infer([])
        assert got.predictions.shape == (0,)

    asyncio.run(go())


def test_an_empty_request_to_a_regressor_has_no_probabilities(int_model: LoadedModel) -> None:
    async def go() -> None:
        async with serving(int_model) as (runner, _):
            empty = await runner.infer(np.empty((0, 3)))
            some = await runner.infer(np.array([[1.0, 0.0, 0.5]]))
        assert some.probabilities is None
        assert empty.probabilities is None

    asyncio.run(go())


# -- dense and general checks agree --------------------------------------------------------------------------

def _dense_cases() -> np.ndarray:
    m = np.full((7, 4), 0.5)
    m[1, 0] = 5.0  # out of range, high
    m[2, 1] = np.nan  # null in a non-nullable column
    m[3, 2] = np.inf
    m[4, 3] = -np.inf
    m[5, 0], m[5, 3] = -1.0, np.nan  # two problems in one row
    m[6, 1] = 1e300
    return m


def _int_cases() -> np.ndarray:
    m = np.tile([3.0, 0.0, 0.5], (9, 1))
    m[1, 0] = 2.5  # not an integer
    m[2, 0] = np.inf  # not an integer either
    m[3, 0] = np.nan  # null in an int column
    m[4, 0] = 1000.0  # an integer, out of range
    m[5, 1] = np.nan  # null in a non-nullable float column
    m[6, 2] = np.nan  # null in a nullable one: fine
    m[7, 2] = np.inf  # out of range
    m[8, 0], m[8, 1] = -2.5, 9.0
    return m


def _agree(dense: Checked, general: Checked) -> None:
    assert dense.table.dense is not None and general.table.dense is None  # the two paths were really taken
    assert dense.problems == general.problems  # row, column, rule, message, severity, in the same order
    np.testing.assert_array_equal(dense.bad_rows, general.bad_rows)
    assert (dense.n_errors, dense.n_warnings, dense.ok) == (general.n_errors, general.n_warnings, general.ok)
    np.testing.assert_array_equal(dense.table.matrix(), general.table.matrix())


@pytest.mark.parametrize("policy", [InputPolicy(out_of_range="warn"), InputPolicy(out_of_range="reject"),
                                    InputPolicy(out_of_range="reject", max_problems=3)],
                         ids=["warn", "reject", "reject-3-problems"])
@pytest.mark.parametrize(("model_name", "cases"), [("dense_model", _dense_cases), ("int_model", _int_cases)],
                         ids=["floats", "int-and-nullable"])
def test_dense_and_general_checks_find_identical_problems(
        request: pytest.FixtureRequest, model_name: str, cases: Any, policy: InputPolicy) -> None:
    signature = request.getfixturevalue(model_name).signature
    matrix = cases()
    dense = check(matrix, signature, policy)
    general = check(pd.DataFrame(matrix, columns=signature.names), signature, policy)
    _agree(dense, general)
    assert dense.n_errors + dense.n_warnings >= 6  # not vacuous
    assert len(dense.problems) == min(policy.max_problems, dense.n_errors + dense.n_warnings)


def test_dense_and_general_checks_agree_on_expected_rules(dense_model: LoadedModel, int_model: LoadedModel) -> None:
    found = check(_dense_cases(), dense_model.signature, InputPolicy(out_of_range="warn"))
    assert sorted(where(found.problems)) == sorted([
        (1, "a", "out_of_range", "warning"), (5, "a", "out_of_range", "warning"), (2, "b", "null", "error"),
        (6, "b", "out_of_range", "warning"), (3, "c", "out_of_range", "warning"), (5, "d", "null", "error"),
        (4, "d", "out_of_range", "warning")])
    assert found.bad_rows.tolist() == [False, False, True, False, False, True, False]

    found = check(_int_cases(), int_model.signature, InputPolicy(out_of_range="reject"))
    assert sorted(where(found.problems)) == sorted([
        (1, "n", "type", "error"), (2, "n", "type", "error"), (8, "n", "type", "error"), (3, "n", "null", "error"),
        (4, "n", "out_of_range", "error"), (5, "x", "null", "error"), (8, "x", "out_of_range", "error"),
        (7, "z", "out_of_range", "error")])
    assert found.bad_rows.tolist() == [False, True, True, True, True, True, False, True, True]


def test_a_clean_matrix_has_no_problems_on_either_path(int_model: LoadedModel) -> None:
    matrix = np.array([[1.0, 0.2, np.nan], [9.0, -0.9, 0.4]])
    signature = int_model.signature
    dense = check(matrix, signature)
    _agree(dense, check(pd.DataFrame(matrix, columns=signature.names), signature))
    assert dense.ok and dense.problems == []
    assert dense.table.matrix() is matrix  # handed over without a copy


# -- records_matrix ---------------------------------------------------------------------------------------------

def test_records_matrix_reads_keys_in_any_order() -> None:
    rows = [{"a": 1, "b": 2.5, "c": True}, {"c": 0, "a": -1.0, "b": 3}]
    got = records_matrix(rows, ["a", "b", "c"])
    assert got is not None and got.dtype == np.float64
    np.testing.assert_array_equal(got, [[1.0, 2.5, 1.0], [-1.0, 3.0, 0.0]])
    np.testing.assert_array_equal(records_matrix(rows, ["c", "a", "b"]), [[1.0, 1.0, 2.5], [0.0, -1.0, 3.0]])


def test_records_matrix_with_a_single_column() -> None:
    got = records_matrix([{"a": 1}, {"a": 2.5}, {"a": -3}], ["a"])
    assert got is not None
    np.testing.assert_array_equal(got, [[1.0], [2.5], [-3.0]])
    assert records_matrix([{"a": 1, "b": 2}], ["a"]) is None
    assert records_matrix([{"b": 1}], ["a"]) is None


@pytest.mark.parametrize("rows", [
    [{"a": 1.0, "b": 2.0}, {"a": 1.0}],  # a missing key
    [{"a": 1.0, "b": 2.0}, {"a": 1.0, "b": 2.0, "c": 3.0}],  # an extra key
    [{"a": 1.0}, {"a": 1.0, "b": 2.0, "c": 3.0}],  # one missing, one extra: the key count alone balances
    [{"a": 1.0, "c": 2.0}, {"a": 1.0, "b": 2.0}],  # a wrong key in place of a right one
    [{"a": 1.0, "b": "oops"}],  # a string that is not a number
    [{"a": 1.0, "b": [2.0]}],  # a nested list
    [{"a": [1.0], "b": [2.0]}],  # nested lists of one length: a 3-D array
    [{"a": 1.0, "b": None}],  # a null
    [{"a": 1.0, "b": 2**70}],  # an int numpy keeps as an object
    [{"a": 1.0, "b": {"x": 2.0}}],  # a nested object
    [{"a": 1.0, "b": 2.0}, [1.0, 2.0]],  # a row that is a list
    [{"a": 1.0, "b": 2.0}, "ab"],  # a row that is a string
    [{"a": 1.0, "b": 2.0}, None],  # a row that is null
    [{"a": 1.0, "b": 2.0}, 7],  # a row that is a number
], ids=["missing", "extra", "missing-and-extra", "wrong-key", "string", "list", "nested-lists", "null", "huge-int",
        "object", "list-row", "string-row", "null-row", "number-row"])
def test_records_matrix_gives_up_on_anything_but_plain_numbers(rows: list[Any]) -> None:
    assert records_matrix(rows, ["a", "b"]) is None


def test_a_null_in_records_gets_the_general_paths_verdict(int_model: LoadedModel) -> None:
    rows = [{"n": 1, "x": 0.1, "z": None}, {"n": None, "x": 0.1, "z": 0.5}]  # z is nullable, n is not
    alone = check(rows, int_model.signature)  # the general path, on records
    assert where(alone.problems) == [(1, "n", "null", "error")]

    async def go() -> None:
        async with serving(int_model) as (runner, _):
            got = await together(runner, [rows, rows[:1]])
        assert where(schema_error(got[0]).problems) == where(alone.problems)
        assert_same(outcome(got[1]), int_model, rows[:1])

    asyncio.run(go())


@pytest.mark.parametrize("value", ["1_000", "nan"])
def test_a_string_in_records_gets_the_same_verdict_on_both_paths(dense_model: LoadedModel, value: str) -> None:
    rows = [{"a": value, "b": 0.5, "c": 0.5, "d": 0.5}]
    with pytest.raises(SchemaError) as alone:
        dense_model.predict(rows)
    assert where(alone.value.problems) == [(0, "a", "type", "error")]

    async def go() -> None:
        async with serving(dense_model) as (runner, _):
            got = await together(runner, [rows])
        assert where(schema_error(got[0]).problems) == where(alone.value.problems)

    asyncio.run(go())


def test_an_integer_too_large_for_a_float_is_a_type_problem(dense_model: LoadedModel) -> None:
    rows = [{"a": 10**400, "b": 0.5, "c": 0.5, "d": 0.5}]

    async def go() -> None:
        async with serving(dense_model) as (runner, _):
            with pytest.raises(SchemaError) as bad:
                await runner.infer(rows)
        assert where(bad.value.problems) == [(0, "a", "type", "error")]

    asyncio.run(go())
