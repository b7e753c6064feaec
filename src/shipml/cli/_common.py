"""What every CLI command shares: the registry, output as a table or JSON, and error handling.

``--registry`` and ``--json`` are the options of every command. The ``shipml`` group takes them before the command
name (``shipml --json models``); :func:`add_shared_options` gives each command (and each subcommand of a group)
the same two options, so they work after it too (``shipml models --json``). Both kinds write into the one
:class:`Context` the command reads; a value given after the command name wins over one given before it.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import click
import orjson

from shipml.errors import ShipmlError
from shipml.registry import Registry

F = TypeVar("F", bound=Callable[..., Any])

REGISTRY_HELP = "Registry location (default: $SHIPML_HOME or ~/.shipml)."
JSON_HELP = "Machine-readable JSON output on stdout."
SHARED_OPTIONS = ("--registry", "--json")


@dataclass
class Context:
    registry_uri: str | None = None
    as_json: bool = False

    def registry(self) -> Registry:
        return Registry(self.registry_uri)


def _set_registry(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.ensure_object(Context).registry_uri = value


def _set_json(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        ctx.ensure_object(Context).as_json = True


def add_shared_options(command: click.Command) -> click.Command:
    """Give ``command``, and every subcommand of it when it is a group, ``--registry`` and ``--json``.

    A command that declares either option itself is refused: one meaning per option name, for every command."""
    if not getattr(command, "_shipml_shared", False):
        declared = {opt for p in command.params for opt in p.opts + p.secondary_opts}
        clash = declared.intersection(SHARED_OPTIONS)
        if clash:
            raise TypeError(f"command {command.name!r} declares {', '.join(sorted(clash))}: every command takes"
                            " these already (shipml.cli._common.add_shared_options)")
        command.params += [
            click.Option(["--registry"], metavar="PATH", expose_value=False, callback=_set_registry,
                         help=REGISTRY_HELP),
            click.Option(["--json"], is_flag=True, expose_value=False, callback=_set_json, help=JSON_HELP),
        ]
        command._shipml_shared = True  # type: ignore[attr-defined]
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            add_shared_options(sub)
    return command


def handle_errors(func: F) -> F:
    """Library errors become one line on stderr and exit code 1 (2 stays click's usage error)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ShipmlError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except FileNotFoundError as exc:
            click.echo(f"error: no such file: {exc.filename}", err=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


def emit_json(data: Any) -> None:
    click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY
                            | orjson.OPT_NON_STR_KEYS, default=str).decode())


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain aligned text table."""
    cells = [[str(h) for h in headers]] + [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
