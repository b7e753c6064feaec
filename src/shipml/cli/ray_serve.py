"""``shipml ray``: a Ray Serve application from the deployment spec."""

from __future__ import annotations

from pathlib import Path

import click

from shipml.cli._common import Context, emit_json, handle_errors
from shipml.deploy.ray_serve import DEFAULT_STARTUP_TIMEOUT_S, PROXY_LOCATIONS


def _is_spec_file(arg: str) -> bool:
    path = Path(arg)
    return arg.endswith((".yaml", ".yml")) or (path.is_file() and not (path / "shipml.json").exists())


@click.command("ray")
@click.argument("spec_or_refs", nargs=-1, required=True, metavar="SPEC_OR_REF...")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory to write serve.yaml and shipml.yaml into (new or empty, unless --force).")
@click.option("--name", default="shipml", show_default=True, help="Name of the Serve application.")
@click.option("--route-prefix", default="/", show_default=True,
              help="Where the application is mounted on the Serve HTTP proxy (e.g. /churn).")
@click.option("--proxy-location", type=click.Choice(PROXY_LOCATIONS), default="EveryNode", show_default=True,
              help="Which nodes run an HTTP proxy (on the spec's server host and port).")
@click.option("--startup-timeout", type=float, default=DEFAULT_STARTUP_TIMEOUT_S, show_default=True,
              help="Seconds a replica may take to load its models before it counts as failed.")
@click.option("--no-check", is_flag=True,
              help="Do not check here that the models exist (when only the cluster can reach the registry).")
@click.option("--force", is_flag=True, help="Replace serve.yaml and shipml.yaml in a non-empty output directory.")
@click.option("--deploy", "do_deploy", is_flag=True,
              help="Also deploy to the Ray cluster at --address and wait until every replica is ready.")
@click.option("--address", help="Ray cluster to deploy to (HEAD_IP:GCS_PORT); with --deploy.")
@click.option("--timeout", type=float, default=600.0, show_default=True,
              help="Seconds --deploy waits for the application to run.")
@click.pass_obj
@handle_errors
def ray_command(ctx: Context, spec_or_refs: tuple[str, ...], out_dir: str, name: str, route_prefix: str,
                proxy_location: str, startup_timeout: float, no_check: bool, force: bool, do_deploy: bool,
                address: str | None, timeout: float) -> None:
    """Write a Ray Serve application for a deployment spec (shipml.yaml) or for model REFS.

    serve.yaml is a Serve config: HTTP on the spec's server host and port, one application
    (import_path shipml.deploy.ray_serve:app_builder, the spec inline in its args) whose deployment takes
    its replicas or autoscaling and CPUs from the spec's ray section. Each replica serves the same endpoints
    as `shipml serve` (/predict, /models/NAME/predict, /v1/..., /healthz, /readyz, /metrics) below the
    route prefix, and starts only once its models are loaded and pass their golden check. Deploy it with
    `serve run serve.yaml`, `serve deploy serve.yaml`, or --deploy --address.

    Every node of the cluster needs shipml installed (with the models' frameworks) and must reach the
    registry named in the spec under the same path: one machine, or a shared filesystem.
    """
    from shipml.deploy.ray_serve import ServeAppOptions, check_models, deploy, pinned_spec, write_serve_app
    from shipml.spec import load_spec, spec_for_refs

    if address and not do_deploy:
        raise click.UsageError("--address is only used with --deploy")
    if do_deploy and not address:
        raise click.UsageError("--deploy needs --address HEAD_IP:PORT of a running Ray cluster")
    spec_args = [a for a in spec_or_refs if _is_spec_file(a)]
    if spec_args and len(spec_or_refs) > 1:
        raise click.UsageError("give one spec file, or model REFS, not both")
    spec = load_spec(spec_args[0]) if spec_args else spec_for_refs(list(spec_or_refs))
    spec = pinned_spec(spec, ctx.registry_uri)
    options = ServeAppOptions(name=name, route_prefix=route_prefix, proxy_location=proxy_location,
                              startup_timeout_s=startup_timeout)
    versions = {} if no_check else check_models(spec)
    source = Path(spec_args[0]).name if spec_args else "model refs " + ", ".join(spec_or_refs)
    files = write_serve_app(spec, out_dir, options, force=force, source=source)
    deployed = False
    if do_deploy and address:
        click.echo(f"deploying {options.name} to the Ray cluster at {address}...", err=True)
        deploy(spec, address, options, timeout_s=timeout)
        deployed = True
    if ctx.as_json:
        emit_json({"config": str(files.config), "spec": str(files.spec), "application": options.name,
                   "url": files.url, "registry": spec.registry, "model_versions": versions, "deployed": deployed})
        return
    click.echo(str(files.config))
    click.echo(str(files.spec))
    if deployed:
        click.echo(f"{options.name}: running on Ray Serve at {files.url}", err=True)
    else:
        click.echo(f"{options.name}: deploy with: serve run {files.config} (or serve deploy, or shipml ray "
                   "--deploy --address HEAD:PORT)", err=True)


def register(group: click.Group) -> None:
    group.add_command(ray_command)
