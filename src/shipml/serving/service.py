"""The model service: everything a server process does with models, without a transport.

It owns the model repository, every endpoint's serving state, the follower that keeps them in step with the
registry, and the predictor. The ASGI app, the RSGI app and the Ray Serve replica hold one and only parse and
serialise around it: ``start`` (load, golden check, then follow), ``ready``, ``endpoint``, ``predict``,
``releases`` (what ``/admin/releases`` shows) and ``stop``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from shipml.errors import NotFoundError, ShipmlError
from shipml.package.loaded import LoadedModel
from shipml.package.manifest import read_manifest
from shipml.protocol.dataplane import ModelRunner
from shipml.registry.registry import Registry
from shipml.release.router import Default, Release, Target
from shipml.serving.endpoints import EndpointState, Follower
from shipml.serving.predict import Predictor, ReleaseObserver
from shipml.serving.repository import Hooks, ModelRepository
from shipml.spec import DeploymentSpec

__all__ = ["ModelService"]

log = logging.getLogger("shipml.server")

_NO_SKLEARN_RUNTIMES = frozenset({"lightgbm", "xgboost", "onnx"})


class ModelService:
    """``follow``: endpoints follow their aliases (and canaries) while serving, unless an endpoint says
    ``follow: false``; ``public_reason(ref, exc)``: the words a client may see for a failed load."""

    def __init__(self, spec: DeploymentSpec, registry: Registry, make_runner: Callable[[LoadedModel, Any], ModelRunner],
                 *, observer: ReleaseObserver, public_reason: Callable[[str, BaseException], str],
                 hooks: Hooks | None = None, preloaded: dict[str, LoadedModel] | None = None,
                 follow: bool = True, on_swap: Callable[[EndpointState, str], None] | None = None) -> None:
        self.spec = spec
        self.registry = registry
        self.preloaded = preloaded or {}
        self.repository = ModelRepository(registry, make_runner, hooks=hooks, preloaded=self.preloaded)
        self.endpoints: dict[str, EndpointState] = {
            e.name: EndpointState(e, spec.batching_for(e), spec.refs_of(e), follow and e.follow)
            for e in spec.endpoints}
        self.follower = Follower(spec, self.repository, self.endpoints, public_reason=public_reason,
                                 on_swap=on_swap)
        self.predictor = Predictor(self.follower, observer, spec.limits.request_timeout_ms / 1000.0)
        #: the answer to one request (:meth:`Predictor.predict`, bound here: no extra coroutine per request)
        self.predict = self.predictor.predict
        self.loaded = False
        self._following: asyncio.Task[None] | None = None

    # -- lifecycle -----------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Load every endpoint's models (what fails is recorded; the rest serves), then follow the registry."""
        await asyncio.to_thread(self._prepare_runtimes)
        await self.follower.start()
        self.loaded = True
        self._following = asyncio.get_running_loop().create_task(
            self.follower.run(self.spec.server.follow_interval_s))

    async def stop(self) -> None:
        """Stop following, cancel shadows, and stop every model (each answers what it queued first)."""
        await self.follower.stop()
        if self._following is not None:
            self._following.cancel()
            await asyncio.gather(self._following, return_exceptions=True)
        await self.predictor.close()
        await self.repository.close()

    def _prepare_runtimes(self) -> None:
        """Serving only LightGBM/XGBoost/ONNX models: import LightGBM without scikit-learn, and without pandas
        when every LightGBM model takes a numeric matrix (faster start, ~100 MB less memory)."""
        manifests = []
        for endpoint in self.endpoints.values():
            for ref in endpoint.refs:
                if ref in self.preloaded:
                    continue
                try:
                    manifests.append(read_manifest(self.registry.directory(self.registry.get(ref))))
                except (ShipmlError, OSError):
                    return  # loading will say what is wrong with it
        runtimes = {m.runtime.name for m in manifests}
        if "lightgbm" in runtimes and runtimes <= _NO_SKLEARN_RUNTIMES:
            from shipml.runtimes.lightgbm import import_lean

            import_lean(pandas=any(m.runtime.name == "lightgbm" and m.runtime.info.get("pandas_categorical")
                                   for m in manifests))

    # -- state ---------------------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self.loaded and all(e.ready for e in self.endpoints.values())

    @property
    def failed(self) -> bool:
        return any(e.errors for e in self.endpoints.values())

    def endpoint(self, name: str) -> EndpointState:
        endpoint = self.endpoints.get(name)
        if endpoint is None:
            raise NotFoundError(f"no model named {name!r} is served here")
        return endpoint

    def runners(self) -> list[ModelRunner]:
        return self.repository.loaded()

    def releases(self) -> list[dict[str, Any]]:
        """Each endpoint's release state, as ``/admin/releases`` shows it."""
        return [_release_view(e) for e in self.endpoints.values()]


def _target(target: Target | Default) -> dict[str, Any]:
    if isinstance(target, Default):
        return {"variant": target.variant, "default": {"prediction": target.prediction,
                                                       "probabilities": target.probabilities}}
    return {"ref": target.ref, "version": target.version, "variant": target.variant}


def _release_view(endpoint: EndpointState) -> dict[str, Any]:
    view: dict[str, Any] = {"name": endpoint.name, "follow": endpoint.follow, "ready": endpoint.ready,
                            "versions": endpoint.versions, "errors": list(endpoint.errors.values())}
    serving = endpoint.serving
    release: Release | None = serving.release if serving is not None else None
    if release is not None:
        view["stable"] = _target(release.stable)
        view["canary"] = None
        if release.canary is not None and endpoint.canary is not None:
            canary = endpoint.canary
            view["canary"] = {**_target(release.canary), "id": canary.id, "weight": canary.weight,
                              "limits": canary.limits.to_dict(),
                              "window": endpoint.watch.summary if endpoint.watch is not None else None}
        if release.ab:
            previous = 0.0
            variants = []
            for target, bound in release.ab:
                variants.append({**_target(target), "share": round(bound - previous, 6)})
                previous = bound
            view["ab"] = {"key": endpoint.spec.ab.key if endpoint.spec.ab is not None else None,
                          "variants": variants}
        view["shadows"] = [{**_target(t), "fraction": f} for t, f in release.shadows]
        view["fallbacks"] = [_target(t) for t in release.fallbacks]
    view["last_swap"] = endpoint.last_swap.to_dict() if endpoint.last_swap is not None else None
    view["canaries_aborted_here"] = sorted(endpoint.aborted)
    return view
