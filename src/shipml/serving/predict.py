"""One prediction request through an endpoint's release: which model answers, what happens when it fails, and
the copies sent to shadows. Transport-free: the HTTP handlers call :meth:`Predictor.predict` with the parsed input.

- A plain endpoint (no canary, A/B, shadow or fallback) skips routing: its stable model answers.
- Otherwise :func:`~shipml.release.router.route` decides from the endpoint's release state, the request's routing
  key and a random draw: the primary target, the stable one when the primary is a canary, the shadows and the
  fallback chain.
- A canary that fails a request (a server-side error, or a refusal the stable model does not make) has the stable
  model answer it: clients see no error from a bad canary. Every canary request is recorded in the canary's watch;
  when the watch's limits are broken the canary is aborted (:meth:`Follower.abort_canary`).
- A model that fails with a server-side error (5xx: it raised, timed out, is overloaded or not loaded) hands the
  request to the next model of the fallback chain, and finally to the constant default answer. Each model but the
  last gets half the time left before the request's deadline. A client error (4xx: the input is wrong) is the
  answer: another model would refuse it too.
- Shadows get a copy of the input after the answer is made, in tasks of their own: the answer never waits for
  them, their answers and errors are only counted and compared with the primary's (``ReleaseObserver``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from shipml.errors import DeadlineExceeded, ServiceUnavailable, ShipmlError
from shipml.protocol.dataplane import ModelRunner, Outcome, Tag
from shipml.protocol.records import DecodedRecords
from shipml.release.router import Default, Target, route
from shipml.release.shadow import Disagreement, compare
from shipml.serving.context import RequestContext
from shipml.serving.endpoints import EndpointState, Follower, Serving

if TYPE_CHECKING:
    from shipml.package.loaded import LoadedModel
    from shipml.registry.releases import Canary
    from shipml.release.canary import CanaryWatch

__all__ = ["Answer", "Predictor", "ReleaseObserver"]

log = logging.getLogger("shipml.server")

PINNED = "pinned"  # the variant of a request for an explicit version


@dataclass(slots=True)
class Answer:
    outcome: Outcome
    model: LoadedModel | None  # None for the default answer
    version: str
    variant: str
    classes: list[Any] | None


class ReleaseObserver(Protocol):
    def shadow(self, endpoint: str, version: str, outcome: str, disagreement: Disagreement | None) -> None: ...

    def canary_aborted(self, endpoint: str) -> None: ...


class Predictor:
    def __init__(self, follower: Follower, observer: ReleaseObserver, timeout_s: float) -> None:
        self.follower = follower
        self.observer = observer
        self.timeout_s = timeout_s
        self._shadows: set[asyncio.Task[None]] = set()

    async def predict(self, endpoint: EndpointState, data: Any, *, want_proba: bool, version: str | None = None,
                      header: Callable[[str], str | None] | None = None, payload: Any = None,
                      ctx: RequestContext | None = None) -> Answer:
        """The answer to one request's input ``data`` (``payload``: the whole parsed body and ``header``: the
        request's headers, where an A/B routing key may be). ``ctx``, when given, gets the routing key, what
        answered (model, version, variant) and the rows predicted."""
        serving = endpoint.current()
        deadline = time.monotonic() + self.timeout_s
        runner: ModelRunner | None = None
        if version is not None:
            runner, variant = endpoint.runner(version), PINNED
        elif serving.plain:  # the hot path: no routing
            runner, variant = serving.stable, "stable"
        if runner is not None:
            tag = None if runner.monitor is None or ctx is None else (ctx.id, endpoint.name, variant, ctx.started)
            runner.active += 1
            try:
                outcome = await runner.infer(data, want_proba=want_proba, deadline=deadline, tag=tag)
            except DeadlineExceeded as exc:
                raise DeadlineExceeded(f"no answer within {self.timeout_s * 1000:.0f} ms") from exc
            finally:
                runner.active -= 1
            model = runner.model
            answer = Answer(outcome, model, model.version, variant, model.classes)
        else:
            release = serving.release
            key = release.ab_key.extract(header or _no_header, payload) if release.ab_key is not None else None
            shadow_draws = [random.random() for _ in release.shadows] if release.shadows else ()
            decision = route(release, key, random.random(), shadow_draws)
            if ctx is not None:
                ctx.key = key
            chain = decision.chain
            # the first target of the chain that answers (inline: a coroutine less per request)
            error: Exception | None = None
            canary_refusal: ShipmlError | None = None  # a client error from the canary: the stable model judges it
            watch, canary = endpoint.watch, endpoint.canary
            last = len(chain) - 1
            runners, carriers = serving.by_id, serving.carried
            for i, target in enumerate(chain):
                runner = runners.get(id(target))
                if runner is None:
                    if isinstance(target, Default):
                        answer = _default_answer(target, data, serving)
                        break
                    error = ServiceUnavailable(f"model {target.ref} of endpoint {endpoint.name} is not loaded")
                    continue
                started = time.monotonic()
                attempt_deadline = deadline if i == last else started + (deadline - started) / 2
                carrier = carriers.get(id(target))
                tag = None if runner.monitor is None or ctx is None else (ctx.id, endpoint.name, target.variant,
                                                                          ctx.started)
                runner.active += 1
                try:
                    if carrier is None:
                        outcome = await runner.infer(data, want_proba=want_proba, deadline=attempt_deadline,
                                                     tag=tag)
                    else:  # in the stable model's batches
                        outcome = await carrier.infer(data, want_proba=want_proba, deadline=attempt_deadline,
                                                      via=runner, tag=tag)
                except ShipmlError as exc:
                    if target.variant == "canary":
                        if exc.status >= 500:
                            self._canary_result(endpoint, watch, canary, False, time.monotonic() - started)
                        else:
                            canary_refusal = exc
                        error = exc
                        continue
                    if exc.status < 500:  # the input is wrong: another model would refuse it too
                        raise
                    error = exc
                    continue
                finally:
                    runner.active -= 1
                variant = target.variant
                if variant == "canary":
                    self._canary_result(endpoint, watch, canary, True, time.monotonic() - started)
                elif canary_refusal is not None:  # the stable model took what the canary refused: its fault
                    self._canary_result(endpoint, watch, canary, False, 0.0)
                model = runner.model
                answer = Answer(outcome, model, model.version, variant, model.classes)
                break
            else:  # no target answered
                if isinstance(error, DeadlineExceeded):
                    raise DeadlineExceeded(f"no answer within {self.timeout_s * 1000:.0f} ms") from error
                raise error or ServiceUnavailable(f"model {endpoint.name} has no model to answer")
            for target in decision.shadows:
                self._start_shadow(endpoint, serving, target, data, answer, ctx)
        if ctx is not None:
            ctx.answered_by(endpoint.name if answer.model is None else answer.model.name, answer.version,
                            answer.variant)
            ctx.rows = len(answer.outcome.predictions)
        return answer

    def _canary_result(self, endpoint: EndpointState, watch: CanaryWatch | None, canary: Canary | None, ok: bool,
                       seconds: float) -> None:
        if endpoint.watch is not watch or watch is None or canary is None:  # the canary ended meanwhile
            return
        watch.record(ok, seconds)
        reason = watch.verdict()
        if reason is not None:
            self.follower.abort_canary(endpoint, canary, reason)
            self.observer.canary_aborted(endpoint.name)

    # -- shadows -------------------------------------------------------------------------------------------
    def _start_shadow(self, endpoint: EndpointState, serving: Serving, target: Target, data: Any,
                      answer: Answer, ctx: RequestContext | None) -> None:
        runner = serving.by_id.get(id(target))
        if runner is None:
            self.observer.shadow(endpoint.name, target.version, "not_loaded", None)
            return
        tag = None if runner.monitor is None or ctx is None else (ctx.id, endpoint.name, target.variant,
                                                                  time.monotonic())
        task = asyncio.get_running_loop().create_task(self._shadow(endpoint.name, runner, data, answer, tag))
        self._shadows.add(task)
        task.add_done_callback(self._shadows.discard)

    async def _shadow(self, endpoint: str, runner: ModelRunner, data: Any, answer: Answer,
                      tag: Tag | None) -> None:
        version = runner.model.version
        runner.active += 1
        try:
            outcome = await runner.infer(data, want_proba=runner.model.has_proba,
                                         deadline=time.monotonic() + self.timeout_s, tag=tag)
        except asyncio.CancelledError:
            raise
        except ShipmlError as exc:
            self.observer.shadow(endpoint, version, "timeout" if isinstance(exc, DeadlineExceeded) else
                                 ("rejected" if exc.status < 500 else "error"), None)
            return
        except Exception:
            log.exception("shadow %s of endpoint %s failed", runner.model.ref, endpoint)
            self.observer.shadow(endpoint, version, "error", None)
            return
        finally:
            runner.active -= 1
        primary = answer.outcome
        self.observer.shadow(endpoint, version, "ok", compare(primary.predictions, primary.probabilities,
                                                              outcome.predictions, outcome.probabilities))

    async def close(self) -> None:
        for task in list(self._shadows):
            task.cancel()
        await asyncio.gather(*self._shadows, return_exceptions=True)


def _no_header(name: str) -> str | None:
    return None


def count_rows(data: Any) -> int:
    """Rows in a request's input: records or value rows, columns (name -> values), or a matrix."""
    if isinstance(data, np.ndarray):
        return int(data.shape[0]) if data.ndim else 1
    if isinstance(data, list | DecodedRecords):
        return len(data)
    if isinstance(data, dict):
        for values in data.values():
            if isinstance(values, list | np.ndarray):
                return len(values)
        return 1
    return 1


def _default_answer(default: Default, data: Any, serving: Serving) -> Answer:
    rows = count_rows(data)
    predictions = np.array([default.prediction] * rows)
    probabilities = None
    if default.probabilities is not None:
        probabilities = np.tile(np.asarray(default.probabilities, dtype=np.float64), (rows, 1))
    classes = serving.front.model.classes if serving.front is not None else None
    return Answer(Outcome(predictions, probabilities), None, "", default.variant, classes)
