"""``kubernetes.s3.layout: registry``: the generated init container fetches the served models from an S3
registry with ``shipml registry copy``. Its command is run here for real (the pod's /models mapped to a
directory), against a moto server on 127.0.0.1, and what it fetched is a verified local registry."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

import shipml
from shipml.deploy.kubernetes import S3_REGISTRY, generate, write_manifests
from shipml.spec import parse_spec
from tests.deploy.test_kubernetes import by_kind, check_policy, read_dir, validate_strict
from tests.s3_support import S3Server
from tests.unit.registry_support import build_tiny_registry, tiny_model


def spec_data(bucket: str, endpoint: str) -> dict[str, Any]:
    return {"endpoints": [{"name": "m", "models": ["m@production"]}, {"name": "n", "models": ["n:1.0.0"]}],
            "kubernetes": {"models_from": "s3", "s3": {"bucket": bucket, "prefix": "/team/registry/",
                                                       "endpoint_url": endpoint, "secret_name": "models-s3",
                                                       "layout": "registry"}}}


@pytest.mark.slow
def test_the_init_container_fetches_the_served_models_from_an_s3_registry(s3: S3Server, tmp_path: Path) -> None:
    bucket = s3.new_bucket()
    source = shipml.Registry(f"s3://{bucket}/team/registry")
    build_tiny_registry(source)
    model, X = tiny_model(3)
    shipml.save_model(model, "n", sample=X, registry=source)
    shipml.save_model(model, "other", sample=X, registry=source)  # not served: not fetched

    spec = parse_spec(spec_data(bucket, s3.url))
    write_manifests(generate(spec), tmp_path / "out")
    docs = read_dir(tmp_path / "out")
    validate_strict(docs)
    check_policy(docs, spec)
    pod = by_kind(docs)["Deployment"]["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    (server,) = pod["containers"]
    assert init["image"] == server["image"] and init["command"] == ["shipml"]
    assert init["args"] == ["registry", "copy", f"s3://{bucket}/team/registry", S3_REGISTRY,
                            "--model", "m", "--model", "n"]
    env = {e["name"]: e["value"] for e in init["env"]}
    assert env["AWS_ENDPOINT_URL"] == s3.url and init["envFrom"] == [{"secretRef": {"name": "models-s3"}}]
    assert yaml.safe_load(by_kind(docs)["ConfigMap"]["data"]["shipml.yaml"])["registry"] == S3_REGISTRY

    models = tmp_path / "models"  # the pod's emptyDir
    pod_env = {k: v.replace(S3_REGISTRY, str(models)) for k, v in env.items() if k != "HOME"}
    done = subprocess.run([sys.executable, "-m", "shipml.cli",
                           *[str(models) if a == S3_REGISTRY else a for a in init["args"]]],
                          env={**os.environ, **pod_env}, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    fetched = shipml.Registry(models)
    assert sorted(m.name for m in fetched.models()) == ["m", "n"]
    assert fetched.aliases("m") == {"production": "1.0.0"}
    assert [m.to_dict() for m in fetched.alias_history("m")] == [m.to_dict() for m in source.alias_history("m")]
    assert shipml.load_model("m@production", registry=fetched).version == "1.0.0"  # sealed and golden-checked
    assert shipml.load_model("n:1.0.0", registry=fetched).version == "1.0.0"


def test_the_image_of_a_registry_layout_has_shipml_s3(tmp_path: Path) -> None:
    from shipml.deploy.container import spec_extras

    assert spec_extras(parse_spec(spec_data("models", "http://127.0.0.1:9000"))) == ["s3"]
    mirror = spec_data("models", "http://127.0.0.1:9000")
    mirror["kubernetes"]["s3"]["layout"] = "mirror"
    assert spec_extras(parse_spec(mirror)) == []
