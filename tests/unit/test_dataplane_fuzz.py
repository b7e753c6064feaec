"""One malformed request never fails its batch (issue #12, item 1): a property test of ``ModelRunner``.

Random mixes of valid requests and requests with random JSON values in random cells (nested lists and
objects, huge integers, NaN and the infinities, strings, booleans), in the records, columnar and rows forms,
are sent together so that they share one batch, then each alone. Every request's answer in the batch must be
exactly its answer alone; a valid request is answered as the model answers it directly; a malformed one gets
a 4xx ShipmlError naming its own row, column and rule - never anything else.

Two real models (tests/unit/fuzz_models.py): LightGBM on int/float columns (one nullable: the dense path) and a
custom Python model on int, float, string (categories), bool and datetime columns (the general path).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shipml
from shipml.batching.batcher import BatchStats
from shipml.errors import InferenceError, SchemaError, ShipmlError
from shipml.package.loaded import LoadedModel
from shipml.package.validation import InputPolicy
from shipml.protocol import json_body
from shipml.protocol.dataplane import ModelRunner, Outcome
from tests.json_strategies import Case, cases, json_values
from tests.unit import fuzz_models
from tests.unit.fuzz_models import DENSE, GENERAL, PLANS, dense_row, general_row

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                         HealthCheck.too_slow])


@pytest.fixture(scope="module")
def dense_model(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return fuzz_models.dense_model(tmp_path_factory.mktemp("fuzz-dense"))


@pytest.fixture(scope="module")
def general_model(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return fuzz_models.general_model(tmp_path_factory.mktemp("fuzz-general"))


# -- the property ---------------------------------------------------------------------------------------------

async def answers(model: LoadedModel, bodies: Sequence[Any]) -> tuple[list[Any], list[Any], list[BatchStats]]:
    """Each body's answer when all are sent together (one batch), then when each is sent alone."""
    stats: list[BatchStats] = []
    runner = ModelRunner(model, policy=InputPolicy(), max_rows=100, max_batch_size=1000, max_latency_ms=2,
                         max_queue=1000, on_batch=stats.append)
    try:
        together = await asyncio.wait_for(
            asyncio.gather(*(runner.infer(b) for b in bodies), return_exceptions=True), 60)
        batches = list(stats)
        alone = [await asyncio.wait_for(_one(runner, b), 60) for b in bodies]
    finally:
        await runner.batcher.stop()
    return together, alone, batches


async def _one(runner: ModelRunner, body: Any) -> Any:
    try:
        return await runner.infer(body)
    except Exception as exc:
        return exc


def assert_fair(model: LoadedModel, requests: Sequence[Case], together: list[Any], alone: list[Any]) -> None:
    for case, got, own in zip(requests, together, alone, strict=True):
        for answer in (got, own):
            assert isinstance(answer, Outcome) or (isinstance(answer, ShipmlError) and 400 <= answer.status < 500), (
                f"{case.form} request {case.rows} got {answer!r}")
        if isinstance(own, Outcome):
            assert isinstance(got, Outcome), f"{case.rows}: alone {own!r}, in a batch {got!r}"
            np.testing.assert_array_equal(got.predictions, own.predictions)
            if own.probabilities is None:
                assert got.probabilities is None
            else:
                np.testing.assert_array_equal(got.probabilities, own.probabilities)
            assert got.warnings == own.warnings
        else:
            assert type(got) is type(own) and str(got) == str(own), f"{case.rows}: alone {own!r}, batch {got!r}"
            if isinstance(own, SchemaError):
                assert isinstance(got, SchemaError) and got.problems == own.problems
        if case.clean:
            assert isinstance(own, Outcome), f"valid {case.form} request {case.rows} refused: {own!r}"
            np.testing.assert_array_equal(own.predictions, model.predict(pd.DataFrame(case.rows)))
        for row, column in case.nonscalar_cells():
            assert isinstance(own, SchemaError), f"{case.injected} accepted"
            assert any(p.row == row and p.column == column and p.rule == "type" for p in own.problems), (
                f"{case.injected}: {own.problems}")


def check_property(model: LoadedModel, requests: list[Case]) -> None:
    together, alone, batches = asyncio.run(answers(model, [c.body() for c in requests]))
    assert sum(s.requests for s in batches) == len(requests) and len([s for s in batches if s.requests]) == 1
    assert_fair(model, requests, together, alone)


@FUZZ
@given(requests=st.lists(cases(dense_row, DENSE, forms=("records", "columnar", "rows")), min_size=2, max_size=8))
def test_a_malformed_request_never_changes_the_others_dense(dense_model: LoadedModel, requests: list[Case]) -> None:
    check_property(dense_model, requests)


@FUZZ
@given(requests=st.lists(cases(general_row, GENERAL, forms=("records", "columnar", "rows")), min_size=2,
                         max_size=8))
def test_a_malformed_request_never_changes_the_others_general(general_model: LoadedModel,
                                                              requests: list[Case]) -> None:
    check_property(general_model, requests)


@FUZZ
@given(garbage=st.lists(json_values, min_size=1, max_size=4), valid=st.lists(cases(general_row, GENERAL, bad_chance=0),
                                                                            min_size=1, max_size=4))
def test_any_json_value_as_a_whole_input_is_answered_alone(general_model: LoadedModel, garbage: list[Any],
                                                          valid: list[Case]) -> None:
    """Whatever a client sends as its "instances"/"inputs" (a scalar, nested lists, objects of anything), that
    request gets an outcome or its own 4xx, and the valid requests sent with it are predicted as usual."""
    together, _, _ = asyncio.run(answers(general_model, [*garbage, *(c.body() for c in valid)]))
    for answer in together[:len(garbage)]:
        assert isinstance(answer, Outcome) or (isinstance(answer, ShipmlError) and 400 <= answer.status < 500), (
            answer)
    for case, answer in zip(valid, together[len(garbage):], strict=True):
        assert isinstance(answer, Outcome), answer
        np.testing.assert_array_equal(answer.predictions, general_model.predict(pd.DataFrame(case.rows)))


@pytest.mark.parametrize("value", [[1, 2], [], [1], {}, {"a": [1]}, [[1, 2]], 10**400, "x", None])
@pytest.mark.parametrize("form", ["records", "columnar", "rows"])
def test_forty_valid_requests_and_one_with_a_bad_cell(dense_model: LoadedModel, value: Any, form: str) -> None:
    """The issue's own reproduction, in-process: 40 valid single-row requests and one with ``value`` in a cell."""
    valid = [Case([{"a": 0.1 + i / 50, "b": 0.5, "n": i % 10, "z": None}], form, DENSE) for i in range(40)]
    bad = Case([{"a": value, "b": 0.5, "n": 3, "z": 0.2}], form, DENSE, {(0, "a"): value})
    requests = [*valid[:20], bad, *valid[20:]]
    check_property(dense_model, requests)
    together, _, _ = asyncio.run(answers(dense_model, [c.body() for c in requests]))
    assert isinstance(together[20], SchemaError)


@pytest.mark.parametrize("value", [float(2**63), 2**63, 1e19, -1e19, -(2**63) - 4096])
def test_an_integer_the_columns_dtype_cannot_hold_is_a_type_problem(dense_model: LoadedModel,
                                                                     general_model: LoadedModel, value: Any) -> None:
    """A whole number beyond int64 would wrap around when cast for a model that takes a frame (2**63 becomes
    -2**63): it is the row's "type" problem, on the dense path and on the general one."""
    dense = [{"a": 0.5, "b": 0.5, "n": value, "z": 0.1}]
    general = [{"n": value, "x": 0.1, "plan": "pro", "flag": True, "when": "2020-03-01"}]
    for model, body in ((dense_model, dense), (general_model, general)):
        together, alone, _ = asyncio.run(answers(model, [body, body]))
        for answer in (*together, *alone):
            assert isinstance(answer, SchemaError), answer
            assert [(p.row, p.column, p.rule) for p in answer.problems] == [(0, "n", "type")]


# -- defence in depth: when the checks themselves fail, or the model does ---------------------------------------

class Unhashable:
    """An in-process value (no JSON body can hold one) on which the checks of a float column raise."""

    def __hash__(self) -> int:
        raise RuntimeError("this value cannot be hashed")

    def __eq__(self, other: object) -> bool:
        return False


def test_a_request_the_checks_cannot_handle_fails_alone_with_a_422_naming_its_column(
        dense_model: LoadedModel, caplog: pytest.LogCaptureFixture) -> None:
    valid = [Case([{"a": 0.1 + i / 20, "b": 0.5, "n": i % 10, "z": 0.3}], "columnar", DENSE) for i in range(6)]
    strange = {"a": [0.5], "b": [0.5], "n": [Unhashable()], "z": [0.1]}
    bodies = [*(c.body() for c in valid[:3]), strange, *(c.body() for c in valid[3:])]
    with caplog.at_level("WARNING", logger="shipml.dataplane"):
        together, alone, batches = asyncio.run(answers(dense_model, bodies))
    assert [s.requests for s in batches if s.requests] == [7]
    for got in (together[3], alone[3]):
        assert isinstance(got, SchemaError) and got.status == 422
        assert [(p.row, p.column, p.rule) for p in got.problems] == [(None, "n", "type")]
    for case, got in zip(valid, [*together[:3], *together[4:]], strict=True):
        assert isinstance(got, Outcome)
        np.testing.assert_array_equal(got.predictions, dense_model.predict(pd.DataFrame(case.rows)))
    assert "RuntimeError: this value cannot be hashed" in caplog.text


@pytest.fixture(scope="module")
def strict_encoder_model(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    """A pipeline whose OneHotEncoder raises on a category it never saw (handle_unknown="error")."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(3)
    X = pd.DataFrame({"x": rng.normal(size=200), "plan": rng.choice(PLANS, 200)})
    y = ((X["x"] > 0) ^ (X["plan"] == "pro")).astype(int)
    model = Pipeline([("prep", ColumnTransformer([("num", StandardScaler(), ["x"]),
                                                  ("cat", OneHotEncoder(handle_unknown="error"), ["plan"])])),
                      ("clf", LogisticRegression(max_iter=200))]).fit(X, y)
    root = tmp_path_factory.mktemp("strict")
    shipml.save_model(model, "strict", sample=X, target=y, registry=root, golden_rows=20)
    return shipml.load_model("strict", registry=root)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(requests=st.lists(st.lists(st.fixed_dictionaries({"x": st.floats(-2, 2),
                                                         "plan": st.sampled_from([*PLANS, "gold", "free"])}),
                                  min_size=1, max_size=3), min_size=2, max_size=12))
def test_a_request_the_model_cannot_predict_fails_alone(strict_encoder_model: LoadedModel,
                                                        requests: list[list[dict[str, Any]]]) -> None:
    """Under the `warn` policy an unseen category reaches the model, which raises: only the requests holding one
    fail (500, "internal error" for the client); every other one gets the answer it gets alone."""
    warn = InputPolicy(unseen_category="warn")

    async def go() -> tuple[list[Any], list[Any], list[BatchStats]]:
        stats: list[BatchStats] = []
        runner = ModelRunner(strict_encoder_model, policy=warn, max_rows=100, max_batch_size=1000,
                             max_latency_ms=2, max_queue=1000, on_batch=stats.append)
        try:
            together = await asyncio.gather(*(runner.infer(r) for r in requests), return_exceptions=True)
            batches = list(stats)
            return together, [await _one(runner, r) for r in requests], batches
        finally:
            await runner.batcher.stop()

    together, alone, batches = asyncio.run(go())
    assert [s.requests for s in batches if s.requests] == [len(requests)]
    for rows, got, own in zip(requests, together, alone, strict=True):
        unseen = any(r["plan"] not in PLANS for r in rows)
        if unseen:
            for answer in (got, own):
                assert isinstance(answer, InferenceError) and answer.public_message == "internal error"
                assert "strict:1.0.0 failed to predict: ValueError" in str(answer)
                assert isinstance(answer.__cause__, ValueError)
        else:
            assert isinstance(got, Outcome) and isinstance(own, Outcome)
            np.testing.assert_array_equal(got.predictions, own.predictions)
            assert got.probabilities is not None and own.probabilities is not None
            np.testing.assert_allclose(got.probabilities, own.probabilities, rtol=1e-12, atol=1e-15)


# -- NaN and the infinities in JSON (issue #12, item 8) -----------------------------------------------------------

def nulled(value: Any) -> Any:
    """``value`` with every NaN replaced by null."""
    if isinstance(value, list):
        return [nulled(v) for v in value]
    if isinstance(value, dict):
        return {k: nulled(v) for k, v in value.items()}
    return None if isinstance(value, float) and math.isnan(value) else value


def verdict(answer: Any) -> Any:
    if isinstance(answer, Outcome):
        return ("outcome", answer.predictions.tolist(), [(p.row, p.column, p.rule) for p in answer.warnings])
    assert isinstance(answer, SchemaError), answer
    return ("refused", [(p.row, p.column, p.rule) for p in answer.problems])


any_float = st.floats(allow_nan=True, allow_infinity=True)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.fixed_dictionaries({"a": st.one_of(st.floats(0, 1), any_float), "b": st.floats(0, 1),
                                            "n": st.one_of(st.integers(0, 9), any_float),
                                            "z": st.one_of(st.floats(0, 1), any_float)}), min_size=1, max_size=4),
       form=st.sampled_from(["records", "columnar"]))
def test_nan_in_a_json_body_is_null_and_an_infinity_is_a_float(dense_model: LoadedModel, rows: list[dict[str, Any]],
                                                               form: str) -> None:
    body = json.dumps(Case(rows, form, DENSE).body()).encode()  # NaN, Infinity, -Infinity as Python writes them
    parsed = json_body.loads(body)

    async def go() -> tuple[Any, Any]:
        runner = ModelRunner(dense_model, policy=InputPolicy(), max_rows=100, max_batch_size=1000,
                             max_latency_ms=2, max_queue=100)
        try:
            return await _one(runner, parsed), await _one(runner, nulled(parsed))
        finally:
            await runner.batcher.stop()

    with_nan, with_null = asyncio.run(go())
    assert verdict(with_nan) == verdict(with_null)  # NaN means exactly what null means
    refused = not isinstance(with_nan, Outcome)
    problems = with_nan.problems if refused else with_nan.warnings  # a 422 lists errors; an answer, warnings
    found = {(p.row, p.column, p.rule) for p in problems}
    for i, row in enumerate(rows):
        for column, rule in (("a", "out_of_range"), ("z", "out_of_range"), ("n", "type")):
            value = row[column]
            if isinstance(value, float) and math.isinf(value) and (rule == "type" or not refused):
                assert (i, column, rule) in found, (row, problems)
            if isinstance(value, float) and math.isnan(value) and column != "z":
                assert (i, column, "null") in found, (row, problems)
