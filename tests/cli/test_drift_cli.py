"""`shipml drift REF DATA` on real files and a real model: the shifted feature comes first, as a table or JSON,
with the prediction's drift on request, and one clear error line for what cannot be compared."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shipml.cli import cli
from tests.unit.drift_models import FEATURES, classifier, frame


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("drift-cli")
    classifier(root, rows=2000)
    return root


def run(root: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--registry", str(root / "registry"), "drift", *args], catch_exceptions=False)


def write(rows: pd.DataFrame, path: Path) -> str:
    if path.suffix == ".csv":
        rows.to_csv(path, index=False)
    else:
        rows.to_parquet(path, index=False, row_group_size=400)
    return str(path)


def shifted(kind: str, n: int = 1200, seed: int = 31) -> pd.DataFrame:
    rows = frame(n, seed=seed)
    if kind == "income":
        rows["income"] = rows["income"] * 1.5
    elif kind == "state":
        rows.loc[rows.index[: n // 2], "state"] = "QC"
    elif kind == "when":
        rows["when"] = rows["when"] + pd.Timedelta(days=900)
    return rows.assign(extra=np.arange(n))  # a column the model does not take: ignored


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
@pytest.mark.parametrize("feature", ["income", "state", "when"])
def test_the_shifted_feature_is_named_first(root: Path, tmp_path: Path, suffix: str, feature: str) -> None:
    data = write(shifted(feature), tmp_path / f"batch{suffix}")
    result = run(root, "churn", data)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"churn:1.0.0: 1200 row(s) of {data} against 2000 training row(s)"
    assert lines[1].split()[:3] == ["feature", "kind", "psi"]
    ranked = [line.split()[0] for line in lines[3:3 + len(FEATURES)]]
    assert ranked[0] == feature and sorted(ranked) == sorted(FEATURES)
    assert float(lines[3].split()[2]) > 0.25
    assert all(float(line.split()[2]) < 0.1 for line in lines[4:3 + len(FEATURES)])


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_json(root: Path, tmp_path: Path, suffix: str) -> None:
    data = write(shifted("state"), tmp_path / f"batch{suffix}")
    result = run(root, "churn", data, "--json")
    assert result.exit_code == 0, result.output
    report = orjson.loads(result.stdout)
    assert report["rows"] == 1200 and report["enough"] and report["data"] == data
    first = report["features"][0]
    assert first["name"] == "state" and first["unseen_share"] == pytest.approx(0.5) and first["ks"] is None
    assert [f["psi"] for f in report["features"]] == sorted((f["psi"] for f in report["features"]), reverse=True)
    assert report["prediction"]["rows"] == 0  # no --predict: the model did not run
    top = orjson.loads(run(root, "churn", data, "--json", "--top", "2").stdout)
    assert [f["name"] for f in top["features"]] == [f["name"] for f in report["features"][:2]]


def test_predict_compares_the_predictions_too(root: Path, tmp_path: Path) -> None:
    calm = orjson.loads(run(root, "churn", write(frame(1000, seed=41), tmp_path / "calm.parquet"), "--predict",
                            "--json").stdout)
    moved = orjson.loads(run(root, "churn", write(shifted("income"), tmp_path / "moved.csv"), "--predict",
                             "--json").stdout)
    for report, rows in ((calm, 1000), (moved, 1200)):
        prediction = report["prediction"]
        assert prediction["kind"] == "categorical" and prediction["rows"] == rows
        assert sum(prediction["shares"].values()) == pytest.approx(1.0)
        assert set(prediction["reference_shares"]) == {"0", "1"}
    assert calm["prediction"]["psi"] < 0.1
    assert moved["prediction"]["psi"] > 0.25  # income decides the label
    text = run(root, "churn", write(shifted("income"), tmp_path / "moved.csv"), "--predict", "--top", "1")
    assert text.exit_code == 0
    assert text.stdout.splitlines()[-1].startswith("prediction: psi ")
    assert "... 4 more feature(s)" in text.stdout


def one_error(result: Result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_a_missing_column(root: Path, tmp_path: Path) -> None:
    for suffix in (".csv", ".parquet"):
        data = write(frame(20, seed=1).drop(columns=["state", "when"]), tmp_path / f"part{suffix}")
        assert one_error(run(root, "churn", data)) == (f"error: part{suffix} has no column 'state', 'when' (the model"
                                                       " takes age, income, state, member, when)")


@pytest.mark.parametrize(("name", "content", "says"), [
    ("broken.parquet", b"PAR1 not really parquet", "cannot read broken.parquet"),
    ("cut.parquet", None, "cannot read cut.parquet"),
    ("nothing.csv", "", "no such input file or directory"),
    ("table.xlsx", b"PK\x03\x04", "cannot tell the format of table.xlsx"),
])
def test_an_unreadable_file(root: Path, tmp_path: Path, name: str, content: bytes | None, says: str) -> None:
    path = tmp_path / name
    if content is None:  # a Parquet file cut short, as a copy interrupted half-way leaves it
        whole = Path(write(frame(200, seed=2), tmp_path / "whole.parquet")).read_bytes()
        path.write_bytes(whole[: len(whole) // 2])
    elif isinstance(content, bytes):
        path.write_bytes(content)
    assert says in one_error(run(root, "churn", str(path)))


def test_a_model_without_profile(root: Path, tmp_path: Path) -> None:
    package = tmp_path / "old-package"
    shutil.copytree(root / "registry" / "models" / "churn" / "versions" / "1.0.0", package)
    (package / "profile.json").unlink()
    data = write(frame(20, seed=3), tmp_path / "rows.csv")
    line = one_error(run(root, str(package), data))
    assert line.startswith("error: churn:1.0.0 has no reference profile of its training data")
    assert "profile.json" in one_error(run(root, str(package), data, "--predict"))
    assert "no model named 'nope'" in one_error(run(root, "nope", data))


CELL = st.one_of(st.none(), st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True),
                 st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=6),
                 st.sampled_from(["CA", "OR", "2024-05-01", "true", "1e400"]))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.fixed_dictionaries({name: CELL for name in FEATURES}), min_size=1, max_size=15),
       st.sampled_from([".csv", ".parquet"]))
def test_any_cells_are_compared_or_skipped(root: Path, tmp_path: Path, records: list[dict[str, Any]],
                                           suffix: str) -> None:
    rows = pd.DataFrame(records, columns=FEATURES)
    if suffix == ".parquet":
        rows = rows.map(lambda v: None if v is None else str(v))  # one type per Parquet column: text
    data = write(rows, tmp_path / f"cells{suffix}")
    result = run(root, "churn", data, "--json", "--predict")
    assert result.exit_code == 0, result.output
    report = orjson.loads(result.stdout)
    assert report["rows"] + report["unparsed_rows"] >= 1
    assert report["rows"] <= len(records) if suffix == ".csv" else report["rows"] == len(records)
    assert report["prediction"]["rows"] <= report["rows"]
