"""Releases without restarts (issue #13, "Done means"), against real server processes under continuous load.

Each test runs 8 keep-alive clients (tests/e2e/traffic.py) against ``shipml serve`` while it changes what is
served through the CLI (``shipml alias``, ``shipml rollback``, ``shipml canary ...`` as real processes), and then
counts every answer: zero non-2xx, zero connection errors, every client kept its one connection, and each
answer's ``x-shipml-version`` / ``x-shipml-variant`` is the expected one. The models (tests/e2e/release_models.py)
answer ``10 * shift + (x0 > 0)``, so each answer's prediction also says which version really gave it.

The registry is built once per module and copied for each test (each test moves aliases in its own copy).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from shipml.registry.registry import Registry
from tests.e2e import release_models as rm
from tests.e2e.server_process import Server, free_port, start
from tests.e2e.traffic import Result, Traffic

pytestmark = pytest.mark.slow

CLIENTS = 8
#: how often servers poll the registry in these tests (``server.follow_interval_s``); the two-server test
#: runs with the default (1 s)
FOLLOW_S = 0.5
#: every answer sent this long after a release change must come from the new release
SETTLE_S = 2.0
SHIFTS = {"1.0.0": 1, "2.0.0": 2, "3.0.0": 3}


# -- set-up ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def base_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("releases") / "registry"
    for version, shift in SHIFTS.items():
        rm.good(root, version, shift)
    rm.slow(root, "5.0.0")
    rm.golden_fails(root, "7.0.0")
    rm.bad_canary(root, "9.0.0")
    Registry(root).set_alias(rm.NAME, "production", "1.0.0", reason="first release")
    return root


@pytest.fixture
def registry(base_registry: Path, tmp_path: Path) -> Path:
    """This test's own copy of the registry; ``churn@production`` is 1.0.0."""
    root = tmp_path / "registry"
    shutil.copytree(base_registry, root)
    return root


@pytest.fixture
def following(registry: Path, tmp_path: Path) -> Iterator[Server]:
    """A server for endpoint ``churn`` = ``churn@production``, following it."""
    server = start(registry, tmp_path, endpoints=[{"name": "churn", "models": ["churn@production"]}],
                   server={"follow_interval_s": FOLLOW_S})
    yield server
    server.stop()


def shipml_cli(registry: Path, *args: str) -> Any:
    """Run ``shipml --json ARGS`` as its own process against ``registry``; its JSON output (None if none)."""
    done = subprocess.run([sys.executable, "-m", "shipml.cli", "--registry", str(registry), "--json", *args],
                          capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, f"shipml {' '.join(args)} exited {done.returncode}: {done.stderr.decode()[-2000:]}"
    out = done.stdout.strip()
    return orjson.loads(out) if out else None


def change(registry: Path, *args: str) -> tuple[float, float]:
    """Run a CLI command that changes the release; (monotonic time before, after)."""
    before = time.monotonic()
    shipml_cli(registry, *args)
    return before, time.monotonic()


def metric(url: str, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` (with at least ``labels``) in the server's /metrics."""
    text = httpx.get(url + "/metrics", timeout=10).text
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def load(url: str, **options: Any) -> Traffic:
    return Traffic(url, body=rm.BODY, clients=CLIENTS, extract=rm.prediction_of,
                   **{"max_requests": 200_000, "max_seconds": 60, **options})


def assert_clean(result: Result, clients: int = CLIENTS) -> None:
    """Zero connection errors, zero non-2xx, keep-alive kept, load all along, each answer from its version."""
    assert result.errors == (), f"{result.summary()}; first errors: {result.errors[:3]}"
    assert result.non_2xx == [], f"{result.summary()}; first: {[(r.status, r.body) for r in result.non_2xx[:3]]}"
    assert result.connections == clients, result.summary()
    assert len(result.responses) >= 100, result.summary()
    wrong = [(r.version, r.variant, r.value) for r in result.responses
             if r.version in SHIFTS and r.value is not None and rm.shift_of(r.value) != SHIFTS[r.version]]
    assert wrong == [], f"answers whose prediction is not their version's: {Counter(wrong)}"


# -- hot swap, a failing version, rollback ---------------------------------------------------------------------
def test_an_alias_move_is_a_hot_swap(registry: Path, following: Server) -> None:
    with load(following.url + "/predict") as traffic:
        traffic.wait(1.5)
        before, after = change(registry, "alias", "churn", "production", "2.0.0", "--reason", "hot swap test")
        traffic.wait(SETTLE_S + 1.5)
    result = traffic.result()
    assert_clean(result)
    assert result.versions(until=before) == {"1.0.0"}, result.summary()
    assert result.versions(since=after + SETTLE_S) == {"2.0.0"}, result.summary()
    assert result.variants() == {"stable"}, result.summary()
    switched = result.first_sent(lambda r: r.version == "2.0.0")
    assert switched is not None and switched >= before
    assert metric(following.url, "shipml_model_swaps_total", outcome="done") >= 1


def test_a_version_failing_its_golden_check_is_never_served(registry: Path, following: Server) -> None:
    ready: list[int] = []
    with load(following.url + "/predict") as traffic:
        traffic.wait(1.0)
        _, after = change(registry, "alias", "churn", "production", "7.0.0", "--reason", "fails its golden check")
        while time.monotonic() < after + SETTLE_S + 2.0:
            ready.append(httpx.get(following.url + "/readyz", timeout=5).status_code)
            traffic.wait(0.2)
    result = traffic.result()
    assert_clean(result)
    assert result.versions() == {"1.0.0"}, result.summary()
    assert set(ready) == {200} and len(ready) >= 10, Counter(ready)
    assert metric(following.url, "shipml_model_swaps_total", outcome="failed") >= 1
    following.proc.terminate()
    _, stderr = following.proc.communicate(timeout=30)
    log = stderr.decode(errors="replace")
    assert "7.0.0" in log and "golden" in log, log[-3000:]


def test_rollbacks_stack_back_through_earlier_releases(registry: Path, following: Server) -> None:
    phases: list[tuple[float, float, str]] = []  # (change started, change done, version to serve from then)
    with load(following.url + "/predict") as traffic:
        traffic.wait(1.0)
        for command, expect in ((("alias", "churn", "production", "2.0.0"), "2.0.0"),
                                (("alias", "churn", "production", "3.0.0"), "3.0.0"),
                                (("rollback", "churn", "--reason", "3.0.0 misbehaves"), "2.0.0"),
                                (("rollback", "churn", "--reason", "so does 2.0.0"), "1.0.0")):
            phases.append((*change(registry, *command), expect))
            traffic.wait(SETTLE_S + 0.5)
    result = traffic.result()
    assert_clean(result)
    for (_, done, version), nxt in zip(phases, [*phases[1:], None], strict=True):
        until = nxt[0] if nxt is not None else float("inf")
        assert result.versions(since=done + SETTLE_S, until=until) == {version}, (version, result.summary())
    history = Registry(registry).alias_history("churn")
    moves = [(m.to_version, m.to_dict().get("rollback", False)) for m in history[-4:]]
    assert moves == [("2.0.0", False), ("3.0.0", False), ("2.0.0", True), ("1.0.0", True)]
    assert history[-1].reason == "so does 2.0.0"


def test_every_prediction_route_names_the_version_and_variant(following: Server) -> None:
    """Every prediction answer says who answered: headers on each protocol, and the simple / v2 bodies."""
    v2 = {"inputs": [{"name": c, "datatype": "FP64", "shape": [1], "data": [rm.ROW[c]]} for c in rm.FEATURES]}
    with httpx.Client(base_url=following.url, timeout=10) as client:
        for path, body in (("/predict", rm.BODY), ("/models/churn/predict", rm.BODY),
                           ("/v1/models/churn:predict", rm.BODY), ("/v2/models/churn/infer", v2)):
            answer = client.post(path, json=body)
            assert answer.status_code == 200, (path, answer.text)
            assert (answer.headers.get("x-shipml-version"), answer.headers.get("x-shipml-variant")) == \
                ("1.0.0", "stable"), (path, answer.headers)
            data = answer.json()
            if path.startswith("/v2/"):
                assert data["model_version"] == "1.0.0" and data["parameters"]["variant"] == "stable", data
                assert data["outputs"][0]["data"] == [rm.label(1)]
            elif not path.startswith("/v1/"):
                assert (data["version"], data["variant"]) == ("1.0.0", "stable"), data
                assert data["predictions"] == [rm.label(1)]
        releases = client.get("/admin/releases")
        assert releases.status_code == 200, releases.text
        assert "churn" in releases.text and "1.0.0" in releases.text, releases.text


# -- canary ----------------------------------------------------------------------------------------------------
def wait_canary_state(registry: Path, state: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        canary = Registry(registry).release_state("churn").canaries.get("production")
        if (canary is not None and canary.state == state) or time.monotonic() > deadline:
            return canary
        time.sleep(0.1)


def test_a_bad_canary_is_aborted_and_stable_answers_every_request(registry: Path, following: Server) -> None:
    with load(following.url + "/predict") as traffic:
        traffic.wait(1.0)
        before, _ = change(registry, "canary", "start", "churn", "9.0.0", "--weight", "20", "--max-error-rate",
                           "0.05", "--min-requests", "20", "--window", "100", "--reason", "bad canary test")
        canary = wait_canary_state(registry, "aborted", timeout=20)
        aborted = time.monotonic()
        traffic.wait(1.5)
    result = traffic.result()
    assert_clean(result)  # the requests the canary failed were answered by the stable version
    assert canary is not None and canary.state == "aborted", canary
    assert canary.version == "9.0.0" and canary.stable == "1.0.0"
    assert canary.reason and "error rate" in canary.reason, canary.reason
    assert result.versions() == {"1.0.0"} and result.variants() == {"stable"}, result.summary()
    assert result.window(since=before, until=aborted), "no load while the canary ran"
    status = shipml_cli(registry, "canary", "status", "churn")
    assert "aborted" in orjson.dumps(status).decode()
    assert Registry(registry).aliases("churn")["production"] == "1.0.0"


def test_a_good_canary_takes_its_share_and_promoting_it_moves_everyone(registry: Path, following: Server) -> None:
    with load(following.url + "/predict") as traffic:
        traffic.wait(0.5)
        _, started = change(registry, "canary", "start", "churn", "2.0.0", "--weight", "30", "--min-requests", "50")
        traffic.wait(SETTLE_S + 2.5)
        promoting, promoted = change(registry, "canary", "promote", "churn", "--reason", "looks good")
        traffic.wait(SETTLE_S + 1.0)
    result = traffic.result()
    assert_clean(result)
    during = result.window(since=started + SETTLE_S, until=promoting)
    releases = Counter((r.version, r.variant) for r in during)
    assert set(releases) == {("1.0.0", "stable"), ("2.0.0", "canary")}, releases
    share = releases["2.0.0", "canary"] / len(during)
    assert 0.22 < share < 0.38, (share, releases)
    assert result.by_release.keys() >= {("2.0.0", "stable")}
    assert {(r.version, r.variant) for r in result.window(since=promoted + SETTLE_S)} == {("2.0.0", "stable")}
    assert Registry(registry).aliases("churn")["production"] == "2.0.0"
    assert wait_canary_state(registry, "promoted", timeout=1).state == "promoted"


# -- A/B -------------------------------------------------------------------------------------------------------
AB_ENDPOINT = {"name": "churn", "models": ["churn:1.0.0"],
               "ab": {"key": "header:X-User-ID", "variants": {"control": "churn:1.0.0", "treatment": "churn:2.0.0"},
                      "weights": {"control": 30, "treatment": 70}}}
AB_VERSIONS = {"control": "1.0.0", "treatment": "2.0.0"}


@pytest.fixture
def ab_server(registry: Path, tmp_path: Path) -> Iterator[Server]:
    server = start(registry, tmp_path, endpoints=[AB_ENDPOINT])
    yield server
    server.stop()


def test_ab_assignment_is_sticky_and_splits_by_weight(ab_server: Server) -> None:
    keys = 2000
    with load(ab_server.url + "/predict", max_requests=6000, max_seconds=30,
              headers_for=lambda n: {"X-User-ID": f"user-{n % keys}"}) as traffic:
        traffic.wait(30)
    result = traffic.result()
    assert_clean(result)
    assert {(r.variant, r.version) for r in result.responses} == {(v, AB_VERSIONS[v]) for v in AB_VERSIONS}
    seen: dict[str, set[str | None]] = defaultdict(set)
    for r in result.responses:
        assert r.headers is not None
        seen[r.headers["X-User-ID"]].add(r.variant)
    assert len(seen) == keys
    flapping = {k: v for k, v in seen.items() if len(v) > 1}
    assert flapping == {}, f"{len(flapping)} keys got more than one variant, e.g. {list(flapping.items())[:3]}"
    treated = sum(v == {"treatment"} for v in seen.values()) / keys
    assert abs(treated - 0.70) < 0.04, treated  # 2,000 keys: one standard deviation is ~1 %
    answered = result.by_release
    for variant, version in AB_VERSIONS.items():  # /metrics counts requests per variant
        assert metric(ab_server.url, "shipml_requests_total", variant=variant, version=version) >= \
            answered[version, variant], variant


def test_without_a_key_both_variants_answer(ab_server: Server) -> None:
    with load(ab_server.url + "/predict", max_requests=2000, max_seconds=20) as traffic:
        traffic.wait(20)
    result = traffic.result()
    assert_clean(result)
    variants = Counter(r.variant for r in result.responses)
    assert set(variants) == {"control", "treatment"} and variants["treatment"] > variants["control"], variants


KEYS = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=64).map(str.strip) \
    .filter(bool)


def test_any_header_key_gets_one_variant(ab_server: Server) -> None:
    with httpx.Client(base_url=ab_server.url, timeout=10) as client:
        @settings(max_examples=40, deadline=None)
        @given(KEYS)
        def sticky(key: str) -> None:
            variants = set()
            for _ in range(3):
                answer = client.post("/predict", json=rm.BODY, headers={"X-User-ID": key})
                assert answer.status_code == 200, (key, answer.text)
                variants.add(answer.headers["x-shipml-variant"])
                assert answer.json()["variant"] == answer.headers["x-shipml-variant"]
            assert len(variants) == 1 and variants <= set(AB_VERSIONS), (key, variants)

        sticky()


# -- shadow ----------------------------------------------------------------------------------------------------
def test_a_slow_shadow_does_not_slow_the_primary(registry: Path, tmp_path: Path) -> None:
    server = start(registry, tmp_path, endpoints=[
        {"name": "plain", "models": ["churn:1.0.0"]},
        {"name": "shadowed", "models": ["churn:1.0.0"], "shadow": {"model": "churn:5.0.0", "fraction": 1.0}}])
    try:
        runs: dict[str, Result] = {}
        for endpoint in ("plain", "shadowed", "plain"):  # plain twice: before and after, against drift
            with load(f"{server.url}/models/{endpoint}/predict", max_seconds=30) as traffic:
                traffic.wait(3.0)
            runs[endpoint if endpoint not in runs else "plain again"] = traffic.result()
        time.sleep(rm.code_module().SLEEP_S + 0.5)  # the last shadow calls finish
        shadow_requests = metric(server.url, "shipml_shadow_requests_total")
        disagreements = metric(server.url, "shipml_shadow_label_disagreements_total")
        shadow_rows = metric(server.url, "shipml_shadow_rows_total")
    finally:
        server.stop()
    p99 = {name: r.latency_ms(since=r.started + 0.5)["p99"] for name, r in runs.items()}
    for name, result in runs.items():
        assert_clean(result)
        assert result.by_release.keys() == {("1.0.0", "stable")}, (name, result.summary())
    plain = max(p99["plain"], p99["plain again"])
    # a shadow that held up the primary would add up to a second per request; allow plenty for noise
    assert p99["shadowed"] < max(4 * plain, plain + 250), p99
    assert shadow_requests >= 1 and shadow_rows >= 1
    assert disagreements >= 1  # the slow model gives the opposite label


# -- fallback --------------------------------------------------------------------------------------------------
def test_a_failing_model_falls_back_to_the_next_one_and_to_the_default(registry: Path, tmp_path: Path) -> None:
    server = start(registry, tmp_path, endpoints=[
        {"name": "next", "models": ["churn:9.0.0"], "fallback": ["churn:1.0.0", {"default": {"prediction": -1}}]},
        {"name": "constant", "models": ["churn:9.0.0"], "fallback": [{"default": {"prediction": -1}}]}])
    try:
        results = {}
        for endpoint in ("next", "constant"):
            with load(f"{server.url}/models/{endpoint}/predict", max_seconds=30) as traffic:
                traffic.wait(2.5)
            results[endpoint] = traffic.result()
    finally:
        server.stop()
    assert_clean(results["next"])
    assert results["next"].by_release.keys() == {("1.0.0", "fallback")}, results["next"].summary()
    assert {r.value for r in results["next"].responses} == {rm.label(1)}
    assert_clean(results["constant"])
    assert {r.variant for r in results["constant"].responses} == {"default"}, results["constant"].summary()
    assert {r.value for r in results["constant"].responses} == {-1}


# -- two servers on one registry -------------------------------------------------------------------------------
def serve_cli(registry: Path, ref: str, *https: str) -> list[Server]:
    """``shipml serve REF`` without a spec (it follows an alias by default), one process per HTTP server in
    ``https``, started together."""
    servers = []
    for http in https:
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "shipml.cli", "--registry", str(registry), "serve", ref,
                                 "--port", str(port), "--http", http, "--no-access-log"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        servers.append(Server(proc, port))
    try:
        for server in servers:
            server.wait_ready()
    except AssertionError:
        for server in servers:
            server.stop()
        raise
    return servers


def test_two_servers_on_one_registry_follow_an_alias_move_within_two_seconds(registry: Path) -> None:
    servers = serve_cli(registry, "churn@production", "granian", "uvicorn")
    try:
        with load(servers[0].url + "/predict") as first, load(servers[1].url + "/predict") as second:
            first.wait(1.5)
            before, after = change(registry, "alias", "churn", "production", "2.0.0")
            first.wait(SETTLE_S + 1.5)
    finally:
        for server in servers:  # both drain at once
            server.proc.terminate()
        for server in servers:
            server.stop()
    switched = []
    for result in (first.result(), second.result()):
        assert_clean(result)
        assert result.versions(until=before) == {"1.0.0"}, result.summary()
        assert result.versions(since=after + SETTLE_S) == {"2.0.0"}, result.summary()
        last_old = result.last_sent(lambda r: r.version == "1.0.0")
        assert last_old is not None
        switched.append(last_old)
    assert abs(switched[0] - switched[1]) < SETTLE_S, switched
