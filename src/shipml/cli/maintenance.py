"""Registry upkeep: ``shipml gc`` removes what interrupted writes left behind and no reader can see."""

from __future__ import annotations

import click

from shipml.cli._common import Context, emit_json, handle_errors
from shipml.errors import BadRequest
from shipml.registry.registry import Registry


def register(group: click.Group) -> None:
    group.add_command(gc)


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
