"""Registry upkeep: ``shipml gc`` removes what interrupted writes left behind and no reader can see;
``shipml registry copy`` copies models between any two registries (local directory, S3)."""

from __future__ import annotations

import click

from shipml.cli._common import Context, emit_json, handle_errors
from shipml.errors import BadRequest
from shipml.registry.registry import Registry


def register(group: click.Group) -> None:
    group.add_command(gc)
    group.add_command(registry_group)


@click.group("registry")
def registry_group() -> None:
    """Work on whole registries (local directories or s3://bucket/prefix)."""


@registry_group.command("copy")
@click.argument("source")
@click.argument("destination")
@click.option("--model", "names", multiple=True, metavar="NAME", help="Copy only this model (repeatable).")
@click.pass_obj
@handle_errors
def copy(ctx: Context, source: str, destination: str, names: tuple[str, ...]) -> None:
    """Copy models with every version (verified, golden sample re-run), evaluation, alias move and canary
    record from SOURCE to DESTINATION. Resumable: what DESTINATION holds already, the same, is skipped."""
    from shipml.registry.copying import copy_models

    src, dst = Registry(source), Registry(destination)
    report = copy_models(src, dst, list(names) or None)
    if ctx.as_json:
        emit_json({"source": src.location, "destination": dst.location, "copied": report.copied,
                   "skipped": report.skipped, "alias_moves": report.moves, "canaries": report.releases})
        return
    for ref in report.copied:
        click.echo(f"copied {ref}")
    for ref in report.skipped:
        click.echo(f"skipped {ref} (already there, the same)")
    for name, moves in report.moves.items():
        click.echo(f"{name}: {moves} alias move(s), {report.releases.get(name, 0)} canary record(s) copied")


@click.command("gc")
@click.option("--older-than", "hours", type=float, default=24.0, show_default=True, metavar="HOURS",
              help="Only remove what was left longer ago than this (a save or download in progress is younger).")
@click.pass_obj
@handle_errors
def gc(ctx: Context, hours: float) -> None:
    """Remove abandoned uploads and staging files, and the files of deletions a crash interrupted. Versions,
    aliases and history are never touched, and version numbers stay used."""
    if not hours >= 0:
        raise BadRequest(f"--older-than must be a number of hours >= 0, got {hours}")
    registry: Registry = ctx.registry()
    removed = registry.gc(older_than_s=hours * 3600)
    if ctx.as_json:
        emit_json({"registry": registry.location, "removed": removed})
        return
    for line in removed:
        click.echo(f"removed {line}")
    click.echo(f"{len(removed)} item(s) removed from {registry.location}")
