from __future__ import annotations

from pathlib import Path

import orjson

import shipml
from tests.cli.gate_models import GOOD, TARGET, WEAK, run


def data_args(workdir: Path) -> list[str]:
    return ["--data", str(workdir / "valid.csv"), "--target", TARGET]


def registry(workdir: Path) -> shipml.Registry:
    return shipml.Registry(workdir / "registry")


def test_evaluate_prints_and_stores(workdir: Path) -> None:
    result = run(workdir, "evaluate", f"churn:{GOOD}", *data_args(workdir))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"churn:{GOOD} on valid.csv (200 rows), target '{TARGET}':"
    assert lines[1].split() == ["metric", "value", "better"]
    assert {line.split()[0] for line in lines[3:]} == {"accuracy", "precision", "recall", "f1", "roc_auc",
                                                       "log_loss"}
    assert "lower" in next(line for line in lines if line.startswith("log_loss"))
    (record,) = registry(workdir).evaluations(registry(workdir).get(f"churn:{GOOD}"))
    assert record["data"] == "valid.csv"
    assert record["rows"] == 200


def test_evaluate_json(workdir: Path) -> None:
    result = run(workdir, "--json", "evaluate", f"churn:{WEAK}", *data_args(workdir))
    assert result.exit_code == 0
    data = orjson.loads(result.stdout)
    assert data["model"] == f"churn:{WEAK}"
    assert data["rows"] == 200
    assert data["rejected"] == 0
    assert data["higher_is_better"]["log_loss"] is False
    assert 0 < data["metrics"]["accuracy"] < 1


def test_evaluate_missing_target_column(workdir: Path) -> None:
    result = run(workdir, "evaluate", "churn", "--data", str(workdir / "valid.csv"), "--target", "label")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: no target column 'label' in the columns of valid.csv")


def test_promote_refused_on_a_threshold(workdir: Path) -> None:
    run(workdir, "alias", "churn", "production", GOOD)
    result = run(workdir, "promote", f"churn:{WEAK}", "production", "--require", "accuracy>=0.90",
                 *data_args(workdir))
    assert result.exit_code == 1
    assert "FAILED" in result.stdout
    assert result.stderr.startswith(f"error: promotion of churn:{WEAK} to @production refused: accuracy 0.")
    assert "< 0.90 (required accuracy>=0.90)" in result.stderr
    assert registry(workdir).aliases("churn") == {"production": GOOD}


def test_promote_refused_when_worse_than_production(workdir: Path) -> None:
    run(workdir, "alias", "churn", "production", GOOD)
    result = run(workdir, "--json", "promote", f"churn:{WEAK}", "production", "--against", "@production",
                 *data_args(workdir))
    assert result.exit_code == 1
    data = orjson.loads(result.stdout)
    assert data["promoted"] is False
    assert data["baseline"]["version"] == GOOD
    (check,) = data["checks"]
    assert check["kind"] == "comparison"
    assert not check["passed"]
    assert f"is worse than @production (churn:{GOOD})" in result.stderr
    assert registry(workdir).aliases("churn") == {"production": GOOD}


def test_promote_accepted_moves_the_alias_and_history_shows_it(workdir: Path) -> None:
    run(workdir, "alias", "churn", "production", WEAK)
    result = run(workdir, "promote", f"churn:{GOOD}", "production", "--require", "accuracy>=0.9",
                 "--require", "roc_auc>0.9", "--against", "@production", *data_args(workdir),
                 "--reason", "better model")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == f"promoted churn:{GOOD} to @production (was {WEAK})"
    assert "FAILED" not in result.stdout
    assert registry(workdir).aliases("churn") == {"production": GOOD}
    moves = orjson.loads(run(workdir, "--json", "history", "churn").stdout)
    assert (moves[-1]["from"], moves[-1]["to"]) == (WEAK, GOOD)
    assert moves[-1]["reason"].startswith("better model; gate passed on valid.csv (200 rows): accuracy")
    history = run(workdir, "history", "churn").stdout
    assert "better model; gate passed" in history


def test_promote_with_stored_evaluations_and_tolerance(workdir: Path) -> None:
    run(workdir, "evaluate", f"churn:{WEAK}", *data_args(workdir))
    run(workdir, "evaluate", f"churn:{GOOD}", *data_args(workdir))
    run(workdir, "alias", "churn", "production", GOOD)
    result = run(workdir, "--json", "promote", f"churn:{WEAK}", "canary", "--against", "production",
                 "--tolerance", "1")
    assert result.exit_code == 0, result.output
    data = orjson.loads(result.stdout)
    assert data["promoted"] is True
    assert data["move"]["to"] == WEAK
    assert registry(workdir).aliases("churn") == {"canary": WEAK, "production": GOOD}


def test_promote_usage_errors(workdir: Path) -> None:
    result = run(workdir, "promote", "churn", "production", "--data", str(workdir / "valid.csv"))
    assert result.exit_code == 2
    assert "--data and --target go together" in result.stderr
    result = run(workdir, "promote", "churn", "production", "--require", "acc>0.5")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: unknown metric 'acc'")
    assert "accuracy, precision" in result.stderr
    result = run(workdir, "promote", "churn", "production", "--tolerance", "-1")
    assert result.exit_code == 2
