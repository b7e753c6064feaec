"""The validation gate on the command line: `shipml evaluate` and `shipml promote`."""

from __future__ import annotations

import sys

import click

from shipml.cli._common import Context, emit_json, handle_errors, table
from shipml.evaluation.gate import Evaluation, PromotionRefused, PromotionResult, evaluate, fmt, promote
from shipml.evaluation.metrics import HIGHER_IS_BETTER


def register(group: click.Group) -> None:
    group.add_command(evaluate_command)
    group.add_command(promote_command)


def _evaluation_text(e: Evaluation) -> str:
    lines = [f"{e.ref} on {e.describe_data()}, target {e.target!r}:",
             table(["metric", "value", "better"],
                   [(k, fmt(v), "higher" if HIGHER_IS_BETTER.get(k, True) else "lower")
                    for k, v in e.metrics.items()])]
    if e.rejected:
        lines += [f"{e.rejected} row(s) rejected, for example:", *(f"  {p}" for p in e.problems)]
    return "\n".join(lines)


def _checks_text(result: PromotionResult) -> str:
    if not result.checks:
        return "no checks"
    return table(["check", "result", "detail"],
                 [(c.kind, "ok" if c.passed else "FAILED", c.message) for c in result.checks])


@click.command("evaluate")
@click.argument("ref")
@click.option("--data", "data", required=True, type=click.Path(dir_okay=False), metavar="FILE",
              help="Labelled data: CSV, Parquet or JSON lines.")
@click.option("--target", required=True, metavar="COL", help="The column holding the true values.")
@click.pass_obj
@handle_errors
def evaluate_command(ctx: Context, ref: str, data: str, target: str) -> None:
    """Compute REF's metrics on labelled data and store them with the version (rows that do not fit the
    signature are left out and counted)."""
    evaluation = evaluate(ctx.registry(), ref, data, target)
    if ctx.as_json:
        emit_json({**evaluation.to_dict(),
                   "higher_is_better": {k: HIGHER_IS_BETTER[k] for k in evaluation.metrics}})
    else:
        click.echo(_evaluation_text(evaluation))


@click.command("promote")
@click.argument("ref")
@click.argument("alias")
@click.option("--require", "requirements", multiple=True, metavar="RULE",
              help='A threshold to meet, such as "accuracy>=0.9" (repeatable).')
@click.option("--against", metavar="ALIAS|REF",
              help="Refuse if worse than this alias's current holder (e.g. @production) on the same data.")
@click.option("--data", type=click.Path(dir_okay=False), metavar="FILE",
              help="Evaluate on this labelled file (default: the latest stored evaluation).")
@click.option("--target", metavar="COL", help="The column of --data holding the true values.")
@click.option("--tolerance", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="How much worse than --against the candidate may be on the compared metrics.")
@click.option("--reason", help="Why (kept in the alias history with the gate's figures).")
@click.pass_obj
@handle_errors
def promote_command(ctx: Context, *, ref: str, alias: str, requirements: tuple[str, ...],
                    against: str | None, data: str | None, target: str | None, tolerance: float,
                    reason: str | None) -> None:
    """Move ALIAS to REF only if it passes the validation gate: every --require threshold met and, with
    --against, no worse than the current holder on the same data. Exit code 1 when refused."""
    if (data is None) != (target is None):
        raise click.UsageError("--data and --target go together")
    try:
        result = promote(ctx.registry(), ref, alias, requirements=requirements, against=against, data=data,
                         target=target, tolerance=tolerance, reason=reason)
    except PromotionRefused as exc:
        if ctx.as_json:
            emit_json(exc.result.to_dict())
        else:
            click.echo(_checks_text(exc.result))
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    if ctx.as_json:
        emit_json(result.to_dict())
        return
    click.echo(_checks_text(result))
    was = f" (was {result.move.from_version})" if result.move and result.move.from_version else ""
    click.echo(f"promoted {result.ref} to @{result.alias}{was}")
