"""The reference a model's live data is compared with: per input feature (and for the prediction), the bins the
training data was counted on and its counts there, read from the package's profile and signature.

Every value lands in exactly one *slot* of its feature:

- numeric (int, float, datetime in epoch seconds, a regression's prediction): ``below`` the training minimum,
  one slot per reference bin (``np.histogram`` semantics on the profile's decile ``bins``: ``[left, right)``,
  the last bin ``[left, right]``), ``above`` the training maximum, ``null`` (NaN, NaT). The two outer slots are
  the out-of-range values. A profile written before decile bins (profile version 1) has only the equal-width
  ``histogram``: its bins are used instead.
- categorical (string, bool, a classifier's prediction): one slot per category of the profile's top categories
  (every class of a classifier), ``other known`` (a category training saw beyond the top ones: the profile's
  ``other`` share), ``unseen`` (a category training never saw; only known when the signature recorded the
  training categories, otherwise such values count as ``other known``), ``null``.

Counting is vectorised (numpy comparisons, ``np.bincount``, one sort or hash per categorical column): no per-row
Python.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import orjson

from shipml.errors import ManifestError
from shipml.package.signature import ColumnSpec, Signature, to_jsonable

if TYPE_CHECKING:
    from shipml.package.loaded import LoadedModel
    from shipml.package.manifest import Manifest

__all__ = ["FeatureReference", "Kind", "Reference"]

Kind = Literal["numeric", "categorical"]
_NS_PER_SECOND = 1e9


@dataclass(frozen=True, eq=False)
class FeatureReference:
    """One feature's slots and the training counts in them (see the module docstring for the layout)."""

    name: str
    kind: Kind
    dtype: str  # the signature's dtype (int, float, bool, string, datetime), or "prediction"
    reference: np.ndarray  # float64 training counts per slot (categorical ones are shares x rows: not integers)
    labels: tuple[str, ...]  # one per slot, for tables and plots
    edges: np.ndarray = field(default_factory=lambda: np.empty(0))  # numeric: the reference bins' edges
    categories: tuple[str, ...] = ()  # categorical: the top categories, one slot each
    known: tuple[str, ...] = ()  # categorical: every category training saw (sorted), when known
    unseen_known: bool = False  # whether values outside ``known`` count as unseen (else as "other known")
    mean: float = math.nan  # numeric: the training mean (a regression's prediction)
    search: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False)  # numeric: see count()
    _slot_of: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64), repr=False)  # known[i] -> slot

    # -- the layout ------------------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return len(self.reference)

    @property
    def null_slot(self) -> int:
        return self.size - 1

    @property
    def out_of_range_slots(self) -> tuple[int, int]:
        """numeric: (below, above)."""
        return 0, self.size - 2

    @property
    def other_slot(self) -> int:
        return self.size - 3

    @property
    def unseen_slot(self) -> int:
        return self.size - 2

    @property
    def rows(self) -> float:
        return float(self.reference.sum())

    # -- counting ---------------------------------------------------------------------------------------------
    def count(self, values: np.ndarray) -> np.ndarray:
        """How many of ``values`` fall in each slot (int64, one per slot). Never raises on a 1-D array of any
        dtype (a column of the wrong type counts as nulls, or as unseen categories)."""
        values = np.asarray(values)
        if values.ndim != 1:
            values = values.reshape(len(values), -1)[:, 0] if values.ndim > 1 and values.size else values.ravel()
        if self.kind == "numeric":
            x = as_float(values, self.dtype == "datetime")
            # searchsorted(side="right") on the edges with the last one nudged up (its value is in the last
            # bin) and NaN appended (numpy sorts NaN last) is the slot itself: below, the bins, above, null.
            return np.bincount(np.searchsorted(self.search, x, side="right"), minlength=self.size)
        text, counts, nulls = _distinct(values)
        out = np.zeros(self.size, dtype=np.int64)
        if len(text):
            np.add.at(out, self.lookup(text), counts)
        out[self.null_slot] += nulls
        return out

    def lookup(self, text: np.ndarray) -> np.ndarray:
        """categorical: the slot of each (non-null) category text."""
        keys = np.asarray(self.known)
        slot = np.full(len(text), self.unseen_slot if self.unseen_known else self.other_slot, dtype=np.int64)
        if len(keys) and len(text):
            pos = np.searchsorted(keys, text)
            at = np.minimum(pos, len(keys) - 1)
            found = keys[at] == text
            slot[found] = self._slot_of[at[found]]
        return slot

    def describe(self) -> dict[str, Any]:
        """The layout as JSON (what a :class:`~shipml.monitoring.drift.Counts` blob must have been made for)."""
        return {"name": self.name, "kind": self.kind, "dtype": self.dtype, "size": self.size,
                "edges": [float(e) for e in self.edges], "known": list(self.known),
                "categories": list(self.categories), "unseen_known": self.unseen_known}


def as_float(values: np.ndarray, datetime: bool) -> np.ndarray:
    """float64 values, NaN for null, whatever the column holds (a column of the wrong type: nulls)."""
    kind = values.dtype.kind
    if kind == "f":
        return values if values.dtype == np.float64 else values.astype(np.float64)
    if kind in "iub":
        return values.astype(np.float64)
    if kind == "M":
        ticks = values.astype("datetime64[ns]").view(np.int64).astype(np.float64) / _NS_PER_SECOND
        ticks[np.isnat(values)] = np.nan
        return ticks
    if kind == "m":
        return np.full(len(values), np.nan)
    try:
        import pandas as pd

        if datetime:
            stamps = pd.to_datetime(pd.Series(values, dtype=object), errors="coerce", utc=True, format="ISO8601")
            return as_float(stamps.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]"), True)
        numbers = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce")
        return np.asarray(numbers.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)
    except Exception:  # values nothing can read as numbers: nulls, like a missing column
        return np.full(len(values), np.nan)


def _distinct(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(text of each distinct non-null value, how many times each occurs, how many nulls): bools as True/False,
    as the profile wrote them. One sort or hash of the column: no per-row Python."""
    kind = values.dtype.kind
    n = len(values)
    if kind == "b":
        true = int(np.count_nonzero(values))
        return np.array(["True", "False"]), np.array([true, n - true]), 0
    if kind == "O":
        import pandas as pd  # an object column came through the signature check, which imported it already

        try:
            codes, uniques = pd.factorize(values, use_na_sentinel=True)
        except TypeError:  # unhashable values (lists, dicts): their text, one at a time (only such odd input)
            null = np.asarray(pd.isna(values), dtype=bool) if values.ndim == 1 else np.zeros(n, dtype=bool)
            codes, uniques = pd.factorize(np.array([_text(v) for v in values], dtype=object))
            codes[null] = -1
        present = codes >= 0
        counts = np.bincount(codes[present], minlength=len(uniques))
        try:
            text = np.asarray(uniques, dtype=object).astype(str)
        except Exception:  # a value whose str() fails
            text = np.array([_text(v) for v in uniques], dtype=str)
        return text, counts, n - int(np.count_nonzero(present))
    if kind == "f":
        null = np.isnan(values)
    elif kind in "Mm":
        null = np.isnat(values)
    else:
        null = np.zeros(n, dtype=bool)
    uniques, counts = np.unique(values[~null] if null.any() else values, return_counts=True)
    return uniques.astype(str), counts, int(np.count_nonzero(null))


def _text(value: Any) -> str:
    try:
        return str(value)
    except Exception:
        return f"<{type(value).__name__}>"


# -- building references from the profile -------------------------------------------------------------------

def numeric_reference(name: str, dtype: str, profile: Mapping[str, Any] | None) -> FeatureReference:
    profile = profile if isinstance(profile, Mapping) else {}
    edges, counts = _reference_bins(profile)
    total = int(profile.get("count") or 0)
    null = _share(profile.get("null_rate")) * total
    reference = np.concatenate([[0.0], counts, [0.0, round(null)]])
    search = np.concatenate([edges[:-1], [np.nextafter(edges[-1], np.inf)], [np.nan]]) if len(edges) \
        else np.array([np.inf, np.nan])
    if not len(edges):  # training had no finite value: every value is outside its (empty) range
        reference = np.array([0.0, 0.0, round(null)])
        labels: tuple[str, ...] = ("out of range", "out of range", "null")
    else:
        inner = [f"[{_num(a)}, {_num(b)})" for a, b in itertools.pairwise(edges)]
        inner[-1] = inner[-1][:-1] + "]"
        labels = (f"< {_num(edges[0])}", *inner, f"> {_num(edges[-1])}", "null")
    mean = profile.get("mean")
    return FeatureReference(name, "numeric", dtype, reference.astype(np.float64), labels, edges=edges,
                            mean=float(mean) if isinstance(mean, int | float) else math.nan, search=search)


def _reference_bins(profile: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(edges, counts) of the profile: decile ``bins`` (version 2), else the equal-width ``histogram``."""
    for key in ("bins", "histogram"):
        got = _edges_counts(profile.get(key))
        if got is None:
            continue
        edges, counts = got
        lo, hi = profile.get("min"), profile.get("max")
        if key == "histogram" and isinstance(lo, int | float) and lo == hi:
            # a constant column's histogram spans [v - 0.5, v + 0.5]: its range is the value itself
            return np.array([float(lo), float(lo)]), np.array([float(counts.sum())])
        return edges, counts
    return np.empty(0), np.empty(0)


def _edges_counts(data: Any) -> tuple[np.ndarray, np.ndarray] | None:
    if not isinstance(data, Mapping):
        return None
    try:
        edges = np.asarray(data.get("edges"), dtype=np.float64)
        counts = np.asarray(data.get("counts"), dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if edges.ndim != 1 or counts.ndim != 1 or len(edges) < 2 or len(counts) != len(edges) - 1 \
            or not np.isfinite(edges).all() or np.any(np.diff(edges) < 0) or not np.isfinite(counts).all():
        return None
    return edges, counts


def categorical_reference(name: str, dtype: str, profile: Mapping[str, Any] | None,
                          known: Sequence[str] | None, top: Sequence[str] | None = None) -> FeatureReference:
    """``known``: every category training saw (None: not recorded, so unseen ones cannot be told apart);
    ``top``: the categories with a slot each (default: the profile's top categories)."""
    profile = profile if isinstance(profile, Mapping) else {}
    found = profile.get("frequencies")
    freq: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    categories = tuple(str(c) for c in (top if top is not None else freq))
    total = int(profile.get("count") or 0)
    null_share = _share(profile.get("null_rate"))
    present = total * (1 - null_share)
    shares = [_share(freq.get(c)) for c in categories]
    other = _share(profile.get("other")) + (sum(_share(v) for k, v in freq.items() if k not in set(categories))
                                           if top is not None else 0.0)
    reference = np.array([*(s * present for s in shares), other * present, 0.0, null_share * total])
    all_known = sorted(set(categories) | set(known or ()))
    slot_of = {c: i for i, c in enumerate(categories)}
    other_slot = len(categories)
    labels = (*categories, "(other known)", "(unseen)", "(null)")
    return FeatureReference(name, "categorical", dtype, reference, labels, categories=categories,
                            known=tuple(all_known), unseen_known=known is not None,
                            _slot_of=np.array([slot_of.get(c, other_slot) for c in all_known], dtype=np.int64))


def _share(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) and value >= 0 else 0.0


def _num(value: float) -> str:
    return f"{value:.4g}"


def feature_reference(spec: ColumnSpec, profile: Mapping[str, Any] | None) -> FeatureReference:
    if spec.dtype in ("int", "float", "datetime"):
        return numeric_reference(spec.name, spec.dtype, profile)
    known = ["False", "True"] if spec.dtype == "bool" else spec.categories
    return categorical_reference(spec.name, spec.dtype, profile, known)


@dataclass(frozen=True, eq=False)
class NumericBlock:
    """The numeric features of a reference, for counting them all at once: a value's slot is how many of its
    feature's ``bounds`` it reaches (``x >= bound``; NaN pads never reached), the same slot ``count`` gives, found
    with a dozen whole-matrix comparisons instead of a branchy binary search per column."""

    features: tuple[int, ...] = ()  # indices into Reference.features
    bounds: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))  # (most bounds, features), NaN-padded
    offsets: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))  # (features,) first slot of each
    nulls: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))  # (features,) null slot of each

    @classmethod
    def of(cls, features: Sequence[FeatureReference], offsets: Sequence[int]) -> NumericBlock:
        chosen = [i for i, f in enumerate(features) if f.kind == "numeric"]
        if not chosen:
            return cls()
        cuts = [features[i].search[:-1] for i in chosen]  # the search edges without their NaN
        bounds = np.full((max(len(c) for c in cuts), len(chosen)), np.nan)
        for j, c in enumerate(cuts):
            bounds[:len(c), j] = c
        first = np.array([offsets[i] for i in chosen], dtype=np.int64)
        nulls = np.array([offsets[i] + features[i].null_slot for i in chosen], dtype=np.int64)
        return cls(tuple(chosen), bounds, first, nulls)


@dataclass(frozen=True, eq=False)
class Reference:
    """What live data of one model version is compared with. Build it with :meth:`from_manifest`."""

    model: str
    version: str
    signature: Signature
    features: tuple[FeatureReference, ...]  # in signature order
    prediction: FeatureReference | None
    classes: list[str] | None  # the classifier's classes as text (to_jsonable, then str)
    offsets: tuple[int, ...] = ()  # where each feature's slots start in a Counts array; the prediction's last
    fingerprint: bytes = b""  # sha256 of the layout: Counts made for another reference are refused
    block: NumericBlock = field(default_factory=NumericBlock, repr=False)

    @classmethod
    def from_manifest(cls, manifest: Manifest, profile: Mapping[str, Any] | None) -> Reference:
        """The reference of a package: its manifest's signature and its ``profile.json`` (read it with
        ``LoadedModel.profile()``, or from the package directory). A profile without some figure (a package
        saved by an older shipml) gives what it can; ``None`` is refused: drift needs the training profile."""
        if not isinstance(profile, Mapping) or not isinstance(profile.get("features"), Mapping):
            raise ManifestError(f"{manifest.ref} has no reference profile of its training data: drift cannot be"
                                " measured (save the model again with a training sample)")
        return cls.build(manifest.name, manifest.version, manifest.signature, profile)

    @classmethod
    def from_package(cls, directory: Path, manifest: Manifest | None = None) -> Reference:
        """The reference of a package directory, its files checked first (each as its manifest records it)."""
        from shipml.package.artefacts import verify_integrity
        from shipml.package.manifest import PROFILE, read_manifest

        manifest = manifest if manifest is not None else read_manifest(directory)
        if not (directory / PROFILE).is_file():
            return cls.from_manifest(manifest, None)  # refused, by name
        verify_integrity(directory, manifest)
        try:
            profile = orjson.loads((directory / PROFILE).read_bytes())
        except orjson.JSONDecodeError:
            profile = None
        return cls.from_manifest(manifest, profile)

    @classmethod
    def from_model(cls, model: LoadedModel) -> Reference:
        try:
            profile: Any = model.profile()
        except (OSError, ValueError):
            profile = None
        return cls.from_manifest(model.manifest, profile)

    @classmethod
    def build(cls, model: str, version: str, signature: Signature, profile: Mapping[str, Any]) -> Reference:
        found = profile.get("features")
        feats: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
        features = tuple(feature_reference(spec, feats.get(spec.name)) for spec in signature.inputs)
        outputs = signature.outputs
        classes = [str(to_jsonable(c)) for c in outputs.classes] if outputs.classes is not None else None
        pred_profile = profile.get("predictions")
        prediction: FeatureReference | None = None
        if isinstance(pred_profile, Mapping):
            if pred_profile.get("kind") == "numeric" and outputs.task != "classification":
                prediction = numeric_reference("prediction", "prediction", pred_profile)
            else:
                prediction = categorical_reference("prediction", "prediction", pred_profile, classes,
                                                   top=classes)
        sizes = [f.size for f in features] + ([prediction.size] if prediction is not None else [])
        offsets = tuple(int(o) for o in np.cumsum([0, *sizes]))
        layout = {"model": model, "version": version, "features": [f.describe() for f in features],
                  "prediction": prediction.describe() if prediction is not None else None}
        digest = hashlib.sha256(orjson.dumps(layout)).digest()
        return cls(model, version, signature, features, prediction, classes, offsets, digest,
                   NumericBlock.of(features, offsets))

    @property
    def slots(self) -> int:
        """The length of a Counts array: every feature's slots, then the prediction's."""
        return self.offsets[-1]

    def feature(self, name: str) -> FeatureReference:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)
