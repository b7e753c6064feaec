"""The model repository: the model versions a server process has loaded, each behind its own batcher.

Only :meth:`ModelRepository.acquire` and :meth:`ModelRepository.release` change what is loaded. ``acquire`` loads
a version (integrity, trust, golden check: ``load_model``), starts its batcher, warms it with one request, and
counts one more user; an endpoint that already uses the same version with the same batching shares it (a canary
that is promoted is already loaded: the swap loads nothing). ``release`` counts one user less; the last one
unloads the version, but only once no request holds it any more (requests count themselves in
``ModelRunner.active``) and its batcher has answered what it queued. A version that fails to load raises, and
nothing that was loaded changes: the caller keeps serving what it served.

Transport-free: the HTTP apps, the Ray Serve replica and tests use it alike. What a server does on load and
unload (metrics, the compiled LightGBM switch) comes in as :class:`Hooks`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from shipml.errors import SchemaError, ShipmlError
from shipml.package.example import model_example
from shipml.package.loaded import LoadedModel
from shipml.protocol.dataplane import ModelRunner
from shipml.registry.names import Ref
from shipml.registry.registry import Registry

__all__ = ["Hooks", "ModelRepository", "Source"]

log = logging.getLogger("shipml.server")

#: Longest an unloaded version waits for the requests still holding it, before its batcher stops regardless.
UNLOAD_WAIT_S = 120.0


@dataclass(frozen=True, slots=True)
class Source:
    """What to load: ``key`` names it exactly ("name:1.2.0" for a registry version, the directory of a package,
    or the spec ref of a model handed in already loaded); ``ref`` is the spec ref it was resolved from."""

    key: str
    ref: str
    version: str


class Hooks(Protocol):
    def loaded(self, runner: ModelRunner) -> None: ...

    def unloading(self, runner: ModelRunner) -> None: ...


class _NoHooks:
    def loaded(self, runner: ModelRunner) -> None:
        pass

    def unloading(self, runner: ModelRunner) -> None:
        pass


@dataclass(eq=False)
class _Entry:
    runner: ModelRunner
    users: int


MakeRunner = Callable[[LoadedModel, object], ModelRunner]


class ModelRepository:
    """``make_runner(model, batching)``: the runner of a freshly loaded model (the server's input policy, limits
    and batching); ``preloaded``: models handed in already loaded, by spec ref (never reloaded)."""

    def __init__(self, registry: Registry, make_runner: MakeRunner, *, hooks: Hooks | None = None,
                 preloaded: dict[str, LoadedModel] | None = None) -> None:
        self.registry = registry
        self.make_runner = make_runner
        self.hooks: Hooks = hooks or _NoHooks()
        self.preloaded = preloaded or {}
        self._entries: dict[tuple[str, object], _Entry] = {}
        self._loading: dict[tuple[str, object], asyncio.Future[ModelRunner]] = {}
        self._unloading: set[asyncio.Task[None]] = set()

    # -- what a ref means now ------------------------------------------------------------------------------
    def resolve(self, ref: str) -> Source:
        """The exact version ``ref`` names now (an alias is read from the registry: blocking, call it off the
        event loop). Raises what the registry raises for a ref that names nothing."""
        model = self.preloaded.get(ref)
        if model is not None:
            return Source(ref, ref, model.version)
        parsed = Ref.parse(ref)
        if parsed.path is not None:
            return Source(str(parsed.path), ref, "")
        mv = self.registry.get(parsed)
        return Source(f"{mv.name}:{mv.version}", ref, mv.version)

    def holds(self, ref: str, source: Source) -> bool:
        """Whether the alias ``ref`` names still names ``source``'s version: one read of the model's aliases
        (a follower asks this every second; a full :meth:`resolve` is needed only when it moved). False when it
        cannot tell."""
        followed = self.followable(ref)
        if followed is None or not source.version:
            return False
        name, alias = followed
        try:
            return self.registry.aliases(name).get(alias) == source.version
        except Exception:  # resolve() will say what is wrong
            return False

    def followable(self, ref: str) -> tuple[str, str] | None:
        """(model name, alias) when ``ref`` names an alias of a registry model, else None."""
        if ref in self.preloaded:
            return None
        parsed = Ref.parse(ref)
        if parsed.path is None and parsed.name is not None and parsed.alias is not None:
            return parsed.name, parsed.alias
        return None

    # -- loading and unloading -----------------------------------------------------------------------------
    def loaded(self) -> list[ModelRunner]:
        return [e.runner for e in self._entries.values()]

    async def acquire(self, source: Source, batching: object) -> ModelRunner:
        """The runner of ``source`` (loaded, verified, warmed), with one more user."""
        key = (source.key, batching)
        entry = self._entries.get(key)
        if entry is not None:
            entry.users += 1
            return entry.runner
        pending = self._loading.get(key)
        if pending is None:
            pending = self._loading[key] = asyncio.get_running_loop().create_future()
            try:
                runner = await self._load(source, batching)
            except BaseException as exc:
                pending.set_exception(exc)
                pending.exception()  # retrieved: only the waiters, if any, re-raise it
                raise
            finally:
                del self._loading[key]
            self._entries[key] = _Entry(runner, 0)
            pending.set_result(runner)
        runner = await asyncio.shield(pending)
        self._entries[key].users += 1
        return runner

    async def _load(self, source: Source, batching: object) -> ModelRunner:
        started = time.monotonic()
        model = self.preloaded.get(source.key)
        if model is None:
            model = await asyncio.to_thread(self._load_model, source)
        runner = self.make_runner(model, batching)
        runner.batcher.start()
        observer, runner.batcher.on_batch = runner.batcher.on_batch, None  # a warm-up is not traffic: not counted
        try:
            await _warm(runner)
        except BaseException:
            await runner.batcher.stop()
            raise
        finally:
            runner.batcher.on_batch = observer
        self.hooks.loaded(runner)
        log.info("model %s loaded (golden check passed) in %.2fs", model.ref, time.monotonic() - started)
        return runner

    def _load_model(self, source: Source) -> LoadedModel:
        from shipml.api import load_model

        return load_model(source.key, registry=self.registry)

    async def release(self, runner: ModelRunner) -> None:
        """One user less; the last one unloads it, in the background, once no request holds it."""
        for key, entry in self._entries.items():
            if entry.runner is runner:
                entry.users -= 1
                if entry.users <= 0:
                    del self._entries[key]
                    task = asyncio.get_running_loop().create_task(self._unload(runner))
                    self._unloading.add(task)
                    task.add_done_callback(self._unloading.discard)
                return

    async def _unload(self, runner: ModelRunner) -> None:
        deadline = time.monotonic() + UNLOAD_WAIT_S
        while runner.active and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        self.hooks.unloading(runner)
        await runner.batcher.stop()
        log.info("model %s unloaded", runner.model.ref)

    async def close(self) -> None:
        """Stop every batcher (each answers what it queued first)."""
        runners = [e.runner for e in self._entries.values()]
        self._entries.clear()
        for runner in runners:
            self.hooks.unloading(runner)
        await asyncio.gather(*(r.batcher.stop() for r in runners), *self._unloading, return_exceptions=True)


async def _warm(runner: ModelRunner) -> None:
    """One request through the runner's batcher and worker thread before it serves (first calls are slow:
    imports, allocations). It checks nothing (the golden check did): an example the input policy refuses, or
    one the model fails, is no load failure."""
    try:
        example = model_example(runner.model)
    except Exception:  # no example can be made from the signature: the golden check has run the model anyway
        return
    try:
        await runner.infer([example], want_proba=runner.model.has_proba, deadline=time.monotonic() + 60)
    except SchemaError:
        pass
    except ShipmlError as exc:  # the golden check passed: the model serves, and its own failures count there
        log.warning("model %s failed its warm-up request (%s); it serves all the same: its golden check passed",
                    runner.model.ref, exc)
