"""``shipml build``: a container image from the deployment spec.

The build context is complete on its own::

    Dockerfile          two stages, see shipml.deploy.dockerfile
    requirements.txt    shipml (with the extras its runtimes need) + the pins of the models' captured environments
    wheels/             a wheel of shipml, when it runs from a source checkout
    registry/           a small registry: the resolved model versions, their ledger, the aliases the spec uses
    shipml.yaml         the spec as served in the image: registry /app/registry, host 0.0.0.0

A model ref is resolved once, here, against the build machine's registry; inside the image the same refs
(``churn``, ``churn:1.2.0``, ``churn@production``) resolve to the same versions, because only those versions and
aliases are copied. A package directory given as a path is copied in as ``name:version``.

Each copied version gets its line in the image registry's ledger (``models/<name>/versions.jsonl``) with the
manifest sha256 the build machine's registry recorded for it, so loads inside the image are sealed as they are
here: a manifest edited in the image (or in a mounted copy of its registry) is refused. A package directory is
sealed as it is when the context is written: baking it into an image is an import.

The engine that builds a written context is driven by :mod:`shipml.deploy.engine`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from shipml.deploy.dockerfile import (
    REGISTRY_DIR,
    DockerfileInputs,
    check_image_name,
    check_image_ref,
    check_image_tag,
    render_dockerfile,
    split_image_ref,
)
from shipml.deploy.shipml_dist import ShipmlInstall, detect_install, shipml_requires
from shipml.errors import ConflictError, IntegrityError, SpecError
from shipml.package.loaded import verify_integrity
from shipml.package.manifest import MANIFEST, Manifest, manifest_digest, read_manifest
from shipml.registry import ledger
from shipml.registry.names import Ref
from shipml.registry.registry import Registry
from shipml.spec import DeploymentSpec, endpoint_with_refs, parse_spec

# Where the server finds API tokens in the image when the spec does not say: a mount point, never baked in.
TOKENS_MOUNT = "/run/secrets/shipml/tokens.json"
# The shipml extra that brings each runtime's framework.
RUNTIME_EXTRAS = {"sklearn": "sklearn", "lightgbm": "lightgbm", "xgboost": "xgboost", "onnx": "onnx",
                  "pickle": "pyfunc", "pyfunc": "pyfunc"}
# A recorded distribution installed under another name: the xgboost extra brings the CPU-only wheel (the same
# xgboost module without CUDA libraries), and both at once would overwrite each other's files.
PIN_AS = {"xgboost": "xgboost-cpu"}
# Debian packages a runtime's framework loads that its wheel does not bundle (LightGBM links the system OpenMP).
SYSTEM_PACKAGES = {"lightgbm": ("libgomp1",)}


@dataclass(frozen=True)
class PackagedModel:
    """One model version that goes into the image."""

    name: str
    version: str
    source: Path
    manifest: Manifest
    aliases: tuple[str, ...] = ()
    manifest_sha256: str | None = None  # what the image's ledger records (None: the source's bytes, at copy)

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"


@dataclass(frozen=True)
class ImageOptions:
    """What the command line may override of the spec's ``image`` section."""

    image: str | None = None  # NAME or NAME:TAG
    base: str | None = None
    extras: tuple[str, ...] = ()


@dataclass(frozen=True)
class BuildContext:
    directory: Path
    image: str  # name:tag
    base: str
    port: int
    models: tuple[PackagedModel, ...]
    pins: dict[str, str]
    requirements: tuple[str, ...]
    spec: DeploymentSpec  # as served inside the image
    notes: tuple[str, ...] = field(default=())

    @property
    def dockerfile(self) -> Path:
        return self.directory / "Dockerfile"


# -- models ----------------------------------------------------------------------------------------------------
def resolve_models(spec: DeploymentSpec, registry: Registry) -> tuple[list[PackagedModel], dict[str, str]]:
    """Every model the spec serves, resolved to a concrete version, and the in-image ref of each spec ref
    (the same ref, except a package path, which becomes ``name:version``)."""
    found: dict[tuple[str, str], PackagedModel] = {}
    refs: dict[str, str] = {}
    for endpoint in spec.endpoints:
        for text in spec.refs_of(endpoint):
            ref = Ref.parse(text)
            alias: tuple[str, ...] = ()
            if ref.path is not None:
                source = ref.path.absolute()
                if not source.is_dir():
                    raise SpecError(f"endpoint {endpoint.name}: model {text} is not a package directory")
                digest = manifest_digest((source / MANIFEST).read_bytes()) if (source / MANIFEST).is_file() \
                    else None
                manifest = read_manifest(source, digest)
                name, version = manifest.name, manifest.version
                refs[text] = f"{name}:{version}"
            else:
                mv = registry.get(ref)
                source, manifest, name, version = registry.directory(mv), mv.manifest, mv.name, mv.version
                digest = mv.manifest_sha256
                alias = (ref.alias,) if ref.alias is not None else ()
                refs[text] = text
            key = (name, version)
            seen = found.get(key)
            if seen is None:
                found[key] = PackagedModel(name, version, source, manifest, alias, digest)
                continue
            if seen.source != source and _fingerprint(seen.manifest) != _fingerprint(manifest):
                raise ConflictError(f"two different packages are both {name}:{version} ({seen.source} and"
                                    f" {source}): give one of them another name or version")
            found[key] = PackagedModel(name, version, seen.source, seen.manifest,
                                       tuple(sorted({*seen.aliases, *alias})), seen.manifest_sha256)
    return list(found.values()), refs


def _fingerprint(manifest: Manifest) -> list[tuple[str, str]]:
    return sorted((a.path, a.sha256) for a in manifest.artifacts)


def pinned_requirements(models: Sequence[PackagedModel]) -> dict[str, str]:
    """``{distribution: version}`` from the models' captured environments; two models that need different
    versions of one distribution cannot share an image."""
    pins: dict[str, tuple[str, str, str]] = {}  # canonical name -> (dist as recorded, version, model ref)
    for model in models:
        for recorded, version in model.manifest.environment.packages.items():
            dist = PIN_AS.get(canonicalize_name(recorded), recorded)
            key = canonicalize_name(dist)
            held = pins.get(key)
            if held is None:
                pins[key] = (dist, version, model.ref)
            elif held[1] != version:
                raise ConflictError(
                    f"the models need different versions of {dist}: {held[2]} was saved with {held[1]},"
                    f" {model.ref} with {version}; build one image per model, or re-save one of them"
                    " in the other's environment")
    return {dist: version for dist, version, _ in sorted(pins.values(), key=lambda p: canonicalize_name(p[0]))}


def check_extras(extras: Sequence[str], pins: dict[str, str]) -> list[str]:
    """The spec's extra requirements, each a valid pip requirement that does not contradict a pin."""
    by_name = {canonicalize_name(d): v for d, v in pins.items()}
    out = []
    for text in extras:
        try:
            req = Requirement(text)
        except InvalidRequirement as exc:
            raise SpecError(f"image.extras: {text!r} is not a valid requirement: {exc}") from exc
        pinned = by_name.get(canonicalize_name(req.name))
        if pinned is not None and req.specifier and not req.specifier.contains(pinned, prereleases=True):
            raise ConflictError(f"image.extras: {text!r} excludes {req.name}=={pinned}, the version a model"
                                " was saved with")
        out.append(str(req))
    return out


def shipml_extras(models: Sequence[PackagedModel]) -> list[str]:
    """The shipml extras that bring the models' frameworks."""
    runtimes = {m.manifest.runtime.name for m in models}
    return sorted({RUNTIME_EXTRAS[r] for r in runtimes if r in RUNTIME_EXTRAS})


def check_pins_against_shipml(pins: dict[str, str], extras: Sequence[str], requires: Sequence[str]) -> None:
    """Refuse pins that shipml's own requirements (``requires``, with ``extras``) exclude, before pip would."""
    by_name = {canonicalize_name(d): (d, v) for d, v in pins.items()}
    for text in requires:
        req = Requirement(text)
        if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in ["", *extras]):
            continue
        pinned = by_name.get(canonicalize_name(req.name))
        if pinned is not None and req.specifier and not req.specifier.contains(pinned[1], prereleases=True):
            raise ConflictError(f"a model was saved with {pinned[0]}=={pinned[1]}, but shipml needs {req.name}"
                                f"{req.specifier}: re-save the model with a newer {pinned[0]}")


def spec_extras(spec: DeploymentSpec) -> list[str]:
    """The shipml extras the spec itself needs in the image: ``s3`` for an init container that fetches the
    models from an S3 registry with shipml (``kubernetes.s3.layout: registry``)."""
    s3 = spec.kubernetes.s3
    return ["s3"] if spec.kubernetes.models_from == "s3" and s3 is not None and s3.layout == "registry" else []


def shipml_requirement(install: ShipmlInstall, models: Sequence[PackagedModel], wheel: str | None,
                       more: Sequence[str] = ()) -> str:
    extras = sorted({*shipml_extras(models), *more})
    name = "shipml" + (f"[{','.join(extras)}]" if extras else "")
    if wheel is not None:
        return f"{name} @ file:///build/wheels/{wheel}"
    return f"{name}=={install.version}"


def system_packages(models: Sequence[PackagedModel]) -> tuple[str, ...]:
    return tuple(sorted({p for m in models for p in SYSTEM_PACKAGES.get(m.manifest.runtime.name, ())}))


# -- the context -----------------------------------------------------------------------------------------------
def image_spec(spec: DeploymentSpec, refs: dict[str, str]) -> tuple[DeploymentSpec, list[str]]:
    """The spec as served in the image, and notes for the user about what changed."""
    data: dict[str, Any] = spec.model_dump(mode="json", exclude_none=True)
    data["registry"] = REGISTRY_DIR
    data["server"]["host"] = "0.0.0.0"  # the container's own interface; publishing is the runner's choice
    data["endpoints"] = [endpoint_with_refs(e, refs.__getitem__) for e in data["endpoints"]]
    notes = []
    if spec.server.port < 1024:
        notes.append(f"port {spec.server.port} is below 1024: the image's non-root user can bind it only where the"
                     " container runtime allows unprivileged low ports; prefer a port of 1024 or above")
    if spec.auth.enabled:
        tokens = spec.auth.tokens_file or TOKENS_MOUNT
        data["auth"]["tokens_file"] = tokens
        notes.append(f"auth is on and tokens are never baked into the image: mount the token file at {tokens}")
    return parse_spec(data, "the image's spec"), notes


def default_base(spec: DeploymentSpec, models: Sequence[PackagedModel]) -> str:
    """The spec's base if it names one, else python:X.Y-slim for the Python the models were saved with."""
    if "base" in spec.image.model_fields_set:
        return spec.image.base
    pythons = {".".join(m.manifest.environment.python.split(".")[:2]) for m in models}
    return f"docker.io/library/python:{pythons.pop()}-slim" if len(pythons) == 1 else spec.image.base


def image_ref(spec: DeploymentSpec, options: ImageOptions) -> str:
    if options.image:
        name, tag = split_image_ref(options.image)
        return f"{check_image_name(name)}:{check_image_tag(tag or spec.image.tag)}"
    name = spec.image.name or f"shipml-{spec.endpoints[0].name.lower()}"
    return f"{check_image_name(name)}:{check_image_tag(spec.image.tag)}"


def write_context(spec: DeploymentSpec, directory: Path, *, registry: Registry | None = None,
                  options: ImageOptions | None = None, install: ShipmlInstall | None = None) -> BuildContext:
    """Write the build context for ``spec`` into ``directory`` (created; it must be empty if it exists)."""
    options = options or ImageOptions()
    registry = registry or Registry(spec.registry)
    image = image_ref(spec, options)
    models, refs = resolve_models(spec, registry)
    pins = pinned_requirements(models)
    extras = check_extras([*spec.image.extras, *options.extras], pins)
    check_pins_against_shipml(pins, [*shipml_extras(models), *spec_extras(spec)], shipml_requires())
    base = check_image_ref(options.base or default_base(spec, models), "base image")
    served, notes = image_spec(spec, refs)
    install = install or detect_install()

    created = _prepare(directory)
    try:
        wheel = None
        if install.project_dir is not None:
            wheel = install.build_wheel(directory / "wheels").name
        requirements = [shipml_requirement(install, models, wheel, spec_extras(spec)),
                        *(f"{d}=={v}" for d, v in pins.items()),
                        *extras]
        _write(directory / "requirements.txt", "# shipml and the versions the models were saved with"
               " (shipml build)\n" + "\n".join(requirements) + "\n")
        for model in models:
            _copy_package(model, directory / "registry")
        _write(directory / "shipml.yaml", served.to_yaml())
        _write(directory / "Dockerfile", render_dockerfile(DockerfileInputs(
            base=base, port=served.server.port, title=image.rsplit(":", 1)[0], version=image.rsplit(":", 1)[1],
            models=tuple(m.ref for m in models), shipml_version=install.version, has_wheels=wheel is not None,
            system_packages=system_packages(models))))
    except BaseException:  # no half-written context: leave the directory as it was found
        if created:
            shutil.rmtree(directory, ignore_errors=True)
        else:
            for child in directory.iterdir():
                if child.is_dir():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        raise
    return BuildContext(directory=directory, image=image, base=base, port=served.server.port, models=tuple(models),
                        pins=pins, requirements=tuple(requirements), spec=served, notes=tuple(notes))


def _prepare(directory: Path) -> bool:
    """Make ``directory`` ready for a context; True when it was created here."""
    if directory.exists():
        if not directory.is_dir():
            raise ConflictError(f"the build context {directory} exists and is not a directory")
        if any(directory.iterdir()):
            raise ConflictError(f"the build context directory {directory} is not empty: give a new or empty one")
        created = False
    else:
        directory.mkdir(parents=True)
        created = True
    directory.chmod(0o755)
    return created


def _write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
    path.chmod(0o644)


def _copy_package(model: PackagedModel, root: Path) -> None:
    """Copy one version into the context's registry, with its ledger line, readable by all and writable by
    none but its owner."""
    model_dir = root / "models" / model.name
    dest = model_dir / "versions" / model.version
    shutil.copytree(model.source, dest, ignore=shutil.ignore_patterns(".lock", "__pycache__", "*.pyc"))
    copied = manifest_digest((dest / MANIFEST).read_bytes())
    if model.manifest_sha256 is not None and copied != model.manifest_sha256:
        raise IntegrityError(f"{model.ref}: its {MANIFEST} changed while it was copied into the build context")
    verify_integrity(dest, model.manifest)
    with (model_dir / ledger.LEDGER).open("ab") as f:
        f.write(ledger.saved(model.version, copied, note="copied into the image by shipml build").to_line()
                + b"\n")
    if model.aliases:
        aliases = {a: model.version for a in model.aliases}
        path = model_dir / "aliases.json"
        if path.exists():  # another version of the same model already wrote some
            aliases = {**orjson.loads(path.read_bytes()), **aliases}
        path.write_bytes(orjson.dumps(aliases, option=orjson.OPT_SORT_KEYS))
    for dirpath, _dirnames, filenames in os.walk(root):
        Path(dirpath).chmod(0o755)
        for name in filenames:
            (Path(dirpath) / name).chmod(0o644)


def temporary_context() -> Path:
    """A fresh directory for a context that is built and then removed."""
    return Path(tempfile.mkdtemp(prefix="shipml-build-"))
