"""Which version answers a request: a pure function of an endpoint's release state and the request.

The server builds one immutable :class:`Release` per endpoint (from the spec, the versions its refs resolve to and
the running canary) and swaps it whole when any of that changes. Per request it calls :func:`route` with the
request's routing key (or ``None``) and a uniform draw in [0, 1); the answer is a :class:`Decision` (primary
target, the stable target to answer when a canary fails, the shadows to copy the request to, the fallback chain).
Nothing here reads a clock, a random generator, a file or a socket, so every rule is tested without a server.

``route`` is on the request path: a :class:`Release` precomputes the decisions it can hand out, so a plain or a
canary endpoint costs one or two attribute reads and a comparison, an A/B endpoint one hash of the key.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from hashlib import blake2b
from typing import TYPE_CHECKING, Any, Literal

import orjson

from shipml.errors import SpecError

if TYPE_CHECKING:
    from shipml.spec import EndpointSpec

__all__ = ["Decision", "Default", "KeySource", "Release", "Target", "bucket", "build_release", "route"]

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}")  # an HTTP header name (RFC 9110 token)
_UNIT = 2.0**-53


@dataclass(frozen=True, slots=True)
class Target:
    """A model version a request may go to."""

    ref: str  # the spec ref it came from ("churn@production", "churn:1.2.0")
    version: str  # the resolved version ("1.2.0")
    variant: str  # "stable", "canary", an A/B variant name, "fallback", "shadow"


@dataclass(frozen=True, slots=True)
class Default:
    """The constant answer at the end of a fallback chain."""

    prediction: Any
    probabilities: tuple[float, ...] | None = None
    variant: str = "default"


@dataclass(frozen=True, slots=True)
class Decision:
    """Where one request goes."""

    primary: Target
    stable: Target | None  # what answers when a canary fails (None unless primary is the canary)
    shadows: tuple[Target, ...]
    fallbacks: tuple[Target | Default, ...]
    #: what to try in order: the primary, the stable target when the primary is a canary, then the fallbacks
    chain: tuple[Target | Default, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        first: tuple[Target | Default, ...] = (self.primary,) if self.stable is None else (self.primary, self.stable)
        object.__setattr__(self, "chain", first + self.fallbacks)


@dataclass(frozen=True, slots=True)
class KeySource:
    """Where a request's routing key is found: a header (``header:X-User-ID``) or a field of the JSON body
    (``field:user_id``)."""

    kind: Literal["header", "field"]
    name: str  # a header's lower-case name, or a field name as written

    @classmethod
    def parse(cls, text: str) -> KeySource:
        if not isinstance(text, str):
            raise SpecError(f"a routing key must be a string such as 'header:X-User-ID' or 'field:user_id',"
                            f" not {type(text).__name__}")
        kind, sep, name = text.partition(":")
        if not sep or kind not in ("header", "field"):
            raise SpecError(f"routing key {text!r} must be 'header:NAME' or 'field:NAME'"
                            " (such as 'header:X-User-ID' or 'field:user_id')")
        if kind == "header":
            if not _TOKEN.fullmatch(name):
                raise SpecError(f"routing key {text!r}: {name!r} is not an HTTP header name (letters, digits and"
                                " !#$%&'*+.^_`|~- only)")
            return cls("header", name.lower())
        if not name or name != name.strip() or len(name) > 256:
            raise SpecError(f"routing key {text!r}: the field name must be 1-256 characters without surrounding"
                            " spaces")
        return cls("field", name)

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"

    def extract(self, header: Callable[[str], str | None], payload: Any) -> str | None:
        """The request's key, or ``None`` when it has none. ``header`` looks a header up by lower-case name.
        A field is read from the top level of the JSON object, else from the first record of ``instances``,
        else the first value of ``inputs[field]`` (columnar, or an Open Inference Protocol tensor named
        ``field``). Never raises, whatever the payload holds."""
        if self.kind == "header":
            value = header(self.name)
            if isinstance(value, bytes):
                value = value.decode("latin-1")
            return value if isinstance(value, str) and value.strip() else None
        return _key_text(_field(payload, self.name))


def _field(payload: Any, name: str) -> Any:
    if not isinstance(payload, dict):
        return None
    if name in payload:
        return payload[name]
    instances = payload.get("instances")
    if isinstance(instances, list) and instances and isinstance(instances[0], dict):
        return instances[0].get(name)
    inputs = payload.get("inputs")
    if isinstance(inputs, dict):
        return _first(inputs.get(name))
    if isinstance(inputs, list):  # Open Inference Protocol: [{"name": ..., "data": [...]}, ...]
        for tensor in inputs:
            if isinstance(tensor, dict) and tensor.get("name") == name:
                return _first(tensor.get("data"))
    return None


def _first(value: Any) -> Any:
    for _ in range(64):  # nested lists (a tensor's rows): the first scalar, a bounded walk
        if not isinstance(value, list):
            return value
        if not value:
            return None
        value = value[0]
    return None


def _key_text(value: Any) -> str | None:
    """A JSON value as a key string: strings as they are, numbers and booleans as JSON writes them, objects and
    arrays as canonical JSON (sorted keys). ``null``, an empty string and what cannot be written: no key."""
    if isinstance(value, str):
        return value if value.strip() else None
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else None
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS).decode()
    except orjson.JSONEncodeError:  # nested over 255 deep, an int over 64 bits, not JSON at all
        return None


def bucket(salt: str, key: str) -> float:
    """A uniform point in [0, 1) for ``key``, fixed for a ``salt`` (the endpoint's name, so that two endpoints
    split the same users independently): the top 53 bits of blake2b-64 of both (the salt's part hashed once)."""
    digest = _salted(salt).copy()
    digest.update(key.encode("utf-8", "surrogatepass"))
    return (int.from_bytes(digest.digest(), "big") >> 11) * _UNIT


@lru_cache(maxsize=256)
def _salted(salt: str) -> Any:
    raw = salt.encode("utf-8", "surrogatepass")
    return blake2b(len(raw).to_bytes(4, "big") + raw, digest_size=8)


@dataclass(frozen=True, slots=True)
class Release:
    """One endpoint's release state at an instant: immutable, swapped whole."""

    endpoint: str
    stable: Target
    canary: Target | None = None
    canary_fraction: float = 0.0  # the canary's weight / 100
    ab: tuple[tuple[Target, float], ...] = ()  # (target, cumulative upper bound in [0, 1]); last bound 1.0
    ab_key: KeySource | None = None
    shadows: tuple[tuple[Target, float], ...] = ()  # (target, fraction)
    fallbacks: tuple[Target | Default, ...] = ()
    # decisions that do not depend on the request, made once here so that route() only picks one
    _plain: Decision = field(init=False, repr=False, compare=False)
    _to_canary: Decision | None = field(init=False, repr=False, compare=False)
    _by_variant: tuple[Decision, ...] = field(init=False, repr=False, compare=False)
    _bounds: tuple[float, ...] = field(init=False, repr=False, compare=False)
    _always_shadow: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.canary_fraction <= 1.0:  # also refuses NaN
            raise ValueError(f"canary_fraction must be in [0, 1], not {self.canary_fraction!r}")
        bounds = tuple(bound for _, bound in self.ab)
        if bounds and (any(not 0.0 <= b <= 1.0 for b in bounds) or list(bounds) != sorted(bounds)
                       or bounds[-1] != 1.0):
            raise ValueError(f"A/B bounds must rise from 0 to a last bound of 1.0, not {list(bounds)}")
        for target, fraction in self.shadows:
            if not 0.0 < fraction <= 1.0:
                raise ValueError(f"shadow {target.ref}: fraction must be in (0, 1], not {fraction!r}")
        always = all(fraction >= 1.0 for _, fraction in self.shadows)
        shadows = tuple(t for t, _ in self.shadows) if always else ()
        setter = object.__setattr__
        setter(self, "_always_shadow", always)
        setter(self, "_bounds", bounds)
        setter(self, "_plain", Decision(self.stable, None, shadows, self.fallbacks))
        setter(self, "_to_canary", None if self.canary is None
               else Decision(self.canary, self.stable, shadows, self.fallbacks))
        setter(self, "_by_variant", tuple(Decision(t, None, shadows, self.fallbacks) for t, _ in self.ab))


def route(release: Release, key: str | None, draw: float, shadow_draws: Sequence[float] = ()) -> Decision:
    """Where a request goes. ``key``: its routing key (A/B endpoints: the same key always gets the same
    variant), ``draw``: uniform in [0, 1), deciding the A/B variant of a request without a key and whether it
    goes to the canary; ``shadow_draws[i]``: uniform in [0, 1), whether shadow ``i`` gets a copy (a shadow whose
    fraction is 1 needs none; one without its draw gets no copy). The canary does not apply to A/B endpoints."""
    bounds = release._bounds
    if bounds:
        point = draw if key is None else bucket(release.endpoint, key)
        index = 0
        last = len(bounds) - 1
        while index < last and point >= bounds[index]:
            index += 1
        decision = release._by_variant[index]
    elif release._to_canary is not None and draw < release.canary_fraction:
        decision = release._to_canary
    else:
        decision = release._plain
    if release._always_shadow:
        return decision
    chosen = tuple(target for i, (target, fraction) in enumerate(release.shadows)
                   if fraction >= 1.0 or (i < len(shadow_draws) and shadow_draws[i] < fraction))
    return Decision(decision.primary, decision.stable, chosen, decision.fallbacks)


def build_release(endpoint: EndpointSpec, versions: Mapping[str, str], canary: Target | None = None,
                  canary_fraction: float = 0.0) -> Release:
    """The release of a spec endpoint. ``versions`` maps each of the endpoint's refs (``refs_of``) to the version
    it resolves to now; ``canary``: the target of the running canary of the stable model's alias, if any, sent
    ``canary_fraction`` of the requests."""

    def target(ref: str, variant: str) -> Target:
        try:
            return Target(ref, versions[ref], variant)
        except KeyError:
            raise SpecError(f"endpoint {endpoint.name}: no resolved version for {ref!r}") from None

    ab: tuple[tuple[Target, float], ...] = ()
    key = None
    if endpoint.ab is not None:
        names = list(endpoint.ab.variants)
        weights = endpoint.ab.weights_by_name()
        total = math.fsum(weights[n] for n in names)
        last_positive = max(i for i, n in enumerate(names) if weights[n] > 0)
        bounds, running = [], 0.0
        for i, name in enumerate(names):
            running += weights[name]
            bounds.append(1.0 if i >= last_positive else min(running / total, 1.0))
        ab = tuple((target(endpoint.ab.variants[n], n), b) for n, b in zip(names, bounds, strict=True))
        key = KeySource.parse(endpoint.ab.key) if endpoint.ab.key is not None else None
    shadows = tuple((target(s.model, "shadow"), s.fraction) for s in endpoint.shadow)
    fallbacks = tuple(target(f, "fallback") if isinstance(f, str)
                      else Default(f.default.prediction, None if f.default.probabilities is None
                                   else tuple(f.default.probabilities))
                      for f in endpoint.fallback)
    return Release(endpoint=endpoint.name, stable=target(endpoint.models[0], "stable"), canary=canary,
                   canary_fraction=canary_fraction, ab=ab, ab_key=key, shadows=shadows, fallbacks=fallbacks)
