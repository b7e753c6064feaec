"""What every CLI command shares: the registry, output as a table or JSON, and error handling."""

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


@dataclass
class Context:
    registry_uri: str | None = None
    as_json: bool = False

    def registry(self) -> Registry:
        return Registry(self.registry_uri)


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
