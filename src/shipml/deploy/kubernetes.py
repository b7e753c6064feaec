"""Kubernetes manifests from the deployment spec (``shipml k8s``).

One Deployment serves every endpoint of the spec (the server hosts them all in one process), behind a ClusterIP
Service, scaled by a HorizontalPodAutoscaler on CPU, protected by a PodDisruptionBudget, configured by a ConfigMap
that holds the spec itself; ``kustomization.yaml`` lists the files so ``kubectl apply -k DIR`` applies them all.

How the pod behaves, and why:

- **Probes.** The server answers ``/healthz`` as soon as it listens and loads its models in the background;
  ``/readyz`` turns 200 once every model is loaded and has reproduced its golden sample. The startup probe waits
  on ``/readyz`` for up to ``kubernetes.startup_timeout_s`` (so a slow model load is not killed, and a pod whose
  models never become ready is restarted and shows up as CrashLoopBackOff instead of sitting NotReady forever);
  then liveness watches ``/healthz`` (the process is alive) and readiness ``/readyz`` (fit to take traffic).
- **Shutdown.** No preStop hook: on SIGTERM the server itself turns ``/readyz`` to 503 and keeps serving for
  ``server.drain_delay_s`` (long enough for endpoints and proxies to drop the pod), then stops accepting and lets
  in-flight requests finish within ``server.graceful_timeout_s``. ``terminationGracePeriodSeconds`` is longer than
  both together, so the kubelet never SIGKILLs a pod that is still draining.
- **Security.** Non-root (uid/gid 10001, the image's user), read-only root filesystem, no privilege escalation, all
  capabilities dropped, the runtime's default seccomp profile, no service-account token; ``/tmp`` is an emptyDir.
  The server port must therefore be 1024 or above (the Service still listens on 80).
- **Models.** Baked into the image (``shipml build`` writes the registry to /app/registry), or fetched from an
  S3-compatible bucket by an init container into an emptyDir at /models that the server mounts read-only: with
  ``aws s3 sync`` from a mirror of a registry directory (``kubernetes.s3.layout: mirror``), or with ``shipml
  registry copy`` from an S3 registry (``layout: registry``: the server's image, built with ``shipml[s3]``,
  verifies every version on the way in). A model given as a package directory is served as ``name:version``, as
  ``shipml build`` stores it.
- **Auth.** Tokens are never in the image nor in the ConfigMap: with ``auth.enabled`` the token file comes from
  the Secret ``<name>-tokens`` (key ``tokens.json``), mounted read-only where ``shipml build`` expects it.
- **Roll-outs.** The pod template carries a checksum of the spec, so ``kubectl apply`` restarts pods when the spec
  changes; the rolling update adds a pod before removing one, so a release whose models fail stays on the old pods.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from shipml.deploy.container import TOKENS_MOUNT, ImageOptions, image_ref
from shipml.deploy.dockerfile import REGISTRY_DIR, UID, check_image_ref, split_image_ref
from shipml.deploy.prometheus_rules import FILENAME as RULES_FILE
from shipml.deploy.prometheus_rules import HEADER as RULES_HEADER
from shipml.deploy.prometheus_rules import prometheus_rules
from shipml.errors import ConflictError, InvalidNameError, NotFoundError, ShipmlError, SpecError
from shipml.package.manifest import read_manifest
from shipml.registry import local
from shipml.registry.names import Ref
from shipml.registry.registry import Registry
from shipml.spec import DeploymentSpec, S3SourceSpec, endpoint_with_refs, parse_spec

RUN_AS = UID  # the image's user (shipml build)
IMAGE_REGISTRY = REGISTRY_DIR
S3_REGISTRY = "/models"
TOKENS_KEY = "tokens.json"
SPEC_DIR = "/etc/shipml"
SPEC_FILE = "shipml.yaml"
DEFAULT_S3_IMAGE = "amazon/aws-cli:2.17.0"
PROBE_PERIOD_S = 5
GRACE_MARGIN_S = 5
COMPONENT = "model-server"
ANNOTATION_PREFIX = "shipml"
KUSTOMIZATION = "kustomization.yaml"
FILES = ("configmap.yaml", "deployment.yaml", "service.yaml", "hpa.yaml", "pdb.yaml")

_DNS_1035 = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_QUANTITY = re.compile(r"([0-9]+(?:\.[0-9]+)?)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?")
_SUFFIX = {None: Decimal(1), "m": Decimal("0.001"), "k": Decimal(10) ** 3, "M": Decimal(10) ** 6,
           "G": Decimal(10) ** 9, "T": Decimal(10) ** 12, "P": Decimal(10) ** 15, "E": Decimal(10) ** 18,
           "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30, "Ti": Decimal(2) ** 40,
           "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60}

_DNS_RULE = ("lower-case letters, digits and '-', starting with a letter, ending with a letter or digit, "
             "at most 63 characters")


@dataclass(frozen=True)
class Manifests:
    """The generated objects, by file name, and how to write them."""

    name: str
    namespace: str | None
    image: str
    objects: dict[str, dict[str, Any]]
    pod_spec: DeploymentSpec
    model_versions: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    #: written beside the manifests but not listed in kustomization.yaml (prometheus-rules.yaml: its CRD is
    #: only present where the Prometheus Operator is installed)
    extra_objects: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def kustomization(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization"}
        if self.namespace:
            doc["namespace"] = self.namespace
        doc["resources"] = list(self.objects)
        return doc

    def render(self) -> dict[str, str]:
        """File name → YAML text, kustomization.yaml last."""
        out = {filename: _header(filename) + _dump(doc)
               for filename, doc in {**self.objects, **self.extra_objects}.items()}
        out[KUSTOMIZATION] = _header(KUSTOMIZATION) + _dump(self.kustomization)
        return out


class _BlockDumper(yaml.SafeDumper):
    """The safe dumper, writing multi-line strings (the spec in the ConfigMap) as readable ``|`` blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_BlockDumper.add_representer(str, _str)


def _dump(doc: dict[str, Any]) -> str:
    return yaml.dump(doc, Dumper=_BlockDumper, sort_keys=False, allow_unicode=True)


def _header(filename: str) -> str:
    lines = ["Generated by `shipml k8s` from the deployment spec: change the spec and generate again."]
    if filename == "deployment.yaml":
        lines += [
            "startupProbe waits on /readyz (models loaded, golden check passed) for up to startup_timeout_s;",
            "then livenessProbe watches /healthz (process alive) and readinessProbe /readyz (fit for traffic).",
            "No preStop hook: on SIGTERM the server turns /readyz to 503 and keeps serving for drain_delay_s,",
            "then finishes in-flight requests within graceful_timeout_s; terminationGracePeriodSeconds exceeds",
            "both together, so a draining pod is never killed.",
        ]
    elif filename == RULES_FILE:
        lines = list(RULES_HEADER)
    return "".join(f"# {line}\n" for line in lines)


# -- names ---------------------------------------------------------------------------------------------------
def check_k8s_name(name: str, what: str = "name") -> str:
    """A DNS-1035 label: valid for every object we write, the Service included."""
    if not isinstance(name, str) or not _DNS_1035.fullmatch(name):
        raise InvalidNameError(f"invalid Kubernetes {what} {name!r}: use {_DNS_RULE}")
    return name


def check_namespace(namespace: str) -> str:
    if not isinstance(namespace, str) or not _DNS_1123_LABEL.fullmatch(namespace):
        raise InvalidNameError(f"invalid Kubernetes namespace {namespace!r}: use lower-case letters, digits and "
                               "'-', starting and ending with a letter or digit, at most 63 characters")
    return namespace


def default_name(spec: DeploymentSpec) -> str:
    """``shipml-<first endpoint>``, lower-cased, with '_' and '.' as '-'; refused if that is still not valid."""
    endpoint = spec.endpoints[0].name
    candidate = "shipml-" + endpoint.lower().replace("_", "-").replace(".", "-")
    if not _DNS_1035.fullmatch(candidate):
        raise InvalidNameError(f"cannot make a Kubernetes name from endpoint {endpoint!r}: {candidate!r} breaks "
                               f"the rule ({_DNS_RULE}); give one with --name")
    return candidate


def server_image(spec: DeploymentSpec, image: str | None = None) -> str:
    """The server's image: ``image`` (a tag-less NAME takes the spec's image.tag, as ``shipml build --tag``
    does; a digest is kept), else what ``shipml build`` names it: ``<image.name or shipml-<endpoint>>:<tag>``."""
    if image is not None:
        check_image_ref(image)
        if "@" in image:
            return image
        name, tag = split_image_ref(image)
        return image if tag else f"{name}:{spec.image.tag}"
    try:
        return image_ref(spec, ImageOptions())
    except SpecError as exc:
        origin = "image.name" if spec.image.name else f"endpoint {spec.endpoints[0].name!r}"
        raise SpecError(f"no valid image name comes from {origin} ({exc}): set image.name in the spec, "
                        "or give --image") from exc


# -- checks on the spec --------------------------------------------------------------------------------------
def quantity(text: str, what: str) -> Decimal:
    """A Kubernetes resource quantity (``500m``, ``2``, ``512Mi``, ``1.5Gi``) as a number."""
    m = _QUANTITY.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise SpecError(f"kubernetes.resources.{what}: {text!r} is not a resource quantity such as 500m, 2, 512Mi "
                        "or 1Gi")
    return Decimal(m.group(1)) * _SUFFIX[m.group(2)]


def _check_spec(spec: DeploymentSpec) -> None:
    k8s = spec.kubernetes
    if not k8s.min_replicas <= k8s.replicas <= k8s.max_replicas:
        raise SpecError(f"kubernetes.replicas {k8s.replicas} is outside min_replicas..max_replicas "
                        f"({k8s.min_replicas}..{k8s.max_replicas})")
    if spec.server.port < 1024:
        raise SpecError(f"server.port {spec.server.port} needs root, and the pod runs as a non-root user: use a "
                        "port of 1024 or above (the Service still listens on 80)")
    res = k8s.resources
    for kind in ("cpu", "memory"):
        request = quantity(getattr(res, f"{kind}_request"), f"{kind}_request")
        limit = quantity(getattr(res, f"{kind}_limit"), f"{kind}_limit")
        if request <= 0:
            raise SpecError(f"kubernetes.resources.{kind}_request must be above zero")
        if request > limit:
            raise SpecError(f"kubernetes.resources.{kind}_request {getattr(res, f'{kind}_request')} is above "
                            f"{kind}_limit {getattr(res, f'{kind}_limit')}")
    if k8s.models_from == "s3" and k8s.s3 is not None:
        _check_s3(k8s.s3)
    if spec.auth.enabled:
        tokens_path(spec)


def _check_s3(s3: S3SourceSpec) -> None:
    if not _BUCKET.fullmatch(s3.bucket) or ".." in s3.bucket:
        raise SpecError(f"kubernetes.s3.bucket {s3.bucket!r} is not a valid bucket name (3-63 lower-case letters, "
                        "digits, '.' and '-')")
    if s3.endpoint_url is not None and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", s3.endpoint_url):
        raise SpecError(f"kubernetes.s3.endpoint_url {s3.endpoint_url!r} is not an http:// or https:// URL")
    if any(ch.isspace() for ch in s3.prefix) or ".." in s3.prefix.split("/"):
        raise SpecError(f"kubernetes.s3.prefix {s3.prefix!r} may not hold whitespace or '..'")
    if len(s3.secret_name) > 253 or not _DNS_1123_SUBDOMAIN.fullmatch(s3.secret_name):
        raise SpecError(f"kubernetes.s3.secret_name {s3.secret_name!r} is not a valid Secret name (lower-case "
                        "letters, digits, '-' and '.', starting and ending with a letter or digit)")


# -- the spec the pod runs -----------------------------------------------------------------------------------
def registry_path(spec: DeploymentSpec) -> str:
    return S3_REGISTRY if spec.kubernetes.models_from == "s3" else IMAGE_REGISTRY


def tokens_path(spec: DeploymentSpec) -> PurePosixPath:
    """Where the pod reads its token file: a Secret mounted on its own directory."""
    path = PurePosixPath(spec.auth.tokens_file or TOKENS_MOUNT)
    taken = [PurePosixPath(p) for p in (SPEC_DIR, "/tmp", registry_path(spec))]
    parent = path.parent
    if not path.is_absolute() or parent == PurePosixPath("/") or ".." in path.parts or any(
            parent == t or t in parent.parents or parent in t.parents for t in taken):
        raise SpecError(f"auth.tokens_file {str(path)!r} cannot be mounted from a Secret in the pod: give an "
                        f"absolute path in a directory of its own (not /, {', '.join(map(str, taken))})")
    return path


def pod_refs(spec: DeploymentSpec) -> dict[str, str]:
    """spec ref → the ref the pod uses: the same, except a package directory, which is ``name:version`` (how
    ``shipml build`` stores it; an S3 bucket must hold it under that name too)."""
    out: dict[str, str] = {}
    for endpoint in spec.endpoints:
        for text in spec.refs_of(endpoint):
            ref = Ref.parse(text)
            if ref.path is None:
                out[text] = text
                continue
            if not ref.path.is_dir():
                raise SpecError(f"endpoint {endpoint.name}: model {text} is not a package directory")
            manifest = read_manifest(ref.path)
            out[text] = f"{manifest.name}:{manifest.version}"
    return out


def pod_spec(spec: DeploymentSpec, refs: dict[str, str] | None = None) -> DeploymentSpec:
    """The spec as the pod needs it: listening on its IP, reading the registry and the tokens inside the pod."""
    refs = refs if refs is not None else pod_refs(spec)
    data = spec.model_dump(mode="json", exclude_none=True)
    data["server"]["host"] = "0.0.0.0"  # a pod must listen on its own IP, not on loopback
    data["registry"] = registry_path(spec)
    data["endpoints"] = [endpoint_with_refs(e, refs.__getitem__) for e in data["endpoints"]]
    if spec.auth.enabled:
        data["auth"]["tokens_file"] = str(tokens_path(spec))
    return parse_spec(data, "spec for the pod")


def resolve_versions(refs: dict[str, str], registry: Registry | None) -> dict[str, str]:
    """spec ref → version, for package directories and the refs the registry knows; the others are left out
    (the manifests do not need them)."""
    found: dict[str, str] = {}
    for text, pod_ref in refs.items():
        if pod_ref != text:  # a package directory: its version is in its manifest
            found[text] = pod_ref.partition(":")[2]
            continue
        if registry is None:
            continue
        try:
            found[text] = registry.get(text).version
        except (NotFoundError, InvalidNameError):
            continue
    return found


# -- the objects ---------------------------------------------------------------------------------------------
def generate(spec: DeploymentSpec, *, image: str | None = None, namespace: str | None = None,
             name: str | None = None, registry: Registry | None = None,
             s3_image: str = DEFAULT_S3_IMAGE) -> Manifests:
    """Every manifest for ``spec``. ``registry``, when given, resolves refs to versions for labels/annotations."""
    _check_spec(spec)
    app = check_k8s_name(name) if name is not None else default_name(spec)
    ns = namespace if namespace is not None else spec.kubernetes.namespace
    if ns is not None:
        check_namespace(ns)
    image = server_image(spec, image)
    check_image_ref(s3_image, "init container image")
    refs = pod_refs(spec)
    inner = pod_spec(spec, refs)
    spec_text = inner.to_yaml()
    versions = resolve_versions(refs, registry)
    labels = _labels(app, versions[next(iter(refs))] if len(refs) == 1 and versions else None)
    annotations = {f"{ANNOTATION_PREFIX}/endpoints": ",".join(e.name for e in spec.endpoints)}
    if versions:
        annotations[f"{ANNOTATION_PREFIX}/model-versions"] = json.dumps(versions, sort_keys=True)
    meta = _meta_factory(ns, labels)
    objects = {
        "configmap.yaml": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(f"{app}-spec"),
                           "data": {SPEC_FILE: spec_text}},
        "deployment.yaml": _deployment(spec, app, image, s3_image, meta(app, annotations), labels, annotations,
                                       hashlib.sha256(spec_text.encode()).hexdigest()),
        "service.yaml": _service(app, meta(app)),
        "hpa.yaml": _hpa(spec, app, meta(app)),
        "pdb.yaml": _pdb(spec, app, meta(app)),
    }
    extra = ({RULES_FILE: prometheus_rules(spec, name=app, namespace=ns, labels=labels, refs=refs)}
             if spec.monitoring.alerts else {})
    return Manifests(name=app, namespace=ns, image=image, objects=objects, pod_spec=inner,
                     model_versions=versions, notes=tuple(_notes(spec, app, ns)), extra_objects=extra)


def _notes(spec: DeploymentSpec, app: str, namespace: str | None) -> list[str]:
    """What the user must do besides applying the manifests."""
    ns = f" -n {namespace}" if namespace else ""
    notes = []
    if spec.monitoring.alerts:
        notes.append(f"{RULES_FILE} holds Prometheus alerting rules for the spec's alerts; it needs the Prometheus "
                     f"Operator: kubectl{ns} apply -f {RULES_FILE} (not part of kustomization.yaml)")
    if spec.auth.enabled:
        notes.append(f"auth is on: create the Secret with the token file first: kubectl{ns} create secret generic "
                     f"{app}-tokens --from-file={TOKENS_KEY}=PATH")
        if spec.auth.metrics_auth:
            notes.append("auth.metrics_auth is on: the prometheus.io annotations carry no token, so the scrape job "
                         "needs a bearer token configured")
    if spec.kubernetes.models_from == "s3" and spec.kubernetes.s3 is not None:
        notes.append(f"models come from S3: the Secret {spec.kubernetes.s3.secret_name} must hold "
                     "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    return notes


def _labels(app: str, version: str | None) -> dict[str, str]:
    labels = {"app.kubernetes.io/name": "shipml", "app.kubernetes.io/instance": app,
              "app.kubernetes.io/component": COMPONENT, "app.kubernetes.io/managed-by": "shipml"}
    if version is not None:
        labels["app.kubernetes.io/version"] = version
    return labels


def selector(app: str) -> dict[str, str]:
    """The labels that pick this deployment's pods (never the version: a selector is immutable)."""
    return {"app.kubernetes.io/name": "shipml", "app.kubernetes.io/instance": app}


def _meta_factory(namespace: str | None, labels: dict[str, str]) -> Callable[..., dict[str, Any]]:
    def meta(name: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"name": name}
        if namespace is not None:
            out["namespace"] = namespace
        out["labels"] = dict(labels)
        if annotations:
            out["annotations"] = dict(annotations)
        return out

    return meta


def _security_context() -> dict[str, Any]:
    return {"runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS, "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"}}


def _probe(path: str, *, period: int, timeout: int, failures: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": "http"}, "periodSeconds": period, "timeoutSeconds": timeout,
            "failureThreshold": failures}


def grace_period_s(spec: DeploymentSpec) -> int:
    """Longer than the drain plus the graceful shutdown, with a margin for the process to exit."""
    return math.ceil(spec.server.drain_delay_s + spec.server.graceful_timeout_s) + GRACE_MARGIN_S


def _server_container(spec: DeploymentSpec, image: str) -> dict[str, Any]:
    res = spec.kubernetes.resources
    mounts = [{"name": "spec", "mountPath": SPEC_DIR, "readOnly": True}, {"name": "tmp", "mountPath": "/tmp"}]
    if spec.kubernetes.models_from == "s3":
        mounts.append({"name": "models", "mountPath": S3_REGISTRY, "readOnly": True})
    if spec.auth.enabled:
        mounts.append({"name": "tokens", "mountPath": str(tokens_path(spec).parent), "readOnly": True})
    return {
        "name": "server",
        "image": image,
        "command": ["shipml"],
        "args": ["serve", "--spec", f"{SPEC_DIR}/{SPEC_FILE}"],
        "ports": [{"name": "http", "containerPort": spec.server.port, "protocol": "TCP"}],
        "env": [{"name": "SHIPML_HOME", "value": registry_path(spec)}, {"name": "HOME", "value": "/tmp"},
                {"name": "PYTHONUNBUFFERED", "value": "1"}, {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"}],
        "resources": {"requests": {"cpu": res.cpu_request, "memory": res.memory_request},
                      "limits": {"cpu": res.cpu_limit, "memory": res.memory_limit}},
        "startupProbe": _probe("/readyz", period=PROBE_PERIOD_S, timeout=2,
                               failures=math.ceil(spec.kubernetes.startup_timeout_s / PROBE_PERIOD_S)),
        "readinessProbe": _probe("/readyz", period=PROBE_PERIOD_S, timeout=2, failures=2),
        "livenessProbe": _probe("/healthz", period=10, timeout=5, failures=3),
        "securityContext": _security_context(),
        "volumeMounts": mounts,
    }


def s3_sync_args(spec: DeploymentSpec) -> list[str]:
    """``aws s3 sync`` of the bucket prefix into /models: only the models this spec serves."""
    s3 = spec.kubernetes.s3
    if s3 is None:
        raise SpecError("models_from: s3 needs an s3 section (bucket, prefix, endpoint_url)")
    prefix = s3.prefix.strip("/")
    source = f"s3://{s3.bucket}/{prefix}/" if prefix else f"s3://{s3.bucket}/"
    args = ["s3", "sync", source, S3_REGISTRY, "--no-progress", "--only-show-errors", "--exclude", "*"]
    names = sorted({str(Ref.parse(ref).name) for ref in pod_refs(spec).values()})
    for model in names:
        args += ["--include", f"models/{model}/*"]
    if s3.endpoint_url is not None:
        args += ["--endpoint-url", s3.endpoint_url]
    return args


def registry_copy_args(spec: DeploymentSpec) -> list[str]:
    """``shipml registry copy`` of the S3 registry into /models: only the models this spec serves, every
    version verified (hashes, golden sample) on the way in."""
    s3 = spec.kubernetes.s3
    if s3 is None:
        raise SpecError("models_from: s3 needs an s3 section (bucket, prefix, endpoint_url)")
    prefix = s3.prefix.strip("/")
    args = ["registry", "copy", f"s3://{s3.bucket}/{prefix}" if prefix else f"s3://{s3.bucket}", S3_REGISTRY]
    for model in sorted({str(Ref.parse(ref).name) for ref in pod_refs(spec).values()}):
        args += ["--model", model]
    return args


def _init_container(spec: DeploymentSpec, s3_image: str, image: str) -> dict[str, Any]:
    s3 = spec.kubernetes.s3
    if s3 is None:
        raise SpecError("models_from: s3 needs an s3 section (bucket, prefix, endpoint_url)")
    if s3.layout == "registry":  # the server's image (it has shipml[s3]); its download cache on the volume
        res = spec.kubernetes.resources
        env = [{"name": "HOME", "value": "/tmp"}, {"name": "SHIPML_CACHE", "value": f"{S3_REGISTRY}/.fetch-cache"},
               {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"}]
        if s3.endpoint_url is not None:
            env.append({"name": "AWS_ENDPOINT_URL", "value": s3.endpoint_url})
        return {
            "name": "fetch-models",
            "image": image,
            "command": ["shipml"],
            "args": registry_copy_args(spec),
            "envFrom": [{"secretRef": {"name": s3.secret_name}}],
            "env": env,
            "resources": {"requests": {"cpu": res.cpu_request, "memory": res.memory_request},
                          "limits": {"cpu": res.cpu_limit, "memory": res.memory_limit}},
            "securityContext": _security_context(),
            "volumeMounts": [{"name": "models", "mountPath": S3_REGISTRY}, {"name": "tmp", "mountPath": "/tmp"}],
        }
    return {
        "name": "fetch-models",
        "image": s3_image,
        "command": ["aws"],
        "args": s3_sync_args(spec),
        "envFrom": [{"secretRef": {"name": s3.secret_name}}],
        "env": [{"name": "HOME", "value": "/tmp"}],
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
        "securityContext": _security_context(),
        "volumeMounts": [{"name": "models", "mountPath": S3_REGISTRY}, {"name": "tmp", "mountPath": "/tmp"}],
    }


def _deployment(spec: DeploymentSpec, app: str, image: str, s3_image: str, metadata: dict[str, Any],
                labels: dict[str, str], annotations: dict[str, str], spec_sha256: str) -> dict[str, Any]:
    k8s = spec.kubernetes
    volumes: list[dict[str, Any]] = [
        {"name": "spec", "configMap": {"name": f"{app}-spec"}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
    ]
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": grace_period_s(spec),
        "securityContext": {"runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS, "fsGroup": RUN_AS,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                       "whenUnsatisfiable": "ScheduleAnyway",
                                       "labelSelector": {"matchLabels": selector(app)}}],
    }
    if k8s.models_from == "s3":
        volumes.append({"name": "models", "emptyDir": {}})
        pod["initContainers"] = [_init_container(spec, s3_image, image)]
    if spec.auth.enabled:
        volumes.append({"name": "tokens", "secret": {
            "secretName": f"{app}-tokens", "defaultMode": 0o440,
            "items": [{"key": TOKENS_KEY, "path": tokens_path(spec).name}]}})
    pod["containers"] = [_server_container(spec, image)]
    pod["volumes"] = volumes
    template_annotations = {
        "prometheus.io/scrape": "true", "prometheus.io/port": str(spec.server.port), "prometheus.io/path": "/metrics",
        f"{ANNOTATION_PREFIX}/spec-sha256": spec_sha256, **annotations,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": k8s.replicas,
            "revisionHistoryLimit": 5,
            "progressDeadlineSeconds": max(600, k8s.startup_timeout_s + 300),
            "selector": {"matchLabels": selector(app)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {"metadata": {"labels": dict(labels), "annotations": template_annotations}, "spec": pod},
        },
    }


def _service(app: str, metadata: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata,
            "spec": {"type": "ClusterIP", "selector": selector(app),
                     "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]}}


def _hpa(spec: DeploymentSpec, app: str, metadata: dict[str, Any]) -> dict[str, Any]:
    k8s = spec.kubernetes
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": metadata,
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": app},
                     "minReplicas": k8s.min_replicas, "maxReplicas": k8s.max_replicas,
                     "metrics": [{"type": "Resource", "resource": {
                         "name": "cpu", "target": {"type": "Utilization",
                                                   "averageUtilization": k8s.target_cpu_percent}}}]}}


def _pdb(spec: DeploymentSpec, app: str, metadata: dict[str, Any]) -> dict[str, Any]:
    # With two pods or more, one may go at a time (node drains proceed); a single pod is never evicted on purpose.
    budget = {"maxUnavailable": 1} if spec.kubernetes.min_replicas >= 2 else {"minAvailable": 1}
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": metadata,
            "spec": {**budget, "selector": {"matchLabels": selector(app)}}}


# -- writing -------------------------------------------------------------------------------------------------
def write_manifests(manifests: Manifests, out_dir: str | Path, *, force: bool = False) -> list[Path]:
    """Write every file into ``out_dir``. A new or empty directory is filled in a temporary sibling and renamed
    into place; a non-empty one is refused unless ``force``, and then only our files are replaced (each
    atomically) - other files in it are left alone."""
    out = Path(out_dir)
    texts = manifests.render()
    if out.exists() and not out.is_dir():
        raise ConflictError(f"output {out} exists and is not a directory")
    try:
        if out.is_dir() and any(out.iterdir()):
            if not force:
                raise ConflictError(f"output directory {out} is not empty: choose another, or pass --force to "
                                    "replace the manifests in it")
            for filename, text in texts.items():
                local.write_atomic(out / filename, text.encode())
        else:
            _write_new_dir(out, texts)
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        raise ShipmlError(f"cannot write the manifests to {out}: {exc.strerror or exc}{where}") from exc
    return [out / filename for filename in texts]


def _write_new_dir(out: Path, texts: dict[str, str]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        for filename, text in texts.items():
            (tmp / filename).write_text(text, encoding="utf-8")
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the manifests are not secret
        local.fsync_tree(tmp)
        if out.is_dir():
            out.rmdir()  # empty (checked above); a file appearing meanwhile makes this fail, not get lost
        tmp.rename(out)
        local.fsync_dir(out.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
