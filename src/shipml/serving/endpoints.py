"""An endpoint's serving state, and how it follows the registry.

Each endpoint holds one immutable :class:`~shipml.release.router.Release` (which version is stable, the canary and
its share, the A/B variants, shadows and fallbacks) and the runner of each of its targets. Requests read both
without a lock: a swap builds the next state aside, then replaces it in one assignment, so a request sees the old
state or the new one, never half of each.

:class:`Follower` turns the spec and the registry into that state: at start, and then about once a second for
endpoints that follow aliases. It reads each followed model's ``aliases.json`` and ``release.json`` (two small
files; in an S3 registry, its one state object; nothing is read per request), and when they changed it loads what
is new (golden check, warm-up), swaps, and releases what is no longer used (unloaded once its requests are
answered). A version that fails to load is never switched to: the old one keeps serving, the failure is logged,
counted (``shipml_model_swaps_total``) and shown by ``/admin/releases``, and that version is not tried again until
the alias names another one. A canary that fails to load is aborted in the registry, compare-and-set, as when it
breaks a limit.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shipml.errors import ConflictError, NotFoundError, ServiceUnavailable, ShipmlError
from shipml.protocol.dataplane import ModelRunner
from shipml.release.canary import CanaryWatch
from shipml.release.router import Release, Target, build_release
from shipml.serving.repository import ModelRepository, Source

if TYPE_CHECKING:
    from shipml.registry.releases import Canary
    from shipml.spec import DeploymentSpec, EndpointSpec

__all__ = ["EndpointState", "Follower", "SwapRecord"]

log = logging.getLogger("shipml.server")

#: Who aborts a canary in the registry's records: this server process.
SERVER_ID = f"server {socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True, slots=True)
class SwapRecord:
    at: float  # time.time()
    outcome: str  # "done" or "failed"
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.at)), "outcome": self.outcome,
                "detail": self.detail}


@dataclass(frozen=True, slots=True)
class Serving:
    """What an endpoint serves at an instant; replaced whole by a swap."""

    release: Release
    by_version: dict[str, ModelRunner]  # every version the endpoint has loaded (explicit version routes)
    stable: ModelRunner | None  # None: it failed to load, and the fallback chain answers
    front: ModelRunner | None  # what describes the endpoint (inputs, metadata): the stable model, else a fallback
    plain: bool  # a stable model, and no canary, A/B, shadow or fallback: the request path skips routing
    # Keyed by id() of the release's own Target objects (the ones route() returns): a dataclass hashes all its
    # fields on every lookup, twice per routed request.
    by_id: dict[int, ModelRunner]  # the runner of every target of the release
    carried: dict[int, ModelRunner]  # the canary and A/B variants riding in the stable model's queue: its runner


@dataclass(eq=False)
class EndpointState:
    spec: EndpointSpec
    batching: object
    refs: list[str]  # every ref the endpoint needs, stable first
    follow: bool
    serving: Serving | None = None
    sources: dict[str, Source] = field(default_factory=dict)  # ref -> what is loaded for it
    runners: dict[str, ModelRunner] = field(default_factory=dict)  # source key -> runner held
    errors: dict[str, str] = field(default_factory=dict)  # ref -> why it is not served (public words)
    canary: Canary | None = None  # the registry's running canary being served
    watch: CanaryWatch | None = None
    aborted: set[str] = field(default_factory=set)  # canary ids this server aborted (or failed to load)
    failed: dict[str, str] = field(default_factory=dict)  # source key -> why it failed to load (not retried)
    last_swap: SwapRecord | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def ready(self) -> bool:
        """Serving, with every model of the endpoint loaded and verified - or, for an endpoint with a fallback
        chain, able to answer through it."""
        serving = self.serving
        return serving is not None and (not self.errors or bool(serving.release.fallbacks))

    @property
    def versions(self) -> list[str]:
        return list(self.serving.by_version) if self.serving is not None else []

    def current(self) -> Serving:
        serving = self.serving
        if serving is None:
            if self.errors:
                raise ServiceUnavailable(f"model {self.name} is not ready: " + "; ".join(self.errors.values()))
            raise ServiceUnavailable(f"model {self.name} is still loading")
        return serving

    def runner(self, version: str | None = None) -> ModelRunner:
        """The stable runner, or the runner of an explicit ``version`` the endpoint serves."""
        serving = self.current()
        if version is None:
            if serving.front is None:
                raise ServiceUnavailable(f"model {self.name} has no model loaded")
            return serving.front
        runner = serving.by_version.get(version)
        if runner is None:
            raise NotFoundError(f"model {self.name} serves no version {version}"
                                f" (serving {', '.join(serving.by_version)})")
        return runner


PublicReason = Callable[[str, BaseException], str]


class Follower:
    """Builds every endpoint's serving state from the spec and the registry, and keeps it following."""

    def __init__(self, spec: DeploymentSpec, repository: ModelRepository, endpoints: dict[str, EndpointState],
                 *, public_reason: PublicReason, on_swap: Callable[[EndpointState, str], None] | None = None) -> None:
        self.spec = spec
        self.repository = repository
        self.endpoints = endpoints
        self.public_reason = public_reason
        self.on_swap = on_swap
        self._stopping = False
        self._background: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        """Load every endpoint's models once (what fails is recorded in ``errors``; the rest serves)."""
        for endpoint in self.endpoints.values():
            await self.refresh(endpoint)

    async def run(self, every_s: float) -> None:
        """Follow the registry until :meth:`stop`: a refresh of the endpoints that follow, every ``every_s``."""
        following = [e for e in self.endpoints.values() if e.follow]
        while not self._stopping and following:
            await asyncio.sleep(every_s)
            for endpoint in following:
                if self._stopping:
                    break
                try:
                    await self.refresh(endpoint)
                except Exception:  # a bug must not stop following: the next round tries again
                    log.exception("following the registry for endpoint %s failed", endpoint.name)

    async def stop(self) -> None:
        self._stopping = True
        await asyncio.gather(*self._background, return_exceptions=True)

    # -- one refresh ---------------------------------------------------------------------------------------
    async def refresh(self, endpoint: EndpointState) -> None:
        """Bring ``endpoint`` to what the spec and the registry say now (no-op when nothing changed)."""
        wanted, errors, canary = await asyncio.to_thread(self._look, endpoint)
        unchanged = (endpoint.serving is not None and all(endpoint.sources.get(r) == s for r, s in wanted.items())
                     and _same_canary(endpoint.canary, canary) and not (errors.keys() - endpoint.errors.keys()))
        if unchanged:
            return
        await self._apply(endpoint, wanted, errors, canary)

    def _look(self, endpoint: EndpointState) -> tuple[dict[str, Source], dict[str, str], Canary | None]:
        """What the endpoint's refs and its alias's canary are now, from one snapshot of the registry (an object
        registry: one read of each followed model's state)."""
        with self.repository.registry.snapshot():
            wanted, errors = self._resolve(endpoint)
            return wanted, errors, self._wanted_canary(endpoint, wanted) if endpoint.follow else None

    def _resolve(self, endpoint: EndpointState) -> tuple[dict[str, Source], dict[str, str]]:
        """What each ref names now; a ref that names nothing keeps what it had (or is an error at start)."""
        wanted: dict[str, Source] = {}
        errors: dict[str, str] = {}
        for ref in endpoint.refs:
            current = endpoint.sources.get(ref)
            if current is not None and not (endpoint.follow and self.repository.followable(ref)):
                wanted[ref] = current  # pinned: resolved once
                continue
            if current is not None and self.repository.holds(ref, current):
                wanted[ref] = current  # the alias still names what is served (one small file read)
                continue
            try:
                source = self.repository.resolve(ref)
            except Exception as exc:
                if current is not None:
                    log.warning("endpoint %s: %s names nothing usable now (%s); keeping %s", endpoint.name, ref,
                                exc, current.key)
                    wanted[ref] = current
                else:
                    errors[ref] = self.public_reason(ref, exc)
                    if endpoint.errors.get(ref) != errors[ref]:  # logged once, not at every refresh
                        framework = not isinstance(exc, ShipmlError) or exc.__cause__ is not None
                        log.error("endpoint %s: model %s cannot be loaded: %s: %s", endpoint.name, ref,
                                  type(exc).__name__, exc, exc_info=exc if framework else None)
                continue
            if source.key in endpoint.failed:  # failed before: not retried until the ref names another version
                if current is not None:
                    wanted[ref] = current
                else:
                    errors[ref] = endpoint.failed[source.key]
            else:
                wanted[ref] = source
        return wanted, errors

    def _wanted_canary(self, endpoint: EndpointState, wanted: dict[str, Source]) -> Canary | None:
        followed = self.repository.followable(endpoint.refs[0])
        stable = wanted.get(endpoint.refs[0])
        if followed is None or stable is None or endpoint.spec.ab is not None:
            return None
        name, alias = followed
        try:
            state = self.repository.registry.release_state(name)
        except ShipmlError as exc:
            log.warning("endpoint %s: cannot read the release state of %s: %s", endpoint.name, name, exc)
            return endpoint.canary
        canary = state.running(alias)
        if canary is None or canary.id in endpoint.aborted or canary.version == stable.version:
            return None
        return canary

    async def _apply(self, endpoint: EndpointState, wanted: dict[str, Source], errors: dict[str, str],
                     canary: Canary | None) -> None:
        held = dict(endpoint.runners)
        acquired: list[ModelRunner] = []
        sources: dict[str, Source] = {}
        runners: dict[str, ModelRunner] = {}  # source key -> runner, in the next state
        failures: list[str] = []
        for ref, source in wanted.items():
            runner = runners.get(source.key) or held.get(source.key)
            if runner is None:
                runner = await self._acquire(endpoint, source, failures, errors)
                if runner is None:
                    old = endpoint.sources.get(ref)
                    if old is not None and old.key in held:  # keep serving what it served
                        sources[ref], runners[old.key] = old, held[old.key]
                    continue
                acquired.append(runner)
            sources[ref] = source
            runners[source.key] = runner
        canary_runner = None
        if canary is not None:
            source = Source(f"{canary.name}:{canary.version}", f"{canary.name}:{canary.version}", canary.version)
            canary_runner = held.get(source.key) or runners.get(source.key)
            if canary_runner is None:
                canary_runner = await self._acquire(endpoint, source, failures, None)
                if canary_runner is None:
                    self.abort_canary(endpoint, canary, f"the canary {canary.version} failed to load: "
                                      + endpoint.failed.get(source.key, "load failed"))
                    canary = None
                else:
                    acquired.append(canary_runner)
            if canary_runner is not None:
                runners[source.key] = canary_runner
        if canary is not None and canary.id in endpoint.aborted:  # aborted by a request while this loaded
            canary, canary_runner = None, None
            runners = {s.key: runners[s.key] for s in sources.values()}
        unused = [r for r in acquired if all(r is not kept for kept in runners.values())]
        for runner in unused:
            await self.repository.release(runner)
        stable_ref = endpoint.refs[0]
        if stable_ref not in sources and not endpoint.spec.fallback:
            # nothing to serve yet (start-up failure), and no fallback chain: the endpoint stays unready
            endpoint.errors = errors
            for runner in acquired:
                if runner not in unused:
                    await self.repository.release(runner)
            return
        serving = _serving(endpoint, sources, runners, canary, canary_runner)
        before = endpoint.serving
        endpoint.serving = serving
        endpoint.sources, endpoint.runners = sources, runners
        endpoint.errors = {r: e for r, e in errors.items() if r not in sources}
        if not _same_canary(endpoint.canary, canary):
            endpoint.watch = CanaryWatch(canary.limits) if canary is not None else None
        endpoint.canary = canary
        for runner in acquired:
            if any(runner is kept for kept in runners.values()):
                log.info("model %s ready on endpoint %s", runner.model.ref, endpoint.name)
        for key, runner in held.items():
            if key not in runners:
                await self.repository.release(runner)
        if before is not None and (acquired or before.release != serving.release):
            detail = _describe(serving)
            endpoint.last_swap = SwapRecord(time.time(), "done", detail)
            log.info("endpoint %s now serves %s", endpoint.name, detail)
            if self.on_swap is not None:
                self.on_swap(endpoint, "done")
        if failures:
            endpoint.last_swap = SwapRecord(time.time(), "failed", "; ".join(failures))
            if self.on_swap is not None:
                self.on_swap(endpoint, "failed")

    async def _acquire(self, endpoint: EndpointState, source: Source, failures: list[str],
                       errors: dict[str, str] | None) -> ModelRunner | None:
        try:
            return await self.repository.acquire(source, endpoint.batching)
        except Exception as exc:
            framework = not isinstance(exc, ShipmlError) or exc.__cause__ is not None
            log.error("endpoint %s: %s (%s) failed to load, not switched to: %s: %s", endpoint.name, source.key,
                      source.ref, type(exc).__name__, exc, exc_info=exc if framework else None)
            reason = self.public_reason(source.ref, exc)
            endpoint.failed[source.key] = reason
            failures.append(f"{source.ref} -> {source.version or source.key}: {reason}")
            if errors is not None and source.ref not in endpoint.sources:
                errors[source.ref] = reason
            return None

    # -- canary aborts -------------------------------------------------------------------------------------
    def abort_canary(self, endpoint: EndpointState, canary: Canary, reason: str) -> None:
        """Stop sending requests to ``canary`` at once, and record the abort in the registry (in the background,
        compare-and-set on the canary's id: when several servers abort it, the first one's record stands)."""
        endpoint.aborted.add(canary.id)
        serving = endpoint.serving
        if endpoint.canary is not None and endpoint.canary.id == canary.id and serving is not None:
            endpoint.serving = _serving(endpoint, endpoint.sources, endpoint.runners, None, None)
            endpoint.canary, endpoint.watch = None, None
            endpoint.last_swap = SwapRecord(time.time(), "done", f"canary {canary.version} aborted: {reason}")
        log.warning("endpoint %s: canary %s of %s@%s aborted: %s", endpoint.name, canary.version, canary.name,
                    canary.alias, reason)
        task = asyncio.get_running_loop().create_task(asyncio.to_thread(self._record_abort, canary, reason))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _record_abort(self, canary: Canary, reason: str) -> None:
        try:
            self.repository.registry.end_canary(canary.name, alias=canary.alias, outcome="aborted", reason=reason,
                                                by=SERVER_ID, expected_id=canary.id)
        except ConflictError as exc:  # another replica (or a person) ended it first: theirs stands
            log.info("canary %s of %s@%s was ended elsewhere first: %s", canary.version, canary.name,
                     canary.alias, exc)
        except Exception:
            log.exception("recording the abort of canary %s of %s@%s in the registry failed", canary.version,
                          canary.name, canary.alias)


def _same_canary(a: Canary | None, b: Canary | None) -> bool:
    return (a.id if a is not None else None) == (b.id if b is not None else None)


def _serving(endpoint: EndpointState, sources: dict[str, Source], runners: dict[str, ModelRunner],
             canary: Canary | None, canary_runner: ModelRunner | None) -> Serving:
    versions = {ref: s.version or runners[s.key].model.version for ref, s in sources.items()}
    for ref in endpoint.refs:  # a model that failed to load keeps its place in the release, without a runner
        versions.setdefault(ref, "")
    canary_target = Target(f"{canary.name}:{canary.version}", canary.version, "canary") if canary else None
    release = build_release(endpoint.spec, versions, canary_target, canary.weight / 100.0 if canary else 0.0)
    by_target: dict[Target, ModelRunner] = {}
    by_ref = {ref: runners[s.key] for ref, s in sources.items()}
    for target in _targets(release):
        runner = canary_runner if target == canary_target else by_ref.get(target.ref)
        if runner is not None:
            by_target[target] = runner
    stable = by_ref.get(endpoint.refs[0])
    by_version: dict[str, ModelRunner] = {}
    for runner in [*([stable] if stable else []), *by_ref.values(), *([canary_runner] if canary_runner else [])]:
        by_version.setdefault(runner.model.version, runner)
    fallback = next((by_target[t] for t in release.fallbacks if isinstance(t, Target) and t in by_target), None)
    plain = (stable is not None and release.canary is None and not release.ab and not release.shadows
             and not release.fallbacks)
    # A canary or an A/B variant whose inputs have the stable model's names and types is queued with the stable
    # model (each model checks and predicts its own requests of a batch, in one hand-off): splitting traffic
    # over two queues halved the batches, and a batch's fixed cost is most of a small request's. Shadows and
    # fallbacks keep their own queues: a slow shadow must not delay answers, nor a fallback wait behind the
    # model it stands in for.
    carriers: dict[Target, ModelRunner] = {}
    if stable is not None:
        riders = [release.canary] if release.canary is not None else []
        riders += [t for t, _ in release.ab]
        for target in riders:
            runner = by_target.get(target)
            if runner is not None and runner is not stable and _structure(runner) == _structure(stable):
                carriers[target] = stable
    by_id = {id(t): by_target[t] for t in _targets(release) if t in by_target}
    carried = {id(t): carriers[t] for t in _targets(release) if t in carriers}
    return Serving(release, by_version, stable, stable or fallback, plain, by_id, carried)


def _structure(runner: ModelRunner) -> tuple[tuple[str, str, str], ...]:
    """What a request's structural checks depend on: the inputs' names, order and types."""
    return tuple((c.name, c.dtype, c.pandas_dtype) for c in runner.model.signature.inputs)


def _targets(release: Release) -> list[Target]:
    found = [release.stable]
    if release.canary is not None:
        found.append(release.canary)
    found += [t for t, _ in release.ab]
    found += [t for t, _ in release.shadows]
    found += [t for t in release.fallbacks if isinstance(t, Target)]
    return found


def _describe(serving: Serving) -> str:
    release = serving.release
    parts = [f"{release.stable.ref} = {release.stable.version}"]
    if release.canary is not None:
        parts.append(f"canary {release.canary.version} at {release.canary_fraction * 100:g}%")
    return ", ".join(parts)
