"""``shipml token``: create, list and revoke API tokens for the inference server.

Tokens live in ``tokens.json`` in the registry directory (``--registry`` / ``$SHIPML_HOME``), or in the file
``--file`` names (the server's ``auth.tokens_file``: needed with a registry in an object store, whose servers keep
their tokens in a local file); a running server sees a new or revoked token within about a second.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from shipml.cli._common import Context, emit_json, handle_errors, table
from shipml.errors import InvalidNameError
from shipml.server.auth import TokenInfo, TokenStore, default_token_path, parse_duration


class Duration(click.ParamType):
    """``30d``, ``12h``, ``90m``, ``2w``, or a sum such as ``1d12h``."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> timedelta:
        if isinstance(value, timedelta):
            return value
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def _store(ctx: Context, file: str | None) -> TokenStore:
    if file is not None:
        return TokenStore(Path(file).expanduser())
    registry = ctx.registry()
    if registry.local_directory is None:
        raise InvalidNameError(f"tokens of a server on registry {registry.location!r} live in a local file: give"
                               " --file PATH, the path its spec's auth.tokens_file names")
    return TokenStore(default_token_path(registry.local_directory))


def _file_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--file", "tokens_file", metavar="PATH", default=None,
                        help="The tokens file (a server's auth.tokens_file); default: tokens.json in the registry"
                             " directory.")(command)


def _when(info: TokenInfo, field: str) -> str:
    value: str | None = info.to_dict()[field]
    return value[:19].replace("T", " ") if value else "-"


@click.group("token")
def token_group() -> None:
    """Manage API tokens for the inference server (stored hashed in tokens.json in the registry)."""


@token_group.command("create")
@click.option("--scope", type=click.Choice(["predict", "admin"]), default="predict", show_default=True,
              help="predict: inference and model metadata; admin: everything (implies predict).")
@click.option("--model", metavar="NAME", help="Restrict a predict token to this one model.")
@click.option("--description", metavar="TEXT", help="What the token is for (shown by 'token list').")
@click.option("--expires-in", type=Duration(), metavar="DURATION",
              help="Lifetime such as 30d, 12h or 2w (default: no expiry).")
@_file_option
@click.pass_obj
@handle_errors
def create_cmd(ctx: Context, scope: str, model: str | None, description: str | None,
               expires_in: timedelta | None, tokens_file: str | None) -> None:
    """Create a token and print it once: only its hash is stored, so it cannot be shown again.

    The token alone goes to stdout (TOKEN=$(shipml token create) works); the id and advice go to stderr.
    """
    if scope == "admin" and model is not None:
        raise click.UsageError("--model restricts predict tokens only; an admin token covers every model")
    token, info = _store(ctx, tokens_file).create("admin" if scope == "admin" else "predict", model=model,
                                     description=description, expires_in=expires_in)
    if ctx.as_json:
        emit_json({"token": token, **info.to_dict()})
        return
    click.echo(token)
    limits = f"scope {info.scope}" + (f", model {info.model}" if info.model else "")
    limits += f", expires {_when(info, 'expires_at')}" if info.expires_at else ", no expiry"
    click.echo(f"created token {info.id} ({limits}). Store it now: it is shown only this once.", err=True)


@token_group.command("list")
@_file_option
@click.pass_obj
@handle_errors
def list_cmd(ctx: Context, tokens_file: str | None) -> None:
    """List tokens: id, scope, model, status and dates (never secrets)."""
    infos = _store(ctx, tokens_file).list()
    if ctx.as_json:
        emit_json([{**info.to_dict(), "status": info.status()} for info in infos])
        return
    if not infos:
        click.echo("no tokens (create one with: shipml token create)")
        return
    rows = [[info.id, info.scope, info.model or "*", info.status(), _when(info, "created_at"),
             info.created_by or "-", _when(info, "expires_at"), info.description or ""] for info in infos]
    click.echo(table(["id", "scope", "model", "status", "created (UTC)", "by", "expires (UTC)", "description"], rows))


@token_group.command("revoke")
@click.argument("token_id", metavar="ID")
@_file_option
@click.pass_obj
@handle_errors
def revoke_cmd(ctx: Context, token_id: str, tokens_file: str | None) -> None:
    """Revoke the token with this ID; running servers refuse it within about a second."""
    info = _store(ctx, tokens_file).revoke(token_id)
    if ctx.as_json:
        emit_json({**info.to_dict(), "status": info.status()})
        return
    click.echo(f"revoked token {info.id}")


def register(group: click.Group) -> None:
    group.add_command(token_group)
