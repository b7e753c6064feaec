"""Routing (shipml.release.router): sticky A/B assignment, the split over many keys, the canary's share, shadows,
fallbacks, and reading a request's routing key from any header value or JSON payload."""

from __future__ import annotations

import random
import re
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shipml.release
from shipml.errors import SpecError
from shipml.release import Decision, Default, KeySource, Release, Target, bucket, build_release, route
from shipml.spec import parse_spec

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
FEW = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

STABLE = Target("churn@production", "1.2.0", "stable")
CANARY = Target("churn:1.3.0", "1.3.0", "canary")
draws = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20)


def ab_release(weights: list[float], endpoint: str = "churn", key: str | None = "header:X-User-ID") -> Release:
    """A release split between variants v0, v1, ... by ``weights``, built from a spec like the server does."""
    variants = {f"v{i}": f"churn:1.{i}.0" for i in range(len(weights))}
    spec = parse_spec({"endpoints": [{"name": endpoint, "models": ["churn@production"], "ab": {
        "key": key, "variants": variants, "weights": dict(zip(variants, weights, strict=True))}}]})
    versions = {ref: ref.partition(":")[2] or "1.2.0" for ref in spec.refs_of(spec.endpoints[0])}
    return build_release(spec.endpoints[0], versions)


def expected_variant(weights: list[float], point: float) -> str:
    """The variant whose share of [0, 1) holds ``point``, computed independently of the router."""
    total, running = sum(weights), 0.0
    for i, w in enumerate(weights):
        running += w
        if w > 0 and point < running / total:
            return f"v{i}"
    return f"v{max(i for i, w in enumerate(weights) if w > 0)}"


weight_sets = st.lists(st.integers(min_value=0, max_value=100), min_size=2, max_size=5).filter(lambda w: sum(w) > 0)


# --- A/B ------------------------------------------------------------------------------------------------------


@SETTINGS
@given(weights=weight_sets, key=st.text(min_size=1).filter(str.strip), first=draws, second=draws,
       shadow_draws=st.lists(draws, max_size=3))
def test_the_same_key_always_gets_the_same_variant_whatever_the_draws(
        weights: list[int], key: str, first: float, second: float, shadow_draws: list[float]) -> None:
    release = ab_release(weights)
    a, b = route(release, key, first), route(release, key, second, shadow_draws)
    assert a.primary == b.primary
    assert a.primary.variant == expected_variant(weights, bucket("churn", key))
    assert a.stable is None  # no canary answers an A/B request


@pytest.mark.parametrize("weights", [[50, 50], [10, 90], [1, 1, 1], [70, 20, 10, 0], [3, 0, 1], [5, 15, 30, 50]])
def test_the_split_over_20000_distinct_keys_is_within_2_points_of_the_weights(weights: list[int]) -> None:
    release = ab_release(weights)
    seen = Counter(route(release, f"user-{i}", 0.0).primary.variant for i in range(20_000))
    for i, w in enumerate(weights):
        share = seen[f"v{i}"] / 20_000 * 100
        assert abs(share - w / sum(weights) * 100) <= 2.0, (weights, seen)
    assert all(seen[f"v{i}"] == 0 for i, w in enumerate(weights) if w == 0)


@FEW
@given(weights=weight_sets, endpoint=st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True))
def test_the_split_holds_for_any_weights_and_any_endpoint_name(weights: list[int], endpoint: str) -> None:
    release = ab_release(weights, endpoint)
    seen = Counter(route(release, f"user-{i}", 0.5).primary.variant for i in range(20_000))
    for i, w in enumerate(weights):
        assert abs(seen[f"v{i}"] / 20_000 - w / sum(weights)) <= 0.02, (weights, seen)


def test_two_endpoints_split_the_same_keys_independently() -> None:
    one, two = ab_release([50, 50], "churn"), ab_release([50, 50], "upsell")
    same = sum(route(one, f"u{i}", 0.0).primary.variant == route(two, f"u{i}", 0.0).primary.variant
               for i in range(20_000))
    assert abs(same / 20_000 - 0.5) <= 0.02


@SETTINGS
@given(weights=weight_sets, draw=draws)
def test_without_a_key_the_draw_decides_the_variant(weights: list[int], draw: float) -> None:
    for release in (ab_release(weights), ab_release(weights, key=None)):
        assert route(release, None, draw).primary.variant == expected_variant(weights, draw)


@pytest.mark.parametrize(("weights", "draw", "variant"), [
    ([1, 1], 0.5, "v1"), ([1, 3], 0.25, "v1"), ([1, 1, 2], 0.5, "v2"), ([1, 0, 1], 0.5, "v2"), ([1, 1], 0.0, "v0"),
    ([0, 1], 0.0, "v1"),
])
def test_each_variant_owns_a_half_open_slice_of_the_unit_interval(weights: list[int], draw: float,
                                                                   variant: str) -> None:
    assert route(ab_release(weights), None, draw).primary.variant == variant


@SETTINGS
@given(salt=st.text(), key=st.text())
def test_bucket_is_a_point_of_the_unit_interval_fixed_by_salt_and_key(salt: str, key: str) -> None:
    point = bucket(salt, key)
    assert 0.0 <= point < 1.0
    assert bucket(salt, key) == point
    assert bucket(salt + "x", key) != point or bucket(salt, key + "x") != point


def test_salt_and_key_do_not_run_into_each_other() -> None:
    assert bucket("ab", "c") != bucket("a", "bc")
    assert 0.0 <= bucket("churn", "\ud800 lone surrogate") < 1.0  # json.loads lets these through


def test_the_release_package_exports_its_interface() -> None:
    assert set(shipml.release.__all__) == {
        "CanaryWatch", "Decision", "Default", "Disagreement", "KeySource", "Release", "Target", "WatchLimits",
        "bucket", "build_release", "compare", "route"}


def test_an_ab_release_ignores_a_canary_and_every_decision_carries_the_fallbacks() -> None:
    spec = parse_spec({"endpoints": [{"name": "churn", "models": ["churn@production"],
                                      "ab": {"variants": {"a": "churn:1.0.0", "b": "churn:1.1.0"}},
                                      "fallback": ["churn:0.9.0", {"default": {"prediction": 0,
                                                                               "probabilities": [1, 0]}}]}]})
    versions = {"churn@production": "1.2.0", "churn:1.0.0": "1.0.0", "churn:1.1.0": "1.1.0", "churn:0.9.0": "0.9.0"}
    release = build_release(spec.endpoints[0], versions, CANARY, 1.0)
    for draw in (0.0, 0.25, 0.75, 0.999):
        decision = route(release, None, draw)
        assert decision.primary.variant in ("a", "b") and decision.stable is None
        assert decision.fallbacks == (Target("churn:0.9.0", "0.9.0", "fallback"), Default(0, (1.0, 0.0)))
    assert route(release, None, 0.25).primary == Target("churn:1.0.0", "1.0.0", "a")
    assert route(release, None, 0.75).primary == Target("churn:1.1.0", "1.1.0", "b")


# --- canary ---------------------------------------------------------------------------------------------------


@FEW
@given(percent=st.integers(min_value=1, max_value=99), seed=st.integers(min_value=0, max_value=2**32))
def test_the_canary_gets_its_share_within_1_5_points_over_20000_draws(percent: int, seed: int) -> None:
    release = Release("churn", STABLE, CANARY, percent / 100)
    rng = random.Random(seed)
    hits = sum(route(release, None, rng.random()).primary is CANARY for _ in range(20_000))
    assert abs(hits / 20_000 * 100 - percent) <= 1.5


@SETTINGS
@given(fraction=st.floats(min_value=0.0, max_value=1.0), draw=draws, key=st.none() | st.text())
def test_the_draw_alone_decides_the_canary_and_a_canary_request_names_the_stable_target(
        fraction: float, draw: float, key: str | None) -> None:
    decision = route(Release("churn", STABLE, CANARY, fraction), key, draw)
    if draw < fraction:
        assert decision == Decision(CANARY, STABLE, (), ())
    else:
        assert decision == Decision(STABLE, None, (), ())


def test_a_plain_endpoint_always_answers_with_the_stable_version() -> None:
    release = Release("churn", STABLE)
    assert {route(release, key, draw) for key in (None, "u1") for draw in (0.0, 0.5, 0.999)} == {
        Decision(STABLE, None, (), ())}


@pytest.mark.parametrize("fraction", [-0.1, 1.5, float("nan")])
def test_a_canary_fraction_outside_the_unit_interval_is_refused(fraction: float) -> None:
    with pytest.raises(ValueError, match="canary_fraction must be in"):
        Release("churn", STABLE, CANARY, fraction)


# --- shadows and fallbacks ------------------------------------------------------------------------------------


@SETTINGS
@given(fractions=st.lists(st.floats(min_value=0.01, max_value=1.0), min_size=1, max_size=4),
       shadow_draws=st.lists(draws, max_size=4), draw=draws)
def test_a_shadow_gets_a_copy_when_its_draw_falls_under_its_fraction(
        fractions: list[float], shadow_draws: list[float], draw: float) -> None:
    shadows = tuple((Target(f"s{i}:1.0.0", "1.0.0", "shadow"), f) for i, f in enumerate(fractions))
    release = Release("churn", STABLE, CANARY, 0.5, shadows=shadows)
    decision = route(release, None, draw, shadow_draws)
    expected = tuple(t for i, (t, f) in enumerate(shadows)
                     if f >= 1.0 or (i < len(shadow_draws) and shadow_draws[i] < f))
    assert decision.shadows == expected
    assert decision.primary is (CANARY if draw < 0.5 else STABLE)


def test_build_release_takes_every_field_of_the_spec() -> None:
    spec = parse_spec({"endpoints": [{
        "name": "churn", "models": ["churn@production", "churn:1.0.0"],
        "shadow": [{"model": "churn:2.0.0"}, {"model": "other:1.0.0", "fraction": 0.25}],
        "fallback": ["churn:1.1.0", {"default": {"prediction": "no"}}]}]})
    endpoint = spec.endpoints[0]
    versions = {"churn@production": "1.2.0", "churn:1.0.0": "1.0.0", "churn:2.0.0": "2.0.0", "other:1.0.0": "1.0.0",
                "churn:1.1.0": "1.1.0"}
    release = build_release(endpoint, versions, CANARY, 0.1)
    assert release == Release(
        "churn", STABLE, CANARY, 0.1,
        shadows=((Target("churn:2.0.0", "2.0.0", "shadow"), 1.0), (Target("other:1.0.0", "1.0.0", "shadow"), 0.25)),
        fallbacks=(Target("churn:1.1.0", "1.1.0", "fallback"), Default("no")))
    assert route(release, None, 0.05, (0.9, 0.1)) == Decision(
        CANARY, STABLE, tuple(t for t, _ in release.shadows), release.fallbacks)
    assert route(release, None, 0.5, (0.0, 0.3)).shadows == (Target("churn:2.0.0", "2.0.0", "shadow"),)
    del versions["churn:2.0.0"]
    with pytest.raises(SpecError, match=re.escape("endpoint churn: no resolved version for 'churn:2.0.0'")):
        build_release(endpoint, versions)


def test_a_zero_weight_variant_after_the_last_positive_one_never_gets_a_request() -> None:
    release = ab_release([1, 2, 0, 0])
    assert [b for _, b in release.ab] == [1 / 3, 1.0, 1.0, 1.0]
    assert {route(release, None, d).primary.variant for d in (0.0, 0.33, 0.34, 0.9999999999)} == {"v0", "v1"}


@pytest.mark.parametrize("bounds", [(0.5, 0.9), (0.6, 0.4, 1.0), (-0.1, 1.0)])
def test_ab_bounds_must_rise_to_one(bounds: tuple[float, ...]) -> None:
    ab = tuple((Target(f"m:1.{i}.0", f"1.{i}.0", f"v{i}"), b) for i, b in enumerate(bounds))
    with pytest.raises(ValueError, match="A/B bounds must rise"):
        Release("churn", STABLE, ab=ab)


# --- routing keys ---------------------------------------------------------------------------------------------


def test_key_sources_are_parsed_and_bad_ones_named() -> None:
    assert KeySource.parse("header:X-User-ID") == KeySource("header", "x-user-id")
    assert KeySource.parse("field:user id") == KeySource("field", "user id")
    assert str(KeySource.parse("field:user_id")) == "field:user_id"
    for text, message in [("cookie:x", "must be 'header:NAME' or 'field:NAME'"), ("user_id", "must be 'header:"),
                          ("header:X User", "is not an HTTP header name"), ("header:", "is not an HTTP header name"),
                          ("field:", "the field name must be 1-256"), ("field: id", "without surrounding spaces")]:
        with pytest.raises(SpecError, match=message):
            KeySource.parse(text)


@SETTINGS
@given(value=st.none() | st.text() | st.binary(), name=st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,30}", fullmatch=True))
def test_a_header_key_is_the_header_value_and_never_raises(value: str | bytes | None, name: str) -> None:
    source = KeySource.parse(f"header:{name}")
    asked: list[str] = []

    def header(n: str) -> Any:
        asked.append(n)
        return value

    key = source.extract(header, None)
    assert asked == [name.lower()]
    if value is None or not (value.decode("latin-1") if isinstance(value, bytes) else value).strip():
        assert key is None
    else:
        assert key == (value.decode("latin-1") if isinstance(value, bytes) else value)


@SETTINGS
@given(payload=json_values, field=st.text(max_size=8).filter(lambda t: t and t == t.strip()))
def test_a_field_key_never_raises_for_any_json_payload(payload: Any, field: str) -> None:
    key = KeySource.parse(f"field:{field}").extract(lambda _: None, payload)
    assert key is None or (isinstance(key, str) and key.strip())


@SETTINGS
@given(value=json_values, where=st.sampled_from(["top", "instances", "columns", "v2"]))
def test_a_field_key_is_found_wherever_the_body_holds_it(value: Any, where: str) -> None:
    payload: dict[str, Any] = {
        "top": {"user_id": value, "instances": [{"user_id": "decoy"}]},
        "instances": {"instances": [{"user_id": value, "age": 3}, {"user_id": "decoy"}]},
        "columns": {"inputs": {"user_id": [value, "decoy"], "age": [1, 2]}},
        "v2": {"inputs": [{"name": "age", "data": [1]}, {"name": "user_id", "shape": [1], "data": [[value]]}]},
    }[where]
    key = KeySource.parse("field:user_id").extract(lambda _: None, payload)
    alone = KeySource.parse("field:user_id").extract(lambda _: None, {"user_id": value})
    if where in ("columns", "v2") and isinstance(value, list):
        return  # a list in a column is the column's nesting, not one value
    assert key == alone


@pytest.mark.parametrize(("value", "key"), [
    ("u-1", "u-1"), (7, "7"), ("7", "7"), (7.5, "7.5"), (True, "true"), (None, None), ("", None), ("  ", None),
    (float("nan"), None), ({"b": 1, "a": [2]}, '{"a":[2],"b":1}'), (2**70, str(2**70)), ([2**70], None),
])
def test_a_field_value_becomes_a_canonical_key(value: Any, key: str | None) -> None:
    assert KeySource.parse("field:id").extract(lambda _: None, {"id": value}) == key


def _nested(depth: int) -> Any:
    value: Any = "u"
    for _ in range(depth):
        value = [value]
    return value


def test_a_value_json_cannot_write_gives_no_key() -> None:
    source = KeySource.parse("field:id")
    assert source.extract(lambda _: None, {"id": _nested(300)}) is None
    assert source.extract(lambda _: None, {"id": _nested(3)}) == '[[["u"]]]'
    assert source.extract(lambda _: None, {"id": {"big": 2**64}}) is None


def test_missing_fields_and_odd_bodies_give_no_key() -> None:
    source = KeySource.parse("field:id")
    for payload in [None, [], [{"id": 1}], "id", {"instances": []}, {"instances": [[1, 2]]}, {"inputs": {"id": []}},
                    {"inputs": [{"name": "id"}]}, {"inputs": [{"name": "id", "data": []}]}, {"other": 1},
                    {"inputs": {"id": [[[]]]}}]:
        assert source.extract(lambda _: None, payload) is None, payload
