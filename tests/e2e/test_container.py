"""`shipml build` with real podman: build the image from a spec, run it on 127.0.0.1, and compare its answers
with the same model in this process.

The container uses the host network (MACHINE-NOTES: never the default 10.88.x bridge) with the spec's port set
to a free port of 127.0.0.1's host, so nothing listens beyond what the server itself binds.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import lightgbm as lgb
import numpy as np
import orjson
import pandas as pd
import pytest
import yaml

import shipml
from tests.e2e import podman
from tests.e2e.server_process import free_port
from tests.unit.registry_support import reseal

# The first test also pays for the base image (~1 min, once per machine) and the build (~1-2 min).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="session")
def podman_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    if not podman.available():
        if os.environ.get("CI") == "true":
            pytest.fail("podman is not on PATH: CI must run the container tests (.ci/run installs podman)")
        pytest.skip("podman is not installed")
    return podman.environment(tmp_path_factory.mktemp("podman"))


@pytest.fixture(scope="session")
def base_image(podman_env: dict[str, str]) -> str:
    return podman.ensure_base_image(podman_env)


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    return pd.DataFrame(rng.normal(size=(300, 4)), columns=["a", "b", "c", "d"])


@pytest.fixture(scope="module")
def registry_dir(tmp_path_factory: pytest.TempPathFactory, data: pd.DataFrame) -> Path:
    root = tmp_path_factory.mktemp("registry")
    y = (data["a"] - data["b"] > 0).astype(int)
    model = lgb.LGBMClassifier(n_estimators=15, num_leaves=7, verbose=-1).fit(data, y)
    mv = shipml.save_model(model, "clf", sample=data, registry=root)
    shipml.Registry(root).set_alias("clf", "production", mv.version)
    return root


@dataclass(frozen=True)
class Image:
    ref: str
    port: int
    build_s: float
    size_mb: float
    inspect: dict[str, Any]


@pytest.fixture(scope="module")
def image(podman_env: dict[str, str], base_image: str, registry_dir: Path,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Image]:
    port = free_port()
    spec_path = tmp_path_factory.mktemp("spec") / "shipml.yaml"
    spec_path.write_text(yaml.safe_dump({
        "endpoints": [{"name": "clf", "models": ["clf@production"]}],
        "server": {"port": port, "drain_delay_s": 0.5, "graceful_timeout_s": 5},
    }))
    ref = f"localhost/shipml-e2e-clf:{uuid.uuid4().hex[:10]}"
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "shipml.cli", "--registry", str(registry_dir), "build", str(spec_path),
         "--base", base_image, "--tag", ref, "--build-network", "host", "--timeout", "900",
         "--build-volume", f"{podman.HOST_CA}:{podman.HOST_CA}:ro"],
        env=podman_env, capture_output=True, text=True, timeout=960, check=False)
    build_s = time.monotonic() - started
    assert done.returncode == 0, f"shipml build failed:\n{done.stderr[-4000:]}"
    assert done.stdout.strip() == ref
    assert "STEP" in done.stderr  # the engine's output is streamed through
    try:
        info = orjson.loads(podman.podman(podman_env, "image", "inspect", ref).stdout)[0]
        size_mb = info["Size"] / 1e6
        print(f"\nshipml build: {build_s:.1f}s, image {ref} {size_mb:.0f} MB")
        yield Image(ref, port, build_s, size_mb, info)
    finally:
        podman.podman(podman_env, "rmi", "--force", ref, check=False)


def wait_ready(env: dict[str, str], name: str, url: str, timeout: float = 120) -> httpx.Response:
    """/readyz until 200, or until it says the models failed; the container must keep running meanwhile."""
    deadline = time.monotonic() + timeout
    last: httpx.Response | None = None
    while time.monotonic() < deadline:
        running = podman.podman(env, "inspect", "--format", "{{.State.Running}}", name).stdout.strip()
        if running != "true":
            logs = podman.podman(env, "logs", name, check=False)
            raise AssertionError(f"container exited during start-up:\n{logs.stdout[-3000:]}{logs.stderr[-3000:]}")
        try:
            last = httpx.get(url + "/readyz", timeout=2)
            if last.status_code == 200 or last.json().get("status") == "failed":
                return last
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise AssertionError(f"container never became ready; last answer: {last.text if last else None}")


@pytest.fixture
def container_name(podman_env: dict[str, str]) -> Iterator[str]:
    name = f"shipml-e2e-{uuid.uuid4().hex[:10]}"
    yield name
    podman.podman(podman_env, "rm", "--force", "--time", "0", name, check=False)


def test_image_metadata(image: Image) -> None:
    config = image.inspect["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["shipml", "serve", "--spec", "/app/shipml.yaml"]
    assert config["StopSignal"] == "SIGTERM"
    assert f"{image.port}/tcp" in config["ExposedPorts"]
    health = image.inspect["Healthcheck"]["Test"]
    assert health[:3] == ["CMD", "python", "-c"] and f"127.0.0.1:{image.port}/healthz" in health[3]
    labels = image.inspect["Labels"]
    assert labels["io.shipml.models"] == "clf:1.0.0"
    assert labels["org.opencontainers.image.description"] == "shipml serving clf:1.0.0"


def test_container_serves_what_the_model_predicts_in_process(
        image: Image, podman_env: dict[str, str], container_name: str, registry_dir: Path,
        data: pd.DataFrame) -> None:
    podman.podman(podman_env, "run", "--detach", "--init", "--network", "host", "--name", container_name, image.ref)
    url = f"http://127.0.0.1:{image.port}"
    ready = wait_ready(podman_env, container_name, url)
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"status": "ready", "models": {"clf": {"versions": ["1.0.0"], "errors": []}}}

    model = shipml.load_model("clf@production", registry=registry_dir)
    rows = data.sample(40, random_state=1)
    body = httpx.post(url + "/predict", json={"instances": rows.to_dict("records")}, timeout=10).json()
    assert body["predictions"] == model.predict(rows).tolist()
    np.testing.assert_allclose(body["probabilities"], model.predict_proba(rows), rtol=1e-12, atol=0)
    assert body["model"] == "clf" and body["version"] == "1.0.0"
    columnar = httpx.post(url + "/models/clf/predict", json={"inputs": rows.to_dict("list")}, timeout=10).json()
    assert columnar["predictions"] == body["predictions"]

    # The golden check ran in the container: readiness waits for it, and the server says so once it passed.
    # No environment warning either: the image holds exactly the versions the model was saved with.
    logs = podman.podman(podman_env, "logs", container_name)
    server_log = logs.stdout + logs.stderr
    assert "model clf:1.0.0 ready on endpoint clf" in server_log
    assert "saved with" not in server_log

    # The image's own HEALTHCHECK passes, run inside the container.
    assert podman.podman(podman_env, "healthcheck", "run", container_name, check=False).returncode == 0
    # Non-root, and the models are read-only for the server.
    probe = podman.podman(podman_env, "exec", container_name, "python", "-c",
                          "import os; print(os.getuid(), os.getgid());"
                          " open('/app/registry/models/clf/versions/1.0.0/golden.json', 'a')", check=False)
    assert probe.stdout.split() == ["10001", "10001"]
    assert probe.returncode != 0 and "PermissionError" in probe.stderr
    # No pip, no compiler in the final image.
    tools = podman.podman(podman_env, "exec", container_name, "python", "-c",
                          "import shutil, importlib.util; print([t for t in ('gcc', 'cc', 'make', 'pip', 'pip3')"
                          " if shutil.which(t) and '/opt/venv' in shutil.which(t)],"
                          " [t for t in ('gcc', 'cc', 'make') if shutil.which(t)], importlib.util.find_spec('pip'))")
    assert tools.stdout.split() == ["[]", "[]", "None"]

    started = time.monotonic()
    podman.podman(podman_env, "stop", "--time", "5", container_name, timeout=30)
    stop_s = time.monotonic() - started
    state = podman.podman(podman_env, "inspect", "--format", "{{.State.ExitCode}}", container_name).stdout.strip()
    assert state == "0", f"exit code {state} after SIGTERM ({stop_s:.1f}s)"
    logs = podman.podman(podman_env, "logs", container_name)
    assert "draining" in logs.stdout + logs.stderr


def test_container_that_fails_its_golden_check_never_becomes_ready(
        image: Image, podman_env: dict[str, str], container_name: str, registry_dir: Path,
        tmp_path: Path) -> None:
    """The same image over a registry whose golden outputs were changed (and re-hashed): the check inside the
    container notices and readiness says why."""
    registry = tmp_path / "tampered"
    shutil.copytree(registry_dir / "models" / "clf", registry / "models" / "clf",
                    ignore=shutil.ignore_patterns(".lock", "history.jsonl"))
    version_dir = registry / "models" / "clf" / "versions" / "1.0.0"
    golden = orjson.loads((version_dir / "golden.json").read_bytes())
    golden["predictions"] = [1 - p for p in golden["predictions"]]
    golden["probabilities"] = [list(reversed(p)) for p in golden["probabilities"]]
    raw = orjson.dumps(golden)
    (version_dir / "golden.json").write_bytes(raw)
    manifest = orjson.loads((version_dir / "shipml.json").read_bytes())
    for artifact in manifest["artifacts"]:
        if artifact["path"] == "golden.json":
            artifact.update(sha256=hashlib.sha256(raw).hexdigest(), size=len(raw))
    (version_dir / "shipml.json").write_bytes(orjson.dumps(manifest))
    reseal(shipml.Registry(registry), "clf", "1.0.0")  # the edit is accepted on purpose: the golden check decides
    for path in [registry, *registry.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)

    podman.podman(podman_env, "run", "--detach", "--init", "--network", "host", "--name", container_name,
                  "--volume", f"{registry}:/app/registry:ro", image.ref)
    answer = wait_ready(podman_env, container_name, f"http://127.0.0.1:{image.port}")
    assert answer.status_code == 503
    errors = answer.json()["models"]["clf"]["errors"]
    assert len(errors) == 1 and "does not reproduce its golden sample" in errors[0], errors
