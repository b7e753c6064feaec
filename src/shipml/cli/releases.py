"""Releases on the command line: `shipml rollback` and `shipml canary start|status|promote|abort`.

They change the registry only (release.json, aliases.json and their logs); servers following the alias pick the
change up, whether they run or not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from shipml.cli._common import Context, emit_json, handle_errors
from shipml.errors import BadRequest, InvalidNameError
from shipml.registry import releases
from shipml.registry.names import Ref, Version
from shipml.registry.registry import Registry
from shipml.registry.releases import Canary, CanaryLimits

F = TypeVar("F", bound=Callable[..., Any])
_ALIAS_HELP = "The alias the canary is for."


def register(group: click.Group) -> None:
    group.add_command(rollback)
    group.add_command(canary)


def _alias_option(help_text: str = _ALIAS_HELP) -> Callable[[F], F]:
    return click.option("--alias", "alias_name", default="production", show_default=True, metavar="ALIAS",
                        help=help_text)


def _limits_text(limits: CanaryLimits) -> str:
    p99 = f", p99 <= {limits.max_p99_ms:g} ms" if limits.max_p99_ms is not None else ""
    return (f"error rate <= {limits.max_error_rate:.2%}{p99} over the last {limits.window} requests"
            f" (judged once {limits.min_requests} are seen)")


@click.command("rollback")
@click.argument("name")
@_alias_option("The alias to move back.")
@click.option("--reason", help="Why (kept in the alias history).")
@click.pass_obj
@handle_errors
def rollback(ctx: Context, name: str, alias_name: str, reason: str | None) -> None:
    """Move ALIAS of model NAME back to its previous holder, from the alias history: two rollbacks go back two
    releases, and deleted versions are skipped. A running canary of the alias is aborted in the same step."""
    done = releases.rollback(ctx.registry(), name, alias=alias_name.removeprefix("@"), reason=reason, by=None)
    if ctx.as_json:
        emit_json({"move": done.move.to_dict(), "aborted_canary": done.aborted and done.aborted.to_dict()})
        return
    click.echo(f"{name}@{done.move.alias} -> {done.move.to_version} (rolled back from {done.move.from_version})")
    if done.aborted is not None:
        click.echo(f"aborted the running canary of {done.aborted.ref} ({done.aborted.version})")


@click.group("canary")
def canary() -> None:
    """Try a version on a share of an alias's requests (servers following the alias send it there), then
    promote it to the alias or abort it. Servers abort it themselves when it breaks its limits."""


def _candidate(registry: Registry, name: str, ref: str) -> str:
    """REF as a version: ``1.3.0``, ``NAME:1.3.0`` or ``NAME@alias`` (resolved now)."""
    try:
        return str(Version.parse(ref))
    except InvalidNameError:
        pass
    r = Ref.parse(ref)
    if r.path is not None or r.name != name:
        raise BadRequest(f"REF {ref!r} is not a version of model {name!r}: give 1.3.0, {name}:1.3.0 or"
                         f" {name}@alias")
    if r.version is None and r.alias is None:
        raise BadRequest(f"REF {ref!r} names no version: give 1.3.0, {name}:1.3.0 or {name}@alias")
    return registry.get(r).version


@canary.command("start")
@click.argument("name")
@click.argument("ref")
@click.option("--weight", type=float, required=True,
              help="Percent of the alias's requests sent to the candidate (0 < weight < 100).")
@_alias_option()
@click.option("--max-error-rate", type=float, default=CanaryLimits.max_error_rate, show_default=True,
              help="Abort when more than this share of the canary's recent requests fail (0 <= x < 1).")
@click.option("--max-p99-ms", type=float, default=None, help="Abort when the canary's recent p99 latency is above"
              " this many milliseconds (default: no latency limit).")
@click.option("--min-requests", type=int, default=CanaryLimits.min_requests, show_default=True,
              help="Canary requests seen before the limits are judged (>= 1).")
@click.option("--window", type=int, default=None,
              help="How many recent canary requests are judged (default: 1000, or --min-requests if larger).")
@click.option("--reason", help="Why the canary starts (kept in the release log).")
@click.pass_obj
@handle_errors
def start(ctx: Context, *, name: str, ref: str, weight: float, alias_name: str, max_error_rate: float,
          max_p99_ms: float | None, min_requests: int, window: int | None, reason: str | None) -> None:
    """Start a canary of NAME's ALIAS: send --weight percent of its requests to REF (1.3.0, NAME:1.3.0 or
    NAME@alias, resolved to its version now) instead of the alias's holder."""
    registry = ctx.registry()
    limits = CanaryLimits(max_error_rate=max_error_rate, max_p99_ms=max_p99_ms, min_requests=min_requests,
                          window=window if window is not None else max(CanaryLimits.window, min_requests))
    started = registry.start_canary(name, _candidate(registry, name, ref), alias=alias_name.removeprefix("@"),
                                    weight=weight, limits=limits, reason=reason)
    if ctx.as_json:
        emit_json(started.to_dict())
        return
    click.echo(f"started canary {started.name}:{started.version} for {started.ref} at {started.weight:g}% of its"
               f" requests (stable: {started.stable}), id {started.id}")
    click.echo(f"limits: {_limits_text(started.limits)}")


def _status_text(c: Canary) -> str:
    rows: list[tuple[str, str | None]] = [
        ("canary", f"{c.name}:{c.version} for {c.ref} at {c.weight:g}% (stable: {c.stable})"), ("id", c.id),
        ("state", c.state), ("started", f"{c.started_at} by {c.started_by or 'unknown'}"),
        ("limits", _limits_text(c.limits))]
    if c.state == "running":
        rows.append(("reason", c.reason))
    else:
        rows += [("ended", f"{c.ended_at} by {c.ended_by or 'unknown'}"), ("why", c.reason or "no reason given")]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows if v)


@canary.command("status")
@click.argument("name")
@_alias_option()
@click.pass_obj
@handle_errors
def status(ctx: Context, name: str, alias_name: str) -> None:
    """Show the latest canary of NAME's ALIAS: running, or how it ended (when, by whom, why)."""
    alias = alias_name.removeprefix("@")
    state = ctx.registry().release_state(name)
    found = state.canaries.get(alias)
    if ctx.as_json:
        emit_json({"name": name, "alias": alias, "revision": state.revision,
                   "canary": found and found.to_dict()})
    elif found is None:
        click.echo(f"no canary of {name}@{alias} was ever started")
    else:
        click.echo(_status_text(found))


def _end(ctx: Context, name: str, alias_name: str, outcome: releases.Outcome, reason: str | None) -> None:
    ended = ctx.registry().end_canary(name, alias=alias_name.removeprefix("@"), outcome=outcome, reason=reason)
    if ctx.as_json:
        emit_json(ended.to_dict())
    elif outcome == "promoted":
        click.echo(f"promoted canary {ended.version}: {ended.ref} -> {ended.version} (was {ended.stable})")
    else:
        click.echo(f"aborted canary {ended.version} of {ended.ref}; its holder keeps serving every request")


@canary.command("promote")
@click.argument("name")
@_alias_option()
@click.option("--reason", help="Why (kept in the release log and the alias history).")
@click.pass_obj
@handle_errors
def promote(ctx: Context, name: str, alias_name: str, reason: str | None) -> None:
    """Move NAME's ALIAS to its running canary's version and end the canary (refused if the alias moved
    meanwhile)."""
    _end(ctx, name, alias_name, "promoted", reason)


@canary.command("abort")
@click.argument("name")
@_alias_option()
@click.option("--reason", help="Why (kept in the release log).")
@click.pass_obj
@handle_errors
def abort(ctx: Context, name: str, alias_name: str, reason: str | None) -> None:
    """End the running canary of NAME's ALIAS: every request goes to the alias's holder again."""
    _end(ctx, name, alias_name, "aborted", reason)
