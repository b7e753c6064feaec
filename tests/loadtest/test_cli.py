"""``shipml loadtest`` and ``shipml locustfile`` through the CLI, against a tiny real server."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner, Result

from shipml.cli import cli
from tests.e2e.server_process import free_port
from tests.loadtest.tiny_server import Reply, TinyServer, running

DESCRIBED = {"name": "m", "ready": True, "versions": ["1.0.0"],
             "inputs": [{"name": "x", "dtype": "float", "min": -1.0, "max": 1.0},
                        {"name": "k", "dtype": "int", "min": 0, "max": 3}],
             "example": {"instances": [{"x": 0.25, "k": 2}]}}


@pytest.fixture
def server() -> Iterator[TinyServer]:
    with running(get_json={"/models/m": DESCRIBED, "/models": {"models": [{"name": "m"}]}}) as s:
        yield s


def loadtest(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, ["loadtest", *args], env=env, catch_exceptions=False)


def test_passing_run_prints_the_report_and_exits_0(server: TinyServer) -> None:
    result = loadtest(server.url, "--rate", "50", "--duration", "0.4s", "--slo", "p99<2s,errors<1%")
    assert result.exit_code == 0, result.output
    for fragment in ("/models/m/predict", "20 issued", "200: 20", "p99<2s", "verdict     PASS"):
        assert fragment in result.stdout, fragment
    assert "sent" in result.stderr and "p99" in result.stderr  # plain progress lines: stderr is not a TTY
    assert server.paths_seen.count("/models/m/predict") == 20 and "/models/m" in server.paths_seen


def test_failed_slo_exits_1(server: TinyServer) -> None:
    result = loadtest(server.url, "--model", "m", "--rate", "40", "--duration", "0.25s", "--slo", "p50<1us", "-q")
    assert result.exit_code == 1
    assert "verdict     FAIL" in result.stdout and result.stderr == ""


def test_json_and_html_reports(server: TinyServer, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    result = loadtest(server.url, "--model", "m", "--concurrency", "2", "--duration", "0.3s", "--json",
                      "--html", str(page), "-q", "--protocol", "v1")
    assert result.exit_code == 0, result.output
    data = orjson.loads(result.stdout)
    assert data["run"]["concurrency"] == 2 and data["run"]["path"] == "/v1/models/m:predict"
    assert data["ok"] == data["issued"] > 0 and data["passed"] is True
    assert "<svg" in page.read_text() and f"html report: {page}" in result.stderr


def test_token_is_sent_and_never_printed(server: TinyServer, tmp_path: Path) -> None:
    page = tmp_path / "r.html"
    result = loadtest(server.url, "--model", "m", "--rate", "20", "--duration", "0.2s", "--json", "--html",
                      str(page), env={"SHIPML_TOKEN": "tok-abc123"})
    assert result.exit_code == 0, result.output
    assert {h.get("authorization") for h in server.headers_seen} == {"Bearer tok-abc123"}
    assert "tok-abc123" not in result.output and "tok-abc123" not in page.read_text()


def test_payload_file_posted_to_a_path(server: TinyServer, tmp_path: Path) -> None:
    body = tmp_path / "body.json"
    body.write_text('{"instances": [{"x": 0.1, "k": 1}]}')
    result = loadtest(server.url, "--payload", str(body), "--path", "/custom", "--rate", "20", "--duration",
                      "0.2s", "-q")
    assert result.exit_code == 0, result.output
    assert set(server.paths_seen) == {"/custom"} and "payload file" in result.stdout


def test_registry_ref_gives_the_bodies(churn_registry: Path) -> None:
    with running() as server:
        result = loadtest(server.url, "--ref", "churn", "--registry", str(churn_registry / "registry"), "--rate",
                          "20", "--duration", "0.2s", "--rows", "2", "-q")
    assert result.exit_code == 0, result.output
    assert set(server.paths_seen) == {"/models/churn/predict"} and "2 row(s)/request" in result.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["--slo", "p99<50"], "give a latency unit"),
    (["--rate", "10", "--concurrency", "2"], "not both"),
    (["--duration", "soon"], "cannot read duration 'soon'"),
    (["--model", "nope"], "answered 404"),
    (["--payload", "/nonexistent/body.json", "--path", "/p"], "no payload file"),
])
def test_usage_errors_exit_2(server: TinyServer, args: list[str], message: str) -> None:
    result = loadtest(server.url, "--duration", "0.2s", "-q", *args)
    assert result.exit_code == 2 and message in result.output, result.output


def test_unreachable_server_exits_2() -> None:
    result = loadtest(f"http://127.0.0.1:{free_port()}", "--model", "m", "-q")
    assert result.exit_code == 2 and "cannot reach" in result.stderr
    assert loadtest("https://127.0.0.1:1", "-q").exit_code == 2


def test_server_errors_fail_the_run_with_exit_1(tmp_path: Path) -> None:
    body = tmp_path / "body.json"
    body.write_text("{}")
    with running(script=lambda n: Reply(status=503)) as server:
        result = loadtest(server.url, "--path", "/p", "--payload", str(body),
                          "--rate", "20", "--duration", "0.2s", "--slo", "errors<1%", "-q")
    assert result.exit_code == 1 and "503: 4" in result.stdout


def test_locustfile_command(churn_registry: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["--registry", str(churn_registry / "registry"), "locustfile", "churn",
                                 "--protocol", "v2", "--rows", "2", "--payloads", "4"])
    assert result.exit_code == 0, result.output
    tree = ast.parse(result.stdout)
    assigned = {t.id: node.value for node in tree.body if isinstance(node, ast.Assign)
                for t in node.targets if isinstance(t, ast.Name)}
    assert ast.literal_eval(assigned["PATH"]) == "/v2/models/churn/infer"
    payloads = ast.literal_eval(assigned["PAYLOADS"])
    assert len(payloads) == 4 and all(len(orjson.loads(p)["inputs"][0]["data"]) == 2 for p in payloads)
    out = tmp_path / "locustfile.py"
    written = runner.invoke(cli, ["locustfile", "churn", "--registry", str(churn_registry / "registry"),
                                  "--model", "churn-ep", "-o", str(out)])
    assert written.exit_code == 0 and "/models/churn-ep/predict" in out.read_text()
    missing = runner.invoke(cli, ["locustfile", "nope", "--registry", str(churn_registry / "registry")])
    assert missing.exit_code == 1 and "no model named 'nope'" in missing.output


def test_commands_have_help() -> None:
    for command in ("loadtest", "locustfile"):
        result = CliRunner().invoke(cli, [command, "--help"])
        assert result.exit_code == 0 and len(result.output) > 300
