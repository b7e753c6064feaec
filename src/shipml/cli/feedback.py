"""``shipml feedback NAME FILE --log DIR``: labels that arrive later, in bulk
(see :mod:`shipml.monitoring.feedback`)."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import click
import pyarrow.compute as pc

from shipml.cli._common import Context, emit_json, handle_errors, table
from shipml.monitoring.feedback import FeedbackLog, Joined, join, read_labels
from shipml.monitoring.logread import find_predictions
from shipml.registry.names import check_name


def realised_metrics(joined: Joined) -> dict[str, float]:
    """The realised performance on the matched rows (``shipml.monitoring.performance.realised``)."""
    if not joined.matched or joined.task not in ("classification", "regression"):
        return {}
    from shipml.monitoring.performance import realised

    return realised(joined.targets, joined.predictions, joined.probabilities, joined.classes, joined.task)


def summarise(model: str, log_dir: Path, labels_path: Path) -> dict[str, Any]:
    """Store the labels of ``labels_path`` for ``model`` and say how many matched logged predictions."""
    labels = read_labels(labels_path)
    FeedbackLog(log_dir).append(model, labels, time.time())
    ids = pc.unique(labels.column("request_id")).to_pylist()
    joined = join(find_predictions(log_dir, model, ids), labels)
    metrics = realised_metrics(joined)
    return {
        "model": model, "file": str(labels_path), "labels": labels.num_rows, "matched_rows": joined.matched,
        "unmatched_labels": joined.unmatched, "invalid_labels": joined.invalid, "task": joined.task,
        "metrics": {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()},
    }


@click.command("feedback")
@click.argument("name")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--log", "log_dir", required=True, metavar="DIR", type=click.Path(file_okay=False, path_type=Path),
              help="The prediction-log directory the model's predictions were logged to.")
@click.pass_obj
@handle_errors
def feedback(obj: Context, name: str, file: Path, log_dir: Path) -> None:
    """Store the labels in FILE (CSV or Parquet: request_id, target, optional row) for model NAME.

    Labels join the predictions logged in DIR by request id (a label without row labels every row of its
    request; the last label given for a row wins). Prints how many rows matched and the realised metrics on them.
    """
    check_name(name)
    result = summarise(name, log_dir, file)
    if obj.as_json:
        emit_json(result)
        return
    click.echo(f"{name}: stored {result['labels']:,} label(s) from {file.name}; matched {result['matched_rows']:,}"
               f" logged row(s), {result['unmatched_labels']:,} label(s) matched no logged prediction"
               + (f", {result['invalid_labels']:,} could not take the prediction's type"
                  if result["invalid_labels"] else ""))
    if result["metrics"]:
        rows = [[k, "n/a" if v is None else f"{v:.4f}"] for k, v in result["metrics"].items()]
        click.echo(table(["metric", "value"], rows))


def register(group: click.Group) -> None:
    group.add_command(feedback)
