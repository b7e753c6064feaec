"""``shipml k8s``: Kubernetes manifests from the deployment spec."""

from __future__ import annotations

from pathlib import Path

import click

from shipml.cli._common import Context, emit_json, handle_errors
from shipml.deploy.kubernetes import DEFAULT_S3_IMAGE


def _is_spec_file(arg: str) -> bool:
    """A spec file (shipml.yaml); anything else is a model ref."""
    return arg.endswith((".yaml", ".yml")) or Path(arg).is_file()


@click.command("k8s")
@click.argument("spec_or_refs", nargs=-1, required=True, metavar="SPEC_OR_REF...")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory to write the manifests into (new or empty, unless --force).")
@click.option("--image", help="Container image of the server (default: from the spec's image section).")
@click.option("--namespace", help="Namespace of every object (default: the spec's kubernetes.namespace).")
@click.option("--name", help="Name of the Deployment, Service and the rest (default: shipml-<first endpoint>).")
@click.option("--s3-image", default=DEFAULT_S3_IMAGE, show_default=True,
              help="Image of the init container that syncs models from S3 (models_from: s3).")
@click.option("--force", is_flag=True, help="Replace the manifests in a non-empty output directory.")
@click.pass_obj
@handle_errors
def k8s_command(ctx: Context, spec_or_refs: tuple[str, ...], out_dir: str, image: str | None,
                namespace: str | None, name: str | None, s3_image: str, force: bool) -> None:
    """Write Kubernetes manifests for a deployment spec (shipml.yaml) or for model REFS.

    Deployment (probes, resources, non-root, read-only root filesystem), Service, HorizontalPodAutoscaler,
    PodDisruptionBudget, a ConfigMap holding the spec, and kustomization.yaml: apply with `kubectl apply -k DIR`.
    Models come baked into the image or, with kubernetes.models_from: s3, from a bucket via an init container.
    With monitoring.alerts in the spec, also prometheus-rules.yaml: the same alert conditions as a PrometheusRule
    of the Prometheus Operator (not in kustomization.yaml; apply it with kubectl apply -f).
    """
    from shipml.deploy.kubernetes import generate, write_manifests
    from shipml.errors import InvalidNameError
    from shipml.registry import Registry
    from shipml.spec import load_spec, spec_for_refs

    spec_args = [a for a in spec_or_refs if _is_spec_file(a)]
    if spec_args and len(spec_or_refs) > 1:
        raise click.UsageError("give one spec file, or model REFS, not both")
    spec = load_spec(spec_args[0]) if spec_args else spec_for_refs(list(spec_or_refs))
    try:  # only to record the versions the refs resolve to now: the manifests do not need the models
        registry: Registry | None = Registry(spec.registry or ctx.registry_uri)
    except InvalidNameError:
        registry = None
    manifests = generate(spec, image=image, namespace=namespace, name=name, s3_image=s3_image, registry=registry)
    written = write_manifests(manifests, out_dir, force=force)
    if ctx.as_json:
        emit_json({"directory": out_dir, "name": manifests.name, "namespace": manifests.namespace,
                   "image": manifests.image, "files": [p.name for p in written],
                   "model_versions": manifests.model_versions, "notes": list(manifests.notes)})
        return
    for path in written:
        click.echo(str(path))
    for note in manifests.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(f"{manifests.name}: image {manifests.image}; apply with: kubectl apply -k {out_dir}", err=True)


def register(group: click.Group) -> None:
    group.add_command(k8s_command)
