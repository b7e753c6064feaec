"""The deployment spec (``shipml.yaml``): what is served and how. One file drives every target - the local
server, the container image, the Kubernetes manifests and the Ray Serve application.

Example::

    version: 1
    server: {host: 127.0.0.1, port: 8000, workers: 1}
    batching: {max_batch_size: 1024, max_latency_ms: 2}
    limits: {max_body_bytes: 1048576, max_rows: 10000, max_queue: 2048, request_timeout_ms: 5000}
    input_policy: {out_of_range: warn, unseen_category: reject}
    auth: {enabled: true, metrics_auth: false, open_docs: false}
    endpoints:
      - name: churn
        models: [churn@production]              # models[0] answers; an @alias is followed while serving
        ab: {key: "header:X-User-ID", variants: {control: "churn:1.2.0", treatment: "churn:1.3.0"}}
        shadow: {model: "churn:2.0.0", fraction: 0.1}
        fallback: ["churn:1.1.0", {default: {prediction: 0}}]
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    SerializerFunctionWrapHandler,
    Tag,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from shipml._paths import absolute
from shipml.errors import ShipmlError, SpecError
from shipml.monitoring.spec import MonitoringSpec
from shipml.package.validation import InputPolicy
from shipml.registry.names import Ref, check_name
from shipml.release.router import KeySource

SPEC_VERSION = 1




class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSpec(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1, le=64)
    graceful_timeout_s: float = Field(30.0, gt=0, le=3600, description="SIGTERM to exit, at most")
    drain_delay_s: float = Field(2.0, ge=0, le=600, description="readiness 503 before listeners close")
    access_log: bool = True
    compile: Literal["auto", "off"] = Field(
        "auto", description="auto: LightGBM models switch to a compiled form (5-7x faster per row) once it is"
                            " compiled in the background and proven to give the same outputs; needs"
                            " shipml[compiled]")
    follow_interval_s: float = Field(1.0, gt=0, le=3600, description=(
        "how often a server reads the registry's aliases and release state of the models it follows (two small"
        " files per model; one small object in an S3 registry; nothing is read per request)"))
    http: Literal["uvicorn", "granian"] = Field(
        "uvicorn", description="HTTP server: uvicorn (uvloop + httptools, with shipml's own HTTP/1 request cycle"
                               " calling the app directly), or granian (HTTP parsed in Rust, the app called through"
                               " RSGI). On the machines measured uvicorn served more requests per second, with"
                               " ~0.2 context switches per request where granian made ~3 (bench/RESULTS.md)")


class BatchingSpec(_Strict):
    max_batch_size: int = Field(1024, ge=1, le=100_000, description=(
        "rows merged into one predict call at most: each call has a fixed cost (hand-off to the inference thread,"
        " checks, the framework's own set-up) that large batches share; tabular models predict 1,024 rows in"
        " a few ms"))
    max_latency_ms: float = Field(2.0, ge=0, le=10_000, description=(
        "longest a batch waits for requests whose bodies are still arriving (it never waits for requests that are"
        " not on their way)"))


class LimitsSpec(_Strict):
    max_body_bytes: int = Field(1 << 20, ge=1024)
    max_rows: int = Field(10_000, ge=1)
    max_queue: int = Field(2048, ge=1, description="requests waiting per model before 503")
    request_timeout_ms: float = Field(5000, gt=0)
    header_timeout_s: float = Field(10.0, gt=0, le=3600, description=(
        "longest a connection may take to send a request's headers, counted from its opening or from the previous"
        " answer on it (so also how long an idle keep-alive connection stays open); then it is closed. Keep it"
        " above the idle timeout of the clients and load balancers in front, so that they close idle connections"
        " first"))
    body_timeout_s: float = Field(10.0, gt=0, le=3600, description=(
        "longest a request's body may take to arrive once the server starts reading it; then 408 and the"
        " connection is closed"))
    max_connections: int = Field(4096, ge=16, le=1_000_000, description=(
        "open connections per worker at most (lowered to what the process's open-files limit allows, with a"
        " warning). Past it a new connection waits, unread, until one closes (up to 2,048 waiting: the listen"
        " backlog)"))


class InputPolicySpec(_Strict):
    out_of_range: Literal["warn", "reject"] = "warn"
    unseen_category: Literal["warn", "reject"] = "reject"
    extra_columns: Literal["ignore", "warn", "reject"] = "reject"

    def policy(self) -> InputPolicy:
        return InputPolicy(out_of_range=self.out_of_range, unseen_category=self.unseen_category,
                           extra_columns=self.extra_columns)


class AuthSpec(_Strict):
    enabled: bool = False
    tokens_file: str | None = Field(None, description="default: tokens.json in the registry directory")
    metrics_auth: bool = False
    open_docs: bool = Field(False, description=(
        "serve /docs and /openapi.json without a token (they describe every model's inputs, categories and"
        " ranges); by default they need a token of any scope"))


_VARIANT = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
MAX_WEIGHT = 1e9  # shares, not counts: far more than any split needs, and their sum stays exact enough
RESERVED_VARIANTS = frozenset({"stable", "canary", "fallback", "default", "shadow"})


def _ref(value: object) -> str:
    """``value`` if it is a model ref ``Ref.parse`` reads, else a ValueError (pydantic adds the field's place)."""
    if not isinstance(value, str):
        raise ValueError(f"a model ref must be a string such as 'churn:1.2.0', not {type(value).__name__}")
    try:
        Ref.parse(value)
    except ShipmlError as exc:
        raise ValueError(str(exc)) from exc
    return value


ModelRef = Annotated[str, BeforeValidator(_ref)]
_Finite = Annotated[float, Field(allow_inf_nan=False)]


class ABSpec(_Strict):
    """An A/B test: requests split between named variants by weight, sticky by a key of the request."""

    key: str | None = Field(None, description=(
        "where a request's routing key is: 'header:NAME' or 'field:NAME' (top level of the body, first record of"
        " instances, first value of inputs[NAME]); the same key always gets the same variant. A request without"
        " one gets a random variant; no key at all: every request does"))
    variants: dict[str, ModelRef] = Field(description="variant name -> model ref")
    weights: dict[str, _Finite] | None = Field(None, description=(
        "variant name -> share (0 to 1e9, any positive total, not necessarily 100); default: equal shares"))

    @field_validator("key")
    @classmethod
    def _key(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                KeySource.parse(v)
            except ShipmlError as exc:
                raise ValueError(str(exc)) from exc
        return v

    @field_validator("variants")
    @classmethod
    def _variants(cls, v: dict[str, str]) -> dict[str, str]:
        if len(v) < 2:
            raise ValueError(f"an A/B test needs at least two variants, got {len(v)}")
        for name in v:
            if not _VARIANT.fullmatch(name):
                raise ValueError(f"invalid variant name {name!r}: use 1-64 letters, digits, '_' or '-', starting"
                                 " with a letter")
            if name.lower() in RESERVED_VARIANTS:
                raise ValueError(f"variant name {name!r} is reserved (reserved: "
                                 f"{', '.join(sorted(RESERVED_VARIANTS))})")
        return v

    @field_validator("weights", mode="before")
    @classmethod
    def _numbers(cls, v: object) -> object:
        if isinstance(v, dict):
            for name, weight in v.items():
                if isinstance(weight, bool) or not isinstance(weight, int | float):
                    raise ValueError(f"the weight of {name!r} must be a number, not {weight!r}")
        return v

    @model_validator(mode="after")
    def _weights(self) -> ABSpec:
        if self.weights is None:
            return self
        if set(self.weights) != set(self.variants):
            missing = sorted(set(self.variants) - set(self.weights))
            extra = sorted(set(self.weights) - set(self.variants))
            parts = ([f"no weight for {', '.join(missing)}"] if missing else []) + (
                [f"weights for unknown variants {', '.join(extra)}"] if extra else [])
            raise ValueError(f"weights must name the same variants as variants: {'; '.join(parts)}")
        negative = sorted(n for n, w in self.weights.items() if w < 0)
        if negative:
            raise ValueError(f"weights must be >= 0: {', '.join(f'{n}={self.weights[n]:g}' for n in negative)}")
        huge = sorted(n for n, w in self.weights.items() if w > MAX_WEIGHT)
        if huge:
            raise ValueError(f"weights must be <= {MAX_WEIGHT:g}: "
                             f"{', '.join(f'{n}={self.weights[n]:g}' for n in huge)}")
        if math.fsum(self.weights.values()) <= 0:
            raise ValueError("weights must have a positive sum (all are 0: no variant would get any request)")
        return self

    def weights_by_name(self) -> dict[str, float]:
        """Each variant's weight (equal weights when none are given)."""
        return dict(self.weights) if self.weights is not None else dict.fromkeys(self.variants, 1.0)


class ShadowSpec(_Strict):
    """A model that gets a copy of a share of the requests after the response is sent; its answers are compared
    with the primary's, never returned."""

    model: ModelRef
    fraction: float = Field(1.0, gt=0, le=1, allow_inf_nan=False,
                            description="share of the requests copied to it, in (0, 1]")


class DefaultAnswerSpec(_Strict):
    """A constant answer: the last resort of a fallback chain."""

    prediction: bool | int | float | str = Field(description="a JSON scalar: a string, a number or a boolean")
    probabilities: list[float] | None = Field(None, min_length=1, description="numbers in [0, 1]")

    @field_validator("prediction", mode="before")
    @classmethod
    def _scalar(cls, v: object) -> object:
        if not isinstance(v, bool | int | float | str):
            shown = "null" if v is None else type(v).__name__
            raise ValueError(f"the default prediction must be a string, a number or a boolean, not {shown}")
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"the default prediction must be a finite number, not {v!r}")
        return v

    @field_validator("probabilities")
    @classmethod
    def _unit(cls, v: list[float] | None) -> list[float] | None:
        if v is not None:
            bad = [p for p in v if not 0.0 <= p <= 1.0]  # NaN included
            if bad:
                raise ValueError(f"probabilities must be numbers in [0, 1], not {bad[0]!r}")
        return v


class DefaultSpec(_Strict):
    default: DefaultAnswerSpec


_FALLBACK_TAGS = ("fallback-ref", "fallback-default")


def _fallback_kind(value: object) -> str | None:
    if isinstance(value, str):
        return "fallback-ref"
    if isinstance(value, dict | DefaultSpec):
        return "fallback-default"
    return None


FallbackSpec = Annotated[Annotated[ModelRef, Tag("fallback-ref")] | Annotated[DefaultSpec, Tag("fallback-default")],
                         Discriminator(_fallback_kind, custom_error_type="fallback",
                                       custom_error_message="a fallback must be a model ref (a string) or"
                                                            " {default: {prediction: ...}}")]


def _listed(value: object) -> object:
    """A single item where a list is expected, as a list of one."""
    return [value] if isinstance(value, dict | str) else value


class EndpointSpec(_Strict):
    name: str
    models: list[str] = Field(min_length=1)
    batching: BatchingSpec | None = None
    follow: bool = Field(True, description=(
        "follow the aliases among the refs while serving (a moved alias is loaded and switched to, a canary of it"
        " gets its share); false: serve what they resolved to at start"))
    ab: ABSpec | None = None
    shadow: Annotated[list[ShadowSpec], BeforeValidator(_listed)] = Field(
        default_factory=list, description="a mapping {model, fraction} or a list of them")
    fallback: Annotated[list[FallbackSpec], BeforeValidator(_listed)] = Field(default_factory=list, description=(
        "models tried in order when the primary fails, then optionally a constant {default: {prediction: ...}}"))

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        try:
            return check_name(v)
        except ShipmlError as exc:  # pydantic reports ValueErrors with the field's location
            raise ValueError(str(exc)) from exc

    @field_validator("models")
    @classmethod
    def _refs(cls, v: list[str]) -> list[str]:
        for ref in v:
            _ref(ref)
        return v

    @field_validator("shadow")
    @classmethod
    def _shadows(cls, v: list[ShadowSpec]) -> list[ShadowSpec]:
        models = [s.model for s in v]
        dup = sorted({m for m in models if models.count(m) > 1})
        if dup:
            raise ValueError(f"each shadow model may be listed once, repeated: {', '.join(dup)}")
        return v

    @field_validator("fallback")
    @classmethod
    def _chain(cls, v: list[str | DefaultSpec]) -> list[str | DefaultSpec]:
        answers = [i for i, f in enumerate(v) if isinstance(f, DefaultSpec)]
        if len(answers) > 1:
            raise ValueError(f"a fallback chain has at most one default, found {len(answers)}")
        if answers and answers[0] != len(v) - 1:
            raise ValueError("the default must be the last fallback (nothing after it would ever be tried)")
        refs = [f for f in v if isinstance(f, str)]
        dup = sorted({r for r in refs if refs.count(r) > 1})
        if dup:
            raise ValueError(f"each fallback model may be listed once, repeated: {', '.join(dup)}")
        return v

    @model_serializer(mode="wrap")
    def _without_release_defaults(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """An endpoint that does not use the release fields is written as before they existed."""
        data: dict[str, Any] = handler(self)
        for key, default in (("follow", True), ("shadow", []), ("fallback", [])):
            if key in data and data[key] == default:
                del data[key]
        return data

    @model_validator(mode="after")
    def _fallback_is_another_model(self) -> EndpointSpec:
        if self.ab is None and self.models[0] in self.fallback:
            raise ValueError(f"fallback: {self.models[0]!r} is the endpoint's stable model; a fallback must be"
                             " another model")
        return self


class ImageSpec(_Strict):
    """The container image (``shipml build``)."""

    name: str | None = Field(None, description="image name; default shipml-<first endpoint>")
    tag: str = "latest"
    base: str = Field("docker.io/library/python:3.11-slim",
                      description="base image (a registry mirror's copy, if need be); default: the models' Python")
    extras: list[str] = Field(default_factory=list, description="extra pip requirements baked into the image")


class ResourcesSpec(_Strict):
    cpu_request: str = "500m"
    cpu_limit: str = "2"
    memory_request: str = "512Mi"
    memory_limit: str = "1Gi"


class S3SourceSpec(_Strict):
    """Where an init container fetches the model packages from, instead of baking them into the image."""

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    secret_name: str = Field("shipml-s3", description="Secret with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY")
    layout: Literal["mirror", "registry"] = Field(
        "mirror", description="mirror: the prefix holds a copy of a registry directory, fetched with `aws s3 sync`;"
        " registry: it is a shipml registry (s3://bucket/prefix), fetched and verified by `shipml registry copy`"
        " in the server's image")


class KubernetesSpec(_Strict):
    """The Kubernetes manifests (``shipml k8s``)."""

    namespace: str | None = None
    replicas: int = Field(2, ge=1)
    min_replicas: int = Field(2, ge=1)
    max_replicas: int = Field(10, ge=1)
    target_cpu_percent: int = Field(70, ge=1, le=100)
    resources: ResourcesSpec = ResourcesSpec()
    startup_timeout_s: int = Field(300, ge=10, description="longest a pod may take to load its models")
    models_from: Literal["image", "s3"] = "image"
    s3: S3SourceSpec | None = None

    @model_validator(mode="after")
    def _consistent(self) -> KubernetesSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas {self.min_replicas} is above max_replicas {self.max_replicas}")
        if self.models_from == "s3" and self.s3 is None:
            raise ValueError("models_from: s3 needs an s3 section (bucket, prefix, endpoint_url)")
        return self


class RaySpec(_Strict):
    """The Ray Serve application (``shipml ray``)."""

    num_replicas: int | None = Field(None, ge=1, description="fixed replicas; leave unset to autoscale")
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(4, ge=1)
    target_ongoing_requests: float = Field(16, gt=0)
    num_cpus: float = Field(1, gt=0, description="CPUs per replica")

    @model_validator(mode="after")
    def _consistent(self) -> RaySpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas {self.min_replicas} is above max_replicas {self.max_replicas}")
        return self


class DeploymentSpec(_Strict):
    version: Literal[1] = 1
    registry: str | None = None
    server: ServerSpec = ServerSpec()
    batching: BatchingSpec = BatchingSpec()
    limits: LimitsSpec = LimitsSpec()
    input_policy: InputPolicySpec = InputPolicySpec()
    auth: AuthSpec = AuthSpec()
    endpoints: list[EndpointSpec] = Field(min_length=1)
    image: ImageSpec = ImageSpec()
    kubernetes: KubernetesSpec = KubernetesSpec()
    ray: RaySpec = RaySpec()
    monitoring: MonitoringSpec = MonitoringSpec()

    @model_validator(mode="after")
    def _unique(self) -> DeploymentSpec:
        names = [e.name for e in self.endpoints]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"endpoint names must be unique, repeated: {', '.join(dup)}")
        return self

    def batching_for(self, endpoint: EndpointSpec) -> BatchingSpec:
        return endpoint.batching or self.batching

    def refs_of(self, endpoint: EndpointSpec) -> list[str]:
        """Every ref the endpoint needs loaded, each once, the stable model first: its models, A/B variants,
        shadows and fallback models, in that order."""
        refs = [*endpoint.models]
        if endpoint.ab is not None:
            refs += endpoint.ab.variants.values()
        refs += [s.model for s in endpoint.shadow]
        refs += [f for f in endpoint.fallback if isinstance(f, str)]
        return list(dict.fromkeys(refs))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json", exclude_none=True), sort_keys=False)


def spec_for_refs(refs: list[str], **overrides: object) -> DeploymentSpec:
    """The spec ``shipml serve REF...`` uses without a file: one endpoint per model, named after it. A package
    directory (``.``, ``./pkg``, ``../x/pkg``) is named by its absolute path, and its endpoint after the model it
    holds (``NAME-VERSION`` when another endpoint has that name already)."""
    endpoints: list[dict[str, object]] = []
    for text in refs:
        r = Ref.parse(text)
        if r.path is None:
            endpoints.append({"name": r.name, "models": [text]})
        else:
            directory = absolute(r.path)
            name = _package_endpoint_name(directory, {str(e["name"]) for e in endpoints})
            endpoints.append({"name": name, "models": [str(directory)]})
    return parse_spec({"endpoints": endpoints, **overrides})


def _package_endpoint_name(directory: Path, taken: set[str]) -> str:
    from shipml.package.manifest import read_manifest

    try:
        manifest = read_manifest(directory)
    except ShipmlError:  # not a package: the spec check names the problem with the ref
        return directory.name
    return manifest.name if manifest.name not in taken else f"{manifest.name}-{manifest.version}"


def parse_spec(data: object, source: str = "spec") -> DeploymentSpec:
    if not isinstance(data, dict):
        raise SpecError(f"{source}: expected a mapping at the top level")
    try:
        return DeploymentSpec.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors()[:10]:
            where = ".".join(_place(err["loc"])) or "(top level)"
            message = err["msg"].removeprefix("Value error, ")
            lines.append(f"{where}: {message}")
        raise SpecError(f"{source} is invalid: " + "; ".join(lines)) from exc
    except ShipmlError as exc:
        raise SpecError(f"{source} is invalid: {exc}") from exc


def _place(loc: tuple[int | str, ...]) -> list[str]:
    """An error's location as the file's keys: without the tag pydantic adds for a fallback's kind."""
    return [str(p) for i, p in enumerate(loc)
            if not (i >= 2 and loc[i - 2] == "fallback" and isinstance(loc[i - 1], int) and p in _FALLBACK_TAGS)]


def load_spec(path: str | Path) -> DeploymentSpec:
    """The spec in the file ``path``. Relative paths in it (``registry``, ``monitoring.log.dir``, model packages
    among the endpoints' refs: models, A/B variants, shadows, fallbacks) are relative to the file's directory,
    whatever the current directory. (``auth.tokens_file`` is left as written: for a pod it names a path inside
    the container.)"""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise SpecError(f"no deployment spec at {p}") from exc
    except IsADirectoryError as exc:
        raise SpecError(f"{p} is a directory, not a deployment spec file") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"{p.name} is not valid YAML: {exc}") from exc
    return parse_spec(_anchored(data, absolute(p).parent), p.name)


def _anchored(data: object, base: Path) -> object:
    """``data`` (a spec file's content) with its relative paths made absolute against ``base``."""
    if not isinstance(data, dict):
        return data

    def anchor(text: object) -> object:
        if not isinstance(text, str) or not text or "://" in text or text.startswith("~"):
            return text
        return text if Path(text).is_absolute() else str(absolute(base / text))

    out = dict(data)
    if out.get("registry") is not None:
        out["registry"] = anchor(out["registry"])
    monitoring = out.get("monitoring")
    if isinstance(monitoring, dict) and isinstance(monitoring.get("log"), dict) and monitoring["log"].get("dir"):
        out["monitoring"] = {**monitoring, "log": {**monitoring["log"], "dir": anchor(monitoring["log"]["dir"])}}
    endpoints = out.get("endpoints")
    if isinstance(endpoints, list):
        out["endpoints"] = [endpoint_with_refs(e, lambda ref: _anchored_ref(ref, base)) for e in endpoints]
    return out


def endpoint_with_refs(endpoint: object, replace: Callable[[str], str]) -> object:
    """A raw endpoint mapping (as in a spec file, or dumped from an ``EndpointSpec``) with each of its model refs
    (models, A/B variants, shadows, fallbacks) replaced by ``replace(ref)``. Whatever does not have the expected
    shape is left as it is, for the spec's validation to name."""
    if not isinstance(endpoint, dict):
        return endpoint

    def one(ref: object) -> object:
        return replace(ref) if isinstance(ref, str) else ref

    def shadow(item: object) -> object:
        return {**item, "model": one(item["model"])} if isinstance(item, dict) and "model" in item else item

    out = dict(endpoint)
    if isinstance(out.get("models"), list):
        out["models"] = [one(m) for m in out["models"]]
    ab = out.get("ab")
    if isinstance(ab, dict) and isinstance(ab.get("variants"), dict):
        out["ab"] = {**ab, "variants": {k: one(v) for k, v in ab["variants"].items()}}
    if isinstance(out.get("shadow"), dict):
        out["shadow"] = shadow(out["shadow"])
    elif isinstance(out.get("shadow"), list):
        out["shadow"] = [shadow(s) for s in out["shadow"]]
    if isinstance(out.get("fallback"), str):
        out["fallback"] = one(out["fallback"])
    elif isinstance(out.get("fallback"), list):
        out["fallback"] = [one(f) for f in out["fallback"]]
    return out


def _anchored_ref(ref: str, base: Path) -> str:
    """A model ref naming a package directory relative to the spec file (``./pkg``, ``../pkg``, or a bare name
    of a directory holding shipml.json next to the spec), made absolute; registry refs unchanged."""
    if not ref or Path(ref).is_absolute() or ref.startswith("~"):
        return ref
    if ref.startswith(("./", "../")) or ref in (".", "..") or (base / ref / "shipml.json").is_file():
        return str(absolute(base / ref))
    return ref
