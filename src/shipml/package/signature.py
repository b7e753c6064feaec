"""A model's signature: its input columns (with what training saw) and its outputs, inferred from the sample."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from shipml._lazy import loaded_pandas
from shipml.errors import SchemaError

if TYPE_CHECKING:
    import pandas as pd

DType = Literal["int", "float", "bool", "string", "datetime"]
Task = Literal["classification", "regression", "other"]
Severity = Literal["error", "warning"]

#: A string column with at most this many distinct values in the sample records them as its categories.
MAX_CATEGORIES = 1000


class ColumnSpec(BaseModel):
    """One input column, as training saw it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    dtype: DType
    pandas_dtype: str = Field(description="dtype of the sample column, restored when the model needs a frame")
    nullable: bool = False
    min: float | str | None = None
    max: float | str | None = None
    categories: list[str] | None = None

    @property
    def numeric(self) -> bool:
        return self.dtype in ("int", "float", "bool")


class OutputSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    task: Task
    classes: list[Any] | None = None
    prediction_dtype: str = "float64"
    probabilities: bool = False
    shape: list[int] = Field(default_factory=list, description="trailing shape of one prediction ([] = scalar)")


class Signature(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    inputs: list[ColumnSpec]
    input_kind: Literal["dataframe", "ndarray"]
    outputs: OutputSpec

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.inputs]

    @property
    def all_numeric(self) -> bool:
        return all(c.numeric for c in self.inputs)

    def column(self, name: str) -> ColumnSpec:
        for c in self.inputs:
            if c.name == name:
                return c
        raise KeyError(name)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with input data: which row (None: the whole input), which column, which rule."""

    row: int | None
    column: str | None
    rule: str
    message: str
    severity: Severity = "error"

    def to_dict(self) -> dict[str, Any]:
        return {"row": self.row, "column": self.column, "rule": self.rule, "message": self.message,
                "severity": self.severity}

    def __str__(self) -> str:
        where = f"row {self.row}, " if self.row is not None else ""
        col = f"column {self.column!r}: " if self.column is not None else ""
        return f"{where}{col}{self.message} [{self.rule}]"


def as_frame(sample: Any) -> tuple[pd.DataFrame, Literal["dataframe", "ndarray"]]:
    """The sample as a DataFrame, and whether the user gave a frame or an array."""
    import pandas as pd

    if isinstance(sample, pd.DataFrame):
        if sample.columns.duplicated().any():
            dup = sample.columns[sample.columns.duplicated()].tolist()
            raise SchemaError(f"sample has duplicate column names: {dup}")
        frame = sample.copy()
        frame.columns = [str(c) for c in frame.columns]
        return frame.reset_index(drop=True), "dataframe"
    if isinstance(sample, pd.Series):
        return sample.to_frame(name=str(sample.name or "f0")).reset_index(drop=True), "dataframe"
    array = np.asarray(sample)
    if array.ndim == 1:
        array = array.reshape(-1, 1)
    if array.ndim != 2:
        raise SchemaError(f"sample must be a DataFrame or a 2-D array, got an array of shape {array.shape}")
    return pd.DataFrame(array, columns=[f"f{i}" for i in range(array.shape[1])]), "ndarray"


def infer_column(name: str, s: pd.Series) -> ColumnSpec:
    import pandas as pd

    nullable = bool(s.isna().any())
    pandas_dtype = str(s.dtype)
    kind = _kind(name, s)
    lo: float | str | None = None
    hi: float | str | None = None
    categories: list[str] | None = None
    present = s.dropna()
    if kind in ("int", "float") and len(present):
        values = present.to_numpy(dtype=np.float64)
        finite = values[np.isfinite(values)]
        if len(finite):
            lo, hi = float(finite.min()), float(finite.max())
    elif kind == "datetime" and len(present):
        lo, hi = pd.Timestamp(present.min()).isoformat(), pd.Timestamp(present.max()).isoformat()
    elif kind == "string":
        if isinstance(s.dtype, pd.CategoricalDtype):
            categories = [str(c) for c in s.dtype.categories]
        else:
            uniques = pd.unique(present.astype(str))
            if len(uniques) <= MAX_CATEGORIES:
                categories = sorted(str(u) for u in uniques)
    return ColumnSpec(name=name, dtype=kind, pandas_dtype=pandas_dtype, nullable=nullable, min=lo, max=hi,
                      categories=categories)


def _kind(name: str, s: pd.Series) -> DType:
    import pandas as pd

    dtype = s.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return "string"
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_integer_dtype(dtype):
        return "int"
    if pd.api.types.is_float_dtype(dtype):
        return "float"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    inferred = pd.api.types.infer_dtype(s, skipna=True)
    if inferred in ("string", "empty"):
        return "string"
    if inferred == "boolean":
        return "bool"
    if inferred == "integer":
        return "int"
    if inferred in ("floating", "mixed-integer-float", "decimal"):
        return "float"
    if inferred in ("datetime", "datetime64", "date"):
        return "datetime"
    raise SchemaError(
        f"sample column {name!r} has values of mixed or unsupported types ({inferred}); give it one type"
    )


def infer_inputs(frame: pd.DataFrame) -> list[ColumnSpec]:
    if frame.shape[1] == 0:
        raise SchemaError("sample has no columns")
    if frame.shape[0] == 0:
        raise SchemaError("sample has no rows: shipml needs training rows to infer the signature")
    return [infer_column(str(name), frame[name]) for name in frame.columns]


def infer_outputs(predictions: np.ndarray, probabilities: np.ndarray | None, classes: list[Any] | None,
                  task: Task | None = None) -> OutputSpec:
    if task is None:
        task = "classification" if classes is not None or probabilities is not None else "regression"
        if task == "regression" and predictions.dtype.kind not in "fc":
            task = "other"
    return OutputSpec(task=task, classes=[to_jsonable(c) for c in classes] if classes is not None else None,
                      prediction_dtype=str(predictions.dtype), probabilities=probabilities is not None,
                      shape=list(predictions.shape[1:]))


def to_jsonable(value: Any) -> Any:
    """A numpy/pandas scalar as a plain JSON value (NaN and NaT become None)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    pd = loaded_pandas()  # a pandas value exists only once pandas is imported
    if pd is not None:
        if isinstance(value, pd.Timestamp):
            return None if pd.isna(value) else value.isoformat()
        if value is pd.NaT or value is pd.NA:
            return None
    return value
