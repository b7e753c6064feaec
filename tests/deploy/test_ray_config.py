"""`shipml ray` without a cluster: the Serve config (checked with Ray's own schema), the application builder as
Serve calls it, the files written, the CLI, and one replica driven in-process through its ASGI interface."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import yaml
from click.testing import CliRunner, Result

import shipml
from shipml.cli import cli
from shipml.deploy.ray_serve import (
    CONFIG_FILE,
    DEPLOYMENT_NAME,
    IMPORT_PATH,
    SPEC_FILE,
    ServeAppOptions,
    ShipmlReplica,
    check_models,
    deployment_options,
    parse_args,
    pinned_spec,
    serve_config,
    wait_until_running,
    write_serve_app,
)
from shipml.errors import ConflictError, NotFoundError, ServiceUnavailable, SpecError
from shipml.spec import DeploymentSpec, load_spec, parse_spec
from tests.cli.gate_models import GOOD, churn_frame

pytestmark = [
    # Ray Serve's own config models pass extra keywords to pydantic's Field when ray.serve is imported (ray 2.60).
    pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.serve._private.config"),
]


@pytest.fixture
def registry_dir(churn_registry: Path) -> Path:
    return churn_registry / "registry"


def make_spec(registry: Path, **overrides: Any) -> DeploymentSpec:
    data: dict[str, Any] = {"registry": str(registry), "endpoints": [{"name": "churn", "models": ["churn"]}],
                            "server": {"host": "127.0.0.5", "port": 8123, "graceful_timeout_s": 12}}
    data.update(overrides)
    return parse_spec(data)


def ray_schema() -> Any:
    return pytest.importorskip("ray.serve.schema").ServeDeploySchema


# -- the config ------------------------------------------------------------------------------------------------
def test_fixed_replicas_config_is_what_rays_schema_reads(registry_dir: Path) -> None:
    spec = make_spec(registry_dir, ray={"num_replicas": 3, "num_cpus": 0.5})
    options = ServeAppOptions(name="churn-app", route_prefix="/churn", proxy_location="HeadOnly")
    config = serve_config(spec, options)
    parsed = ray_schema().model_validate(config)
    # pydantic ignores unknown keys in Serve's schema: a typo would vanish, so the round trip must be exact
    assert parsed.model_dump(mode="json", exclude_unset=True) == config
    assert parsed.http_options.host == "127.0.0.5" and parsed.http_options.port == 8123
    assert parsed.proxy_location.value == "HeadOnly"
    app = parsed.applications[0]
    assert (app.name, app.route_prefix, app.import_path) == ("churn-app", "/churn", IMPORT_PATH)
    deployment = app.deployments[0]
    assert deployment.name == DEPLOYMENT_NAME and deployment.num_replicas == 3
    assert deployment.ray_actor_options.num_cpus == 0.5
    assert deployment.graceful_shutdown_timeout_s == 12
    assert "autoscaling_config" not in config["applications"][0]["deployments"][0]
    assert parse_spec(app.args["spec"]) == spec and app.args["startup_timeout_s"] == 300


def test_autoscaling_config(registry_dir: Path) -> None:
    spec = make_spec(registry_dir, ray={"min_replicas": 0, "max_replicas": 6, "target_ongoing_requests": 40},
                     limits={"max_queue": 50})
    config = serve_config(spec)
    parsed = ray_schema().model_validate(config)
    assert parsed.model_dump(mode="json", exclude_unset=True) == config
    deployment = parsed.applications[0].deployments[0]
    scaling = deployment.autoscaling_config
    assert (scaling["min_replicas"], scaling["max_replicas"], scaling["target_ongoing_requests"]) == (0, 6, 40)
    assert "num_replicas" not in config["applications"][0]["deployments"][0]
    assert deployment.max_ongoing_requests == 80  # twice the target: above the queue bound of 50
    assert parsed.proxy_location.value == "EveryNode" and parsed.applications[0].route_prefix == "/"


def test_max_ongoing_requests_follows_the_queue_bound(registry_dir: Path) -> None:
    assert deployment_options(make_spec(registry_dir))["max_ongoing_requests"] == 2048


def test_pinned_spec_makes_every_path_absolute(registry_dir: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    package = shipml.Registry(registry_dir).get(f"churn:{GOOD}").path
    monkeypatch.chdir(package.parent)
    spec = parse_spec({"endpoints": [{"name": "a", "models": ["churn"]},
                                     {"name": "b", "models": [f"./{package.name}"]}],
                       "auth": {"enabled": True, "tokens_file": "tokens.json"}})
    pinned = pinned_spec(spec)
    assert pinned.registry == str(tmp_path / "home-registry")  # $SHIPML_HOME here, not on the replica
    assert pinned.endpoints[1].models == [str(package)]
    assert pinned.auth.tokens_file == str(package.parent / "tokens.json")
    assert pinned_spec(spec, registry_dir).registry == str(registry_dir)
    assert pinned_spec(make_spec(registry_dir), tmp_path).registry == str(registry_dir)  # the spec's wins


@pytest.mark.parametrize(("kwargs", "problem"), [
    ({"name": ""}, "application name"),
    ({"name": "a/b"}, "application name"),
    ({"route_prefix": "churn"}, "must start with '/'"),
    ({"route_prefix": "/churn/"}, "must not end with '/'"),
    ({"route_prefix": "/{x}"}, "braces"),
    ({"proxy_location": "Everywhere"}, "EveryNode, HeadOnly, Disabled"),
    ({"startup_timeout_s": 0}, "startup timeout"),
    ({"startup_timeout_s": float("nan")}, "startup timeout"),
])
def test_bad_options_are_refused(kwargs: dict[str, Any], problem: str) -> None:
    with pytest.raises(SpecError, match=problem):
        ServeAppOptions(**kwargs)


def test_check_models_names_what_is_missing(registry_dir: Path) -> None:
    assert check_models(make_spec(registry_dir)) == {"churn": GOOD}
    spec = make_spec(registry_dir, endpoints=[{"name": "a", "models": ["churn@production", "nope", "/no/pkg"]}])
    with pytest.raises(NotFoundError) as info:
        check_models(spec)
    message = str(info.value)
    assert "churn@production" in message and "alias 'production'" in message
    assert "'nope'" in message and "/no/pkg: no model package" in message


# -- the application builder -------------------------------------------------------------------------------
def test_builder_as_serve_calls_it(registry_dir: Path) -> None:
    api = pytest.importorskip("ray.serve._private.api")  # how `serve run` / `serve deploy` call an import path
    utils = pytest.importorskip("ray._common.utils")
    spec = make_spec(registry_dir, ray={"num_replicas": 2, "num_cpus": 0.25})
    config = serve_config(spec)
    app_config = config["applications"][0]
    application = api.call_user_app_builder_with_args_if_necessary(utils.import_attr(app_config["import_path"]),
                                                                   app_config["args"])
    deployment = application._bound_deployment
    assert deployment.name == DEPLOYMENT_NAME
    assert deployment.num_replicas == 2 and deployment.ray_actor_options == {"num_cpus": 0.25}
    assert deployment.max_ongoing_requests == app_config["deployments"][0]["max_ongoing_requests"]


def test_builder_args_errors_name_the_problem(registry_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"args are invalid: spec: Field required"):
        parse_args({})
    with pytest.raises(SpecError, match=r"specs: Extra inputs are not permitted"):
        parse_args({"spec": {}, "specs": 1})
    with pytest.raises(SpecError, match=r"startup_timeout_s: Input should be greater than 0"):
        parse_args({"spec": "x.yaml", "startup_timeout_s": -1})
    with pytest.raises(SpecError, match=r"args.spec is invalid: endpoints: Field required"):
        parse_args({"spec": {"registry": str(registry_dir)}})
    with pytest.raises(SpecError, match="no deployment spec at"):
        parse_args({"spec": str(tmp_path / "missing.yaml")})
    path = tmp_path / "shipml.yaml"
    path.write_text(make_spec(registry_dir).to_yaml())
    assert parse_args({"spec": str(path), "startup_timeout_s": 9}) == (make_spec(registry_dir), 9)


class StatusSource:
    """Answers ``status()`` as ``ray.serve`` does, from Ray's own status types, one answer after another."""

    def __init__(self, *statuses: Any) -> None:
        self.statuses = list(statuses)

    def status(self) -> Any:
        return self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]


def serve_status(app_status: str, deployment_message: str = "", app_message: str = "") -> Any:
    schema = pytest.importorskip("ray.serve.schema")
    deployment = schema.DeploymentStatusOverview(status="UPDATING", status_trigger="CONFIG_UPDATE_STARTED",
                                                 replica_states={}, message=deployment_message)
    app = schema.ApplicationStatusOverview(status=schema.ApplicationStatus(app_status), message=app_message,
                                           last_deployed_time_s=0.0, deployments={"shipml": deployment})
    return schema.ServeStatus(applications={"m": app})


def test_wait_until_running_reports_what_serve_says() -> None:
    wait_until_running(StatusSource(serve_status("DEPLOYING"), serve_status("RUNNING")), "m", 5)
    traceback = "The deployment failed to start 3 times in a row.\nTraceback (most recent call last):\n  File x\n" \
                "shipml.errors.ServiceUnavailable: models failed to load: m@prod: no alias 'prod'\n"
    failed = StatusSource(serve_status("DEPLOY_FAILED", traceback, "Failed to update the deployments ['shipml']."))
    with pytest.raises(ServiceUnavailable) as info:
        wait_until_running(failed, "m", 5)
    assert str(info.value) == (
        "Ray Serve application m failed to deploy: Failed to update the deployments ['shipml']. deployment shipml: "
        "The deployment failed to start 3 times in a row. ... shipml.errors.ServiceUnavailable: models failed to "
        "load: m@prod: no alias 'prod'")
    stuck = StatusSource(serve_status("DEPLOYING", "1 replica has taken more than 30s to be scheduled."))
    with pytest.raises(ServiceUnavailable, match=r"not running after 0.2s \(status DEPLOYING\): deployment shipml: "
                                                 r"1 replica has taken more than 30s to be scheduled"):
        wait_until_running(stuck, "m", 0.2)
    with pytest.raises(ServiceUnavailable, match=r"not running after 0.2s \(status NOT_STARTED\)$"):
        wait_until_running(StatusSource(pytest.importorskip("ray.serve.schema").ServeStatus()), "m", 0.2)


# -- files -------------------------------------------------------------------------------------------------
def test_write_serve_app_and_refuse_a_non_empty_directory(registry_dir: Path, tmp_path: Path) -> None:
    spec = make_spec(registry_dir)
    out = tmp_path / "out"
    files = write_serve_app(spec, out, ServeAppOptions(route_prefix="/churn"))
    assert sorted(p.name for p in out.iterdir()) == [CONFIG_FILE, SPEC_FILE]
    assert files.url == "http://127.0.0.5:8123/churn"
    config = yaml.safe_load(files.config.read_text())
    assert config == serve_config(spec, ServeAppOptions(route_prefix="/churn"))
    assert load_spec(files.spec) == spec == parse_spec(config["applications"][0]["args"]["spec"])
    with pytest.raises(ConflictError, match="is not empty: choose another, or pass --force"):
        write_serve_app(spec, out)
    (out / "notes.txt").write_text("mine")
    write_serve_app(make_spec(registry_dir, ray={"num_replicas": 5}), out, force=True)
    assert (out / "notes.txt").read_text() == "mine"
    assert yaml.safe_load(files.config.read_text())["applications"][0]["deployments"][0]["num_replicas"] == 5
    (tmp_path / "file").write_text("")
    with pytest.raises(ConflictError, match="is not a directory"):
        write_serve_app(spec, tmp_path / "file", force=True)


# -- CLI ---------------------------------------------------------------------------------------------------
def shipml_cli(registry: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--registry", str(registry), *args], catch_exceptions=False)


def test_cli_from_refs(registry_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = shipml_cli(registry_dir, "--json", "ray", f"churn:{GOOD}", "-o", str(out), "--route-prefix", "/m",
                        "--name", "m")
    assert result.exit_code == 0, result.output
    answer = orjson.loads(result.stdout)
    assert answer["model_versions"] == {f"churn:{GOOD}": GOOD}
    assert answer["url"] == "http://127.0.0.1:8000/m" and answer["deployed"] is False
    assert answer["registry"] == str(registry_dir)
    config = ray_schema().model_validate(yaml.safe_load((out / CONFIG_FILE).read_text()))
    assert [a.name for a in config.applications] == ["m"]
    assert load_spec(out / SPEC_FILE).endpoints[0].models == [f"churn:{GOOD}"]


def test_cli_from_a_spec_file(registry_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "shipml.yaml"
    path.write_text(make_spec(registry_dir, ray={"num_replicas": 2}).to_yaml())
    result = shipml_cli(registry_dir, "ray", str(path), "-o", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [str(tmp_path / "out" / CONFIG_FILE), str(tmp_path / "out" / SPEC_FILE)]
    assert "serve run" in result.stderr
    again = shipml_cli(registry_dir, "ray", str(path), "-o", str(tmp_path / "out"))
    assert again.exit_code == 1 and "is not empty" in again.stderr


@pytest.mark.parametrize(("args", "problem"), [
    (["churn", "--deploy"], "--deploy needs --address"),
    (["churn", "--address", "127.0.0.1:6379"], "--address is only used with --deploy"),
    (["spec.yaml", "churn"], "give one spec file, or model REFS, not both"),
    (["churn", "--proxy-location", "Nowhere"], "'Nowhere' is not one of"),
])
def test_cli_usage_errors(registry_dir: Path, tmp_path: Path, args: list[str], problem: str) -> None:
    result = shipml_cli(registry_dir, "ray", *args, "-o", str(tmp_path / "out"))
    assert result.exit_code == 2 and problem in result.stderr
    assert not (tmp_path / "out").exists()


def test_cli_errors_name_the_problem(registry_dir: Path, tmp_path: Path) -> None:
    missing = shipml_cli(registry_dir, "ray", "nope", "-o", str(tmp_path / "a"))
    assert missing.exit_code == 1 and "no model named 'nope'" in missing.stderr
    assert not (tmp_path / "a").exists()
    unchecked = shipml_cli(registry_dir, "ray", "nope", "-o", str(tmp_path / "b"), "--no-check")
    assert unchecked.exit_code == 0 and (tmp_path / "b" / CONFIG_FILE).is_file()
    prefix = shipml_cli(registry_dir, "ray", "churn", "-o", str(tmp_path / "c"), "--route-prefix", "x")
    assert prefix.exit_code == 1 and "route prefix 'x' must start with '/'" in prefix.stderr


def test_cli_help_says_where_models_come_from() -> None:
    result = CliRunner().invoke(cli, ["ray", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "registry named in the spec" in text and "every node" in text.lower()


# -- one replica, in-process ---------------------------------------------------------------------------------
@pytest.fixture
def restore_logging() -> Iterator[None]:
    """The replica sets up shipml's loggers as `shipml serve` does; undo it for the other tests."""
    saved = {name: (logging.getLogger(name).handlers[:], logging.getLogger(name).propagate,
                    logging.getLogger(name).level) for name in ("shipml", "shipml.access")}
    yield
    for name, (handlers, propagate, level) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.propagate = propagate
        logger.setLevel(level)


class Lifespan:
    """The ASGI lifespan protocol, driven as Serve's wrapper (uvicorn's LifespanOn) drives it."""

    def __init__(self, asgi: Any) -> None:
        self.asgi = asgi
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        self.task = asyncio.get_running_loop().create_task(
            self.asgi({"type": "lifespan"}, self.inbox.get, self.outbox.put))
        await self.inbox.put({"type": "lifespan.startup"})
        assert (await asyncio.wait_for(self.outbox.get(), 10))["type"] == "lifespan.startup.complete"

    async def shutdown(self) -> None:
        await self.inbox.put({"type": "lifespan.shutdown"})
        assert (await asyncio.wait_for(self.outbox.get(), 10))["type"] == "lifespan.shutdown.complete"
        assert self.task is not None
        await asyncio.wait_for(self.task, 10)


@pytest.mark.usefixtures("restore_logging")
def test_replica_serves_under_the_route_prefix(registry_dir: Path) -> None:
    spec = make_spec(registry_dir)
    model = shipml.load_model("churn", registry=registry_dir)
    rows, _ = churn_frame(12, seed=5)

    async def scenario() -> None:
        replica = ShipmlReplica(spec.model_dump(mode="json"), startup_timeout_s=60)
        asgi = await replica.__serve_build_asgi_app__()  # loads the models: the replica is ready once built
        replica.check_health()
        lifespan = Lifespan(asgi)
        await lifespan.startup()  # what Serve runs next: must not load the models again
        assert len(replica.shipml_app.endpoints["churn"].runners) == 1
        transport = httpx.ASGITransport(app=asgi, root_path="/ml")  # path "/ml/...", root_path "/ml": as Serve
        async with httpx.AsyncClient(transport=transport, base_url="http://serve") as client:
            ready = await client.get("/ml/readyz")
            assert ready.status_code == 200 and ready.json()["status"] == "ready"
            r = await client.post("/ml/predict", json={"instances": rows.to_dict("records")},
                                  headers={"x-request-id": "from-the-proxy"})
            assert r.status_code == 200 and "x-request-id" not in r.headers  # the proxy adds it once
            body = r.json()
            assert body["predictions"] == model.predict(rows).tolist() and body["request_id"] == "from-the-proxy"
            np.testing.assert_allclose(body["probabilities"], model.predict_proba(rows), rtol=1e-9)
            v1 = await client.post("/ml/v1/models/churn:predict", json={"instances": rows.to_dict("records")})
            assert v1.json() == {"predictions": model.predict(rows).tolist()} and "x-request-id" in v1.headers
            assert (await client.get("/ml/models/churn/predict")).status_code == 405
            assert (await client.get("/ml/nothing")).status_code == 404
            assert "shipml_requests_total" in (await client.get("/ml/metrics")).text
        await lifespan.shutdown()
        with pytest.raises(ServiceUnavailable, match="shutting down"):
            replica.check_health()

    asyncio.run(scenario())


@pytest.mark.usefixtures("restore_logging")
def test_replica_with_a_model_that_fails_to_load_never_starts(registry_dir: Path) -> None:
    spec = make_spec(registry_dir, endpoints=[{"name": "churn", "models": ["churn@production"]}])

    async def scenario() -> None:
        replica = ShipmlReplica(spec.model_dump(mode="json"), startup_timeout_s=60)
        with pytest.raises(ServiceUnavailable, match=r"models failed to load: model churn@production: no such alias"):
            await replica.__serve_build_asgi_app__()
        with pytest.raises(ServiceUnavailable, match="churn@production"):
            replica.check_health()

    asyncio.run(scenario())


def test_release_refs_are_pinned_and_checked_too(registry_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = shipml.Registry(registry_dir).get(f"churn:{GOOD}").path
    monkeypatch.chdir(package.parent)
    spec = make_spec(registry_dir, endpoints=[{"name": "a", "models": ["churn"],
                                               "shadow": {"model": f"./{package.name}"},
                                               "fallback": ["churn:1.0.0"]}])
    pinned = pinned_spec(spec).endpoints[0]
    assert pinned.shadow[0].model == str(package) and pinned.fallback == ["churn:1.0.0"]
    assert check_models(spec) == {"churn": GOOD, f"./{package.name}": package.name, "churn:1.0.0": "1.0.0"}
    missing = make_spec(registry_dir, endpoints=[{"name": "a", "models": ["churn"], "fallback": ["nope:1.0.0"]}])
    with pytest.raises(NotFoundError, match="nope"):
        check_models(missing)
