"""Reports built by hand, for the renderer's tests, and a real prediction log (with feedback) for the collector's."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shipml.monitoring.alerts import AlertEvent
from shipml.monitoring.feedback import FeedbackLog, Label
from shipml.monitoring.log import LogBatch, PredictionLog
from shipml.monitoring.report import Distribution, FeatureReport, PredictionReport, Report, Series
from shipml.monitoring.report_html import fmt
from shipml.package.loaded import LoadedModel
from tests.unit import drift_models

START = 1_780_000_000.0  # 2026-05-28


def bin_labels(edges: Sequence[float]) -> list[str]:
    inner = [f"[{fmt(a)}, {fmt(b)})" for a, b in itertools.pairwise(edges)]
    inner[-1] = inner[-1][:-1] + "]"
    return [f"< {fmt(edges[0])}", *inner, f"> {fmt(edges[-1])}", "null"]


def _shares(rng: np.random.Generator, n: int) -> tuple[float, ...]:
    raw = rng.random(n) + 0.05
    return tuple(float(v) for v in raw / raw.sum())


def numeric_feature(name: str, psi: float, rng: np.random.Generator) -> FeatureReport:
    edges = tuple(float(v) for v in np.linspace(-2.0, 2.0, 8))
    labels = tuple(bin_labels(edges))
    figures = {"psi": psi, "ks": psi / 3, "chi2": math.nan, "cramers_v": math.nan, "null_share": 0.0,
               "reference_null_share": 0.0, "out_of_range_share": 0.01, "unseen_share": math.nan}
    return FeatureReport(name=name, kind="numeric", rows=500, figures=figures,
                         distribution=Distribution("numeric", labels, _shares(rng, len(labels)),
                                                   _shares(rng, len(labels)), edges))


def categorical_feature(name: str, categories: Sequence[str], psi: float,
                        rng: np.random.Generator) -> FeatureReport:
    labels = (*categories, "other known", "unseen", "null")
    figures = {"psi": psi, "ks": math.nan, "chi2": 12.5, "cramers_v": 0.2, "null_share": 0.0,
               "reference_null_share": 0.0, "out_of_range_share": math.nan, "unseen_share": 0.02}
    return FeatureReport(name=name, kind="categorical", rows=500, figures=figures,
                         distribution=Distribution("categorical", labels, _shares(rng, len(labels)),
                                                   _shares(rng, len(labels))))


def sample_report(*, model: str = "churn", features: Sequence[str] = ("x0", "x1", "x2"),
                  categories: Sequence[str] = ("basic", "plus", "pro"), version: str = "1.0.0",
                  buckets: int = 12, alerts: bool = True, task: str = "classification", seed: int = 0) -> Report:
    """A report with every section filled: the last feature is categorical; the first drifts most."""
    rng = np.random.default_rng(seed)
    reports = [numeric_feature(name, 1.5 / (i + 1), rng) for i, name in enumerate(features[:-1])]
    if features:
        reports.append(categorical_feature(features[-1], categories, 0.01, rng))
    starts = tuple(START + 3600.0 * i for i in range(buckets))
    wave = tuple(float(v) for v in np.linspace(0.9, 0.7, buckets))
    classes = ("0", "1") if task == "classification" else None
    if task == "classification":
        prediction_series = {"0": wave, "1": tuple(1 - v for v in wave)}
        prediction = PredictionReport("categorical", {"psi": 0.3, "chi2": 40.0},
                                      Distribution("categorical", ("0", "1"), (0.8, 0.2), (0.65, 0.35)))
        realised = {"accuracy": 0.81, "roc_auc": 0.88}
        estimated = {"estimated_accuracy": 0.84, "estimated_roc_auc": 0.9}
    else:
        prediction_series = {"mean": wave, "p10": tuple(v - 0.2 for v in wave), "p90": tuple(v + 0.2 for v in wave)}
        edges = (0.0, 0.5, 1.0)
        prediction = PredictionReport("numeric", {"psi": 0.05, "ks": 0.02},
                                      Distribution("numeric", tuple(bin_labels(edges)), (0.0, 0.5, 0.5, 0.0, 0.0),
                                                   (0.1, 0.4, 0.4, 0.1, 0.0), edges))
        realised = {"mae": 0.3, "rmse": 0.4}
        estimated = {}
    labelled = tuple(int(v) for v in rng.integers(0, 40, buckets))
    series = Series(
        starts=starts, width_s=3600.0, rows=tuple([100] * buckets), requests=tuple([90] * buckets),
        rows_by_version={version: tuple([100] * buckets)},
        latency_ms={"p50": tuple([2.0] * buckets), "p90": tuple([4.0] * buckets), "p99": tuple([9.0] * buckets)},
        prediction=prediction_series, labelled=labelled,
        realised={k: tuple(v if n else math.nan for n in labelled) for k, v in realised.items()},
        estimated={k: wave for k in estimated},
        psi={f.name: tuple(float(v) for v in np.linspace(0.0, f.psi, buckets)) for f in reports})
    events = (AlertEvent("input-drift", "firing", "warning", model, model, version,
                         features[0] if features else None, None, "psi", 1.5, "psi > 0.2", START + 3600 * 6,
                         START + 3600 * 6.5).to_dict(),)
    return Report(model=model, ref=model, task=task,  # type: ignore[arg-type]
                  reference_version=version, versions=(version,), classes=classes, since=START,
                  until=START + 3600.0 * buckets, generated_at=START + 3600.0 * buckets, rows=100 * buckets,
                  requests=90 * buckets, first_time=START, last_time=START + 3600.0 * buckets - 1,
                  drift_rows=100 * buckets, labelled_rows=sum(labelled), realised=realised, estimated=estimated,
                  features=tuple(reports), prediction=prediction, series=series,
                  alerts=events if alerts else (), notes=("a note",))


# -- a real prediction log ------------------------------------------------------------------------------------
@dataclass
class WrittenLog:
    """What :func:`write_log` wrote: the rows served (in order), their request ids and rows, predictions, the
    labels sent as feedback (request id, row -> target) and the batches' times."""

    directory: Path
    start: float
    end: float
    frame: pd.DataFrame
    request_ids: list[str]
    rows: list[int]
    predictions: np.ndarray
    times: np.ndarray
    labels: dict[tuple[str, int], Any]


def shifted_frame(n: int, seed: int) -> pd.DataFrame:
    """Rows of the training distribution with ``income`` moved far above what training saw."""
    X = drift_models.frame(n, seed)
    X["income"] = X["income"] + 60_000
    return X


def truth(X: pd.DataFrame) -> np.ndarray:
    """The rule the classifier of drift_models was trained on."""
    return ((X["income"].fillna(50_000) > 50_000) ^ (X["state"] == "CA")).astype(int).to_numpy()


Rows = Callable[[int, int], pd.DataFrame]  # (rows, seed) -> a frame of model inputs


def write_log(model: LoadedModel, directory: Path, *, start: float, hours: int = 12, batches_per_hour: int = 4,
              requests_per_batch: int = 6, rows_per_request: int = 5, labelled_share: float = 0.5,
              seed: int = 7, id_prefix: str = "", before: Rows = drift_models.frame, after: Rows = shifted_frame,
              truth: Callable[[pd.DataFrame], np.ndarray] = truth) -> WrittenLog:
    """Serve-like batches through a real PredictionLog: ``before`` rows (default: the training distribution of
    drift_models' classifier) for the first half of the hours, ``after`` rows (default: ``income`` shifted) in
    the second half; feedback (``truth`` of the rows) for ``labelled_share`` of the rows through a real
    FeedbackLog, an hour after each batch. Request ids are ``{id_prefix}b{batch}-r{request}``."""
    rng = np.random.default_rng(seed)
    log = PredictionLog(directory, flush_interval_s=0.05, max_file_rows=10_000, max_queue_rows=1_000_000)
    feedback = FeedbackLog(directory)
    frames, ids, rows, predictions, times = [], [], [], [], []
    labels: dict[tuple[str, int], Any] = {}
    count = hours * batches_per_hour
    per_batch = requests_per_batch * rows_per_request
    try:
        for b in range(count):
            at = start + b * 3600.0 / batches_per_hour + float(rng.uniform(0, 60))
            X = (before if b < count // 2 else after)(per_batch, 1000 + b)
            checked = model.check(X)
            prediction = model.infer(checked.table)
            batch_ids = [f"{id_prefix}b{b}-r{k}" for k in range(requests_per_batch)]
            spans = [(k * rows_per_request, (k + 1) * rows_per_request) for k in range(requests_per_batch)]
            assert log.submit(LogBatch(
                at, model.name, model.version, checked.table.columns, model.signature, prediction.predictions,
                prediction.probabilities, model.classes, batch_ids, ["churn"] * requests_per_batch,
                ["stable"] * requests_per_batch, spans, list(rng.uniform(0.001, 0.02, requests_per_batch))))
            y = truth(X)
            batch_labels = []
            for i in np.flatnonzero(rng.random(per_batch) < labelled_share):
                rid, row = batch_ids[i // rows_per_request], int(i % rows_per_request)
                labels[(rid, row)] = y[i].item()
                batch_labels.append(Label(rid, row, y[i].item()))
            feedback.append(model.name, batch_labels, at + 3600.0)
            frames.append(X)
            ids += [rid for rid in batch_ids for _ in range(rows_per_request)]
            rows += list(range(rows_per_request)) * requests_per_batch
            predictions.append(prediction.predictions)
            times.append(np.full(per_batch, at))
    finally:
        log.close(timeout_s=30.0)
    return WrittenLog(directory, start, start + hours * 3600.0, pd.concat(frames, ignore_index=True), ids, rows,
                      np.concatenate(predictions), np.concatenate(times), labels)


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self._in_script = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script += tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script -= tag == "script"

    def handle_data(self, data: str) -> None:
        if not self._in_script:
            self.text.append(data)


def page_tags(page: str) -> tuple[list[tuple[str, dict[str, str | None]]], str]:
    """Every element of an HTML page (tag, attributes), as a browser's parser sees them (script bodies are text),
    and the page's text outside scripts."""
    parser = _Tags()
    parser.feed(page)
    parser.close()
    return parser.tags, "".join(parser.text)


def fetches(page: str) -> list[str]:
    """Every reference in the page's markup that would make a browser load something (src, href off the page,
    link, object, iframe)."""
    tags, _ = page_tags(page)
    out = []
    for tag, attrs in tags:
        for key in ("src", "data", "srcset", "poster", "action"):
            if attrs.get(key):
                out.append(f"{tag} {key}={attrs[key]}")
        href = attrs.get("href")
        if href is not None and not href.startswith("#"):
            out.append(f"{tag} href={href}")
        if tag in ("link", "iframe", "object", "embed", "base"):
            out.append(tag)
    return out
