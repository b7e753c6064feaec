"""``shipml k8s``: every generated manifest validates (strict) against the bundled Kubernetes schemas, and the
policy the manifests promise - probes, grace period, security context, resources, autoscaling - holds."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import orjson
import pytest
import yaml
from click.testing import CliRunner, Result

from shipml.cli import cli
from shipml.deploy.kubernetes import (
    DEFAULT_S3_IMAGE,
    FILES,
    KUSTOMIZATION,
    RUN_AS,
    Manifests,
    generate,
    pod_refs,
    pod_spec,
    write_manifests,
)
from shipml.errors import ConflictError, InvalidNameError, ShipmlError, SpecError
from shipml.registry import Registry
from shipml.spec import DeploymentSpec, parse_spec, spec_for_refs
from tests.cli.gate_models import GOOD, WEAK, run

K8S_VERSIONS = ("1.29", kubernetes_validate.latest_version())
DNS_1035 = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")

S3_SPEC: dict[str, Any] = {
    "server": {"port": 8080, "workers": 2, "graceful_timeout_s": 20.5, "drain_delay_s": 4},
    "endpoints": [{"name": "churn", "models": ["churn@production"]},
                  {"name": "churn_ab.test", "models": [f"churn:{WEAK}", f"churn:{GOOD}"]},
                  {"name": "fraud", "models": ["fraud"]}],
    "kubernetes": {"replicas": 3, "min_replicas": 2, "max_replicas": 6, "target_cpu_percent": 55,
                   "resources": {"cpu_request": "250m", "cpu_limit": "1500m", "memory_request": "300Mi",
                                 "memory_limit": "1.5Gi"},
                   "startup_timeout_s": 123, "models_from": "s3",
                   "s3": {"bucket": "team-models", "prefix": "/prod/registry/", "endpoint_url": "http://127.0.0.1:9000",
                          "secret_name": "models-s3"}},
}


# -- helpers -------------------------------------------------------------------------------------------------
def read_dir(out: Path) -> dict[str, dict[str, Any]]:
    return {p.name: yaml.safe_load(p.read_text()) for p in sorted(out.iterdir())}


def validate_strict(docs: dict[str, dict[str, Any]]) -> None:
    """Each object against every version in K8S_VERSIONS, with the strict schemas (no unknown fields)."""
    for filename, doc in docs.items():
        if filename == KUSTOMIZATION:
            continue
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                where = ".".join(str(p) for p in exc.path)
                pytest.fail(f"{filename} is invalid for Kubernetes {version}: {where}: {exc.message}")


def by_kind(docs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in docs.values()}


def check_policy(docs: dict[str, dict[str, Any]], spec: DeploymentSpec, *, namespace: str | None = None) -> None:
    """What every generated set promises, whatever the spec."""
    assert set(docs) == {*FILES, KUSTOMIZATION}
    kust = docs[KUSTOMIZATION]
    assert kust["apiVersion"] == "kustomize.config.k8s.io/v1beta1" and kust["kind"] == "Kustomization"
    assert sorted(kust["resources"]) == sorted(set(docs) - {KUSTOMIZATION})
    assert kust.get("namespace") == namespace
    objs = by_kind(docs)
    assert set(objs) == {"ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget",
                         "Kustomization"}
    app = objs["Deployment"]["metadata"]["name"]
    for kind, obj in objs.items():
        if kind == "Kustomization":
            continue
        meta = obj["metadata"]
        assert DNS_1035.fullmatch(meta["name"]) or kind == "ConfigMap", meta["name"]
        assert meta.get("namespace") == namespace
        labels = meta["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "shipml"
        assert labels["app.kubernetes.io/instance"] == app
        assert {"app.kubernetes.io/name", "app.kubernetes.io/component"} <= set(labels)
        assert all(LABEL_VALUE.fullmatch(v) and len(v) <= 63 for v in labels.values()), labels

    deployment = objs["Deployment"]["spec"]
    template = deployment["template"]
    pod = template["spec"]
    selector = deployment["selector"]["matchLabels"]
    assert selector.items() <= template["metadata"]["labels"].items()
    assert "app.kubernetes.io/version" not in selector
    assert deployment["replicas"] == spec.kubernetes.replicas
    assert deployment["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    assert deployment["progressDeadlineSeconds"] > spec.kubernetes.startup_timeout_s
    (server,) = pod["containers"]

    # probes on the right endpoints, through the named port
    (port,) = server["ports"]
    assert port == {"name": "http", "containerPort": spec.server.port, "protocol": "TCP"}
    assert server["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert server["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    startup = server["startupProbe"]
    assert startup["httpGet"] == {"path": "/readyz", "port": "http"}
    assert startup["failureThreshold"] * startup["periodSeconds"] >= spec.kubernetes.startup_timeout_s
    assert startup["failureThreshold"] * startup["periodSeconds"] < spec.kubernetes.startup_timeout_s + 10

    # the kubelet never kills a pod still draining; no preStop (the server drains itself)
    assert pod["terminationGracePeriodSeconds"] > spec.server.drain_delay_s + spec.server.graceful_timeout_s
    assert "lifecycle" not in server

    # security
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == RUN_AS
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    for container in [server, *pod.get("initContainers", [])]:
        sc = container["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] == RUN_AS
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"])
    volumes = {v["name"]: v for v in pod["volumes"]}
    tmp_mount = next(m for m in server["volumeMounts"] if m["mountPath"] == "/tmp")
    assert "emptyDir" in volumes[tmp_mount["name"]]

    # resources
    res = spec.kubernetes.resources
    assert server["resources"] == {"requests": {"cpu": res.cpu_request, "memory": res.memory_request},
                                   "limits": {"cpu": res.cpu_limit, "memory": res.memory_limit}}

    # the spec: mounted from the ConfigMap, passed with --spec, checksummed on the template
    configmap = objs["ConfigMap"]
    (spec_file, spec_text), = configmap["data"].items()
    spec_mount = next(m for m in server["volumeMounts"] if volumes[m["name"]].get("configMap"))
    assert volumes[spec_mount["name"]]["configMap"]["name"] == configmap["metadata"]["name"]
    assert spec_mount["readOnly"] is True
    assert server["args"][-2:] == ["--spec", f"{spec_mount['mountPath']}/{spec_file}"]
    assert "serve" in server["command"] + server["args"]
    annotations = template["metadata"]["annotations"]
    assert annotations["shipml/spec-sha256"] == hashlib.sha256(spec_text.encode()).hexdigest()
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(spec.server.port)
    assert annotations["prometheus.io/path"] == "/metrics"
    inner = parse_spec(yaml.safe_load(spec_text), "configmap")
    assert [(e.name, e.models) for e in inner.endpoints] == [(e.name, e.models) for e in spec.endpoints]
    assert inner.server.host == "0.0.0.0"
    assert inner.server.port == spec.server.port
    registry_env = next(e["value"] for e in server["env"] if e["name"] == "SHIPML_HOME")
    assert inner.registry == registry_env

    # Service → named port; HPA; PDB
    service = objs["Service"]["spec"]
    assert service["type"] == "ClusterIP"
    assert service["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    assert service["selector"] == selector
    hpa = objs["HorizontalPodAutoscaler"]["spec"]
    assert objs["HorizontalPodAutoscaler"]["apiVersion"] == "autoscaling/v2"
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": app}
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (spec.kubernetes.min_replicas, spec.kubernetes.max_replicas)
    assert hpa["metrics"] == [{"type": "Resource", "resource": {"name": "cpu", "target": {
        "type": "Utilization", "averageUtilization": spec.kubernetes.target_cpu_percent}}}]
    pdb = objs["PodDisruptionBudget"]
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["selector"]["matchLabels"] == selector
    expected = {"maxUnavailable": 1} if spec.kubernetes.min_replicas >= 2 else {"minAvailable": 1}
    assert {k: v for k, v in pdb["spec"].items() if k != "selector"} == expected


def k8s(*args: str, registry: Path | None = None) -> Result:
    prefix = ["--registry", str(registry)] if registry is not None else []
    return CliRunner().invoke(cli, [*prefix, "k8s", *args], catch_exceptions=False)


def write_spec(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


# -- spec file, models baked into the image ------------------------------------------------------------------
def test_spec_file_with_models_in_the_image(tmp_path: Path, churn_registry: Path) -> None:
    data = {"registry": str(churn_registry / "registry"), "endpoints": [{"name": "churn", "models": ["churn"]}],
            "image": {"name": "registry.example.com:5000/ml/churn-server", "tag": "2024.06"}}
    spec_path = write_spec(tmp_path / "shipml.yaml", data)
    out = tmp_path / "deep" / "manifests"
    result = k8s(str(spec_path), "-o", str(out))
    assert result.exit_code == 0, result.output
    assert sorted(Path(line).name for line in result.stdout.splitlines()) == sorted([*FILES, KUSTOMIZATION])
    assert sorted(p.name for p in (tmp_path / "deep").iterdir()) == ["manifests"]  # no temporary left behind

    docs = read_dir(out)
    validate_strict(docs)
    spec = parse_spec(data)
    check_policy(docs, spec)
    deployment = by_kind(docs)["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["metadata"]["name"] == "shipml-churn"
    assert pod["containers"][0]["image"] == "registry.example.com:5000/ml/churn-server:2024.06"
    assert "initContainers" not in pod
    inner = yaml.safe_load(by_kind(docs)["ConfigMap"]["data"]["shipml.yaml"])
    assert inner["registry"] == "/app/registry"
    # the registry knows churn: the version it resolves to now is recorded
    assert deployment["metadata"]["labels"]["app.kubernetes.io/version"] == GOOD
    assert json.loads(deployment["metadata"]["annotations"]["shipml/model-versions"]) == {"churn": GOOD}
    assert (out / "deployment.yaml").read_text().startswith("# Generated by `shipml k8s`")
    assert "No preStop hook" in (out / "deployment.yaml").read_text()


# -- bare refs -----------------------------------------------------------------------------------------------
def test_bare_refs_resolve_aliases_in_the_registry(workdir: Path, tmp_path: Path) -> None:
    assert run(workdir, "alias", "churn", "production", WEAK).exit_code == 0
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["--registry", str(workdir / "registry"), "--json", "k8s", "churn@production",
                                      "fraud:1.0.0", "--namespace", "ml-prod", "-o", str(out)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = orjson.loads(result.stdout)
    assert report["files"] == [*FILES, KUSTOMIZATION]
    assert report["model_versions"] == {"churn@production": WEAK}  # fraud is not in the registry
    assert report["image"] == "shipml-churn:latest"

    docs = read_dir(out)
    validate_strict(docs)
    spec = spec_for_refs(["churn@production", "fraud:1.0.0"])
    check_policy(docs, spec, namespace="ml-prod")
    deployment = by_kind(docs)["Deployment"]
    # two models: no single version for the label; what resolved is in the annotation
    assert "app.kubernetes.io/version" not in deployment["metadata"]["labels"]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert json.loads(annotations["shipml/model-versions"]) == report["model_versions"]


def test_refs_unknown_to_the_registry_still_make_manifests(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = k8s("fraud:2.0.0", "-o", str(out), "--image", "fraud-server:1", "--name", "fraud-api",
                 registry=tmp_path / "empty-registry")
    assert result.exit_code == 0, result.output
    docs = read_dir(out)
    validate_strict(docs)
    check_policy(docs, spec_for_refs(["fraud:2.0.0"]))
    deployment = by_kind(docs)["Deployment"]
    assert deployment["metadata"]["name"] == "fraud-api"
    assert by_kind(docs)["ConfigMap"]["metadata"]["name"] == "fraud-api-spec"
    assert "app.kubernetes.io/version" not in deployment["metadata"]["labels"]
    assert "shipml/model-versions" not in deployment["metadata"]["annotations"]


# -- models from S3, several endpoints -----------------------------------------------------------------------
def test_models_from_s3_with_several_endpoints(tmp_path: Path, churn_registry: Path) -> None:
    spec = parse_spec(S3_SPEC)
    manifests = generate(spec, registry=Registry(churn_registry / "registry"))
    written = write_manifests(manifests, tmp_path / "out")
    assert [p.name for p in written] == [*FILES, KUSTOMIZATION]
    docs = read_dir(tmp_path / "out")
    validate_strict(docs)
    check_policy(docs, spec)

    pod = by_kind(docs)["Deployment"]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == math.ceil(4 + 20.5) + 5
    (init,) = pod["initContainers"]
    (server,) = pod["containers"]
    assert init["image"] == DEFAULT_S3_IMAGE
    assert init["command"] + init["args"][:4] == ["aws", "s3", "sync", "s3://team-models/prod/registry/", "/models"]
    args = init["args"]
    assert args[args.index("--endpoint-url") + 1] == "http://127.0.0.1:9000"
    includes = sorted(args[i + 1] for i, a in enumerate(args) if a == "--include")
    assert includes == ["models/churn/*", "models/fraud/*"]
    # the ledger of manifest digests travels with the versions (aws s3 filters' * spans '/'): sealed loads
    assert fnmatch.fnmatchcase("models/churn/versions.jsonl", "models/churn/*")
    assert args[args.index("--exclude") + 1] == "*"
    assert init["envFrom"] == [{"secretRef": {"name": "models-s3"}}]
    volumes = {v["name"]: v for v in pod["volumes"]}
    init_models = next(m for m in init["volumeMounts"] if m["mountPath"] == "/models")
    server_models = next(m for m in server["volumeMounts"] if m["mountPath"] == "/models")
    assert init_models["name"] == server_models["name"] and "emptyDir" in volumes[init_models["name"]]
    assert server_models["readOnly"] is True and not init_models.get("readOnly", False)
    inner = parse_spec(yaml.safe_load(by_kind(docs)["ConfigMap"]["data"]["shipml.yaml"]))
    assert inner.registry == "/models"
    assert inner.server.workers == 2
    # the registry has neither fraud nor churn's alias production: only the pinned refs resolve
    assert manifests.model_versions == {f"churn:{WEAK}": WEAK, f"churn:{GOOD}": GOOD}


def test_s3_without_endpoint_url_nor_prefix(tmp_path: Path) -> None:
    data = {"endpoints": [{"name": "churn", "models": ["churn"]}],
            "kubernetes": {"models_from": "s3", "s3": {"bucket": "models"}}}
    manifests = generate(parse_spec(data), s3_image="mirror.local/aws-cli:2")
    write_manifests(manifests, tmp_path / "out")
    docs = read_dir(tmp_path / "out")
    validate_strict(docs)
    (init,) = by_kind(docs)["Deployment"]["spec"]["template"]["spec"]["initContainers"]
    assert init["image"] == "mirror.local/aws-cli:2"
    assert init["args"][2] == "s3://models/"
    assert "--endpoint-url" not in init["args"]
    assert init["envFrom"] == [{"secretRef": {"name": "shipml-s3"}}]


def test_one_replica_keeps_its_pod_and_the_budget_says_so(tmp_path: Path) -> None:
    data = {"endpoints": [{"name": "churn", "models": ["churn"]}],
            "kubernetes": {"replicas": 1, "min_replicas": 1, "max_replicas": 1}}
    write_manifests(generate(parse_spec(data)), tmp_path / "out")
    docs = read_dir(tmp_path / "out")
    validate_strict(docs)
    check_policy(docs, parse_spec(data))
    assert by_kind(docs)["PodDisruptionBudget"]["spec"]["minAvailable"] == 1


@pytest.mark.parametrize("spelling", ["absolute", "."])
def test_a_package_directory_is_served_by_name_and_version(tmp_path: Path, churn_registry: Path, spelling: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    package = churn_registry / "registry" / "models" / "churn" / "versions" / WEAK
    if spelling == ".":
        monkeypatch.chdir(package)
    result = k8s(str(package) if spelling == "absolute" else ".", "-o", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    docs = read_dir(tmp_path / "out")
    validate_strict(docs)
    deployment = by_kind(docs)["Deployment"]
    assert deployment["metadata"]["name"] == "shipml-churn"  # named after the model the directory holds
    assert deployment["metadata"]["labels"]["app.kubernetes.io/version"] == WEAK
    inner = parse_spec(yaml.safe_load(by_kind(docs)["ConfigMap"]["data"]["shipml.yaml"]))
    assert [e.models for e in inner.endpoints] == [[f"churn:{WEAK}"]]
    assert inner.registry == "/app/registry"


def test_auth_tokens_come_from_a_secret(tmp_path: Path) -> None:
    data = {"endpoints": [{"name": "churn", "models": ["churn"]}], "auth": {"enabled": True, "metrics_auth": True}}
    spec_path = write_spec(tmp_path / "shipml.yaml", data)
    result = k8s(str(spec_path), "-o", str(tmp_path / "out"), "--namespace", "ml")
    assert result.exit_code == 0, result.output
    assert "kubectl -n ml create secret generic shipml-churn-tokens --from-file=tokens.json=PATH" in result.stderr
    assert "metrics_auth is on" in result.stderr
    docs = read_dir(tmp_path / "out")
    validate_strict(docs)
    check_policy(docs, parse_spec(data), namespace="ml")
    pod = by_kind(docs)["Deployment"]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    inner = parse_spec(yaml.safe_load(by_kind(docs)["ConfigMap"]["data"]["shipml.yaml"]))
    assert inner.auth.enabled and inner.auth.tokens_file is not None
    tokens = Path(inner.auth.tokens_file)
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == str(tokens.parent))
    assert mount["readOnly"] is True
    assert volumes[mount["name"]]["secret"]["secretName"] == "shipml-churn-tokens"
    assert volumes[mount["name"]]["secret"]["items"] == [{"key": "tokens.json", "path": tokens.name}]
    assert "tokens.json" not in by_kind(docs)["ConfigMap"]["data"]


@pytest.mark.parametrize(("given", "expected"), [
    ("churn-server", "churn-server:7"),
    ("localhost:5000/ml/churn-server", "localhost:5000/ml/churn-server:7"),
    ("churn-server:1.2", "churn-server:1.2"),
    (f"churn-server@sha256:{'a' * 64}", f"churn-server@sha256:{'a' * 64}"),
])
def test_image_option_forms(given: str, expected: str) -> None:
    spec = spec_for_refs(["churn"], image={"tag": "7"})
    deployment = generate(spec, image=given).objects["deployment.yaml"]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == expected


@pytest.mark.slow
def test_the_pod_command_serves_what_the_probes_ask(tmp_path: Path, churn_registry: Path) -> None:
    """The Deployment's command and args, run for real with the ConfigMap's spec (on 127.0.0.1, the host
    registry): every probe path answers 200 once ready, and SIGTERM ends it within the grace period."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    spec = spec_for_refs(["churn"], server={"port": port, "drain_delay_s": 0.2, "graceful_timeout_s": 5})
    manifests = generate(spec)
    pod = manifests.objects["deployment.yaml"]["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    inner = yaml.safe_load(manifests.objects["configmap.yaml"]["data"]["shipml.yaml"])
    inner["server"]["host"] = "127.0.0.1"
    inner["registry"] = str(churn_registry / "registry")
    spec_path = tmp_path / "shipml.yaml"
    spec_path.write_text(yaml.safe_dump(inner))
    in_pod = next(a for a in server["args"] if a.endswith(".yaml"))
    argv = [str(Path(sys.executable).parent / server["command"][0]),
            *[str(spec_path) if a == in_pod else a for a in server["args"]]]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        ready = False
        while not ready and time.monotonic() < deadline:
            assert proc.poll() is None, "the server exited during start-up"
            try:
                ready = httpx.get(url + "/readyz", timeout=1).status_code == 200
            except httpx.TransportError:
                time.sleep(0.1)
        assert ready, "the server never became ready"
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert server[probe]["httpGet"]["port"] == "http"
            assert httpx.get(url + server[probe]["httpGet"]["path"], timeout=5).status_code == 200
        annotations = manifests.objects["deployment.yaml"]["spec"]["template"]["metadata"]["annotations"]
        metrics = httpx.get(url + annotations["prometheus.io/path"], timeout=5)
        assert metrics.status_code == 200 and "# TYPE" in metrics.text
    finally:
        proc.terminate()
        try:
            _out, err = proc.communicate(timeout=pod["terminationGracePeriodSeconds"])
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            pytest.fail("the server outlived terminationGracePeriodSeconds after SIGTERM")
    assert proc.returncode == 0, err.decode(errors="replace")


def test_the_strict_validation_is_not_a_formality() -> None:
    manifests = generate(spec_for_refs(["churn"]))
    deployment = manifests.objects["deployment.yaml"]
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["pth"] = "/readyz"
    with pytest.raises(kubernetes_validate.ValidationError, match="'pth' was unexpected"):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)


def test_a_spec_change_changes_the_pod_template(tmp_path: Path) -> None:
    def checksum(port: int) -> str:
        m = generate(spec_for_refs(["churn"], server={"port": port}))
        return str(m.objects["deployment.yaml"]["spec"]["template"]["metadata"]["annotations"]["shipml/spec-sha256"])

    assert checksum(8000) == checksum(8000)
    assert checksum(8000) != checksum(8001)


def test_render_is_what_is_written(tmp_path: Path) -> None:
    manifests: Manifests = generate(spec_for_refs(["churn"]), namespace="team-a")
    write_manifests(manifests, tmp_path / "out")
    for filename, text in manifests.render().items():
        assert (tmp_path / "out" / filename).read_text() == text
    assert manifests.kustomization["namespace"] == "team-a"


# -- the output directory ------------------------------------------------------------------------------------
def test_a_non_empty_output_is_refused_then_replaced_with_force(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = k8s("churn", "-o", str(out))
    assert result.exit_code == 1
    assert "is not empty" in result.stderr and "--force" in result.stderr
    assert [p.name for p in out.iterdir()] == ["notes.txt"]

    (out / "service.yaml").write_text("stale")
    result = k8s("churn", "-o", str(out), "--force", "--image", "churn:2")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == sorted([*FILES, KUSTOMIZATION, "notes.txt"])
    assert (out / "notes.txt").read_text() == "mine"
    assert yaml.safe_load((out / "service.yaml").read_text())["kind"] == "Service"
    docs = read_dir(out)
    docs.pop("notes.txt")
    validate_strict(docs)


def test_an_empty_output_directory_is_used(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    assert k8s("churn", "-o", str(tmp_path / "out")).exit_code == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted([*FILES, KUSTOMIZATION])
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary left behind


def test_an_output_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("x")
    with pytest.raises(ConflictError, match="exists and is not a directory"):
        write_manifests(generate(spec_for_refs(["churn"])), tmp_path / "out")


def test_an_unwritable_output_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ShipmlError, match=r"cannot write the manifests to .*/file/out: File exists: .*/file$"):
        write_manifests(generate(spec_for_refs(["churn"])), tmp_path / "file" / "out")


# -- bad inputs ----------------------------------------------------------------------------------------------
BAD_SPECS = [
    ({"kubernetes": {"min_replicas": 5, "max_replicas": 3}}, "min_replicas 5 is above max_replicas 3"),
    ({"kubernetes": {"replicas": 12}}, "kubernetes.replicas 12 is outside min_replicas..max_replicas (2..10)"),
    ({"server": {"port": 80}}, "server.port 80 needs root"),
    ({"kubernetes": {"resources": {"cpu_request": "half"}}}, "'half' is not a resource quantity"),
    ({"kubernetes": {"resources": {"memory_request": "2Gi", "memory_limit": "1Gi"}}},
     "memory_request 2Gi is above memory_limit 1Gi"),
    ({"kubernetes": {"resources": {"cpu_request": "3", "cpu_limit": "2500m"}}}, "cpu_request 3 is above"),
    ({"kubernetes": {"models_from": "s3"}}, "models_from: s3 needs an s3 section"),
    ({"kubernetes": {"models_from": "s3", "s3": {"bucket": "Bad_Bucket"}}}, "not a valid bucket name"),
    ({"kubernetes": {"models_from": "s3", "s3": {"bucket": "b12", "endpoint_url": "minio:9000"}}},
     "is not an http:// or https:// URL"),
    ({"kubernetes": {"models_from": "s3", "s3": {"bucket": "b12", "secret_name": "S3_Creds"}}},
     "not a valid Secret name"),
    ({"kubernetes": {"namespace": "Prod"}}, "invalid Kubernetes namespace 'Prod'"),
    ({"kubernetes": {"bogus": 1}}, "kubernetes.bogus: Extra inputs are not permitted"),
    ({"image": {"name": "Churn Server"}},
     "no valid image name comes from image.name (invalid image name 'Churn Server'"),
    ({"image": {"tag": "-x"}}, "invalid image tag '-x'"),
    ({"endpoints": [{"name": "churn-", "models": ["churn"]}]},
     "cannot make a Kubernetes name from endpoint 'churn-'"),
    ({"endpoints": [{"name": "pkg", "models": ["./no-such-pkg"]}]}, "/no-such-pkg is not a package directory"),
    ({"auth": {"enabled": True, "tokens_file": "tokens.json"}}, "auth.tokens_file 'tokens.json' cannot be mounted"),
    ({"auth": {"enabled": True, "tokens_file": "/etc/shipml/tokens.json"}}, "in a directory of its own"),
    ({"auth": {"enabled": True, "tokens_file": "/tmp/x/tokens.json"}}, "in a directory of its own"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD_SPECS)
def test_bad_specs_are_refused_by_name(tmp_path: Path, overrides: dict[str, Any], message: str) -> None:
    data: dict[str, Any] = {"endpoints": [{"name": "churn", "models": ["churn"]}], **overrides}
    spec_path = write_spec(tmp_path / "shipml.yaml", data)
    result = k8s(str(spec_path), "-o", str(tmp_path / "out"))
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: ")
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--name", "Churn"], "invalid Kubernetes name 'Churn'"),
    (["--name", "x" * 64], "at most 63 characters"),
    (["--namespace", "-prod"], "invalid Kubernetes namespace '-prod'"),
    (["--image", "churn server"], "invalid image reference 'churn server'"),
    (["--image", "Churn:1"], "invalid image reference 'Churn:1'"),
    (["--s3-image", ""], "invalid init container image reference ''"),
])
def test_bad_options_are_refused_by_name(tmp_path: Path, args: list[str], message: str) -> None:
    result = k8s("churn", "-o", str(tmp_path / "out"), *args)
    assert result.exit_code == 1, result.output
    assert message in result.stderr
    assert not (tmp_path / "out").exists()


def test_an_unmappable_endpoint_works_with_a_name(tmp_path: Path) -> None:
    spec = spec_for_refs(["churn"], endpoints=[{"name": "Churn_", "models": ["churn"]}])
    with pytest.raises(InvalidNameError, match="give one with --name"):
        generate(spec)
    with pytest.raises(SpecError, match=r"no valid image name comes from endpoint 'Churn_' .* give --image"):
        generate(spec, name="churn")
    write_manifests(generate(spec, name="churn", image="churn:1"), tmp_path / "out")
    validate_strict(read_dir(tmp_path / "out"))


def test_bad_spec_files_and_arguments(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text("endpoints: [\n")
    result = k8s(str(tmp_path / "broken.yaml"), "-o", str(tmp_path / "out"))
    assert result.exit_code == 1 and "broken.yaml is not valid YAML" in result.stderr
    result = k8s(str(tmp_path / "missing.yaml"), "-o", str(tmp_path / "out"))
    assert result.exit_code == 1 and "no deployment spec at" in result.stderr
    result = k8s("not a ref!", "-o", str(tmp_path / "out"))
    assert result.exit_code == 1 and "invalid model name" in result.stderr
    write_spec(tmp_path / "s.yaml", {"endpoints": [{"name": "churn", "models": ["churn"]}]})
    result = k8s(str(tmp_path / "s.yaml"), "churn", "-o", str(tmp_path / "out"))
    assert result.exit_code == 2 and "not both" in result.stderr
    result = k8s("churn")
    assert result.exit_code == 2 and "-o" in result.stderr
    assert not (tmp_path / "out").exists()


def test_release_refs_naming_a_package_directory_are_served_by_name_and_version(churn_registry: Path) -> None:
    package = churn_registry / "registry" / "models" / "churn" / "versions" / GOOD
    spec = parse_spec({"endpoints": [{"name": "churn", "models": [f"churn:{WEAK}"],
                                      "ab": {"variants": {"a": f"churn:{WEAK}", "b": str(package)}},
                                      "shadow": [{"model": str(package)}], "fallback": [str(package)]}]})
    assert pod_refs(spec) == {f"churn:{WEAK}": f"churn:{WEAK}", str(package): f"churn:{GOOD}"}
    inner = pod_spec(spec).endpoints[0]
    assert inner.ab is not None and inner.ab.variants == {"a": f"churn:{WEAK}", "b": f"churn:{GOOD}"}
    assert inner.shadow[0].model == f"churn:{GOOD}" and inner.fallback == [f"churn:{GOOD}"]
