"""Request bodies for a load test, from a model's input signature and golden sample.

The signature and example rows come from the server (``GET /models/NAME``) or from the registry (the package's
manifest and ``golden.json``, read without loading the model). Bodies mix golden rows (known to be valid) with
rows drawn inside what training saw: each numeric column's [min, max], each string column's categories. A small
pool of distinct bodies is encoded once; the engine sends them in turn.
"""

from __future__ import annotations

import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson

from shipml.errors import NotFoundError, ServiceUnavailable, SpecError

Protocol = Literal["simple", "v1", "v2"]
PROTOCOLS: tuple[Protocol, ...] = ("simple", "v1", "v2")
#: The v2 datatype of each column kind (one tensor per column).
V2_DATATYPES = {"int": "INT64", "float": "FP64", "bool": "BOOL", "string": "BYTES", "datetime": "BYTES"}
#: Share of rows taken from the golden sample; the others are drawn within the signature.
GOLDEN_SHARE = 0.5


@dataclass(frozen=True)
class Column:
    """One input column as the signature describes it."""

    name: str
    dtype: str
    nullable: bool = False
    min: float | str | None = None
    max: float | str | None = None
    categories: tuple[str, ...] | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Column:
        try:
            name, dtype = str(data["name"]), str(data["dtype"])
        except KeyError as exc:
            raise SpecError(f"an input column has no {exc.args[0]!r}: {dict(data)}") from exc
        if dtype not in V2_DATATYPES:
            raise SpecError(f"input column {name!r} has an unknown dtype {dtype!r}"
                            f" (expected one of {', '.join(V2_DATATYPES)})")
        categories = data.get("categories")
        return cls(name, dtype, bool(data.get("nullable", False)), data.get("min"), data.get("max"),
                   tuple(str(c) for c in categories) if categories else None)


@dataclass(frozen=True)
class ModelInfo:
    """What a load test needs of a model: its name (as served), input columns and example rows."""

    name: str
    inputs: tuple[Column, ...]
    examples: tuple[dict[str, Any], ...]

    def __post_init__(self) -> None:
        if not self.inputs:
            raise SpecError(f"model {self.name!r} has no input columns to generate requests from")


# -- where the signature comes from ------------------------------------------------------------------------
def get_json(url: str, token: str | None = None, timeout_s: float = 10.0) -> Any:
    """GET ``url`` and decode its JSON; failures become errors that say what to do."""
    request = urllib.request.Request(url, headers={"accept": "application/json"})
    if token:
        request.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        message = _error_message(exc.read())
        if exc.code in (401, 403):
            raise ServiceUnavailable(f"GET {url} was refused ({exc.code}{message}): pass --token or set "
                                     "SHIPML_TOKEN") from None
        if exc.code == 404:
            raise NotFoundError(f"GET {url} answered 404{message}") from None
        raise ServiceUnavailable(f"GET {url} answered {exc.code}{message}") from None
    except urllib.error.URLError as exc:
        raise ServiceUnavailable(f"cannot reach {url}: {exc.reason}") from None
    except (TimeoutError, OSError) as exc:
        raise ServiceUnavailable(f"cannot reach {url}: {exc}") from None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ServiceUnavailable(f"GET {url} did not answer JSON") from None


def _error_message(body: bytes) -> str:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ""
    return f": {data['error']}" if isinstance(data, dict) and isinstance(data.get("error"), str) else ""


def served_model_name(base_url: str, token: str | None = None) -> str:
    """The one model a server serves (``GET /models``); an error naming them when there are several."""
    data = get_json(base_url.rstrip("/") + "/models", token)
    names = [str(m.get("name")) for m in data.get("models", []) if isinstance(m, dict)] \
        if isinstance(data, dict) else []
    if len(names) != 1:
        served = ", ".join(names) or "none"
        raise SpecError(f"the server serves {len(names)} models ({served}): pass --model NAME")
    return names[0]


def model_info_from_server(base_url: str, name: str, token: str | None = None) -> ModelInfo:
    """Signature and example rows from ``GET /models/NAME`` of a running shipml server."""
    url = f"{base_url.rstrip('/')}/models/{urllib.parse.quote(name, safe='')}"
    try:
        data = get_json(url, token)
    except NotFoundError as exc:
        raise NotFoundError(f"{exc} (a server without GET /models/NAME is older than this client:"
                            " pass --ref REF to read the model from the registry, or --payload FILE)") from None
    if not isinstance(data, dict):
        raise ServiceUnavailable(f"GET {url} did not answer a JSON object")
    if "inputs" not in data:
        state = "not ready yet" if not data.get("ready") else "described without its inputs"
        raise ServiceUnavailable(f"model {name!r} is {state} on the server: wait for /readyz, or pass --ref")
    example = data.get("example") or {}
    rows = example.get("instances", []) if isinstance(example, dict) else []
    return ModelInfo(name, tuple(Column.from_dict(c) for c in data["inputs"]),
                     tuple(r for r in rows if isinstance(r, dict)))


def model_info_from_registry(ref: str, registry: Any = None, served_as: str | None = None) -> ModelInfo:
    """Signature and golden rows of ``ref`` (name, name:1.2.0, name@alias or a package directory), read from
    its manifest and ``golden.json`` without loading the model. ``served_as`` is the endpoint name on the
    server (default: the model's name)."""
    from shipml.package.manifest import GOLDEN, read_manifest
    from shipml.registry import Registry
    from shipml.registry.names import Ref

    r = Ref.parse(ref)
    if r.path is not None:
        path = r.path
    else:
        store = registry if isinstance(registry, Registry) else Registry(registry)
        path = store.directory(store.get(r))
    manifest = read_manifest(Path(path))
    columns = tuple(Column.from_dict(c.model_dump()) for c in manifest.signature.inputs)
    examples: tuple[dict[str, Any], ...] = ()
    golden_path = Path(path) / GOLDEN
    if golden_path.is_file():
        inputs = orjson.loads(golden_path.read_bytes()).get("inputs", {})
        count = min((len(v) for v in inputs.values()), default=0)
        examples = tuple({c.name: inputs[c.name][i] for c in columns if c.name in inputs} for i in range(count))
    return ModelInfo(served_as or manifest.name, columns, examples)


# -- rows and bodies -----------------------------------------------------------------------------------------
def generate_rows(info: ModelInfo, count: int, seed: int = 0) -> list[dict[str, Any]]:
    """``count`` rows: golden rows in turn, and about half drawn within each column's training range."""
    rng = np.random.default_rng(seed)
    examples = [e for e in info.examples if all(c.name in e for c in info.inputs)]
    rows: list[dict[str, Any]] = []
    for k in range(count):
        if examples and (k < len(examples) or rng.random() < GOLDEN_SHARE):
            rows.append({c.name: examples[k % len(examples)][c.name] for c in info.inputs})
        else:
            rows.append({c.name: draw_value(c, rng, [e[c.name] for e in examples]) for c in info.inputs})
    return rows


def draw_value(column: Column, rng: np.random.Generator, seen: Sequence[Any] = ()) -> Any:
    """One value for ``column`` inside what training saw (falling back on values ``seen`` in examples)."""
    lo, hi = column.min, column.max
    present = [v for v in seen if v is not None]
    if column.dtype == "bool":
        return bool(rng.random() < 0.5)
    if column.dtype in ("int", "float") and isinstance(lo, int | float) and isinstance(hi, int | float) \
            and math.isfinite(lo) and math.isfinite(hi):
        if column.dtype == "int":
            low, high = math.ceil(lo), math.floor(hi)
            return int(rng.integers(low, high + 1)) if high >= low else int(lo)
        return float(rng.uniform(lo, hi)) if hi > lo else float(lo)
    if column.dtype == "string" and column.categories:
        return column.categories[int(rng.integers(len(column.categories)))]
    if column.dtype == "datetime" and isinstance(lo, str) and isinstance(hi, str):
        try:
            start, end = datetime.fromisoformat(lo), datetime.fromisoformat(hi)
        except ValueError:
            pass
        else:
            return (start + (end - start) * float(rng.random())).isoformat()
    if present:
        return present[int(rng.integers(len(present)))]
    return {"int": 0, "float": 0.0, "string": "", "datetime": datetime.now(UTC).isoformat()}[column.dtype]


def request_path(protocol: Protocol, model: str) -> str:
    name = urllib.parse.quote(model, safe="")
    if protocol == "simple":
        return f"/models/{name}/predict"
    if protocol == "v1":
        return f"/v1/models/{name}:predict"
    if protocol == "v2":
        return f"/v2/models/{name}/infer"
    raise SpecError(f"unknown protocol {protocol!r} (expected one of {', '.join(PROTOCOLS)})")


def encode_body(info: ModelInfo, rows: Sequence[Mapping[str, Any]], protocol: Protocol) -> bytes:
    """One request body in ``protocol``: records for simple and v1, one tensor per column for v2."""
    if protocol in ("simple", "v1"):
        return orjson.dumps({"instances": list(rows)})
    if protocol == "v2":
        tensors = [{"name": c.name, "shape": [len(rows)], "datatype": V2_DATATYPES[c.dtype],
                    "data": [_v2_value(c, row[c.name]) for row in rows]} for c in info.inputs]
        return orjson.dumps({"inputs": tensors})
    raise SpecError(f"unknown protocol {protocol!r} (expected one of {', '.join(PROTOCOLS)})")


def _v2_value(column: Column, value: Any) -> Any:
    if column.dtype == "int":
        return int(value)
    if column.dtype == "float":
        return float(value)
    if column.dtype == "bool":
        return bool(value)
    return str(value)


def build_bodies(info: ModelInfo, protocol: Protocol = "simple", rows: int = 1, pool: int = 64,
                 seed: int = 0) -> list[bytes]:
    """``pool`` distinct bodies of ``rows`` rows each (the first ones hold the golden rows)."""
    if rows < 1:
        raise SpecError(f"rows per request must be at least 1, got {rows}")
    if pool < 1:
        raise SpecError(f"payload pool must hold at least 1 body, got {pool}")
    generated = generate_rows(info, rows * pool, seed)
    return [encode_body(info, generated[k * rows:(k + 1) * rows], protocol) for k in range(pool)]


def read_payload_file(path: str | Path) -> bytes:
    """A fixed request body from a file; it must be JSON."""
    p = Path(path)
    if not p.is_file():
        raise NotFoundError(f"no payload file {p}")
    body = p.read_bytes()
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise SpecError(f"payload file {p} is not valid JSON: {exc}") from None
    return body


def encode_request(method: str, path: str, host_header: str, body: bytes,
                   headers: Mapping[str, str] | None = None) -> bytes:
    """A whole HTTP/1.1 keep-alive request, ready to write to a socket."""
    if not path.startswith("/") or any(ch.isspace() or ord(ch) < 32 for ch in path):
        raise SpecError(f"request path must start with '/' and hold no spaces or control characters, got {path!r}")
    lines = [f"{method} {path} HTTP/1.1", f"host: {host_header}", "content-type: application/json",
             f"content-length: {len(body)}", "user-agent: shipml-loadtest"]
    for name, value in (headers or {}).items():
        if any(ch in f"{name}{value}" for ch in "\r\n\x00") or ":" in name:
            raise SpecError(f"header {name!r} holds a line break or a colon in its name")
        lines.append(f"{name}: {value}")
    try:
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    except UnicodeEncodeError as exc:
        raise SpecError(f"the request path or a header value holds a character HTTP/1.1 cannot carry"
                        f" (position {exc.start}); percent-encode the path") from None
    return head + body
