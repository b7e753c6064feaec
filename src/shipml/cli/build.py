"""``shipml build``: a container image (or its build context) from a deployment spec or model refs."""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from shipml._paths import absolute
from shipml.cli._common import Context, emit_json, handle_errors


def _is_spec_file(text: str) -> bool:
    path = Path(text)
    return path.suffix in (".yaml", ".yml") or path.is_file()


@click.command("build")
@click.argument("spec_or_refs", nargs=-1, required=True, metavar="SPEC_OR_REF...")
@click.option("--tag", "image", metavar="IMAGE", help="Image name[:tag] (default: the spec's image section,"
              " else shipml-<first endpoint>:latest).")
@click.option("--engine", type=click.Choice(["podman", "docker"]),
              help="Container engine (default: podman, else docker, whichever is on PATH).")
@click.option("--context-only", "context_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write the build context into this (new or empty) directory and do not build.")
@click.option("--base", envvar="SHIPML_BUILD_BASE", help="Base image (env SHIPML_BUILD_BASE; default: the spec's"
              " image.base, else python:X.Y-slim for the models' Python); e.g. a registry mirror's copy.")
@click.option("--extra", "extras", multiple=True, help="Extra pip requirement baked into the image (repeatable).")
@click.option("--build-volume", "volumes", multiple=True, envvar="SHIPML_BUILD_VOLUMES",
              metavar="HOST:CONTAINER[:ro]",
              help="Mount into the build's RUN steps (repeatable; env SHIPML_BUILD_VOLUMES, space-separated),"
              " e.g. /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro for pip behind a"
              " TLS-inspecting proxy.")
@click.option("--build-network", "network", envvar="SHIPML_BUILD_NETWORK",
              help="Network mode of the build's RUN steps (env SHIPML_BUILD_NETWORK), e.g. host.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=1), default=3600, show_default=True,
              help="Seconds after which the build is stopped.")
@click.pass_obj
@handle_errors
def build_command(ctx: Context, spec_or_refs: tuple[str, ...], image: str | None, engine: str | None,
                  context_dir: Path | None, base: str | None, extras: tuple[str, ...], volumes: tuple[str, ...],
                  network: str | None, timeout_s: float) -> None:
    """Build a container image serving SPEC_OR_REF: a shipml.yaml, or model refs (name, name:1.2.0, name@alias).

    Writes a build context (Dockerfile, requirements pinned to the models' saved environments, the model
    packages, the spec) and builds it with podman or docker. The image runs `shipml serve` as a non-root user on
    the spec's port, with a HEALTHCHECK on /healthz. Prints the image reference on success (with --json: the
    image, the context directory when kept, the models, the base image and the notes).
    """
    from shipml.deploy.container import ImageOptions, temporary_context, write_context
    from shipml.deploy.engine import build_image, check_build_volumes, find_engine
    from shipml.errors import DependencyError
    from shipml.spec import load_spec, spec_for_refs

    if len(spec_or_refs) == 1 and _is_spec_file(spec_or_refs[0]):
        spec = load_spec(spec_or_refs[0])
    elif any(_is_spec_file(s) and not Path(s).is_dir() for s in spec_or_refs):
        raise click.UsageError("give one spec file, or model refs, not both")
    else:
        spec = spec_for_refs(list(spec_or_refs))
    if ctx.registry_uri and not spec.registry:
        spec = spec.model_copy(update={"registry": ctx.registry_uri})  # keeps which image fields were given
    options = ImageOptions(image=image, base=base, extras=extras)
    check_build_volumes(volumes)

    if context_dir is not None:
        context_dir = absolute(context_dir)
    engine_path = None if context_dir is not None else find_engine(engine)
    directory = context_dir or temporary_context()
    try:
        context = write_context(spec, directory, options=options)
    except BaseException:
        if context_dir is None:
            shutil.rmtree(directory, ignore_errors=True)
        raise
    click.echo(f"build context for {context.image} in {directory}: "
               + ", ".join(m.ref + "".join(f" @{a}" for a in m.aliases) for m in context.models)
               + f"; {len(context.pins)} pinned requirement(s); base {context.base}", err=True)
    for note in context.notes:
        click.echo(f"note: {note}", err=True)
    result = {"image": context.image, "context": str(directory) if context_dir is not None else None,
              "built": context_dir is None, "base": context.base, "requirements": len(context.pins),
              "models": [{"ref": m.ref, "aliases": list(m.aliases)} for m in context.models],
              "notes": list(context.notes)}
    if context_dir is not None:
        if ctx.as_json:
            emit_json(result)
        else:
            click.echo(str(directory))
        return
    if engine_path is None:
        wanted = engine or "podman or docker"
        raise DependencyError(
            f"no container engine found ({wanted} on PATH): the build context is in {directory}; build it with"
            f" `podman build --format docker --tag {context.image} {directory}` or `docker build --tag"
            f" {context.image} {directory}`")
    try:
        build_image(context, engine_path, volumes=volumes, network=network, timeout_s=timeout_s,
                    on_line=lambda line: click.echo(line, err=True))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    if ctx.as_json:
        emit_json(result)
    else:
        click.echo(context.image)


def register(group: click.Group) -> None:
    group.add_command(build_command)
