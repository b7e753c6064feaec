"""Edge bundles (``shipml export``): bundle size and per-row latency per model family, and the bundle runner's
single-row latency against onnxruntime called directly on the same model.

    .venv/bin/python bench/export_bench.py                 # ~1 min on 2 cores
    .venv/bin/python bench/export_bench.py --calls 5000    # more calls per measurement

Per family: a model trained here, saved with shipml.save_model, exported with ``export_onnx`` (parity proved).
- runner 1 row: ``Bundle.predict([record])`` (predict.py's code: validate the JSON record, build the feeds, run,
  decode labels and probabilities), median over ``--calls`` calls cycling the golden records;
- onnxruntime 1 row: ``session.run`` on feeds built beforehand (the floor: nothing but the model), same session
  options as the runner (1 intra-op thread);
- runner per row in a 1000-row call: one ``Bundle.predict`` of 1000 records, divided by 1000.
Medians of ``--repeat`` rounds. Nothing is asserted; the figures go to bench/RESULTS.md with the command.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.compose import ColumnTransformer
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import shipml
from shipml.export import export_onnx
from shipml.export.runner import Bundle


def _mixed(n: int = 5000) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"age": rng.integers(18, 80, n), "income": rng.normal(50_000, 15_000, n).round(2),
                          "tenure": rng.uniform(0, 10, n), "state": rng.choice(["CA", "NY", "TX", "WA"], n),
                          "plan": rng.choice(["basic", "pro", "team"], n)})
    frame.loc[rng.random(n) < 0.05, "income"] = np.nan
    y = np.where(frame["income"].fillna(40_000) / 10_000 + frame["tenure"] > 7.5, "churn", "stay")
    return frame, y


def _prep(scale: bool) -> ColumnTransformer:
    numbers = Pipeline([("impute", SimpleImputer()), ("scale", StandardScaler())]) if scale else SimpleImputer()
    return ColumnTransformer([("num", numbers, ["age", "income", "tenure"]),
                              ("cat", OneHotEncoder(handle_unknown="ignore"), ["state", "plan"])])


def _sk_logistic() -> tuple[Any, Any]:
    X, y = _mixed()
    return Pipeline([("pre", _prep(True)), ("clf", LogisticRegression(max_iter=1000))]).fit(X, y), X


def _sk_forest() -> tuple[Any, Any]:
    X, y = _mixed()
    return Pipeline([("pre", _prep(False)), ("clf", RandomForestClassifier(100, max_depth=10, random_state=0))]
                    ).fit(X, y), X


def _numeric() -> tuple[np.ndarray, np.ndarray]:
    return make_classification(20_000, 28, random_state=0)


def _lightgbm() -> tuple[Any, Any]:
    X, y = _numeric()
    return lgb.LGBMClassifier(n_estimators=200, num_leaves=31, verbose=-1).fit(X, y), X


def _xgboost() -> tuple[Any, Any]:
    X, y = _numeric()
    return xgb.XGBClassifier(n_estimators=200, max_depth=6).fit(X, y), X


FAMILIES: dict[str, Callable[[], tuple[Any, Any]]] = {
    "sklearn LogisticRegression pipeline (5 mixed inputs)": _sk_logistic,
    "sklearn RandomForest pipeline (100 trees, 5 mixed inputs)": _sk_forest,
    "LightGBM (200 trees, 31 leaves, 28 inputs)": _lightgbm,
    "XGBoost (200 trees, depth 6, 28 inputs)": _xgboost,
}


def _median_us(fn: Callable[[int], Any], calls: int) -> float:
    times = []
    for i in range(calls):
        start = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def measure(bundle_dir: Path, calls: int) -> dict[str, float]:
    bundle = Bundle(bundle_dir)
    records = bundle.golden["records"]
    predictor = bundle.predictor
    feeds = [predictor.columns.feeds(predictor.columns.values([r])) for r in records]
    session = predictor.session  # the same model, the same session options
    wanted = [o.name for o in session.get_outputs()]
    for i in range(50):  # warm both paths
        bundle.predict([records[i % len(records)]])
        session.run(wanted, feeds[i % len(feeds)])
    runner_us = _median_us(lambda i: bundle.predict([records[i % len(records)]]), calls)
    ort_us = _median_us(lambda i: session.run(wanted, feeds[i % len(feeds)]), calls)
    direct = _direct_feed(predictor)
    caller_us = _median_us(lambda i: session.run(wanted, direct(records[i % len(records)])), calls)
    many = (records * (1000 // len(records) + 1))[:1000]
    batch_us = _median_us(lambda i: bundle.predict(many), 20) / 1000
    return {"runner_us": runner_us, "ort_us": ort_us, "caller_us": caller_us, "batch_us": batch_us}


def _direct_feed(predictor: Any) -> Callable[[dict[str, Any]], dict[str, np.ndarray]]:
    """The shortest hand-written caller's feed from one record: no checks, nulls as NaN."""
    columns = predictor.columns
    if columns.layout == "matrix":
        name, names = columns.inputs[0]["name"], columns.names
        return lambda r: {name: np.array([[r[n] for n in names]], dtype=np.float32)}
    kinds = [(i["name"], np.float32 if i["type"] == "tensor(float)" else object) for i in columns.inputs]
    return lambda r: {n: np.array([[r[n] if r[n] is not None else (np.nan if t is np.float32 else "nan")]], dtype=t)
                      for n, t in kinds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=2000, help="single-row calls per measurement")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the table shows medians")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        registry = shipml.Registry(Path(tmp) / "registry")
        for i, (family, train) in enumerate(FAMILIES.items()):
            model, sample = train()
            name = f"m{i}"
            shipml.save_model(model, name, sample=sample, registry=registry)
            result = export_onnx(registry.load(name), Path(tmp) / name)
            rounds = [measure(result.directory, args.calls) for _ in range(args.repeat)]
            figures = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
            rows.append((family, result.size_bytes, (result.directory / "model.onnx").stat().st_size, figures,
                         result.parity.to_dict()))
    print("| family | bundle size | of which model.onnx | runner, 1 row | onnxruntime, prebuilt feed | ratio |"
          " onnxruntime, feed built from the record | ratio | runner per row, 1000-row call |"
          " parity: rows, max proba diff |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for family, size, onnx_size, f, parity in rows:
        print(f"| {family} | {size / 1024:.1f} KiB | {onnx_size / 1024:.1f} KiB | {f['runner_us']:.1f} µs |"
              f" {f['ort_us']:.1f} µs | {f['runner_us'] / f['ort_us']:.2f}x | {f['caller_us']:.1f} µs |"
              f" {f['runner_us'] / f['caller_us']:.2f}x | {f['batch_us']:.2f} µs |"
              f" {parity['golden_rows'] + parity['drawn_rows']}, {parity['max_proba_diff']:.1e} |")


if __name__ == "__main__":
    main()
