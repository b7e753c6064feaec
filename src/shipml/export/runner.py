"""Run a shipml edge bundle: ``python predict.py [RECORDS.json|-] [-o OUT]``. Needs only onnxruntime and numpy.

This file is copied into every bundle as ``predict.py``; shipml runs the same code in-process to prove parity,
so what was proved is what runs. Before its first prediction it checks every file of the bundle against the
sha256 in ``manifest.json`` and re-runs the golden sample (``golden.json``) within the tolerance stated there.

Input: a JSON object (one record), a JSON array of objects, or JSON Lines (one object per line); each record
holds every input named in ``signature.json`` and nothing else. A record that breaks the signature is refused
with a message naming the record, the field and the rule (exit code 2); a bundle that fails its checks exits
with code 3. Output: one JSON object per record and line, ``{"prediction": ...}`` plus ``"probabilities"``
(class -> probability) for a classifier.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

MANIFEST = "manifest.json"
SIGNATURE = "signature.json"
GOLDEN = "golden.json"
MODEL = "model.onnx"
FLOAT32_MAX = float(np.finfo(np.float32).max)
INT_LIMIT = 2.0**53  # integers beyond this are not exact as JSON numbers read into a float
FEED_TYPES: dict[str, Any] = {"tensor(float)": np.float32, "tensor(double)": np.float64,
                              "tensor(int64)": np.int64, "tensor(string)": object}
FAST_ROWS = 8  # from this many records on, values are checked a column or a matrix at a time
EXIT_BAD_INPUT = 2
EXIT_BAD_BUNDLE = 3


class BundleError(Exception):
    """The bundle cannot be trusted to predict: a file changed, or the golden sample does not reproduce."""


class InputError(Exception):
    """Input records that break the bundle's signature."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def parse_records(text: str) -> list[dict[str, Any]]:
    """Records from a JSON object, a JSON array of objects, or JSON Lines. NaN and Infinity are refused."""
    try:
        data: Any = json.loads(text, parse_constant=_reject_constant)
    except RecursionError as exc:
        raise InputError("input is nested too deeply to be records") from exc
    except ValueError:
        lines = [line for line in text.splitlines() if line.strip()]
        if len(lines) < 2:
            raise InputError("input is not JSON: give an object, an array of objects, or JSON Lines") from None
        data = []
        for number, line in enumerate(lines, 1):
            try:
                data.append(json.loads(line, parse_constant=_reject_constant))
            except RecursionError as exc:
                raise InputError(f"line {number} is nested too deeply to be a record") from exc
            except ValueError as exc:
                raise InputError(f"line {number} is not JSON: {exc}") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise InputError(f"input must be an object, an array of objects or JSON Lines, not {_kind(data)}")
    for i, record in enumerate(data):
        if not isinstance(record, dict):
            raise InputError(f"record {i} must be an object, not {_kind(record)}")
    return data


def _kind(value: Any) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array",
             dict: "an object", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _show(value: Any) -> str:
    text = json.dumps(value, allow_nan=False) if not isinstance(value, float) or math.isfinite(value) else "NaN"
    return text if len(text) <= 40 else text[:37] + "..."


class Columns:
    """Turns records into the model's feeds, refusing any value the signature does not admit."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.columns: list[dict[str, Any]] = spec["columns"]
        self.names = [c["name"] for c in self.columns]
        self.layout: str = spec["layout"]
        self.inputs: list[dict[str, Any]] = spec["inputs"]
        self.null_string: str = spec.get("null_string", "nan")
        self._known = set(self.names)
        self._categories = {c["name"]: set(c["categories"]) for c in self.columns
                            if c["dtype"] == "string" and c.get("categories") is not None}
        self._plan = [(c["name"], c["dtype"], bool(c.get("nullable"))) for c in self.columns]
        self._plain_floats = all(c["dtype"] == "float" for c in self.columns)
        self._has_bool = any(c["dtype"] == "bool" for c in self.columns)
        self._nullable = np.array([bool(c.get("nullable")) for c in self.columns], dtype=bool)
        self._ints = np.array([c["dtype"] == "int" for c in self.columns], dtype=bool)

    def encode(self, records: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
        """The model's feeds for ``records``; InputError naming the record, field and rule of a bad value."""
        self._check_fields(records)
        if self.layout == "matrix":
            matrix = self._fast_matrix(records) if len(records) >= FAST_ROWS else self._small_matrix(records)
            if matrix is not None:
                only = self.inputs[0]
                return {only["name"]: matrix.astype(FEED_TYPES[only["type"]], copy=False)}
        return self.feeds(self._columns(records))

    def values(self, records: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
        """One array per column: float64 (NaN for null) for numbers and booleans, object for strings."""
        self._check_fields(records)
        return self._columns(records)

    def _check_fields(self, records: Sequence[dict[str, Any]]) -> None:
        for i, record in enumerate(records):
            if record.keys() == self._known:
                continue
            extra = [k for k in record if k not in self._known]
            if extra:
                raise InputError(f"record {i}: unknown field(s) {', '.join(map(repr, sorted(extra)[:5]))};"
                                 f" the inputs are {', '.join(self.names)}")
            missing = [n for n in self.names if n not in record]
            if missing:
                raise InputError(f"record {i}: missing field(s) {', '.join(map(repr, missing[:5]))}"
                                 " (give null for a missing value where the signature allows it)")

    def _columns(self, records: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for column in self.columns:
            name = column["name"]
            raw = [record[name] for record in records]
            out[name] = self._column(column, raw)
        return out

    def _column(self, column: dict[str, Any], raw: list[Any]) -> np.ndarray:
        """The column's values; whole columns of plain values take a vectorised path, anything else (and any
        column the vectorised checks doubt) the per-value path, which names the first bad value."""
        fast = self._fast(column, raw) if len(raw) >= FAST_ROWS else None
        return fast if fast is not None else self._checked(column, raw)

    def _small_matrix(self, records: Sequence[dict[str, Any]]) -> np.ndarray | None:
        """A few all-numeric records as one float64 matrix, checked value by value in plain Python (cheaper than
        numpy's per-call cost for a row or two); None when a value needs the per-value path's message."""
        if self._plain_floats:  # float columns only: every value a number within float32's range
            flat = [record[n] for record in records for n in self.names]
            if set(map(type, flat)) <= {int, float} and all(-FLOAT32_MAX <= v <= FLOAT32_MAX for v in flat):
                return np.array(flat, dtype=np.float64).reshape(len(records), len(self.names))
        rows = []
        for record in records:
            row = []
            for name, kind, nullable in self._plan:
                v = record[name]
                t = type(v)
                if t is bool:
                    if kind != "bool":
                        return None
                    row.append(1.0 if v else 0.0)
                elif t is int or t is float:
                    if kind == "bool" or not -FLOAT32_MAX <= v <= FLOAT32_MAX:  # NaN fails the comparison too
                        return None
                    if kind == "int" and (v > INT_LIMIT or v < -INT_LIMIT or (t is float and not v.is_integer())):
                        return None
                    row.append(v)
                elif v is None and nullable:
                    row.append(math.nan)
                else:
                    return None
            rows.append(row)
        return np.array(rows, dtype=np.float64)

    def _fast_matrix(self, records: Sequence[dict[str, Any]]) -> np.ndarray | None:
        """All-numeric records as one float64 matrix, checked at once; None when any value needs the per-value
        path (a boolean column, a type other than int/float/null, a value the checks doubt)."""
        if self._has_bool:
            return None
        kinds = {type(v) for record in records for v in record.values()}
        if not kinds <= {int, float, type(None)}:
            return None
        try:
            matrix = np.array([[record[n] for n in self.names] for record in records], dtype=np.float64)
        except OverflowError:
            return None
        finite = np.isfinite(matrix)
        if not finite.all() and (type(None) not in kinds or np.isinf(matrix).any()
                                 or (~finite[:, ~self._nullable]).any()):
            return None
        magnitude = np.abs(np.where(finite, matrix, 0.0))
        if (magnitude > FLOAT32_MAX).any():
            return None
        if self._ints.any():
            ints = np.where(finite, matrix, 0.0)[:, self._ints]
            if (np.abs(ints) > INT_LIMIT).any() or (ints != np.floor(ints)).any():
                return None
        return matrix

    def _fast(self, column: dict[str, Any], raw: list[Any]) -> np.ndarray | None:
        dtype, nullable = column["dtype"], bool(column.get("nullable"))
        kinds = set(map(type, raw))
        if type(None) in kinds:
            if not nullable:
                return None
            kinds.discard(type(None))
        if dtype == "string":
            allowed = self._categories.get(column["name"])
            present = [v for v in raw if v is not None] if nullable else raw
            if not kinds <= {str} or (allowed is not None and not allowed.issuperset(present)):
                return None
            if len(present) != len(raw):
                raw = [self.null_string if v is None else v for v in raw]
            return np.array(raw, dtype=object)
        if not kinds <= ({bool} if dtype == "bool" else {int, float}):
            return None
        try:
            numbers = np.array(raw, dtype=np.float64)  # None becomes NaN
        except OverflowError:  # an integer beyond any float: the per-value path says which
            return None
        finite = np.isfinite(numbers)
        if not finite.all() and (kinds & {float} or not nullable):
            return None  # NaN or infinity given as a float (not as null): refused by the per-value path
        magnitude = np.abs(numbers[finite])
        if (magnitude > FLOAT32_MAX).any():
            return None
        if dtype == "int" and ((magnitude > INT_LIMIT).any() or (numbers[finite] != np.floor(numbers[finite])).any()):
            return None
        return numbers

    def _checked(self, column: dict[str, Any], raw: list[Any]) -> np.ndarray:
        name, dtype, nullable = column["name"], column["dtype"], bool(column.get("nullable"))
        if dtype == "string":
            values = np.empty(len(raw), dtype=object)
            allowed = self._categories.get(name)
            for i, v in enumerate(raw):
                if v is None and nullable:
                    values[i] = self.null_string
                elif not isinstance(v, str):
                    raise InputError(f"record {i}: field {name!r} must be a string"
                                     f"{' or null' if nullable else ''}, not {_kind(v)} {_show(v)}")
                elif allowed is not None and v not in allowed:
                    shown = ", ".join(repr(c) for c in sorted(allowed)[:10])
                    raise InputError(f"record {i}: field {name!r} has {_show(v)}, a category training never saw"
                                     f" (known: {shown}{', ...' if len(allowed) > 10 else ''})")
                else:
                    values[i] = v
            return values
        numbers = np.empty(len(raw), dtype=np.float64)
        for i, v in enumerate(raw):
            if v is None:
                if not nullable:
                    raise InputError(f"record {i}: field {name!r} must not be null (training saw no nulls in it)")
                numbers[i] = math.nan
            elif dtype == "bool":
                if not isinstance(v, bool):
                    raise InputError(f"record {i}: field {name!r} must be true or false, not {_kind(v)} {_show(v)}")
                numbers[i] = 1.0 if v else 0.0
            elif isinstance(v, bool) or not isinstance(v, int | float):
                raise InputError(f"record {i}: field {name!r} must be a number, not {_kind(v)} {_show(v)}")
            else:
                try:
                    number = float(v)
                except OverflowError:  # an integer beyond any float
                    number = math.inf
                if not math.isfinite(number) or abs(number) > FLOAT32_MAX:
                    raise InputError(f"record {i}: field {name!r} is {_show(v)}, beyond what a 32-bit float holds")
                if dtype == "int" and (number != math.floor(number) or abs(number) > INT_LIMIT):
                    raise InputError(f"record {i}: field {name!r} must be a whole number, not {_show(v)}")
                numbers[i] = number
        return numbers

    def feeds(self, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.layout == "matrix":
            only = self.inputs[0]
            matrix = np.column_stack([values[n] for n in self.names]) if self.names else np.empty((0, 0))
            return {only["name"]: matrix.astype(FEED_TYPES[only["type"]])}
        return {item["name"]: values[item["column"]].astype(FEED_TYPES[item["type"]], copy=False).reshape(-1, 1)
                for item in self.inputs}


class Predictor:
    """The ONNX model behind a signature: records in, (predictions, probabilities or None) out."""

    def __init__(self, model: bytes, spec: dict[str, Any], *, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # converters leave static shapes onnxruntime warns about on every run
        self.session = ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
        self.columns = Columns(spec)
        outputs: dict[str, Any] = spec["outputs"]
        self.task: str = outputs["task"]
        self.classes: list[Any] | None = outputs.get("classes")
        self.labels_from: str = outputs.get("labels_from", "argmax")
        self._label: str | None = outputs.get("label")
        self._proba: str | None = outputs.get("probabilities")
        self._value: str | None = outputs.get("value")
        if self.labels_from != "onnx":
            self._label = None  # labels come from the probabilities: the model's own label output is not read
        self._wanted = [n for n in (self._label, self._proba, self._value) if n is not None]
        self._class_array = np.asarray(self.classes, dtype=object) if self.classes is not None else None
        self._class_names = [str(c) for c in self.classes or []]

    def run(self, records: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray | None]:
        n = len(records)
        if n == 0:
            width = len(self.classes) if self.classes is not None and self._proba else 0
            return np.empty(0, dtype=object), (np.empty((0, width)) if self._proba else None)
        got = self.session.run(self._wanted, self.columns.encode(records))
        if self._value is not None:
            return np.asarray(got[0], dtype=np.float64).reshape(n, -1)[:, 0], None
        proba = np.asarray(got[self._wanted.index(self._proba)], dtype=np.float64).reshape(n, -1) \
            if self._proba else None
        if self.labels_from == "onnx" and self._label is not None:
            labels = np.asarray(got[self._wanted.index(self._label)]).reshape(n)
        elif proba is not None and self._class_array is not None:
            labels = self._class_array[np.argmax(proba, axis=1)]
        else:  # pragma: no cover - the exporter writes one of the two
            raise BundleError("the bundle's signature names neither labels nor probabilities")
        return labels, proba

    def records(self, labels: np.ndarray, proba: np.ndarray | None) -> list[dict[str, Any]]:
        if proba is None or self.classes is None:
            return [{"prediction": label} for label in labels.tolist()]
        names = self._class_names
        return [{"prediction": label, "probabilities": dict(zip(names, p, strict=True))}
                for label, p in zip(labels.tolist(), proba.tolist(), strict=True)]


def compare(labels: np.ndarray, proba: np.ndarray | None, expected: dict[str, Any], task: str,
            tolerance: dict[str, float]) -> list[int]:
    """Rows whose outputs differ from ``expected`` (``predictions``, maybe ``probabilities``) beyond tolerance:
    labels exactly; probabilities within ``proba_atol``; values within ``value_atol + value_rtol * max(|expected|,
    value_scale)``."""
    want = expected["predictions"]
    n = len(want)
    if len(labels) != n:
        return list(range(max(n, len(labels))))
    bad = np.zeros(n, dtype=bool)
    if task == "regression":
        got = np.asarray(labels, dtype=np.float64)
        ref = np.asarray([math.nan if v is None else v for v in want], dtype=np.float64)
        scale = np.maximum(np.abs(ref), float(tolerance.get("value_scale", 0.0)))
        close = np.abs(got - ref) <= tolerance["value_atol"] + tolerance["value_rtol"] * scale
        bad |= ~(close | (np.isnan(got) & np.isnan(ref)))
    else:
        bad |= np.asarray([g != w for g, w in zip(labels.tolist(), want, strict=True)], dtype=bool)
    want_proba = expected.get("probabilities")
    if want_proba is not None and proba is not None:
        ref_p = np.asarray(want_proba, dtype=np.float64).reshape(n, -1)
        if ref_p.shape != proba.shape:
            return list(range(n))
        bad |= (np.abs(proba - ref_p) > tolerance["proba_atol"]).any(axis=1)
    return [int(i) for i in np.flatnonzero(bad)]


class Bundle:
    """A bundle directory, verified: every file against the manifest, then the golden sample."""

    def __init__(self, directory: str | Path, *, threads: int = 1) -> None:
        self.directory = Path(directory)
        self.manifest = self._json(MANIFEST, self._read(MANIFEST))
        files = self.manifest.get("files")
        if not isinstance(files, dict) or not files:
            raise BundleError(f"{MANIFEST} lists no files")
        data: dict[str, bytes] = {}
        for name, digest in sorted(files.items()):
            if "/" in name or "\\" in name or name.startswith("."):
                raise BundleError(f"{MANIFEST} names {name!r}, which is not a file of this directory")
            data[name] = self._read(name)
            if sha256_bytes(data[name]) != digest:
                raise BundleError(f"{name} does not match the sha256 in {MANIFEST}: it changed after export")
        for needed in (MODEL, SIGNATURE, GOLDEN):
            if needed not in data:
                raise BundleError(f"{MANIFEST} does not cover {needed}")
        self.signature = self._json(SIGNATURE, data[SIGNATURE])
        self.golden = self._json(GOLDEN, data[GOLDEN])
        try:
            self.predictor = Predictor(data[MODEL], self.signature["x-shipml"], threads=threads)
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{SIGNATURE} is not a shipml bundle signature: {type(exc).__name__}: {exc}") from exc
        except Exception as exc:  # onnxruntime's own errors (it raises plain RuntimeError subclasses)
            raise BundleError(f"onnxruntime cannot load {MODEL}: {type(exc).__name__}: {exc}") from exc
        self.check_golden()

    def _read(self, name: str) -> bytes:
        try:
            return (self.directory / name).read_bytes()
        except OSError as exc:
            raise BundleError(f"cannot read {name} in {self.directory}: {exc.strerror or exc}") from exc

    @staticmethod
    def _json(name: str, data: bytes) -> dict[str, Any]:
        try:
            value = json.loads(data)
        except ValueError as exc:
            raise BundleError(f"{name} is not JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise BundleError(f"{name} must hold a JSON object")
        return value

    def check_golden(self) -> None:
        golden = self.golden
        try:
            labels, proba = self.predictor.run(golden["records"])
            bad = compare(labels, proba, golden["expected"], self.predictor.task, golden["tolerance"])
        except (KeyError, TypeError) as exc:
            raise BundleError(f"{GOLDEN} is not a golden sample: {type(exc).__name__}: {exc}") from exc
        except InputError as exc:
            raise BundleError(f"the golden inputs no longer fit the signature: {exc}") from exc
        if bad:
            rows = ", ".join(map(str, bad[:10]))
            raise BundleError(f"the model does not reproduce its golden sample here: {len(bad)} of"
                              f" {len(golden['records'])} rows differ (rows {rows}); tolerance {golden['tolerance']}")

    def predict(self, records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        labels, proba = self.predictor.run(records)
        return self.predictor.records(labels, proba)


def main(argv: Sequence[str] | None = None, stdin: IO[str] | None = None, stdout: IO[str] | None = None,
         stderr: IO[str] | None = None) -> int:
    stdin, stdout, stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
    parser = argparse.ArgumentParser(prog="predict.py", description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("input", nargs="?", default="-", help="JSON records file ('-' or nothing: stdin)")
    parser.add_argument("-o", "--output", default="-", help="where to write predictions ('-': stdout)")
    parser.add_argument("--bundle", default=str(Path(__file__).resolve().parent),
                        help="the bundle directory (default: the one holding this file)")
    parser.add_argument("--check", action="store_true", help="verify the bundle and its golden sample, then exit")
    parser.add_argument("--bench", type=int, metavar="N", default=0,
                        help="time N single-record predictions of the golden records; print microseconds per row")
    args = parser.parse_args(argv)
    try:
        bundle = Bundle(args.bundle)
        if args.check:
            print(f"ok: {bundle.manifest.get('source', 'bundle')} verified", file=stdout)
            return 0
        if args.bench:
            print(json.dumps({"us_per_row": bench(bundle, args.bench)}), file=stdout)
            return 0
        try:
            text = stdin.read() if args.input == "-" else Path(args.input).read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"input is not UTF-8 text: {exc.reason} at byte {exc.start}") from exc
        except OSError as exc:
            raise InputError(f"cannot read {args.input}: {exc.strerror or exc}") from exc
        lines = [json.dumps(row, ensure_ascii=False) for row in bundle.predict(parse_records(text))]
        body = "".join(line + "\n" for line in lines)
        if args.output == "-":
            stdout.write(body)
        else:
            Path(args.output).write_text(body, encoding="utf-8")
    except InputError as exc:
        print(f"error: {exc}", file=stderr)
        return EXIT_BAD_INPUT
    except BundleError as exc:
        print(f"error: bundle refused: {exc}", file=stderr)
        return EXIT_BAD_BUNDLE
    except Exception as exc:  # a runner on a device reports, it does not dump a traceback on its user
        print(f"error: {type(exc).__name__}: {exc}", file=stderr)
        return 1
    return 0


def bench(bundle: Bundle, n: int) -> float:
    """Median microseconds of one single-record prediction, over ``n`` calls cycling the golden records."""
    records = bundle.golden["records"] or [{}]
    times = []
    for i in range(n):
        record = [records[i % len(records)]]
        start = time.perf_counter()
        bundle.predict(record)
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2] * 1e6


if __name__ == "__main__":
    sys.exit(main())
