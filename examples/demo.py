"""The demo's training step: what a data scientist's notebook does, ending in shipml.save_model.

Trains a scikit-learn pipeline and a LightGBM model on the breast-cancer data shipped with scikit-learn, saves
both into the registry ($SHIPML_HOME), and writes the held-out rows to CSV for the evaluation gate.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightgbm as lgb
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

import shipml


def main(workdir: Path) -> None:
    data = load_breast_cancer(as_frame=True)
    X = data.data
    X.columns = [c.replace(" ", "_") for c in X.columns]
    y = data.target
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)

    pipeline = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(max_iter=1000))])
    pipeline.fit(X_train, y_train)
    booster = lgb.LGBMClassifier(n_estimators=100, num_leaves=15, verbose=-1).fit(X_train, y_train)

    for model, desc in ((pipeline, "scaled logistic regression"), (booster, "LightGBM, 100 trees")):
        mv = shipml.save_model(model, "cancer", sample=X_train, target=y_train, description=desc,
                               tags={"dataset": "sklearn breast_cancer"})
        print(f"saved {mv.ref} ({desc})")

    # A deliberately bad candidate for the canary step of the demo (examples/bad_candidate.py): it runs the
    # user's own code when loaded, so it needs trusted=True.
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bad_candidate import ROWS, BrokenScalerCandidate

    rows = workdir / ROWS
    rows.write_text(json.dumps(X_train.to_numpy(dtype=float).tolist()))
    candidate = BrokenScalerCandidate()
    candidate.load(workdir)
    mv = shipml.save_model(candidate, "cancer", sample=X_train, trusted=True,
                           runtime_options={"artifacts": {ROWS: rows}},
                           description="a candidate with a broken preprocessing step (for the canary demo)")
    print(f"saved {mv.ref} (a deliberately bad candidate)")

    test = X_test.assign(target=y_test)
    test.to_csv(workdir / "test.csv", index=False)
    test.drop(columns="target").head(5).to_csv(workdir / "new_rows.csv", index=False)
    print(f"held-out rows written to {workdir / 'test.csv'}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "."))
