"""Counts of served rows: whatever the signature check lets through is counted without an error, counts add up,
and their bytes travel between processes intact or are refused."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shipml.monitoring.drift import Counts, drift
from shipml.monitoring.reference import Reference
from shipml.package.loaded import LoadedModel
from shipml.package.validation import InputPolicy, check
from tests.unit.drift_models import STATES, classifier, regressor

PERMISSIVE = InputPolicy(out_of_range="warn", unseen_category="warn", extra_columns="ignore", max_problems=5)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[LoadedModel, LoadedModel]:
    root = tmp_path_factory.mktemp("counts")
    return classifier(root, rows=600), regressor(root, rows=300)


@pytest.fixture(scope="module")
def reference(models: tuple[LoadedModel, LoadedModel]) -> Reference:
    return Reference.from_model(models[0])


ANY_NUMBER = st.one_of(st.integers(-10**30, 10**30), st.floats(allow_nan=True, allow_infinity=True),
                       st.floats(-1e308, 1e308), st.none(), st.booleans())
ODD = st.one_of(st.text(max_size=5), st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=2),
                                                                                           st.integers(),
                                                                                           max_size=1))
RECORD = st.fixed_dictionaries({
    "age": st.one_of(ANY_NUMBER, ODD),
    "income": st.one_of(ANY_NUMBER, ODD),
    "state": st.one_of(st.sampled_from(STATES), st.text(max_size=4), st.none(), st.integers(), ODD),
    "member": st.one_of(st.booleans(), st.none(), st.sampled_from(["true", "False", "x"]), st.integers(0, 2)),
    "when": st.one_of(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)).map(str),
                      st.datetimes(min_value=datetime(1700, 1, 1), max_value=datetime(2250, 1, 1)), st.none(),
                      st.sampled_from(["2024-03-01", "not a date", "9999-12-31T00:00:00"]), st.integers()),
})
RECORDS = st.lists(RECORD, max_size=25)


def checked_columns(reference: Reference, records: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    return dict(check(records, reference.signature, PERMISSIVE).table.columns)


def counted(reference: Reference, *batches: list[dict[str, Any]], predictions: bool = True) -> Counts:
    counts = Counts(reference)
    for records in batches:
        columns = checked_columns(reference, records)
        labels = np.array([len(repr(r)) % 2 for r in records], dtype=np.int64)  # per row, whatever the batch
        counts.add(columns, labels if predictions else None)
    return counts


@SETTINGS
@given(RECORDS)
def test_anything_the_check_lets_through_is_counted(reference: Reference, records: list[dict[str, Any]]) -> None:
    counts = counted(reference, records)
    assert counts.rows == len(records) == counts.prediction_rows
    for i in range(len(reference.features)):
        assert int(counts.feature_counts(i).sum()) == len(records)
    report = drift(reference, counts)
    assert len(report.features) == len(reference.features)


@SETTINGS
@given(RECORDS, RECORDS)
def test_counts_add_up(reference: Reference, a: list[dict[str, Any]], b: list[dict[str, Any]]) -> None:
    merged = counted(reference, a)
    merged.merge(counted(reference, b))
    assert merged == counted(reference, a + b) == counted(reference, a, b)


@SETTINGS
@given(RECORDS)
def test_bytes_round_trip(reference: Reference, records: list[dict[str, Any]]) -> None:
    counts = counted(reference, records)
    assert Counts.from_bytes(reference, counts.to_bytes()) == counts


@SETTINGS
@given(st.binary(max_size=700))
def test_random_bytes_are_refused(reference: Reference, data: bytes) -> None:
    with pytest.raises(ValueError, match="drift counts"):
        Counts.from_bytes(reference, data)


@SETTINGS
@given(RECORDS.filter(bool), st.data())
def test_altered_or_cut_bytes_are_refused(reference: Reference, records: list[dict[str, Any]],
                                          data: st.DataObject) -> None:
    blob = bytearray(counted(reference, records).to_bytes())
    if data.draw(st.booleans()):
        at = data.draw(st.integers(0, len(blob) - 1))
        blob[at] ^= data.draw(st.integers(1, 255))
    else:
        blob = blob[: data.draw(st.integers(0, len(blob) - 1))]
    with pytest.raises(ValueError, match="drift counts"):
        Counts.from_bytes(reference, bytes(blob))


def test_counts_of_another_model_are_refused(models: tuple[LoadedModel, LoadedModel],
                                             reference: Reference) -> None:
    other = Reference.from_model(models[1])
    blob = Counts(other).to_bytes()
    with pytest.raises(ValueError, match="another reference"):
        Counts.from_bytes(reference, blob)
    with pytest.raises(ValueError, match="another reference"):
        Counts(reference).merge(Counts(other))


def test_impossible_counts_with_a_valid_checksum_are_refused(reference: Reference) -> None:
    import struct
    import zlib

    blob = counted(reference, [{"age": 30, "income": 1.0, "state": "CA", "member": True,
                                "when": "2024-02-02"}]).to_bytes()
    body = bytearray(blob[:-4])
    struct.pack_into("<Q", body, 52, 5)  # rows (after magic, format, fingerprint, slots): 5; each feature counted 1
    forged = bytes(body) + struct.pack("<I", zlib.crc32(bytes(body)))
    with pytest.raises(ValueError, match="do not add up"):
        Counts.from_bytes(reference, forged)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf, 1e308, -1e308, 0.0])
def test_extreme_columns(reference: Reference, value: float) -> None:
    n = 7
    columns = {"age": np.full(n, value), "income": np.full(n, value), "state": np.full(n, None, dtype=object),
               "member": np.zeros(n, dtype=bool), "when": np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]")}
    counts = Counts(reference)
    counts.add(columns, np.full(n, "2"))  # a class the model does not have: unseen
    counts.add({k: v[:0] for k, v in columns.items()}, np.empty(0))
    assert counts.rows == n
    age = reference.feature("age")
    slot = age.null_slot if np.isnan(value) else (0 if value < 18 else age.size - 2)
    assert counts.feature_counts(0)[slot] == n
    assert counts.prediction_counts()[reference.prediction.unseen_slot] == n  # type: ignore[index,union-attr]


def test_columns_of_the_wrong_length_or_missing_are_a_mistake(reference: Reference) -> None:
    columns = checked_columns(reference, [{"age": 1, "income": 2.0, "state": "CA", "member": True,
                                           "when": "2024-01-01"}])
    with pytest.raises(ValueError, match="predictions"):
        Counts(reference).add(columns, np.zeros(3))
    with pytest.raises(ValueError, match="'state'"):
        Counts(reference).add({k: v for k, v in columns.items() if k != "state"}, None)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(10, 90)), max_size=40),
       st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=30))
def test_all_numeric_features_at_once_count_as_each_alone(tmp_path_factory: pytest.TempPathFactory,
                                                          values: list[float], training: list[float]) -> None:
    """The whole-matrix count of numeric features equals np.histogram semantics, feature by feature."""
    from shipml.package.profile import numeric_profile
    from shipml.package.signature import ColumnSpec, OutputSpec, Signature

    spec = ColumnSpec(name="x", dtype="float", pandas_dtype="float64", nullable=True)
    signature = Signature(inputs=[spec], input_kind="dataframe", outputs=OutputSpec(task="regression"))
    reference = Reference.build("m", "1.0.0", signature,
                                {"features": {"x": numeric_profile(np.array(training))}})
    x = np.array(values, dtype=np.float64)
    counts = Counts(reference)
    counts.add({"x": x})
    feature = reference.features[0]
    assert np.array_equal(counts.feature_counts(0), feature.count(x))
    edges = feature.edges
    finite = x[~np.isnan(x)]
    inside, _ = np.histogram(finite[(finite >= edges[0]) & (finite <= edges[-1])], bins=edges)
    expected = [np.sum(finite < edges[0]), *inside, np.sum(finite > edges[-1]), np.sum(np.isnan(x))]
    assert counts.feature_counts(0).tolist() == [int(v) for v in expected]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(-5, 5)),
                         min_size=3, max_size=3), max_size=30),
       st.permutations([0, 1, 2]))
def test_a_matrix_counts_as_its_columns(tmp_path_factory: pytest.TempPathFactory, rows: list[list[float]],
                                        order: list[int]) -> None:
    """The served matrix, counted as it is (columns in any order, one more than the reference has), gives the
    counts of the same values given column by column."""
    from shipml.package.profile import numeric_profile
    from shipml.package.signature import ColumnSpec, OutputSpec, Signature

    names = ["a", "b"]
    specs = [ColumnSpec(name=n, dtype="float", pandas_dtype="float64", nullable=True) for n in names]
    signature = Signature(inputs=specs, input_kind="dataframe", outputs=OutputSpec(task="regression"))
    training = np.random.default_rng(0).normal(size=200)
    reference = Reference.build("m", "1.0.0", signature, {"features": {n: numeric_profile(training * (i + 1))
                                                                        for i, n in enumerate(names)}})
    matrix = np.array(rows, dtype=np.float64).reshape(len(rows), 3)[:, order]
    labels = [["a", "b", "extra"][j] for j in order]
    columns = {name: np.ascontiguousarray(matrix[:, j]) for j, name in enumerate(labels)}
    alone, together = Counts(reference), Counts(reference)
    alone.add(columns)
    together.add(columns, matrix=matrix, names=labels)
    assert np.array_equal(alone.values, together.values) and alone.rows == together.rows == len(rows)


def test_a_package_directory_gives_the_same_reference(models: tuple[LoadedModel, LoadedModel],
                                                      reference: Reference) -> None:
    import orjson

    from shipml.package.manifest import PROFILE

    model = models[0]
    again = Reference.from_manifest(model.manifest, orjson.loads((Path(model.path) / PROFILE).read_bytes()))
    assert again.fingerprint == reference.fingerprint


def test_every_single_byte_change_is_refused(models: tuple[LoadedModel, LoadedModel]) -> None:
    """Header, counts, the predictions' sum: no byte of a blob can change unnoticed (regressor: a sum is kept)."""
    reference = Reference.from_model(models[1])
    counts = Counts(reference)
    rng = np.random.default_rng(5)
    counts.add({"x1": rng.normal(size=40), "x2": rng.uniform(0, 10, 40)}, rng.normal(5, 2, 40))
    blob = counts.to_bytes()
    assert Counts.from_bytes(reference, blob) == counts
    for at in range(len(blob)):
        changed = bytearray(blob)
        changed[at] ^= 0x01
        with pytest.raises(ValueError, match="drift counts"):
            Counts.from_bytes(reference, bytes(changed))
