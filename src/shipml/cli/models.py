"""Browse and curate the registry: models, versions, the model card, aliases, their history, deletion."""

from __future__ import annotations

from typing import Any

import click

from shipml.cli._common import Context, emit_json, handle_errors, table
from shipml.errors import ShipmlError
from shipml.evaluation.gate import Evaluation, fmt
from shipml.package.manifest import Manifest, read_manifest
from shipml.package.signature import ColumnSpec
from shipml.registry.names import Ref
from shipml.registry.registry import NOT_GIVEN, AliasMove, Expected, Registry

_CATEGORIES_SHOWN = 8


def register(group: click.Group) -> None:
    for command in (models, versions, show, alias, history, delete):
        group.add_command(command)


def _aliases_text(aliases: dict[str, str]) -> str:
    return ", ".join(f"@{a}={v}" for a, v in sorted(aliases.items()))


def _metrics_text(metrics: dict[str, float]) -> str:
    return " ".join(f"{k}={fmt(v)}" for k, v in metrics.items())


@click.command("models")
@click.pass_obj
@handle_errors
def models(ctx: Context) -> None:
    """List the registry's models: latest version, number of versions, aliases."""
    registry = ctx.registry()
    found = registry.models()
    if ctx.as_json:
        emit_json([{"name": m.name, "latest": m.latest, "versions": m.versions, "aliases": m.aliases}
                   for m in found])
        return
    if not found:
        click.echo(f"no models in {registry.location}")
        return
    click.echo(table(["name", "latest", "versions", "aliases"],
                     [(m.name, m.latest, m.versions, _aliases_text(m.aliases)) for m in found]))


@click.command("versions")
@click.argument("name")
@click.pass_obj
@handle_errors
def versions(ctx: Context, name: str) -> None:
    """List the versions of model NAME, oldest first, with the aliases pointing at each."""
    registry = ctx.registry()
    aliases = registry.aliases(name)
    rows: list[dict[str, Any]] = []
    refused: list[str] = []
    for mv in registry.versions(name):
        holders = sorted(a for a, v in aliases.items() if v == mv.version)
        try:
            m = mv.manifest
        except ShipmlError as exc:  # a manifest edited since it was saved: listed, and said so in one line
            rows.append({"version": mv.version, "created_at": None, "runtime": None, "task": None,
                         "aliases": holders, "description": None, "error": str(exc)})
            refused.append(str(exc))
            continue
        rows.append({"version": mv.version, "created_at": m.lineage.created_at, "runtime": m.runtime.name,
                     "task": m.signature.outputs.task, "aliases": holders, "description": m.description,
                     "error": None})
    if ctx.as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo(f"model {name!r} has no versions")
        return
    click.echo(table(["version", "created", "runtime", "task", "aliases", "description"],
                     [(r["version"], r["created_at"], r["runtime"], r["task"],
                       ", ".join(f"@{a}" for a in r["aliases"]),
                       "REFUSED: see below" if r["error"] else r["description"]) for r in rows]))
    for problem in refused:
        click.echo(f"warning: {problem}", err=True)


@click.command("show")
@click.argument("ref")
@click.pass_obj
@handle_errors
def show(ctx: Context, ref: str) -> None:
    """Show the model card of REF (name, name:1.2.0, name@alias or a package directory): signature,
    outputs, runtime, trust, environment, metrics, stored evaluations, lineage and aliases."""
    r = Ref.parse(ref)
    evaluations: list[Evaluation] = []
    holders: list[str] = []
    if r.path is not None:
        manifest = read_manifest(r.path)
    else:
        registry = ctx.registry()
        mv = registry.get(r)
        manifest = mv.manifest
        evaluations = [Evaluation.from_record(mv.name, e) for e in registry.evaluations(mv)]
        holders = sorted(a for a, v in registry.aliases(mv.name).items() if v == mv.version)
    if ctx.as_json:
        emit_json({"manifest": manifest.model_dump(mode="json"),
                   "evaluations": [e.to_dict() for e in evaluations], "aliases": holders})
        return
    click.echo(_card(manifest, evaluations, holders))


def _card(m: Manifest, evaluations: list[Evaluation], holders: list[str]) -> str:
    out = [f"{m.name}:{m.version}" + (f"  ({', '.join('@' + a for a in holders)})" if holders else "")]
    if m.description:
        out.append(m.description)
    facts: list[tuple[str, Any]] = []
    if m.tags:
        facts.append(("tags", ", ".join(f"{k}={v}" for k, v in sorted(m.tags.items()))))
    facts.append(("runtime", f"{m.runtime.name} (API v{m.runtime.api_version})"))
    trust = "not needed (safe format)"
    if m.trust.required:
        trust = f"required: {', '.join(m.trust.types) or 'code runs on load'}"
        if m.trust.granted_by:
            trust += f" (granted by {m.trust.granted_by} at {m.trust.granted_at})"
    facts.append(("trust", trust))
    out += ["", _facts(facts)]

    out += ["", f"Signature ({m.signature.input_kind}, {len(m.signature.inputs)} inputs)",
            table(["column", "dtype", "nullable", "range or categories"],
                  [(c.name, c.dtype, "yes" if c.nullable else "no", _domain(c)) for c in m.signature.inputs])]

    outputs = m.signature.outputs
    out_facts: list[tuple[str, Any]] = [("task", outputs.task),
                                        ("prediction dtype", outputs.prediction_dtype)]
    if outputs.classes is not None:
        out_facts.append(("classes", ", ".join(map(str, outputs.classes))))
    out_facts.append(("probabilities", "yes" if outputs.probabilities else "no"))
    out += ["", "Outputs", _facts(out_facts)]

    env = m.environment
    packages = ", ".join(f"{k}=={v}" for k, v in sorted(env.packages.items()))
    out += ["", "Environment", _facts([("python", f"{env.python} ({env.implementation})"),
                                       ("platform", f"{env.platform} {env.machine}"),
                                       ("framework", env.framework), ("packages", packages)])]

    if m.metrics:
        out += ["", "Metrics (recorded at save time)",
                table(["metric", "value"], [(k, fmt(v)) for k, v in m.metrics.items()])]
    if evaluations:
        out += ["", "Evaluations",
                table(["at", "data", "target", "rows", "rejected", "metrics"],
                      [(e.at, e.data or "(DataFrame)", e.target, e.rows, e.rejected, _metrics_text(e.metrics))
                       for e in evaluations])]

    lin = m.lineage
    commit = lin.git_commit and lin.git_commit + (" (uncommitted changes)" if lin.git_dirty else "")
    source: list[tuple[str, Any]] = []
    if lin.imported_from is not None:
        imported = lin.imported_from
        source = [("imported from", f"{imported.path} ({imported.file}, {imported.format})"),
                  ("source sha256", imported.sha256)]
        if imported.mlflow is not None:
            ml = imported.mlflow
            source += [("mlflow run", ml.run_id), ("mlflow model", ml.model_id or ml.model_uuid),
                       ("artifact path", ml.artifact_path), ("mlflow created", ml.utc_time_created),
                       ("mlflow", f"{ml.mlflow_version or '?'}, flavor {ml.flavor}")]
    out += ["", "Lineage", _facts([("created", lin.created_at), ("by", lin.user), ("host", lin.host), *source,
                                   ("git commit", commit), ("git repository", lin.git_repo),
                                   ("code", lin.code_file), ("sample rows", lin.sample_rows),
                                   ("sample", lin.sample_fingerprint), ("target", lin.target_fingerprint),
                                   ("shipml", lin.shipml_version)])]
    out += ["", "Aliases: " + (", ".join(f"@{a}" for a in holders) if holders else "none")]
    return "\n".join(out)


def _facts(pairs: list[tuple[str, Any]]) -> str:
    shown = [(k, v) for k, v in pairs if v is not None and v != ""]
    width = max((len(k) for k, _ in shown), default=0)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in shown)


def _domain(c: ColumnSpec) -> str:
    if c.categories is not None:
        more = len(c.categories) - _CATEGORIES_SHOWN
        shown = ", ".join(c.categories[:_CATEGORIES_SHOWN])
        return "{" + shown + (f", ... +{more}" if more > 0 else "") + "}"
    if c.min is not None or c.max is not None:
        return f"[{c.min}, {c.max}]"
    return "many values" if c.dtype == "string" else ""


@click.command("alias")
@click.argument("name")
@click.argument("alias_name", metavar="ALIAS")
@click.argument("version", required=False)
@click.option("--reason", help="Why the alias moves (kept in the history).")
@click.option("--delete", "remove", is_flag=True, help="Remove the alias instead of moving it.")
@click.option("--expect", metavar="VERSION|none",
              help="Compare-and-set: change the alias only if it points to VERSION now ('none': only if it does"
                   " not exist yet); otherwise nothing changes and exit code 1.")
@click.pass_obj
@handle_errors
def alias(ctx: Context, *, name: str, alias_name: str, version: str | None, reason: str | None,
          remove: bool, expect: str | None) -> None:
    """Point ALIAS of model NAME at VERSION (no validation gate: see `promote`), or remove it with
    --delete."""
    if remove == (version is not None):
        raise click.UsageError("give a VERSION to point the alias at, or --delete to remove it (not both)")
    registry = ctx.registry()
    name_alias = alias_name.removeprefix("@")
    expected: Expected = NOT_GIVEN if expect is None else None if expect.lower() == "none" else expect
    if version is None:  # --delete, as checked above
        move = registry.delete_alias(name, name_alias, reason=reason, expected=expected)
    else:
        move = registry.set_alias(name, name_alias, version, reason=reason, expected=expected)
    if ctx.as_json:
        emit_json(move.to_dict())
    elif move.to_version is None:
        click.echo(f"removed {name}@{move.alias} (was {move.from_version})")
    else:
        was = f" (was {move.from_version})" if move.from_version else ""
        click.echo(f"{name}@{move.alias} -> {move.to_version}{was}")


@click.command("history")
@click.argument("name")
@click.option("--alias", "only", metavar="ALIAS", help="Only the moves of this alias.")
@click.pass_obj
@handle_errors
def history(ctx: Context, name: str, only: str | None) -> None:
    """Show every move of model NAME's aliases: when, from which version to which, by whom and why."""
    moves = ctx.registry().alias_history(name)
    if only is not None:
        moves = [m for m in moves if m.alias == only.removeprefix("@")]
    if ctx.as_json:
        emit_json([m.to_dict() for m in moves])
        return
    if not moves:
        click.echo(f"no alias moves for {name!r}")
        return
    click.echo(table(["at", "alias", "from", "to", "by", "reason"],
                     [(m.at, f"@{m.alias}", m.from_version or "-", m.to_version or "(removed)", m.by,
                       _why(m)) for m in moves]))


def _why(move: AliasMove) -> str | None:
    if not move.rollback:
        return move.reason
    return "rollback" + (f": {move.reason}" if move.reason else "")


@click.command("delete")
@click.argument("ref")
@click.pass_obj
@handle_errors
def delete(ctx: Context, ref: str) -> None:
    """Delete one version, REF = name:1.2.0. Refused while an alias points at it."""
    registry: Registry = ctx.registry()
    mv = registry.delete(ref)
    if ctx.as_json:
        emit_json({"deleted": mv.ref})
    else:
        click.echo(f"deleted {mv.ref}")
