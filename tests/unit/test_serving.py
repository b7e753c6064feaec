"""The model service without a transport (serving/): the repository shares and unloads versions, the follower
swaps what an endpoint serves (and keeps the old version when the new one fails), and the predictor answers
through canaries and fallback chains. Real tiny models in a real registry; the HTTP side is tested in
tests/e2e/test_releases.py."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shipml.batching.batcher import BatchStats
from shipml.errors import InferenceError, ServiceUnavailable
from shipml.protocol.dataplane import ModelRunner
from shipml.registry.registry import Registry
from shipml.registry.releases import CanaryLimits
from shipml.release.shadow import Disagreement
from shipml.serving.service import ModelService
from shipml.spec import parse_spec
from tests.e2e import release_models as rm

ROWS = [rm.ROW]


class Observer:
    def __init__(self) -> None:
        self.shadows: list[tuple[str, str, str, Disagreement | None]] = []
        self.aborts: list[str] = []

    def shadow(self, endpoint: str, version: str, outcome: str, disagreement: Disagreement | None) -> None:
        self.shadows.append((endpoint, version, outcome, disagreement))

    def canary_aborted(self, endpoint: str) -> None:
        self.aborts.append(endpoint)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("serving") / "registry"
    rm.good(root, "1.0.0", 1)
    rm.good(root, "2.0.0", 2)
    rm.bad_canary(root, "9.0.0")
    rm.golden_fails(root, "7.0.0")
    Registry(root).set_alias(rm.NAME, "production", "1.0.0")
    return root


@pytest.fixture
def registry(base: Path, tmp_path: Path) -> Registry:
    import shutil

    shutil.copytree(base, tmp_path / "registry")
    return Registry(tmp_path / "registry")


def service_for(registry: Registry, endpoints: list[dict[str, Any]],
                batches: dict[str, list[BatchStats]] | None = None) -> tuple[ModelService, Observer]:
    """The service for ``endpoints``; ``batches``, when given, gets each version's batch metrics."""
    spec = parse_spec({"registry": str(registry.root), "endpoints": endpoints, "server": {"compile": "off"}})
    observer = Observer()

    def make_runner(model: Any, batching: Any) -> ModelRunner:
        on_batch = None if batches is None else batches.setdefault(model.version, []).append
        return ModelRunner(model, policy=spec.input_policy.policy(), max_rows=100, max_batch_size=64,
                           max_latency_ms=0, max_queue=64, on_batch=on_batch)

    service = ModelService(spec, registry, make_runner, observer=observer,
                           public_reason=lambda ref, exc: f"{ref}: {type(exc).__name__}")
    return service, observer


def run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(body(), 120))


def label_of(answer: Any) -> int:
    return int(answer.outcome.predictions[0])


def test_two_endpoints_share_a_version_and_the_last_user_unloads_it_once_its_requests_are_answered(
        registry: Registry) -> None:
    async def body() -> None:
        service, _ = service_for(registry, [{"name": "a", "models": ["churn:1.0.0"]},
                                            {"name": "b", "models": ["churn@production"]}])
        await service.follower.start()
        runner = service.endpoint("a").runner()
        assert service.endpoint("b").runner() is runner and len(service.runners()) == 1
        repository = service.repository
        runner.active = 1  # a request holds it
        await repository.release(runner)
        assert repository.loaded() == [runner]  # b still uses it
        await repository.release(runner)
        assert repository.loaded() == []
        await asyncio.sleep(0.1)
        assert runner.batcher._task is not None, "unloaded while a request held it"
        runner.active = 0
        await asyncio.wait_for(asyncio.gather(*repository._unloading), 10)
        assert runner.batcher._task is None
        await service.stop()

    run(body)


def test_an_alias_move_swaps_and_a_version_failing_its_golden_check_is_never_switched_to(registry: Registry) -> None:
    async def body() -> None:
        service, _ = service_for(registry, [{"name": "churn", "models": ["churn@production"]}])
        await service.follower.start()
        endpoint = service.endpoint("churn")
        assert label_of(await service.predict(endpoint, ROWS, want_proba=False)) == rm.label(1)
        old = endpoint.runner()

        registry.set_alias(rm.NAME, "production", "2.0.0")
        await service.follower.refresh(endpoint)
        answer = await service.predict(endpoint, ROWS, want_proba=False)
        assert (answer.version, answer.variant, label_of(answer)) == ("2.0.0", "stable", rm.label(2))
        assert endpoint.last_swap is not None and endpoint.last_swap.outcome == "done"
        await asyncio.wait_for(asyncio.gather(*service.repository._unloading), 10)
        assert old.batcher._task is None, "the old version was not unloaded"

        registry.set_alias(rm.NAME, "production", "7.0.0")  # fails its golden check wherever it loads
        await service.follower.refresh(endpoint)
        answer = await service.predict(endpoint, ROWS, want_proba=False)
        assert answer.version == "2.0.0" and endpoint.ready
        assert endpoint.last_swap is not None and endpoint.last_swap.outcome == "failed"
        assert "churn:7.0.0" in endpoint.failed
        swapped = endpoint.last_swap
        await service.follower.refresh(endpoint)  # not tried again while the alias names it
        assert endpoint.last_swap is swapped
        await service.stop()

    run(body)


def test_a_failing_canary_is_answered_by_stable_and_aborted_in_the_registry(registry: Registry) -> None:
    async def body() -> None:
        service, observer = service_for(registry, [{"name": "churn", "models": ["churn@production"]}])
        await service.follower.start()
        endpoint = service.endpoint("churn")
        canary = registry.start_canary(rm.NAME, "9.0.0", weight=99.0,
                                       limits=CanaryLimits(max_error_rate=0.1, min_requests=5, window=10))
        await service.follower.refresh(endpoint)
        assert endpoint.canary is not None and endpoint.canary.id == canary.id
        variants = []
        for _ in range(40):
            answer = await service.predict(endpoint, ROWS, want_proba=False)
            assert label_of(answer) == rm.label(1), "a request the canary failed was not answered by stable"
            variants.append(answer.variant)
        assert set(variants) == {"stable"}
        assert endpoint.canary is None and canary.id in endpoint.aborted and observer.aborts == ["churn"]
        await service.follower.stop()  # waits for the abort's registry write
        ended = registry.release_state(rm.NAME).canaries["production"]
        assert ended.state == "aborted" and ended.reason is not None and "error rate" in ended.reason
        await service.follower.refresh(endpoint)  # the registry's record does not bring it back
        assert endpoint.canary is None
        await service.stop()

    run(body)


def test_a_fallback_chain_ends_in_the_default_answer(registry: Registry) -> None:
    async def body() -> None:
        service, _ = service_for(registry, [{"name": "churn", "models": ["churn:9.0.0"],
                                             "fallback": ["churn:7.0.0", {"default": {"prediction": 42}}]}])
        await service.follower.start()
        endpoint = service.endpoint("churn")
        answer = await service.predict(endpoint, ROWS * 3, want_proba=False)
        assert answer.variant == "default" and answer.outcome.predictions.tolist() == [42, 42, 42]
        with pytest.raises(InferenceError):  # asked for by version, there is no chain
            await service.predict(endpoint, ROWS, want_proba=False, version="9.0.0")
        await service.stop()

    run(body)


def test_an_endpoint_whose_stable_model_failed_to_load_answers_through_its_fallback(registry: Registry) -> None:
    async def body() -> None:
        service, _ = service_for(registry, [
            {"name": "churn", "models": ["churn:7.0.0"], "fallback": ["churn:2.0.0"]},
            {"name": "plain", "models": ["churn:7.0.0"]}])
        await service.follower.start()
        endpoint = service.endpoint("churn")
        assert endpoint.errors and endpoint.ready
        answer = await service.predict(endpoint, ROWS, want_proba=False)
        assert (answer.version, answer.variant, label_of(answer)) == ("2.0.0", "fallback", rm.label(2))
        plain = service.endpoint("plain")
        assert not plain.ready and not service.ready
        with pytest.raises(ServiceUnavailable, match="not ready"):
            await service.predict(plain, ROWS, want_proba=False)
        await service.stop()

    run(body)


def test_shadows_get_a_copy_and_their_disagreement_is_counted(registry: Registry) -> None:
    async def body() -> None:
        service, observer = service_for(registry, [{"name": "churn", "models": ["churn:1.0.0"],
                                                    "shadow": {"model": "churn:2.0.0", "fraction": 1.0}}])
        await service.follower.start()
        endpoint = service.endpoint("churn")
        answer = await service.predict(endpoint, ROWS * 4, want_proba=True)
        assert answer.version == "1.0.0"
        for _ in range(100):
            if observer.shadows:
                break
            await asyncio.sleep(0.05)
        (name, version, outcome, disagreement), = observer.shadows
        assert (name, version, outcome) == ("churn", "2.0.0", "ok") and disagreement is not None
        assert disagreement.rows == 4 and disagreement.labels_differ == 4  # shift 1 vs shift 2: every label
        await service.stop()

    run(body)


def test_ab_variants_are_sticky_by_header(registry: Registry) -> None:
    async def body() -> None:
        service, _ = service_for(registry, [{
            "name": "churn", "models": ["churn:1.0.0"],
            "ab": {"key": "header:X-User-ID", "variants": {"a": "churn:1.0.0", "b": "churn:2.0.0"},
                   "weights": {"a": 50, "b": 50}}}])
        await service.follower.start()
        endpoint = service.endpoint("churn")
        seen: dict[str, set[str]] = {}
        for user in range(40):
            for _ in range(3):
                answer = await service.predict(endpoint, ROWS, want_proba=False,
                                               header=lambda name, u=user: str(u) if name == "x-user-id" else None)
                seen.setdefault(str(user), set()).add(answer.variant)
                assert label_of(answer) == rm.label(1 if answer.variant == "a" else 2)
        assert all(len(v) == 1 for v in seen.values())
        assert {v for vs in seen.values() for v in vs} == {"a", "b"}
        await service.stop()

    run(body)


def test_a_variant_riding_in_the_stable_queue_is_counted_as_itself(registry: Registry) -> None:
    """Variants with the stable model's inputs share its batches; each version's batch metrics count its own rows."""
    async def body() -> None:
        batches: dict[str, list[BatchStats]] = {}
        service, _ = service_for(registry, [{
            "name": "churn", "models": ["churn:1.0.0"],
            "ab": {"variants": {"a": "churn:1.0.0", "b": "churn:2.0.0"}, "weights": {"a": 30, "b": 70}}}], batches)
        await service.follower.start()
        endpoint = service.endpoint("churn")
        assert endpoint.serving is not None and endpoint.serving.carried, "variant b does not ride with a"
        answers = await asyncio.gather(*(service.predict(endpoint, ROWS * 2, want_proba=False) for _ in range(60)))
        answered = {v: 2 * sum(a.version == v for a in answers) for v in ("1.0.0", "2.0.0")}
        assert answered["1.0.0"] and answered["2.0.0"]
        counted = {v: sum(b.rows for b in batches.get(v, [])) for v in ("1.0.0", "2.0.0")}
        assert counted == answered
        assert all(label_of(a) == rm.label(1 if a.version == "1.0.0" else 2) for a in answers)
        await service.stop()

    run(body)


def test_a_default_answer_has_the_probabilities_of_each_row(registry: Registry) -> None:
    async def body() -> None:
        service, _ = service_for(registry, [{"name": "churn", "models": ["churn:9.0.0"],
                                             "fallback": [{"default": {"prediction": 0,
                                                                       "probabilities": [0.75, 0.25]}}]}])
        await service.follower.start()
        answer = await service.predict(service.endpoint("churn"), {k: [v, v] for k, v in rm.ROW.items()},
                                       want_proba=True)
        assert answer.outcome.probabilities is not None
        np.testing.assert_allclose(answer.outcome.probabilities, [[0.75, 0.25], [0.75, 0.25]])
        await service.stop()

    run(body)


def test_a_ref_that_names_nothing_is_logged_once_not_at_every_refresh(registry: Registry,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        service, _ = service_for(registry, [{"name": "ghost", "models": ["ghost@production"]}])
        await service.follower.start()
        endpoint = service.endpoint("ghost")
        for _ in range(3):
            await service.follower.refresh(endpoint)
        assert not endpoint.ready and endpoint.errors
        await service.stop()

    with caplog.at_level("ERROR", logger="shipml.server"):
        run(body)
    logged = [r for r in caplog.records if "cannot be loaded" in r.getMessage()]
    assert len(logged) == 1, [r.getMessage() for r in logged]
