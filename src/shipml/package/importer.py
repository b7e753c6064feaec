"""Import a model file made elsewhere into the registry, without running anything the user has not trusted.

What ``path`` may be:

- an MLflow model directory (``MLmodel``): flavors lightgbm, xgboost and onnx load from their native files;
  sklearn (and lightgbm saved through its sklearn API) is a pickle or a skops file, held to the rules below;
- a shipml package directory (``shipml.json``): copied in as a new version;
- a file: ``.skops``, a LightGBM text model, an XGBoost ``.json``/``.ubj`` model, ``.onnx``, or a
  ``.pkl``/``.pickle``/``.joblib`` pickle, which is refused unless trusted (loading a pickle runs its code).

The format is read from the content, not only the name: a pickle renamed ``model.txt`` or ``model.onnx`` is
recognised as a pickle and refused, even with trust (the user trusted an ONNX file, not a pickle). Once in
memory, the model is packaged like any saved model, so it is stored in a safe format whenever one exists; the
source file's name and sha256 go into the version's tags (``imported_from``, ``imported_sha256``), and its
lineage records the source (``lineage.imported_from``: path, file, format, sha256 and, for an MLflow model, the
run, artifact path, creation time and MLflow version of its ``MLmodel``) instead of a training script and commit.
Without a sample, an MLflow model's input example stands in for one, with a :class:`SampleWarning`: a few rows
make a signature whose ranges most real rows fall outside.
"""

from __future__ import annotations

import bz2
import io
import json
import lzma
import pickletools
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from shipml._optional import import_optional
from shipml._paths import absolute
from shipml.errors import (
    DependencyError,
    ManifestError,
    NotFoundError,
    SchemaError,
    UnsafeModelError,
    UnsupportedModelError,
)
from shipml.package.builder import BuildOptions
from shipml.package.loaded import sha256_file
from shipml.package.manifest import MANIFEST, ImportedFrom, MlflowSource
from shipml.registry.registry import ModelVersion, Registry
from shipml.runtimes.sklearn import types_needing_trust

MLMODEL = "MLmodel"

#: What a file's extension claims it is. The content decides; a claim the content contradicts is refused.
EXTENSIONS = {".pkl": "pickle", ".pickle": "pickle", ".joblib": "pickle", ".skops": "skops",
              ".txt": "lightgbm", ".lgb": "lightgbm", ".json": "xgboost", ".ubj": "xgboost", ".onnx": "onnx"}
DESCRIPTIONS = {"pickle": "a pickle", "skops": "a skops file", "lightgbm": "a LightGBM text model",
                "xgboost": "an XGBoost model", "onnx": "an ONNX model"}
#: A skops file from elsewhere loads without trust only when every type it asks for is one skops trusts or one of
#: the sklearn runtime's DATA_TYPES (the types it admits from any file); these prefixes add to that per source.
SKLEARN_TYPES: tuple[str, ...] = ()
#: MLflow's lightgbm flavor stores sklearn-API models with skops; these types are LightGBM's own, rebuilt from
#: plain state, and are what the flavor promises.
LIGHTGBM_TYPES = ("lightgbm.", "collections.OrderedDict")
#: MLflow flavor -> (key naming its data file, formats its file may hold)
FLAVORS: dict[str, tuple[str, tuple[str, ...]]] = {
    "lightgbm": ("data", ("lightgbm", "skops", "pickle")),
    "xgboost": ("data", ("xgboost",)),
    "onnx": ("data", ("onnx",)),
    "sklearn": ("pickled_model", ("skops", "pickle")),
}
#: The only classes an MLflow xgboost flavor may name (never import a class named by a file).
XGBOOST_CLASSES = ("XGBClassifier", "XGBRegressor", "XGBRanker", "XGBRFClassifier", "XGBRFRegressor")

_COMPRESSED = {b"\x1f\x8b": "gzip", b"BZh": "bz2", b"\xfd7zXZ\x00": "xz", b"\x5d\x00\x00": "lzma",
               b"x\x01": "zlib",
               b"x\x5e": "zlib", b"x\x9c": "zlib", b"x\xda": "zlib", b"\x04\x22\x4d\x18": "lz4"}
_SCAN_LIMIT = 64 << 20  # bytes of a pickle read to name what it imports (the message only; nothing runs)


class SampleWarning(UserWarning):
    """The signature and golden sample come from a sample too small to describe real inputs."""


@dataclass(frozen=True)
class _Found:
    """A model read into memory, and where it came from."""

    model: Any
    source: Path  # the file whose sha256 is recorded
    format: str
    example: pd.DataFrame | None = None
    mlflow: MlflowSource | None = None


def import_model(path: str | Path, name: str, *, sample: Any, target: Any = None, trusted: bool = False,
                 registry: Registry | str | Path | None = None, version: str | None = None,
                 description: str | None = None, tags: dict[str, str] | None = None) -> ModelVersion:
    """Import the model at ``path`` (file, MLflow model or shipml package directory) as a new version of
    ``name``. Nothing that can run code is loaded unless ``trusted``.

    ``sample``: a DataFrame or the path of a CSV/Parquet file (an MLflow ``input_example`` is used when None);
    ``target``: a column of the sample holding the labels (dropped from the features), or the labels.
    """
    given = str(path)
    path = absolute(path)
    reg = registry if isinstance(registry, Registry) else Registry(registry)
    if not path.exists():
        raise NotFoundError(f"no such file or directory: {given}")
    if path.is_dir() and (path / MANIFEST).is_file():
        return _import_package(path, name, reg, trusted=trusted, version=version, description=description,
                               tags=tags)
    if path.is_dir() and (path / MLMODEL).is_file():
        found = _read_mlflow(path, trusted=trusted)
    elif path.is_dir():
        raise UnsupportedModelError(f"{path.name} is a directory with neither {MLMODEL} (an MLflow model) nor"
                                    f" {MANIFEST} (a shipml package)")
    else:
        kind = file_format(path)
        found = _Found(_load_file(path, kind, trusted=trusted), path, kind)
    if sample is None and found.example is not None:
        _warn_small_example(path, found.example)
    features, labels = read_sample(sample if sample is not None else found.example, target)
    file = found.source.name if found.source == path else found.source.relative_to(path.resolve()).as_posix()
    origin = path.name if found.source == path else f"{path.name}/{file}"
    digest = sha256_file(found.source)
    source = ImportedFrom(path=str(path), file=file, format=found.format, sha256=digest, mlflow=found.mlflow)
    all_tags = {**(tags or {}), "imported_from": origin, "imported_sha256": digest, "imported_format": found.format}
    options = BuildOptions(target=labels, trusted=trusted, description=description, tags=all_tags,
                           imported_from=source)
    return reg.save(found.model, name, sample=features, version=version, options=options)


def _warn_small_example(path: Path, example: pd.DataFrame) -> None:
    rows = len(example)
    warnings.warn(
        f"{path.name}: no --sample, so the signature comes from the MLflow input example's {rows} row"
        f"{'' if rows == 1 else 's'}: its ranges and categories cover only {'that row' if rows == 1 else 'those'},"
        " so real inputs outside them get out-of-range warnings (rejections under a reject policy), and the"
        " golden check runs on them alone. Pass --sample FILE (CSV or Parquet) with typical training rows.",
        SampleWarning, stacklevel=3)


# -- what a file is ----------------------------------------------------------------------------------------
def file_format(path: Path) -> str:
    """The format of the model file at ``path``, from its content, checked against what its name claims."""
    content = sniff(path)
    claimed = EXTENSIONS.get(path.suffix.lower())
    if content is None:
        raise UnsupportedModelError(
            f"{path.name} is not a model file shipml can read"
            + (f" (its name says {DESCRIPTIONS[claimed]}, its content does not)" if claimed else "")
            + ": supported are .skops, LightGBM text, XGBoost .json/.ubj, .onnx, and with --trust"
            " .pkl/.pickle/.joblib")
    if claimed is not None and claimed not in (content, "pickle"):
        message = (f"{path.name} is {DESCRIPTIONS[content]}, although its name says {DESCRIPTIONS[claimed]};"
                   " refusing a file whose content contradicts its name")
        if content == "pickle":
            imports = pickle_imports(path)
            raise UnsafeModelError(
                message + _imports_note(imports) + ". If you trust it as a pickle, rename it to .pkl and pass"
                " --trust.", imports)
        raise UnsupportedModelError(message + " (rename it to match its content to import it)")
    return content


def sniff(path: Path) -> str | None:
    """What the bytes of ``path`` hold: pickle, skops, lightgbm, xgboost, onnx or None (never loads it)."""
    with path.open("rb") as f:
        head = f.read(4096)
    if _is_pickle_header(head) or _is_compressed_pickle(path, head):
        return "pickle"
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as z:
                return "skops" if "schema.json" in z.namelist() else None
        except zipfile.BadZipFile:
            return None
    first_line = head.split(b"\n", 1)[0].strip()
    if first_line == b"tree" and b"version=" in head:
        return "lightgbm"
    if head.lstrip().startswith(b"{"):
        return "xgboost" if b"learner" in head else None
    if _is_onnx(path):
        return "onnx"
    if _is_old_pickle(path):
        return "pickle"
    return None


def _is_pickle_header(head: bytes) -> bool:
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def _decompress_prefix(path: Path, kind: str, size: int) -> bytes:
    if kind == "lz4":
        return b""
    with path.open("rb") as f:
        # enough compressed input for a header (bz2 emits nothing before a whole block) or a bounded scan
        data = f.read(min(max(size, 1 << 20), 4 << 20))
    if kind == "gzip":
        return zlib.decompressobj(wbits=31).decompress(data, size)
    if kind == "zlib":
        return zlib.decompressobj().decompress(data, size)
    if kind == "bz2":
        return bz2.BZ2Decompressor().decompress(data, size)
    if kind in ("xz", "lzma"):
        return lzma.LZMADecompressor().decompress(data, size)
    return b""


def _is_compressed_pickle(path: Path, head: bytes) -> bool:
    """joblib compresses pickles with zlib, gzip, bz2, xz, lzma or lz4 (whose magic alone decides)."""
    for magic, kind in _COMPRESSED.items():
        if head.startswith(magic):
            if kind == "lz4":
                return True
            try:
                return _is_pickle_header(_decompress_prefix(path, kind, 16))
            except (zlib.error, OSError, EOFError, lzma.LZMAError):
                return False
    return False


def _is_old_pickle(path: Path) -> bool:
    """Protocol 0/1 pickles have no header: they are pickles when their opcodes parse up to STOP."""
    if path.stat().st_size > _SCAN_LIMIT:
        return False
    try:
        ops = list(pickletools.genops(path.read_bytes()))
    except Exception:  # any parse failure means "not a pickle"; genops never executes anything
        return False
    return len(ops) >= 2 and ops[-1][0].name == "STOP"


def _is_onnx(path: Path) -> bool:
    try:
        import onnx
    except ImportError:
        return False
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # protobuf rejects the bytes: not ONNX
        return False
    return bool(model.ir_version) and len(model.graph.node) > 0


def pickle_imports(path: Path) -> list[str]:
    """The globals a pickle would import when loaded (read from its opcodes; nothing runs). Best effort:
    joblib's inline array data ends the scan, which only shortens the list."""
    with path.open("rb") as f:
        data = f.read(_SCAN_LIMIT)
    head = data[:16]
    for magic, kind in _COMPRESSED.items():
        if head.startswith(magic):
            try:
                data = _decompress_prefix(path, kind, _SCAN_LIMIT)
            except (zlib.error, OSError, EOFError, lzma.LZMAError):
                return []
    found: list[str] = []
    strings: list[str] = []
    memo: dict[int, str | None] = {}
    last: str | None = None
    try:
        for op, arg, _ in pickletools.genops(io.BytesIO(data)):
            name = op.name
            if name in ("GLOBAL", "INST"):
                found.append(str(arg).replace(" ", "."))
            elif name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
            elif name in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"):
                memo[len(memo) if name == "MEMOIZE" else int(str(arg))] = last
                continue
            elif name in ("GET", "BINGET", "LONG_BINGET") and memo.get(int(str(arg))) is not None:
                last = memo[int(str(arg))]
                strings.append(str(last))
                continue
            if "UNICODE" in name or "STRING" in name:
                last = str(arg)
                strings.append(last)
            else:
                last = None
            if name == "STOP":
                break
    except Exception:
        pass
    return list(dict.fromkeys(found))


def _imports_note(imports: Iterable[str]) -> str:
    names = list(imports)
    if not names:
        return ""
    shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    return f" (loading it would import {shown})"


# -- loading -----------------------------------------------------------------------------------------------
def _load_file(path: Path, kind: str, *, trusted: bool, safe_types: tuple[str, ...] = SKLEARN_TYPES,
               model_class: str | None = None) -> Any:
    loaders: dict[str, Callable[[], Any]] = {
        "pickle": lambda: _load_pickle(path, trusted),
        "skops": lambda: _load_skops(path, trusted, safe_types),
        "lightgbm": lambda: _load_lightgbm(path),
        "xgboost": lambda: _load_xgboost(path, model_class),
        "onnx": lambda: _load_onnx(path),
    }
    try:
        return loaders[kind]()
    except (UnsafeModelError, DependencyError, UnsupportedModelError):
        raise
    except Exception as exc:  # a framework's own error, translated at the boundary
        raise UnsupportedModelError(f"{path.name} could not be read as {DESCRIPTIONS[kind]}:"
                                    f" {type(exc).__name__}: {exc}") from exc


def _load_pickle(path: Path, trusted: bool) -> Any:
    if not trusted:
        imports = pickle_imports(path)
        raise UnsafeModelError(
            f"{path.name} is a pickle: loading it runs whatever code it holds{_imports_note(imports)}."
            " Pass --trust (trusted=True) only if you trust whoever made this file.", imports)
    try:
        import joblib
    except ImportError:
        import pickle

        with path.open("rb") as f:
            return pickle.load(f)
    return joblib.load(path)


def _load_skops(path: Path, trusted: bool, safe_types: tuple[str, ...]) -> Any:
    sio = import_optional("skops.io", "sklearn")
    untrusted = sio.get_untrusted_types(file=path)
    unsafe = [t for t in types_needing_trust(untrusted, sealed=False) if not (safe_types and t.startswith(safe_types))]
    if unsafe and not trusted:
        raise UnsafeModelError(
            f"{path.name}: skops cannot prove these types are safe to load: {', '.join(unsafe)}."
            " Pass --trust (trusted=True) if you trust this file.", unsafe)
    return sio.load(path, trusted=untrusted)


def _load_lightgbm(path: Path) -> Any:
    lightgbm = import_optional("lightgbm", "lightgbm")
    return lightgbm.Booster(model_str=path.read_text(encoding="utf-8"))


def _load_xgboost(path: Path, model_class: str | None) -> Any:
    xgboost = import_optional("xgboost", "xgboost")
    short = (model_class or "").rsplit(".", 1)[-1]
    model: Any = getattr(xgboost, short)() if short in XGBOOST_CLASSES else xgboost.Booster()
    model.load_model(str(path))
    return model


def _load_onnx(path: Path) -> Any:
    onnx = import_optional("onnx", "onnx")
    return onnx.load(str(path), load_external_data=False)


# -- MLflow models -----------------------------------------------------------------------------------------
def _read_mlflow(directory: Path, *, trusted: bool) -> _Found:
    try:
        spec = yaml.safe_load((directory / MLMODEL).read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ManifestError(f"{directory.name}/{MLMODEL} is not valid YAML: {exc}") from exc
    flavors = spec.get("flavors") if isinstance(spec, dict) else None
    if not isinstance(flavors, dict):
        raise ManifestError(f"{directory.name}/{MLMODEL} lists no flavors")
    flavor = next((f for f in FLAVORS if f in flavors), None)
    if flavor is None:
        raise UnsupportedModelError(
            f"{directory.name} is an MLflow model with flavor(s) {', '.join(sorted(flavors))}; shipml imports"
            f" the {', '.join(FLAVORS)} flavors")
    conf = flavors[flavor] or {}
    key, formats = FLAVORS[flavor]
    relative = conf.get(key) or (flavors.get("python_function") or {}).get("model_path")
    if not isinstance(relative, str):
        raise ManifestError(f"{directory.name}/{MLMODEL}: the {flavor} flavor names no model file ({key})")
    source = (directory / relative).resolve()
    if not source.is_relative_to(directory.resolve()):
        raise ManifestError(f"{directory.name}/{MLMODEL}: model file {relative!r} points outside the model")
    if source.is_dir():  # older MLflow onnx/xgboost layouts keep the file inside a folder
        files = [p for p in sorted(source.iterdir()) if p.is_file()]
        source = files[0] if len(files) == 1 else source
    if not source.is_file():
        raise ManifestError(f"{directory.name}: the {flavor} flavor's model file {relative} is missing")
    kind = file_format(source)
    if kind not in formats:
        raise UnsupportedModelError(f"{directory.name}: the {flavor} flavor's file {relative} is"
                                    f" {DESCRIPTIONS[kind]}, which that flavor never writes")
    model = _load_file(source, kind, trusted=trusted,
                       safe_types=LIGHTGBM_TYPES if flavor == "lightgbm" else SKLEARN_TYPES,
                       model_class=str(conf.get("model_class") or ""))
    return _Found(model, source, f"mlflow/{flavor}/{kind}", _input_example(directory, spec),
                  _mlflow_source(spec, flavor))


def _mlflow_source(spec: dict[str, Any], flavor: str) -> MlflowSource:
    """What MLmodel records about the model's origin (each field only when it is a plain value)."""

    def text(key: str) -> str | None:
        value = spec.get(key)
        return str(value) if isinstance(value, str | int | float) and not isinstance(value, bool) else None

    return MlflowSource(flavor=flavor, run_id=text("run_id"), artifact_path=text("artifact_path"),
                        model_uuid=text("model_uuid"), model_id=text("model_id"),
                        utc_time_created=text("utc_time_created"), mlflow_version=text("mlflow_version"))


def _input_example(directory: Path, spec: dict[str, Any]) -> pd.DataFrame | None:
    info = spec.get("saved_input_example_info") or {}
    path = directory / str(info.get("artifact_path") or "input_example.json")
    if not path.resolve().is_relative_to(directory.resolve()) or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(data, dict) and "dataframe_split" in data:
        data = data["dataframe_split"]
    if isinstance(data, dict) and "columns" in data and "data" in data:
        return pd.DataFrame(data["data"], columns=data["columns"])
    if isinstance(data, dict) and "inputs" in data:
        data = data["inputs"]
    if isinstance(data, list) and data and all(isinstance(r, dict) for r in data):
        return pd.DataFrame.from_records(data)
    if isinstance(data, list) and data:
        array = np.asarray(data)
        return pd.DataFrame(array.reshape(len(array), -1)) if array.ndim <= 2 else None
    return None


# -- samples and packages ----------------------------------------------------------------------------------
def read_sample(sample: Any, target: Any = None) -> tuple[Any, Any]:
    """(features, target) from a DataFrame, array or CSV/Parquet path; a ``target`` naming a column of the
    sample takes that column out of the features."""
    if sample is None:
        raise SchemaError("a sample of the model's inputs is needed (e.g. --sample data.csv) to infer its"
                          " signature and golden outputs")
    if isinstance(sample, str | Path):
        path = Path(sample)
        suffix = path.suffix.lower()
        if suffix == ".csv":
            sample = pd.read_csv(path)
        elif suffix in (".parquet", ".pq"):
            sample = pd.read_parquet(path)
        else:
            raise SchemaError(f"sample {path.name}: give a .csv or .parquet file")
    if isinstance(target, str) and isinstance(sample, pd.DataFrame):
        if target not in sample.columns:
            raise SchemaError(f"target column {target!r} is not in the sample"
                              f" (columns: {list(sample.columns)})")
        return sample.drop(columns=[target]), sample[target].to_numpy()
    if isinstance(target, str):
        raise SchemaError(f"target {target!r} names a column, but the sample has no column names")
    return sample, target


def _import_package(directory: Path, name: str, registry: Registry, *, trusted: bool, version: str | None,
                    description: str | None, tags: dict[str, str] | None) -> ModelVersion:
    """A shipml package directory as a new version: nothing in its manifest is trusted (see
    :meth:`Registry.add_package`); its manifest's own sha256 goes into the tags."""
    all_tags = {**(tags or {}), "imported_from": directory.name, "imported_sha256": sha256_file(directory / MANIFEST),
                "imported_format": "shipml"}
    return registry.add_package(directory, name, version, trusted=trusted, tags=all_tags, description=description)


__all__ = ["SampleWarning", "file_format", "import_model", "pickle_imports", "read_sample", "sniff"]
