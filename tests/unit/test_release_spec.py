"""The release fields of a spec endpoint (follow, ab, shadow, fallback): what is accepted, what is refused with a
message naming the field and the rule, every ref an endpoint needs (refs_of), and refs anchored to the file."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shipml.errors import SpecError
from shipml.release import build_release
from shipml.spec import RESERVED_VARIANTS, DefaultSpec, ShadowSpec, load_spec, parse_spec

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
REFS = ["churn@production", "churn:1.0.0", "churn:1.1.0", "churn:1.2.0", "churn:2.0.0", "other@staging", "other"]

EXAMPLE = {
    "name": "churn",
    "models": ["churn@production"],
    "follow": True,
    "ab": {"key": "header:X-User-ID", "variants": {"control": "churn:1.2.0", "treatment": "churn:1.3.0"},
           "weights": {"control": 50, "treatment": 50}},
    "shadow": {"model": "churn:2.0.0", "fraction": 1.0},
    "fallback": ["churn:1.1.0", {"default": {"prediction": 0}}],
}


def endpoint(**fields: Any) -> dict[str, Any]:
    return {"name": "churn", "models": ["churn@production"], **fields}


def refused(**fields: Any) -> str:
    with pytest.raises(SpecError) as caught:
        parse_spec({"endpoints": [endpoint(**fields)]}, "shipml.yaml")
    return str(caught.value).removeprefix("shipml.yaml is invalid: ")


def test_the_documented_example_is_accepted_and_lists_every_ref() -> None:
    spec = parse_spec({"endpoints": [EXAMPLE]})
    e = spec.endpoints[0]
    assert e.follow is True and e.ab is not None and e.ab.key == "header:X-User-ID"
    assert e.shadow == [ShadowSpec(model="churn:2.0.0", fraction=1.0)]
    assert e.fallback[0] == "churn:1.1.0" and isinstance(e.fallback[1], DefaultSpec)
    assert e.fallback[1].default.prediction == 0 and e.fallback[1].default.probabilities is None
    assert spec.refs_of(e) == ["churn@production", "churn:1.2.0", "churn:1.3.0", "churn:2.0.0", "churn:1.1.0"]


def test_an_endpoint_without_release_fields_keeps_its_meaning() -> None:
    e = parse_spec({"endpoints": [endpoint()]}).endpoints[0]
    assert (e.follow, e.ab, e.shadow, e.fallback) == (True, None, [], [])
    assert parse_spec({"endpoints": [endpoint(follow=False)]}).endpoints[0].follow is False


def test_an_endpoint_without_release_fields_is_written_as_before_they_existed() -> None:
    spec = parse_spec({"endpoints": [endpoint(), endpoint(name="b", follow=False, fallback=["x:1.0.0"])]})
    written = spec.model_dump(mode="json", exclude_none=True)["endpoints"]
    assert written == [endpoint(), endpoint(name="b", follow=False, fallback=["x:1.0.0"])]
    assert yaml.safe_load(spec.to_yaml())["endpoints"] == written


def test_single_items_may_stand_for_lists_and_weights_default_to_equal_shares() -> None:
    e = parse_spec({"endpoints": [endpoint(shadow=[{"model": "a:1.0.0"}, {"model": "b:1.0.0", "fraction": 0.1}],
                                           fallback="churn:1.0.0",
                                           ab={"variants": {"a": "churn:1.0.0", "b": "churn:1.1.0"}})]}).endpoints[0]
    assert [(s.model, s.fraction) for s in e.shadow] == [("a:1.0.0", 1.0), ("b:1.0.0", 0.1)]
    assert e.fallback == ["churn:1.0.0"]
    assert e.ab is not None and e.ab.key is None and e.ab.weights_by_name() == {"a": 1.0, "b": 1.0}


AB = {"variants": {"a": "churn:1.0.0", "b": "churn:1.1.0"}}


@pytest.mark.parametrize(("fields", "message"), [
    ({"follow": "sometimes"}, "endpoints.0.follow: Input should be a valid boolean"),
    ({"ab": {**AB, "weights": {"a": 1}}}, "endpoints.0.ab: weights must name the same variants as variants: no"
                                          " weight for b"),
    ({"ab": {**AB, "weights": {"a": 1, "b": 1, "c": 1}}}, "endpoints.0.ab: weights must name the same variants as"
                                                          " variants: weights for unknown variants c"),
    ({"ab": {**AB, "weights": {"a": -5, "b": 10}}}, "endpoints.0.ab: weights must be >= 0: a=-5"),
    ({"ab": {**AB, "weights": {"a": 0, "b": 0}}}, "endpoints.0.ab: weights must have a positive sum"),
    ({"ab": {**AB, "weights": {"a": 1e300, "b": 1e300}}}, "endpoints.0.ab: weights must be <= 1e+09: a=1e+300,"
                                                          " b=1e+300"),
    ({"ab": {**AB, "weights": {"a": math.inf, "b": 1}}}, "endpoints.0.ab.weights.a: Input should be a finite number"),
    ({"ab": {**AB, "weights": {"a": "half", "b": 1}}}, "endpoints.0.ab.weights: the weight of 'a' must be a number"),
    ({"ab": {**AB, "weights": {"a": True, "b": 1}}}, "endpoints.0.ab.weights: the weight of 'a' must be a number"),
    ({"ab": {"variants": {"a": "churn:1.0.0"}}}, "endpoints.0.ab.variants: an A/B test needs at least two variants"),
    ({"ab": {"variants": {"canary": "churn:1.0.0", "b": "churn:1.1.0"}}},
     "endpoints.0.ab.variants: variant name 'canary' is reserved (reserved: canary, default, fallback, shadow,"
     " stable)"),
    ({"ab": {"variants": {"a b": "churn:1.0.0", "b": "churn:1.1.0"}}},
     "endpoints.0.ab.variants: invalid variant name 'a b': use 1-64 letters"),
    ({"ab": {"variants": {"a": "churn:1.0", "b": "churn:1.1.0"}}},
     "endpoints.0.ab.variants.a: invalid version '1.0': expected MAJOR.MINOR.PATCH"),
    ({"ab": {**AB, "key": "query:user"}}, "endpoints.0.ab.key: routing key 'query:user' must be 'header:NAME' or"
                                          " 'field:NAME'"),
    ({"ab": {**AB, "split": 50}}, "endpoints.0.ab.split: Extra inputs are not permitted"),
    ({"shadow": {"model": "churn:2.0.0", "fraction": 0}}, "endpoints.0.shadow.0.fraction: Input should be greater"
                                                         " than 0"),
    ({"shadow": {"model": "churn:2.0.0", "fraction": 1.01}}, "endpoints.0.shadow.0.fraction: Input should be less"
                                                            " than or equal to 1"),
    ({"shadow": {"model": "churn:2.0.0", "fraction": math.nan}}, "endpoints.0.shadow.0.fraction: Input should be"
                                                                " a finite number"),
    ({"shadow": {"fraction": 0.5}}, "endpoints.0.shadow.0.model: Field required"),
    ({"shadow": [{"model": "x:1.0.0"}, {"model": "x:1.0.0"}]}, "endpoints.0.shadow: each shadow model may be listed"
                                                              " once, repeated: x:1.0.0"),
    ({"shadow": {"model": "bad name"}}, "endpoints.0.shadow.0.model: invalid model name 'bad name'"),
    ({"fallback": [{"default": {"prediction": 0}}, "churn:1.0.0"]},
     "endpoints.0.fallback: the default must be the last fallback"),
    ({"fallback": [{"default": {"prediction": 0}}, {"default": {"prediction": 1}}]},
     "endpoints.0.fallback: a fallback chain has at most one default, found 2"),
    ({"fallback": ["churn:1.0.0", "churn:1.0.0"]}, "endpoints.0.fallback: each fallback model may be listed once"),
    ({"fallback": ["churn@production"]}, "endpoints.0: fallback: 'churn@production' is the endpoint's stable model"),
    ({"fallback": [7]}, "endpoints.0.fallback.0: a fallback must be a model ref (a string) or {default:"
                        " {prediction: ...}}"),
    ({"fallback": ["churn@"]}, "endpoints.0.fallback.0: invalid alias ''"),
    ({"fallback": [{"default": {}}]}, "endpoints.0.fallback.0.default.prediction: Field required"),
    ({"fallback": [{"default": {"prediction": None}}]},
     "endpoints.0.fallback.0.default.prediction: the default prediction must be a string, a number or a boolean,"
     " not null"),
    ({"fallback": [{"default": {"prediction": [1]}}]}, "endpoints.0.fallback.0.default.prediction: the default"
                                                       " prediction must be a string, a number or a boolean, not list"),
    ({"fallback": [{"default": {"prediction": math.inf}}]}, "endpoints.0.fallback.0.default.prediction: the default"
                                                            " prediction must be a finite number"),
    ({"fallback": [{"default": {"prediction": 1, "probabilities": []}}]},
     "endpoints.0.fallback.0.default.probabilities: List should have at least 1 item"),
    ({"fallback": [{"default": {"prediction": 1, "probabilities": [0.5, 1.5]}}]},
     "endpoints.0.fallback.0.default.probabilities: probabilities must be numbers in [0, 1], not 1.5"),
    ({"fallback": [{"defaults": {"prediction": 1}}]},
     "endpoints.0.fallback.0.default: Field required; endpoints.0.fallback.0.defaults: Extra inputs are not"
     " permitted"),
])
def test_each_broken_rule_is_named_with_its_field(fields: dict[str, Any], message: str) -> None:
    assert refused(**fields).startswith(message)


def test_an_ab_endpoint_may_fall_back_to_its_stable_model() -> None:
    e = parse_spec({"endpoints": [endpoint(ab=AB, fallback=["churn@production"])]}).endpoints[0]
    assert e.fallback == ["churn@production"]


names = st.text(st.characters(codec="ascii"), min_size=1, max_size=12) | st.sampled_from(
    [*RESERVED_VARIANTS, "Stable", "CANARY", "control", "treatment", "v-2", "b_1", "1a", "-a"])


@SETTINGS
@given(first=names, second=names)
def test_a_variant_name_is_accepted_exactly_when_it_is_an_identifier_and_not_reserved(first: str,
                                                                                       second: str) -> None:
    variants = {first: "churn:1.0.0", second: "churn:1.1.0"}
    valid = [n for n in variants if re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{0,63}", n)
             and n.lower() not in RESERVED_VARIANTS]
    if len(variants) == 2 and len(valid) == 2:
        parse_spec({"endpoints": [endpoint(ab={"variants": variants})]})
    else:
        assert refused(ab={"variants": variants}).startswith("endpoints.0.ab.variants: ")


weights = st.dictionaries(st.sampled_from(["a", "b", "c"]),
                          st.integers(-3, 100) | st.floats(), max_size=3)


@SETTINGS
@given(given_weights=weights)
def test_weights_are_accepted_exactly_when_they_name_the_variants_are_in_range_and_sum_above_zero(
        given_weights: dict[str, float]) -> None:
    ab = {"variants": {"a": "churn:1.0.0", "b": "churn:1.1.0"}, "weights": given_weights}
    values = list(given_weights.values())
    ok = set(given_weights) == {"a", "b"} and all(0 <= w <= 1e9 for w in values) and sum(values) > 0
    if not ok:
        assert refused(ab=ab).startswith("endpoints.0.ab")
        return
    e = parse_spec({"endpoints": [endpoint(ab=ab)]}).endpoints[0]
    release = build_release(e, {"churn@production": "1.2.0", "churn:1.0.0": "1.0.0", "churn:1.1.0": "1.1.0"})
    bounds = [b for _, b in release.ab]
    assert bounds == sorted(bounds) and bounds[-1] == 1.0
    assert bounds[0] == pytest.approx(given_weights["a"] / math.fsum(values))


fallback_items = st.sampled_from(REFS[1:]) | st.builds(lambda p: {"default": {"prediction": p}},
                                                       st.integers() | st.text(max_size=5) | st.booleans())


@SETTINGS
@given(chain=st.lists(fallback_items, max_size=5))
def test_a_fallback_chain_is_accepted_exactly_with_one_default_at_most_last_and_no_repeats(
        chain: list[Any]) -> None:
    defaults = [i for i, f in enumerate(chain) if isinstance(f, dict)]
    refs = [f for f in chain if isinstance(f, str)]
    if len(defaults) <= 1 and all(i == len(chain) - 1 for i in defaults) and len(set(refs)) == len(refs):
        e = parse_spec({"endpoints": [endpoint(fallback=chain)]}).endpoints[0]
        assert [f if isinstance(f, str) else {"default": f.model_dump(exclude_none=True)["default"]}
                for f in e.fallback] == chain
    else:
        assert refused(fallback=chain).startswith("endpoints.0.fallback: ")


json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5)


@SETTINGS
@given(prediction=json_scalars | st.lists(json_scalars, max_size=2) | st.dictionaries(st.text(max_size=2),
                                                                                          json_scalars, max_size=2))
def test_a_default_prediction_is_any_finite_json_scalar_but_null(prediction: Any) -> None:
    chain = [{"default": {"prediction": prediction}}]
    ok = isinstance(prediction, bool | int | str) or (isinstance(prediction, float) and math.isfinite(prediction))
    if ok:
        answer = parse_spec({"endpoints": [endpoint(fallback=chain)]}).endpoints[0].fallback[0]
        assert isinstance(answer, DefaultSpec)
        assert type(answer.default.prediction) is type(prediction) and answer.default.prediction == prediction
    else:
        assert refused(fallback=chain).startswith("endpoints.0.fallback.0.default.prediction: the default prediction")


@SETTINGS
@given(models=st.lists(st.sampled_from(REFS), min_size=1, max_size=3), data=st.data())
def test_refs_of_lists_every_ref_once_with_the_stable_model_first(models: list[str], data: st.DataObject) -> None:
    variants = data.draw(st.lists(st.sampled_from(REFS), min_size=2, max_size=3))
    shadows = data.draw(st.lists(st.sampled_from(REFS), max_size=3, unique=True))
    fallbacks = data.draw(st.lists(st.sampled_from([r for r in REFS if r != models[0]]), max_size=3, unique=True))
    e = endpoint(models=models, ab={"variants": {f"v{i}": r for i, r in enumerate(variants)}},
                 shadow=[{"model": s} for s in shadows], fallback=fallbacks)
    spec = parse_spec({"endpoints": [e]})
    refs = spec.refs_of(spec.endpoints[0])
    assert refs[0] == models[0]
    assert len(refs) == len(set(refs))
    assert set(refs) == {*models, *variants, *shadows, *fallbacks}


@SETTINGS
@given(fields=st.fixed_dictionaries({}, optional={
    "follow": st.booleans(),
    "ab": st.fixed_dictionaries({"variants": st.just({"x": "churn:1.0.0", "y": "churn:1.1.0"})},
                                optional={"key": st.sampled_from(["header:X-User", "field:user id"]),
                                          "weights": st.just({"x": 1.5, "y": 0})}),
    "shadow": st.lists(st.builds(lambda m, f: {"model": m, "fraction": f}, st.sampled_from(REFS[1:]),
                                 st.floats(min_value=0.001, max_value=1.0)),
                       max_size=2, unique_by=lambda s: s["model"]),
    "fallback": st.just(["churn:2.0.0", {"default": {"prediction": "no", "probabilities": [0.25, 0.75]}}]),
}))
def test_a_spec_written_by_to_yaml_reads_back_the_same(fields: dict[str, Any]) -> None:
    spec = parse_spec({"endpoints": [endpoint(**fields)]})
    assert parse_spec(yaml.safe_load(spec.to_yaml())) == spec


def test_relative_package_refs_in_every_release_field_are_anchored_to_the_spec_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    here = tmp_path / "project"
    (here / "pkgs" / "next").mkdir(parents=True)
    (here / "pkgs" / "next" / "shipml.json").write_text("{}")
    (here / "bare").mkdir()
    (here / "bare" / "shipml.json").write_text("{}")
    (here / "shipml.yaml").write_text(yaml.safe_dump({"endpoints": [{
        "name": "churn", "models": ["./pkgs/stable"],
        "ab": {"variants": {"a": "./pkgs/a", "b": "churn:1.0.0"}},
        "shadow": {"model": "../elsewhere/shadow"},
        "fallback": ["bare", "churn@production", {"default": {"prediction": 0}}]}]}))
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    spec = load_spec(here / "shipml.yaml")
    e = spec.endpoints[0]
    assert e.models == [str(here / "pkgs" / "stable")]
    assert e.ab is not None and e.ab.variants == {"a": str(here / "pkgs" / "a"), "b": "churn:1.0.0"}
    assert e.shadow[0].model == str(tmp_path / "elsewhere" / "shadow")
    assert e.fallback[:2] == [str(here / "bare"), "churn@production"]
    assert spec.refs_of(e) == [str(here / "pkgs" / "stable"), str(here / "pkgs" / "a"), "churn:1.0.0",
                               str(tmp_path / "elsewhere" / "shadow"), str(here / "bare"), "churn@production"]


def test_anchoring_leaves_malformed_release_fields_for_validation_to_name(tmp_path: Path) -> None:
    path = tmp_path / "shipml.yaml"
    path.write_text(yaml.safe_dump({"endpoints": [endpoint(ab={"variants": ["./a"]}, shadow=[{"fraction": 1}, 3],
                                                           fallback=[{"default": 1}])]}))
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    message = str(caught.value)
    assert message.startswith("shipml.yaml is invalid: endpoints.0.ab.variants: Input should be a valid dictionary")
    assert "endpoints.0.shadow.0.model: Field required" in message
