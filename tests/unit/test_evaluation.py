from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression

import shipml
from shipml.errors import GateError, NotFoundError, SchemaError
from shipml.evaluation import (
    HIGHER_IS_BETTER,
    PromotionRefused,
    Requirement,
    compute_metrics,
    evaluate,
    promote,
    stored_evaluations,
)
from shipml.evaluation.data import read_labelled, read_table
from shipml.evaluation.metrics import encode_labels
from tests.cli.gate_models import GOOD, TARGET, WEAK, churn_frame


@pytest.fixture
def reg(workdir: Path) -> shipml.Registry:
    return shipml.Registry(workdir / "registry")


# -- metrics ------------------------------------------------------------------------------------------------------

def test_binary_metrics_use_the_last_class_as_positive(reg: shipml.Registry) -> None:
    model = reg.load(f"churn:{GOOD}")
    X, y = churn_frame(200, seed=1)
    metrics = compute_metrics(model, X, y)
    assert set(metrics) == {"accuracy", "precision", "recall", "f1", "roc_auc", "log_loss"}
    assert metrics["accuracy"] > 0.9
    assert metrics["roc_auc"] > 0.95
    # Flipping which label is "yes" flips precision and recall's meaning: compute them by hand for "yes".
    predicted = model.predict(X)
    tp = np.sum((predicted == "yes") & (y == "yes"))
    assert metrics["precision"] == pytest.approx(tp / np.sum(predicted == "yes"))
    assert metrics["recall"] == pytest.approx(tp / np.sum(y == "yes"))


def test_multiclass_metrics_are_macro_averaged(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    X = pd.DataFrame(rng.normal(size=(300, 3)), columns=["a", "b", "c"])
    labels = np.array([0, 1, 2])[(X["a"] > 0).astype(int) + (X["b"] > 0.5).astype(int)]
    model = lgb.LGBMClassifier(n_estimators=15, num_leaves=7, verbose=-1).fit(X, labels)
    shipml.save_model(model, "three", sample=X, registry=tmp_path / "r")
    loaded = shipml.load_model("three", registry=tmp_path / "r")
    # Labels as they come out of a CSV file (text) still match the integer classes.
    metrics = compute_metrics(loaded, X, labels.astype(str))
    from sklearn.metrics import f1_score, roc_auc_score

    assert metrics["f1"] == pytest.approx(f1_score(labels, model.predict(X), average="macro"))
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(labels, model.predict_proba(X), multi_class="ovr"))
    assert metrics["log_loss"] > 0


def test_regression_metrics(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    X = pd.DataFrame({"x": rng.normal(size=100)})
    y = 3 * X["x"].to_numpy() + rng.normal(scale=0.1, size=100)
    model = LinearRegression().fit(X, y)
    shipml.save_model(model, "lin", sample=X, registry=tmp_path / "r")
    metrics = compute_metrics(shipml.load_model("lin", registry=tmp_path / "r"), X, y)
    assert set(metrics) == {"rmse", "mae", "r2"}
    assert metrics["rmse"] < 0.2
    assert metrics["r2"] > 0.99
    assert not HIGHER_IS_BETTER["rmse"]
    assert HIGHER_IS_BETTER["r2"]


def test_single_class_labels_skip_roc_auc(reg: shipml.Registry) -> None:
    model = reg.load(f"churn:{GOOD}")
    X, y = churn_frame(200, seed=1)
    keep = y == "yes"
    metrics = compute_metrics(model, X[keep], y[keep])
    assert "roc_auc" not in metrics
    assert "log_loss" in metrics


def test_labels_are_matched_by_value() -> None:
    assert encode_labels(["1", 0.0, 2, "2.0"], [0, 1, 2], what="y").tolist() == [1, 0, 2, 2]
    assert encode_labels(["True", "false", True], [False, True], what="y").tolist() == [1, 0, 1]
    assert encode_labels([7, "b"], ["7", "b"], what="y").tolist() == [0, 1]


def test_unknown_labels_are_named(reg: shipml.Registry) -> None:
    model = reg.load(f"churn:{GOOD}")
    X, y = churn_frame(20, seed=1)
    with pytest.raises(SchemaError, match="labels the model does not know: maybe"):
        compute_metrics(model, X, np.where(y == "yes", "maybe", y))


# -- requirements -------------------------------------------------------------------------------------------------

def test_requirement_parse() -> None:
    req = Requirement.parse(" accuracy >= 0.90 ")
    assert (req.metric, req.op, req.threshold, str(req)) == ("accuracy", ">=", 0.9, "accuracy>=0.90")
    assert req.holds(0.9)
    assert not req.holds(0.89)
    assert Requirement.parse("rmse<1e3").holds(999)
    assert Requirement.parse("f1==1").holds(1.0)


@pytest.mark.parametrize("text", ["accuracy", "accuracy=>0.9", "accuracy>=high", "accuracy>=nan", ">=0.9"])
def test_requirement_parse_refuses_nonsense(text: str) -> None:
    with pytest.raises(GateError, match="requirement"):
        Requirement.parse(text)


def test_requirement_unknown_metric_lists_the_known_ones() -> None:
    with pytest.raises(GateError, match=r"unknown metric 'acc'.*accuracy, precision, recall"):
        Requirement.parse("acc>0.5")


# -- reading data -------------------------------------------------------------------------------------------------

def test_numeric_looking_string_columns_stay_strings(tmp_path: Path) -> None:
    sample = pd.DataFrame({"zip": ["02134", "10001", "94105"] * 10, "n": list(range(30))})
    y = np.array([0, 1, 1] * 10)
    lgb_model = lgb.LGBMClassifier(n_estimators=3, min_child_samples=2, verbose=-1).fit(
        sample.assign(zip=sample["zip"].astype("category")), y)
    shipml.save_model(lgb_model, "zips", sample=sample.assign(zip=sample["zip"].astype("category")),
                      registry=tmp_path / "r")
    model = shipml.load_model("zips", registry=tmp_path / "r")
    sample.assign(label=y).to_csv(tmp_path / "z.csv", index=False)
    data = read_labelled(tmp_path / "z.csv", "label", [model.signature])
    assert data.features["zip"].tolist()[:3] == ["02134", "10001", "94105"]
    assert model.validate(data.features).ok
    assert read_table(tmp_path / "z.csv")["zip"].tolist()[0] == 2134  # what pandas alone would do


def test_missing_target_column_names_file_and_column(workdir: Path, reg: shipml.Registry) -> None:
    with pytest.raises(SchemaError, match=r"no target column 'label' in the columns of valid\.csv: age, income"):
        evaluate(reg, "churn", workdir / "valid.csv", "label")


def test_parquet_and_json_lines(workdir: Path, reg: shipml.Registry) -> None:
    frame = pd.read_csv(workdir / "valid.csv")
    frame.to_parquet(workdir / "valid.parquet")
    frame.to_json(workdir / "valid.jsonl", orient="records", lines=True)
    from_csv = evaluate(reg, f"churn:{GOOD}", workdir / "valid.csv", TARGET, record=False)
    for name in ("valid.parquet", "valid.jsonl"):
        other = evaluate(reg, f"churn:{GOOD}", workdir / name, TARGET, record=False)
        assert other.metrics == pytest.approx(from_csv.metrics)


def test_unknown_file_format_and_missing_file(workdir: Path, reg: shipml.Registry) -> None:
    (workdir / "data.xlsx").write_bytes(b"")
    with pytest.raises(SchemaError, match=r"cannot tell the format of 'data\.xlsx'"):
        evaluate(reg, "churn", workdir / "data.xlsx", TARGET)
    with pytest.raises(NotFoundError, match="no such data file"):
        evaluate(reg, "churn", workdir / "nope.csv", TARGET)


# -- evaluate -----------------------------------------------------------------------------------------------------

def test_evaluate_stores_the_record(workdir: Path, reg: shipml.Registry) -> None:
    evaluation = evaluate(reg, f"churn:{GOOD}", workdir / "valid.csv", TARGET)
    assert evaluation.rows == 200
    assert evaluation.rejected == 0
    assert evaluation.metrics["accuracy"] > 0.9
    (record,) = reg.evaluations(reg.get(f"churn:{GOOD}"))
    assert record["version"] == GOOD
    assert record["metrics"] == evaluation.metrics
    assert record["data"] == "valid.csv"
    assert record["fingerprint"].startswith("sha256:")
    assert record["rows"] == 200
    assert {"at", "by", "rejected", "target"} <= set(record)
    assert stored_evaluations(reg, f"churn:{GOOD}") == [evaluation]
    assert reg.evaluations(reg.get(f"churn:{WEAK}")) == []


def test_evaluate_rejects_rows_that_break_the_signature(workdir: Path, reg: shipml.Registry) -> None:
    frame = pd.read_csv(workdir / "valid.csv")
    frame.loc[[0, 1], "state"] = "ZZ"  # a category training never saw
    frame.loc[2, TARGET] = None
    frame.to_csv(workdir / "dirty.csv", index=False)
    evaluation = evaluate(reg, f"churn:{GOOD}", workdir / "dirty.csv", TARGET)
    assert (evaluation.rows, evaluation.rejected) == (197, 3)
    assert any("unseen_category" in p for p in evaluation.problems)
    assert any("no value in target column" in p for p in evaluation.problems)
    assert reg.evaluations(reg.get(f"churn:{GOOD}"))[0]["rejected"] == 3


def test_evaluate_refuses_when_no_row_passes(workdir: Path, reg: shipml.Registry) -> None:
    pd.read_csv(workdir / "valid.csv").drop(columns=["income"]).to_csv(workdir / "bad.csv", index=False)
    with pytest.raises(SchemaError, match=r"no row of bad\.csv fits the signature.*'income'.*missing"):
        evaluate(reg, "churn", workdir / "bad.csv", TARGET)
    assert reg.evaluations(reg.get("churn")) == []


def test_evaluate_a_dataframe(reg: shipml.Registry) -> None:
    X, y = churn_frame(50, seed=7)
    evaluation = evaluate(reg, f"churn:{GOOD}", X.assign(label=y), "label")
    assert evaluation.data is None
    assert evaluation.rows == 50


# -- promote ------------------------------------------------------------------------------------------------------

def test_promote_refused_on_a_threshold_lists_the_figures(workdir: Path, reg: shipml.Registry) -> None:
    with pytest.raises(PromotionRefused) as info:
        promote(reg, f"churn:{WEAK}", "production", requirements=["accuracy>=0.90", "f1>0.0"],
                data=workdir / "valid.csv", target=TARGET)
    message = str(info.value)
    assert message.startswith(f"promotion of churn:{WEAK} to @production refused: accuracy 0.")
    assert "< 0.90 (required accuracy>=0.90)" in message
    assert "f1" not in message  # passed checks are not listed as failures
    assert [c.passed for c in info.value.result.checks] == [False, True]
    assert reg.aliases("churn") == {}
    assert len(reg.evaluations(reg.get(f"churn:{WEAK}"))) == 1  # the evaluation is kept all the same


def test_promote_refused_when_worse_than_the_holder(workdir: Path, reg: shipml.Registry) -> None:
    reg.set_alias("churn", "production", GOOD)
    with pytest.raises(PromotionRefused, match=rf"accuracy 0\.\d+ is worse than @production \(churn:{GOOD}\)"):
        promote(reg, f"churn:{WEAK}", "production", against="@production", data=workdir / "valid.csv",
                target=TARGET)
    assert reg.aliases("churn") == {"production": GOOD}
    # Both were evaluated on the same data, and both evaluations are stored.
    (weak,) = stored_evaluations(reg, f"churn:{WEAK}")
    (good,) = stored_evaluations(reg, f"churn:{GOOD}")
    assert weak.fingerprint == good.fingerprint


def test_tolerance_lets_a_slightly_worse_candidate_through(workdir: Path, reg: shipml.Registry) -> None:
    reg.set_alias("churn", "production", GOOD)
    result = promote(reg, f"churn:{WEAK}", "production", against="production", data=workdir / "valid.csv",
                     target=TARGET, tolerance=1.0, requirements=["log_loss<5"])
    assert result.move is not None
    assert result.move.from_version == GOOD
    assert [c.metric for c in result.checks] == ["log_loss", "log_loss"]


def test_promote_accepted_moves_the_alias_with_the_figures(workdir: Path, reg: shipml.Registry) -> None:
    reg.set_alias("churn", "production", WEAK)
    result = promote(reg, f"churn:{GOOD}", "production", requirements=["accuracy>=0.9"], against="@production",
                     data=workdir / "valid.csv", target=TARGET, reason="quarterly refresh")
    assert result.passed
    assert reg.aliases("churn") == {"production": GOOD}
    assert result.baseline is not None
    assert result.baseline.version == WEAK
    last = reg.alias_history("churn")[-1]
    assert (last.from_version, last.to_version) == (WEAK, GOOD)
    assert last.reason is not None
    assert last.reason.startswith("quarterly refresh; gate passed on valid.csv (200 rows): accuracy 0.")
    assert "@production (churn:1.0.0)" in last.reason


def test_promote_without_a_holder_passes_and_says_so(workdir: Path, reg: shipml.Registry) -> None:
    result = promote(reg, f"churn:{GOOD}", "production", against="@production", data=workdir / "valid.csv",
                     target=TARGET)
    assert result.baseline is None
    assert result.checks[0].message == "@production has no holder yet: nothing to compare against"
    assert reg.aliases("churn") == {"production": GOOD}


def test_promote_reuses_stored_evaluations(workdir: Path, reg: shipml.Registry) -> None:
    with pytest.raises(GateError, match="has no stored evaluation"):
        promote(reg, f"churn:{GOOD}", "staging", requirements=["accuracy>0.5"])
    evaluate(reg, f"churn:{GOOD}", workdir / "valid.csv", TARGET)
    reg.set_alias("churn", "production", WEAK)
    # The holder was never evaluated on that data: the comparison cannot be made from stored figures.
    with pytest.raises(GateError, match=rf"churn:{WEAK} has no evaluation on the data"):
        promote(reg, f"churn:{GOOD}", "staging", against="@production")
    evaluate(reg, f"churn:{WEAK}", workdir / "valid.csv", TARGET)
    result = promote(reg, f"churn:{GOOD}", "staging", requirements=["accuracy>0.5"], against="@production")
    assert result.passed
    assert len(reg.evaluations(reg.get(f"churn:{GOOD}"))) == 1  # nothing re-evaluated


def test_promote_needs_something_to_check(reg: shipml.Registry) -> None:
    with pytest.raises(GateError, match="nothing to check"):
        promote(reg, "churn", "production")
    with pytest.raises(GateError, match="needs a target"):
        promote(reg, "churn", "production", data=pd.DataFrame({"a": [1]}))
    with pytest.raises(GateError, match="tolerance"):
        promote(reg, "churn", "production", tolerance=-1)


def test_requirement_on_a_metric_the_task_lacks_fails(workdir: Path, reg: shipml.Registry) -> None:
    with pytest.raises(PromotionRefused, match=r"rmse was not computed for churn:1\.1\.0"):
        promote(reg, f"churn:{GOOD}", "production", requirements=["rmse<1"], data=workdir / "valid.csv",
                target=TARGET)
