"""The plain tutorial model server, as most blog posts write it: FastAPI, a pydantic request model, the joblib
model loaded at import, and ``predict`` + ``predict_proba`` on a DataFrame built per request.

    MODEL_PATH=model.joblib uvicorn bench.baselines.tutorial_app:app --port 8001
"""

from __future__ import annotations

import os

import joblib
import pandas as pd
from fastapi import FastAPI
from pydantic import BaseModel

app = FastAPI()
model = joblib.load(os.environ.get("MODEL_PATH", "model.joblib"))


class PredictRequest(BaseModel):
    instances: list[dict[str, float]]


@app.post("/predict")
def predict(request: PredictRequest) -> dict[str, list[float] | list[list[float]]]:
    frame = pd.DataFrame(request.instances)
    return {"predictions": model.predict(frame).tolist(), "probabilities": model.predict_proba(frame).tolist()}
